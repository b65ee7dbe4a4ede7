"""A CNN teacher (ResNet-9) through the whole RKD recipe at smoke scale, the teacher cache by
content, and repeatable seeded runs (issue 17). Torch runs single-threaded: results do not
depend on machine load, and a repeat on the same machine is exact."""
from __future__ import annotations

import json
import math

import pytest
import torch

from tests.common.train.test_distill import QUIET, one_thread, smoke  # noqa: F401  (one_thread: autouse)

CNN = {  # a width-4 ResNet-9 on the smoke digits, Page's recipe shape (SGD-Nesterov, one-cycle)
    "teacher.name": "resnet9", "teacher.timm_kwargs": {"width": 4, "num_classes": 64}, "teacher.train_epochs": 3,
    "teacher.train_optimizer": "sgd", "teacher.train_lr": 0.05, "teacher.train_schedule": "onecycle",
    "teacher.train_warmup": 0.2, "teacher.train_weight_decay": 5e-4, "teacher.train_clip_norm": 0.0,
    "teacher.batch_size": 32, "data.augment": "crop",
}
SHORT = {"search.epochs": 1, "stage1.epochs": 1, "stage2.epochs": 1, "baseline.epochs": 1}


def cnn_smoke(cache_dir, **extra):
    return smoke(**{**CNN, "teacher.cache_dir": str(cache_dir), **extra})


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """The CNN teacher trained once into a work dir with a private teacher cache."""
    from rkdsc.common.train.teacher import get_teacher

    base = tmp_path_factory.mktemp("cnn-teacher")
    p = cnn_smoke(base / "cache")
    lines: list[str] = []
    teacher = get_teacher(p, base / "run", log=lines.append, device=torch.device("cpu"))
    return {"base": base, "preset": p, "teacher": teacher, "lines": lines}


# -- the model ------------------------------------------------------------------------------

def test_resnet9_shapes_params_and_projection_dim():
    from rkdsc.common.models.cnn import ResNet9
    from rkdsc.common.models.teacher import build_teacher

    net = ResNet9(num_classes=256, width=64)
    assert sum(p.numel() for p in net.parameters()) == 6_573_130 - (512 * 10 + 10) + (512 * 256 + 256)  # Page's 6.57M, 256-d fc
    t = build_teacher("resnet9", None, feature_dim=64, img_size=32, width=4, num_classes=64)
    assert t.adapter is None and t.out_dim == 64 and t.label == "resnet9 (width=4, num_classes=64)"
    x = torch.randn(3, 3, 32, 32)
    assert t(x).shape == (3, 64) and t(torch.randn(2, 3, 64, 64)).shape == (2, 64)  # other sizes are resized
    assert not any(p.requires_grad for p in t.backbone.parameters())
    # pooled features of another size are projected by the adapter (as a checkpoint teacher's would be)
    t2 = build_teacher("resnet9", None, feature_dim=64, img_size=32, width=4, num_classes=128)
    assert t2.adapter is not None and t2(x).shape == (3, 64)
    with pytest.raises(ValueError, match="depth"):
        build_teacher("resnet9", None, feature_dim=64, img_size=32, width=4, depth=3)


def test_lr_factor_warmup_then_cosine_or_onecycle():
    from rkdsc.common.train.teacher import lr_factor

    total = 100
    up = [lr_factor(s, total, 0.2, "onecycle") for s in range(20)]
    assert up == sorted(up) and math.isclose(up[-1], 1.0)
    down = [lr_factor(s, total, 0.2, "onecycle") for s in range(20, total)]
    assert down == sorted(down, reverse=True) and math.isclose(down[0], 1.0) and 0.0 < down[-1] < 0.02
    assert math.isclose(lr_factor(total, total, 0.2, "onecycle"), 0.0)
    cos = [lr_factor(s, total, 0.05, "cosine") for s in range(5, total)]
    assert cos == sorted(cos, reverse=True) and cos[-1] >= 0.01


# -- training and the cache by content --------------------------------------------------------

