"""rkdsc train end to end on the smoke preset: every step's output, results.json, five bundles
that verify, deploy exactly the trained torch modules, and evaluate; --resume skips finished work."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rkdsc.common.train.pipeline import BASELINES

from tests.common.train.test_distill import OVERRIDES, one_thread, workdir_with_teacher  # noqa: F401  (one_thread: autouse)

FAST = {**OVERRIDES, "search.epochs": 1, "stage1.epochs": 2, "stage2.epochs": 2, "baseline.epochs": 1}
METHODS = ("rkd-sc", "jscc-student", "jscc-teacher", "t-deepsc", "rtsc")  # rkdsc.common.models.registry.METHODS' order
SENT = {"t-deepsc": 10, "rtsc": 512}  # the codec baselines' real values per image (the paper's counts)


def _args(wd) -> list[str]:
    return (["--preset", "smoke", "--workdir", str(wd), "--device", "cpu", "--snr", "-10,0,25"]
            + [f"--set={k}={json.dumps(v)}" for k, v in FAST.items()])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from rkdsc.common.train.pipeline import cli

    wd = workdir_with_teacher(tmp_path_factory, "pipeline")
    assert cli(_args(wd)) == 0
    return wd, json.loads((wd / "results.json").read_text())


def test_results_summary(run):
    from rkdsc.common.models.complexity import count_params
    from rkdsc.common.models.student import Student
    from rkdsc.common.train.presets import load_preset

    wd, res = run
    teacher_meta = json.loads((wd / "teacher" / "teacher.json").read_text())
    assert res["teacher"]["val_acc"] == teacher_meta["val_acc"] and res["teacher"]["source"] == "self-trained"
    assert set(res["methods"]) == set(METHODS)
    for m in METHODS:
        s = res["methods"][m]
        for ch in ("awgn", "rayleigh"):
            assert set(s["accuracy"][ch]) == {"25", "-10"}
            assert all(0.0 <= v <= 1.0 for v in s["accuracy"][ch].values())
    arch = json.loads((wd / "search-kdl-darts" / "arch.json").read_text())
    p = load_preset("smoke", FAST)
    student_params = count_params(Student(p.student_config(), arch["depths"]))
    # RKD-SC and JSCC-student share the KDL-DARTS architecture; JSCC-teacher's encoder is the teacher
    assert res["methods"]["rkd-sc"]["encoder_params"] == res["methods"]["jscc-student"]["encoder_params"] == student_params
    assert res["methods"]["jscc-teacher"]["encoder_params"] == res["teacher"]["params"]
    assert res["methods"]["rkd-sc"]["symbols_per_image"] == 6  # ceil(floor(64 * 0.2) / 2)
    assert res["methods"]["jscc-student"]["symbols_per_image"] == 32  # the 64-d feature itself
    assert set(res["search"]) >= {"kdl-darts", "darts"}
    assert res["search"]["kdl-darts"]["depths"] == arch["depths"] == res["stage1"]["depths"]
    assert res["feature_cache"]["speedup"] > 0
    assert res["eval"]["n"] == 359 and res["eval"]["snrs_db"] == [-10.0, 0.0, 25.0]
    # the call's options, which the report turns back into the command's flags
    assert res["options"] == {"baselines": list(BASELINES), "skip_darts": False, "snrs_db": [-10.0, 0.0, 25.0],
                              "eval_limit": None, "time_cache": True}
    from rkdsc.common.experiments.report import train_flags

    assert train_flags(res) == ["--snr=-10,0,25"]


def test_eval_files_follow_the_contract(run):
    wd, res = run
    for m in METHODS:
        for ch in ("awgn", "rayleigh"):
            e = json.loads((wd / "eval" / f"{m}-{ch}.json").read_text())
            assert e["channel"] == ch and e["bundle"] == str(wd / "bundles" / m)
            assert [p["n"] for p in e["points"]] == [359, 359, 359]
            assert e["points"] == res["methods"][m]["curves"][ch]
    assert (wd / "eval" / "fig6.png").read_bytes()[:4] == b"\x89PNG"


def test_bundles_verify_and_deploy_the_trained_modules(run):
    """The ONNX edge part of each bundle computes what the trained torch encoder computes."""
    from rkdsc.common.bundle.manifest import verify_bundle
    from rkdsc.common.bundle.runtime import EdgeModel, load_bundle
    from rkdsc.common.data.datasets import heldout_dataset
    from rkdsc.common.models.registry import get_method
    from rkdsc.common.train.presets import load_preset

    wd, res = run
    x = torch.stack([heldout_dataset(load_preset("smoke", FAST))[i][0] for i in range(8)])
    snr = torch.full((8,), 10.0)
    for m in METHODS:
        bundle_dir = wd / "bundles" / m
        assert verify_bundle(bundle_dir) == []
        b = load_bundle(bundle_dir)
        prov = b.manifest["provenance"]
        assert prov["method"] == m and prov["seed"] == 0 and prov["preset"] == "smoke"
        assert prov["metrics"]["eval_awgn"]["25dB"] == pytest.approx(res["methods"][m]["accuracy"]["awgn"]["25"], abs=1e-4)
        got = EdgeModel(b).encode(x.numpy(), snr.numpy())
        with torch.no_grad():
            if m == "rkd-sc":
                system, _ = get_method(m).load(wd / "stage2" / "digits")
                want = system.cat_encoder(system.student(x), snr)
                assert b.tasks["digits"].compression_ratio == 0.8
            elif m in SENT:  # T-DeepSC / RTSC: their own transmitter, their own count of values
                system, _ = get_method(m).load(wd / f"baseline-{m}" / "digits")
                want = get_method(m).parts(system)[0](x, snr)
                assert b.tasks["digits"].compact_dim == SENT[m]
            else:
                system, _ = get_method(m).load(wd / f"baseline-{m}" / "digits")
                want = system.encoder(x)
                assert b.tasks["digits"].compression_ratio == 0.0 and b.tasks["digits"].compact_dim == 64
        np.testing.assert_allclose(got, want.numpy(), atol=2e-4, rtol=1e-3)


def test_resume_skips_finished_steps(run, capsys):
    from rkdsc.common.train.pipeline import cli

    wd, res = run
    capsys.readouterr()
    assert cli(_args(wd) + ["--resume", "--no-cache-timing"]) == 0
    out = capsys.readouterr().out
    for what in ("search kdl-darts: reusing", "search darts: reusing", "stage 1 [digits]: reusing", "stage 2: reusing",
                 "jscc-student [digits]: reusing", "jscc-teacher [digits]: reusing", "t-deepsc [digits]: reusing",
                 "rtsc [digits]: reusing", "export rkd-sc: reusing", "export rtsc: reusing"):
        assert what in out, what
    res2 = json.loads((wd / "results.json").read_text())
    assert {m: res2["methods"][m]["curves"] for m in METHODS} == {m: res["methods"][m]["curves"] for m in METHODS}
    # step and wall times add up over the two calls: the reused steps keep what they cost the first time
    assert res["calls"] == 1 and res2["calls"] == 2
    for name, first in res["steps_s"].items():
        if name != "feature-cache timing":
            assert res2["steps_s"][name] >= first, name
    assert res2["wall_s"] >= res["wall_s"] + res2["wall_s_last_call"] - 0.1
    assert res2["wall_s_last_call"] < res2["wall_s"]
    assert "over 2 calls" in out


def test_step_times_survive_an_interrupted_call(tmp_path_factory):
    """A call stopped part way (here Ctrl-C as the first search starts) records the steps it ran in
    WORKDIR/steps.json; the next --resume call adds to them, a call without --resume starts over."""
    from rkdsc.common.train.pipeline import StepLedger, run_pipeline
    from rkdsc.common.train.presets import load_preset

    wd = workdir_with_teacher(tmp_path_factory, "interrupted")
    preset = load_preset("smoke", FAST)

    def log(line: str) -> None:
        if line.startswith("== search"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_pipeline(preset, wd, log=log)
    ledger = json.loads((wd / "steps.json").read_text())
    assert set(ledger["steps_s"]) == {"teacher", "search kdl-darts"}
    assert ledger["steps_s"]["teacher"] > 0
    assert [c["ended"] for c in ledger["calls"]] == ["interrupted: KeyboardInterrupt"]
    assert StepLedger(wd, resume=True).steps_s == ledger["steps_s"]
    assert StepLedger(wd, resume=False).steps_s == {}


def test_an_unknown_baseline_is_refused_naming_it(tmp_path, capsys):
    from rkdsc.common.train.pipeline import cli

    assert cli(["--preset", "smoke", "--workdir", str(tmp_path), "--baselines", "jscc-student,deepjscc"]) == 2
    err = capsys.readouterr().err
    assert "--baselines" in err and "'deepjscc'" in err and "t-deepsc" in err


def test_export_size_limit_fails_loudly(run, tmp_path):
    from rkdsc.common.train.export import export_from_workdir

    wd, _ = run
    with pytest.raises(RuntimeError, match="over the limit"):
        export_from_workdir(wd, tmp_path / "b", "jscc-teacher", max_bytes=1000)


def test_train_default_help(capsys):
    from rkdsc.common.train.pipeline import cli_default

    with pytest.raises(SystemExit) as e:
        cli_default(["--help"])
    assert e.value.code == 0
    assert "deploy/bundle" in capsys.readouterr().out
