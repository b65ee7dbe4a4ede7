"""JSCC baselines: what each one trains, resume, and their deployed form (the bundles
themselves are exported and evaluated in test_pipeline.py, which runs both baselines)."""
from __future__ import annotations

import json

import pytest
import torch

from tests.common.train.test_distill import QUIET, log_records, one_thread, smoke, workdir_with_teacher  # noqa: F401  (one_thread: autouse)

EPOCHS = {"baseline.epochs": 3, "baseline.lr": 2e-3, "baseline.lr_min": 5e-4}


@pytest.fixture(scope="module")
def baselines(tmp_path_factory):
    from rkdsc.common.train.baselines import run_baseline

    wd = workdir_with_teacher(tmp_path_factory, "baselines")
    p = smoke(**EPOCHS)
    out = {k: run_baseline(p, k, wd, log=QUIET) for k in ("jscc-student", "jscc-teacher")}
    return {"wd": wd, "preset": p, **out}


def test_jscc_student_trains_searched_architecture_from_scratch(baselines):
    from safetensors.torch import load_file

    from rkdsc.common.models.complexity import count_params
    from rkdsc.common.models.student import Student
    from rkdsc.common.train.common import seed_everything

    wd, p = baselines["wd"], baselines["preset"]
    spec = json.loads((wd / "baseline-jscc-student" / "digits" / "model.json").read_text())
    assert spec["method"] == "jscc-student" and spec["compression_ratio"] == 0.0
    assert spec["compact_dim"] == spec["feature_dim"] == 64
    assert spec["depths"] == p.search.depths  # no search result in this workdir: the preset's depths
    seed_everything(p.seed)
    init = Student(p.student_config(), spec["depths"])  # the same seeded initialisation
    assert spec["params"]["encoder"] == count_params(init)
    trained = load_file(str(wd / "baseline-jscc-student" / "digits" / "model.safetensors"))
    w = "layers.0.blocks.0.conv1.weight"
    assert not torch.equal(trained[f"encoder.{w}"], init.state_dict()[w])  # the encoder is trained, not distilled
    recs = log_records(wd / "baseline-jscc-student" / "digits" / "log.jsonl")
    assert [r["epoch"] for r in recs] == [1, 2, 3]
    assert recs[-1]["loss_task"] < recs[0]["loss_task"]
    assert all(0.0 <= r["val_acc_awgn_20db"] <= 1.0 for r in recs)


def test_jscc_teacher_freezes_teacher_and_trains_head(baselines):
    from rkdsc.common.data.datasets import build_datasets
    from rkdsc.common.models.registry import get_method
    from rkdsc.common.train.teacher import get_teacher

    wd, p = baselines["wd"], baselines["preset"]
    d = wd / "baseline-jscc-teacher" / "digits"
    spec = json.loads((d / "model.json").read_text())
    assert spec["trained"].startswith("head only")
    system, _ = get_method("jscc-teacher").load(d)
    encoder = system.encoder
    teacher = get_teacher(p, wd, log=QUIET, device=torch.device("cpu"))
    _, val_ds, _ = build_datasets(p)
    x = torch.stack([val_ds[i][0] for i in range(16)])
    with torch.no_grad():
        assert torch.allclose(encoder(x), teacher(x), atol=1e-6)  # the exported encoder IS the frozen teacher
    assert set(json.loads((d / "model.json").read_text())["params"]) == {"encoder", "head"}
    recs = log_records(d / "log.jsonl")
    assert recs[-1]["loss_task"] < recs[0]["loss_task"]


def test_baseline_resume_is_exact(baselines, tmp_path_factory):
    from safetensors.torch import load_file

    from rkdsc.common.train.baselines import cli

    wd = workdir_with_teacher(tmp_path_factory, "baseline-resume")
    args = ["jscc-teacher", "--preset", "smoke", "--workdir", str(wd), "--device", "cpu"]
    args += [f"--set={k}={json.dumps(v)}" for k, v in _overrides().items()]
    assert cli(args + ["--stop-after-epochs", "1"]) == 0
    d = wd / "baseline-jscc-teacher" / "digits"
    assert json.loads((d / "checkpoint" / "state.json").read_text())["epoch"] == 1
    assert cli(args + ["--resume"]) == 0
    assert [r["epoch"] for r in log_records(d / "log.jsonl")] == [1, 2, 3]
    a = load_file(str(d / "model.safetensors"))
    b = load_file(str(baselines["wd"] / "baseline-jscc-teacher" / "digits" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def _overrides() -> dict:
    from tests.common.train.test_distill import OVERRIDES

    return {**OVERRIDES, **EPOCHS}


def test_unknown_kind_and_bad_preset_fail_clearly(tmp_path, capsys):
    from rkdsc.common.train.baselines import cli, run_baseline

    with pytest.raises(ValueError, match="jscc-student"):
        run_baseline(smoke(), "no-such-kind", tmp_path)  # (t-deepsc and rtsc are kinds now: test_codec_baselines.py)
    assert cli(["jscc-student", "--preset", "no-such-preset", "--workdir", str(tmp_path)]) == 2
    assert "no-such-preset" in capsys.readouterr().err