def test_cnn_teacher_trains_and_is_stored_by_content(cnn):
    from rkdsc.common.train.teacher import teacher_fingerprint, teacher_key

    p, base = cnn["preset"], cnn["base"]
    assert "no pretrained teacher checkpoint given: training the preset's own teacher" in cnn["lines"]
    meta = json.loads((base / "run" / "teacher" / "teacher.json").read_text())
    h = meta["history"]
    assert len(h) == 3 and h[-1]["loss"] < h[0]["loss"]
    assert all(r["epoch_cpu_s"] >= 0 and r["epoch_s"] > 0 and "load_avg_1m" in r for r in h)
    key = teacher_key(teacher_fingerprint(p))
    assert meta["key"] == key and (base / "cache" / key / "teacher.safetensors").is_file()
    assert meta["fingerprint"]["data"]["train_n"] == 480 and len(meta["fingerprint"]["data"]["train_sha256"]) == 64


def test_another_work_dir_reuses_the_cached_teacher(cnn):
    from rkdsc.common.train.teacher import get_teacher

    p, base = cnn["preset"], cnn["base"]
    lines: list[str] = []
    # threads and the cache location are not part of the recipe: the same teacher
    t = get_teacher(smoke(**CNN, **{"teacher.cache_dir": str(base / "cache"), "teacher.train_threads": 1}),
                    base / "other", log=lines.append, device=torch.device("cpu"))
    assert any("reusing the cached teacher" in line for line in lines)
    assert not any("training" in line for line in lines)
    assert t.checkpoint_sha256 == cnn["teacher"].checkpoint_sha256
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(t(x), cnn["teacher"](x))
    assert (base / "other" / "teacher" / "head.safetensors").is_file()


