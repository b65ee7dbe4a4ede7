"""Two-stage RKD on the smoke preset: stage 1 lowers the feature MSE, stage 2 beats the
stage-1-only system at -5 dB, resume continues exactly, several transmitters train jointly.

The smoke preset is overridden to 600 digits (480 train / 120 val) and stage-2 learning rate
5e-4 (the paper's; 3e-3 diverges, see common/train/distill.py) so that learning shows within
seconds. Torch runs single-threaded here: results do not depend on machine load.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from rkdsc.common.train.presets import load_preset

OVERRIDES = {
    "data.max_per_class": 60,          # 600 digits: 480 train / 120 val
    "stage1.epochs": 4,
    "stage2.epochs": 10,
    "stage2.lr": 5e-4,                 # the paper's stage-2 learning rate
    "stage2.lr_min": 1e-4,
    "stage2.snr_db_range": [-5.0, 10.0],  # -5 dB inside the training range of the noisy system
}
QUIET = lambda s: None  # noqa: E731


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def smoke(**extra):
    return load_preset("smoke", {**OVERRIDES, **extra})


def workdir_with_teacher(tmp_path_factory, name: str, dest: Path | None = None) -> Path:
    """A fresh work directory holding a copy of the (once per session) trained smoke teacher."""
    from rkdsc.common.train.teacher import get_teacher

    shared = tmp_path_factory.getbasetemp() / "rkd-smoke-teacher"
    if not (shared / "teacher" / "teacher.json").is_file():
        get_teacher(smoke(), shared, log=QUIET, device=torch.device("cpu"))
    wd = dest or tmp_path_factory.mktemp(name)
    shutil.copytree(shared / "teacher", wd / "teacher")
    return wd


def log_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from rkdsc.common.train.distill import run_stage1, run_stage2

    wd = workdir_with_teacher(tmp_path_factory, "distill")
    p = smoke()
    s1 = run_stage1(p, wd, log=QUIET)
    s2 = run_stage2(p, wd, log=QUIET)
    ablation = run_stage2(p, wd, log=QUIET, out_name="stage1-only", train_encoder=False, noise=False)
    return {"wd": wd, "preset": p, "s1": s1, "s2": s2, "ablation": ablation}


def test_stage1_lowers_val_feature_mse(trained):
    from rkdsc.common.data.datasets import build_datasets
    from rkdsc.common.models.student import Student
    from rkdsc.common.train.common import load_weights
    from rkdsc.common.train.distill import feature_mse
    from rkdsc.common.train.features import preset_teacher_features
    from rkdsc.common.train.teacher import get_teacher

    s1, wd, p = trained["s1"], trained["wd"], trained["preset"]
    assert s1["val_mse_final"] < 0.7 * s1["val_mse_init"], s1
    recs = log_records(wd / "stage1" / "log.jsonl")
    assert [r["epoch"] for r in recs] == [0, 1, 2, 3, 4]
    assert recs[0]["val_mse"] == pytest.approx(s1["val_mse_init"])
    assert all({"train_mse", "val_mse", "lr", "time_s"} <= set(r) for r in recs[1:])
    assert recs[1]["lr"] > recs[-1]["lr"]  # cosine schedule
    # the saved student reproduces the reported metric (the log is not just bookkeeping)
    student = Student(p.student_config(), s1["depths"])
    load_weights(wd / "stage1" / "student.safetensors", student)
    _, val_ds, _ = build_datasets(p)
    feats = preset_teacher_features(p, wd, get_teacher(p, wd, log=QUIET, device=torch.device("cpu")), val_ds)
    assert feature_mse(student, val_ds, feats, 64, torch.device("cpu")) == pytest.approx(s1["val_mse_final"], rel=1e-4)


def test_stage2_beats_stage1_only_system_at_minus_5db(trained):
    """Stage-1-only system = the stage-1 encoder frozen, CAT + head trained with the same loss,
    epochs and data but on noiseless symbols. Full stage 2 trains everything through the channel.
    Accuracy on the 359 held-back digits, averaged over three noise draws."""
    from rkdsc.common.data.datasets import heldout_dataset
    from rkdsc.common.models.registry import load_trained
    from rkdsc.common.train.distill import system_accuracy

    wd, p = trained["wd"], trained["preset"]
    held = heldout_dataset(p)
    acc = {}
    for name in ("stage2", "stage1-only"):
        system, spec = load_trained(wd / name / "digits")
        acc[name] = sum(system_accuracy(system, held, 128, torch.device("cpu"), -5.0, "awgn", seed=k)
                        for k in range(3)) / 3
    assert acc["stage2"] > acc["stage1-only"] + 0.05, acc
    assert acc["stage2"] > 0.2, acc  # well above chance (0.1)


def test_stage2_trains_encoder_and_codec_and_logs(trained):
    from safetensors.torch import load_file

    wd = trained["wd"]
    s1 = load_file(str(wd / "stage1" / "student.safetensors"))
    joint = load_file(str(wd / "stage2" / "digits" / "model.safetensors"))
    frozen = load_file(str(wd / "stage1-only" / "digits" / "model.safetensors"))
    w = "layers.0.blocks.0.conv1.weight"
    assert not torch.equal(joint[f"student.{w}"], s1[w])  # stage 2 updates the encoder
    assert torch.equal(frozen[f"student.{w}"], s1[w])  # the ablation keeps it frozen
    assert any(k.startswith("cat_encoder.") for k in joint) and any(k.startswith("cat_decoder.") for k in joint)
    spec = json.loads((wd / "stage2" / "digits" / "model.json").read_text())
    assert spec["cat"]["compression_ratio"] == 0.8 and spec["depths"] == trained["s1"]["depths"]
    assert spec["snr_train_db"] == [-5.0, 10.0] and spec["class_names"] == [str(i) for i in range(10)]
    recs = log_records(wd / "stage2" / "log.jsonl")
    assert [r["epoch"] for r in recs] == list(range(1, 11))
    t = recs[-1]["tasks"]["digits"]
    assert {"loss_kd", "loss_re", "loss_task", "val_acc_awgn_-5db", "val_acc_awgn_20db"} <= set(t)
    assert recs[-1]["tasks"]["digits"]["loss_task"] < recs[0]["tasks"]["digits"]["loss_task"]


def test_resume_continues_from_checkpoint(trained, tmp_path_factory):
    """Stop stage 1 after 2 of 4 epochs, resume: the log has every epoch once and the final
    weights equal the uninterrupted run's (per-epoch seeding makes the run resume-exact).
    Then the same through the CLI for stage 2."""
    from safetensors.torch import load_file

    from rkdsc.common.train.distill import cli, run_stage1

    wd = workdir_with_teacher(tmp_path_factory, "resume")
    p = smoke()
    part = run_stage1(p, wd, log=QUIET, stop_after_epochs=2)
    assert part["stopped_after_epoch"] == 2
    state = json.loads((wd / "stage1" / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 2 and not (wd / "stage1" / "student.safetensors").exists()
    done = run_stage1(p, wd, log=QUIET, resume=True)
    assert [r["epoch"] for r in log_records(wd / "stage1" / "log.jsonl")] == [0, 1, 2, 3, 4]
    assert done["val_mse_init"] == pytest.approx(trained["s1"]["val_mse_init"])
    a = load_file(str(wd / "stage1" / "student.safetensors"))
    b = load_file(str(trained["wd"] / "stage1" / "student.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    # a finished stage is reused by --resume, not retrained
    assert run_stage1(p, wd, log=QUIET, resume=True) == json.loads((wd / "stage1" / "stage1.json").read_text())

    base = ["--preset", "smoke", "--workdir", str(wd), "--stage", "2", "--device", "cpu"]
    base += [f"--set={k}={json.dumps(v)}" for k, v in {**OVERRIDES, "stage2.epochs": 2}.items()]
    assert cli(base + ["--stop-after-epochs", "1"]) == 0
    assert json.loads((wd / "stage2" / "checkpoint" / "state.json").read_text())["epoch"] == 1
    assert not (wd / "stage2" / "stage2.json").exists()
    assert cli(base + ["--resume"]) == 0
    assert [r["epoch"] for r in log_records(wd / "stage2" / "log.jsonl")] == [1, 2]
    assert json.loads((wd / "stage2" / "stage2.json").read_text())["epochs"] == 2


def test_several_transmitters_train_jointly_and_export(tmp_path_factory, tmp_path):
    """Two transmitters (the paper has three): each its own preset, data, student, CAT
    compression ratio and head; one stage-2 optimizer; a two-task bundle."""
    from rkdsc.common.bundle.manifest import verify_bundle
    from rkdsc.common.bundle.runtime import load_bundle
    from rkdsc.common.train.distill import make_tasks, run_stage1, run_stage2
    from rkdsc.common.train.export import export_from_workdir

    src = Path(load_preset("smoke").source).read_text()
    b_file = tmp_path / "smoke-b.toml"
    b_file.write_text(src.replace('name = "smoke"', 'name = "smoke-b"').replace("compression_ratio = 0.8",
                                                                                  "compression_ratio = 0.5"))
    fast = {**OVERRIDES, "stage1.epochs": 1, "stage2.epochs": 1}
    presets = [load_preset("smoke", fast), load_preset(str(b_file), fast)]
    wd = tmp_path_factory.mktemp("multi")
    tasks = make_tasks(presets, wd)
    assert [t.name for t in tasks] == ["digits-smoke", "digits-smoke-b"]
    for t in tasks:
        workdir_with_teacher(tmp_path_factory, "", dest=t.workdir)
        run_stage1(t.preset, wd, task=t, log=QUIET)
    s2 = run_stage2(presets, wd, tasks=tasks, log=QUIET)
    assert [t["task"] for t in s2["tasks"]] == ["digits-smoke", "digits-smoke-b"]
    rec = log_records(wd / "stage2" / "log.jsonl")[-1]
    assert set(rec["tasks"]) == {"digits-smoke", "digits-smoke-b"}
    out = export_from_workdir(wd, tmp_path / "bundle", "rkd-sc")
    assert verify_bundle(out) == []
    b = load_bundle(out)
    assert [(t.name, t.compact_dim, t.symbols_per_image) for t in b.tasks.values()] == [
        ("digits-smoke", 12, 6), ("digits-smoke-b", 32, 16)]  # floor(64 * 0.2), floor(64 * 0.5)
    assert b.manifest["provenance"]["method"] == "rkd-sc"


def test_stage2_anchor_holds_the_encoder_near_the_teacher(trained):
    """``stage2.lambda_anchor`` keeps stage 1's MSE(h, h^Tea) in the stage-2 loss: it is logged,
    and the stage-2 student's feature MSE to the teacher ends lower than without it (the
    detached L_RE target leaves the encoder's output free to drift)."""
    from rkdsc.common.data.datasets import build_datasets
    from rkdsc.common.models.registry import load_trained
    from rkdsc.common.train.distill import feature_mse, run_stage2
    from rkdsc.common.train.features import preset_teacher_features
    from rkdsc.common.train.teacher import get_teacher

    wd = trained["wd"]
    p = smoke(**{"stage2.lambda_anchor": 1.0})
    run_stage2(p, wd, log=QUIET, out_name="stage2-anchor")
    recs = log_records(wd / "stage2-anchor" / "log.jsonl")
    assert all(r["tasks"]["digits"]["loss_anchor"] >= 0 for r in recs)
    assert "loss_anchor" not in log_records(wd / "stage2" / "log.jsonl")[-1]["tasks"]["digits"]
    _, val_ds, _ = build_datasets(p)
    feats = preset_teacher_features(p, wd, get_teacher(p, wd, log=QUIET, device=torch.device("cpu")), val_ds)
    mse = {name: feature_mse(load_trained(wd / name / "digits")[0].student, val_ds, feats, 64, torch.device("cpu"))
           for name in ("stage2", "stage2-anchor")}
    assert mse["stage2-anchor"] < mse["stage2"], mse
    assert recs[-1]["tasks"]["digits"]["loss_anchor"] == pytest.approx(mse["stage2-anchor"], rel=0.5)