def test_an_interrupted_teacher_resumes_after_its_last_epoch_and_ends_as_an_uninterrupted_one(cnn):
    """Training stopped after epoch 2 of 3 (the log call raises, as a kill would stop it) goes on
    from the checkpoint at the next call: same weights and accuracies as the uninterrupted run."""
    from safetensors.torch import load_file

    from rkdsc.common.train.teacher import get_teacher

    base = cnn["base"]
    p = cnn_smoke(base / "cache-resume")  # a private cache: the finished teacher must not be reused

    class Killed(Exception):
        pass

    def killing_log(line: str) -> None:
        if line.startswith("teacher epoch 2/3"):
            raise Killed(line)

    with pytest.raises(Killed):
        get_teacher(p, base / "resumed", log=killing_log, device=torch.device("cpu"))
    ckpt = base / "resumed" / "teacher" / "checkpoint"
    assert json.loads((ckpt / "state.json").read_text())["epoch"] == 2
    assert not (base / "resumed" / "teacher" / "teacher.safetensors").exists()
    lines: list[str] = []
    get_teacher(p, base / "resumed", log=lines.append, device=torch.device("cpu"))
    assert any(line.startswith("teacher: resuming after epoch 2/3") for line in lines)
    assert [line for line in lines if line.startswith("teacher epoch")][0].startswith("teacher epoch 3/3")
    assert not ckpt.exists()  # the finished teacher replaces its checkpoint
    run = lambda wd: json.loads((wd / "teacher" / "teacher.json").read_text())  # noqa: E731
    a, b = run(base / "resumed"), run(base / "run")
    assert [r["val_acc"] for r in a["history"]] == [r["val_acc"] for r in b["history"]]
    assert [r["loss"] for r in a["history"]] == [r["loss"] for r in b["history"]]
    wa, wb = (load_file(str(wd / "teacher" / "teacher.safetensors")) for wd in (base / "resumed", base / "run"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # a checkpoint of other settings is not resumed from
    other = cnn_smoke(base / "cache-other", **{"teacher.label_smoothing": 0.2})
    with pytest.raises(Killed):
        get_teacher(other, base / "other-settings", log=killing_log, device=torch.device("cpu"))
    lines.clear()
    with pytest.raises(Killed):
        get_teacher(cnn_smoke(base / "cache-empty"), base / "other-settings",
                    log=lambda s: (lines.append(s), killing_log(s)), device=torch.device("cpu"))
    assert any("was written with other settings: training from the start" in line for line in lines)
    assert any(line.startswith("teacher epoch 1/3") for line in lines)


def test_a_changed_recipe_or_seed_is_another_key(cnn):
    from rkdsc.common.train.teacher import teacher_fingerprint, teacher_key

    p, base = cnn["preset"], cnn["base"]
    key = teacher_key(teacher_fingerprint(p))
    for change in ({"teacher.label_smoothing": 0.2}, {"seed": 1}, {"data.augment": "crop-flip"},
                   {"data.max_per_class": 20}):
        assert teacher_key(teacher_fingerprint(cnn_smoke(base / "cache", **change))) != key, change
    assert teacher_key(teacher_fingerprint(cnn_smoke(base / "elsewhere"))) == key


# -- the RKD recipe with the CNN teacher ---------------------------------------------------------

def test_kd_guided_search_and_both_rkd_stages_use_the_cnn_teacher(cnn):
    from rkdsc.common.models.registry import get_method
    from rkdsc.common.train.baselines import run_baseline
    from rkdsc.common.train.distill import make_tasks, run_stage1, run_stage2
    from rkdsc.common.train.search import run_search

    base, teacher = cnn["base"], cnn["teacher"]
    p = cnn_smoke(base / "cache", **{**SHORT, "stage1.epochs": 3})
    wd = base / "run"
    arch = run_search(p, "kdl-darts", wd, teacher=teacher, log=QUIET, device="cpu")
    assert arch["teacher"]["name"] == "resnet9" and arch["teacher"]["sha256"] == teacher.checkpoint_sha256
    assert len(arch["depths"]) == 4 and all(r["loss_w"] == r["loss_w"] for r in arch["history"])  # finite
    task = make_tasks([p], wd, [wd / "search-kdl-darts" / "arch.json"])[0]
    s1 = run_stage1(p, wd, task=task, teacher=teacher, log=QUIET)
    assert s1["depths"] == arch["depths"] and s1["val_mse_final"] < s1["val_mse_init"]
    s2 = run_stage2(p, wd, tasks=[task], teachers=[teacher], log=QUIET)
    assert 0.0 <= s2["tasks"][0]["val"]["val_acc_awgn_20db"] <= 1.0
    run_baseline(p, "jscc-teacher", wd, task=task, teacher=teacher, log=QUIET)
    system, spec = get_method("jscc-teacher").load(wd / "baseline-jscc-teacher" / "digits")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(system.encoder(x), teacher(x), atol=1e-5)  # the deployed encoder is the CNN teacher


# -- repeatable runs (issue 17, item 4) -------------------------------------------------------------

def _run_once(p, wd, teacher_dir):
    import shutil

    from rkdsc.common.train.distill import make_tasks, run_stage1, run_stage2
    from rkdsc.common.train.search import run_search

    shutil.copytree(teacher_dir, wd / "teacher")
    archs = {m: run_search(p, m, wd, log=QUIET, device="cpu") for m in ("kdl-darts", "darts")}
    task = make_tasks([p], wd, [wd / "search-kdl-darts" / "arch.json"])[0]
    s1 = run_stage1(p, wd, task=task, log=QUIET)
    s2 = run_stage2(p, wd, tasks=[task], log=QUIET)
    return archs, s1, s2


def test_same_preset_and_seed_twice_give_the_same_search_and_accuracies(cnn, tmp_path):
    p = cnn_smoke(cnn["base"] / "cache", **SHORT)
    a = _run_once(p, tmp_path / "a", cnn["base"] / "run" / "teacher")
    b = _run_once(p, tmp_path / "b", cnn["base"] / "run" / "teacher")
    for m in ("kdl-darts", "darts"):
        assert a[0][m]["depths"] == b[0][m]["depths"], m
        assert a[0][m]["alpha"] == b[0][m]["alpha"], m  # bit-identical architecture weights
        assert a[0][m]["val_acc"] == b[0][m]["val_acc"], m
    assert a[1]["val_mse_final"] == b[1]["val_mse_final"]
    assert a[2]["tasks"][0]["val"] == b[2]["tasks"][0]["val"]  # stage-2 accuracies, every SNR and channel
