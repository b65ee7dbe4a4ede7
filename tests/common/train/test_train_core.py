"""Presets, datasets, training utilities, the self-trained teacher and the feature cache
(smoke scale: a few seconds each on 2 CPU cores)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rkdsc.common.train.presets import (PresetError, available_presets, load_preset, parse_set_args, with_overrides)

SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny models: one intra-op thread avoids OpenMP spin-waiting when the 2 cores are shared
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def smoke():
    return load_preset("smoke")


@pytest.fixture(scope="module")
def teacher_workdir(tmp_path_factory, smoke):
    """A work dir holding the smoke preset's self-trained teacher (trained once per module)."""
    from rkdsc.common.train.teacher import get_teacher

    wd = tmp_path_factory.mktemp("teacher")
    lines: list[str] = []
    # a private teacher cache: another module may have trained the same teacher into the shared one
    get_teacher(with_overrides(smoke, {"teacher.cache_dir": str(wd / "cache")}), wd, log=lines.append,
                device=torch.device("cpu"))
    return wd, lines


# -- presets --------------------------------------------------------------------------------

def test_builtin_presets_load_and_are_consistent():
    names = available_presets()
    assert {"smoke", "default", "cifar10-cpu", "tinyimagenet-cpu", "paper"} <= set(names)
    for name in names:
        p = load_preset(name)
        assert p.name == name
        assert p.student.feature_dim == p.teacher.feature_dim
        assert p.student_config().input_size == p.data.input_size
        assert p.cat_config().compact_dim == int(p.teacher.feature_dim * (1 - p.cat.compression_ratio))
    # [student] and [cat] are the model configs' fields (defaults from them), less the derived ones
    from dataclasses import asdict, fields

    from rkdsc.common.models.cat import CATConfig
    from rkdsc.common.models.student import StudentConfig
    from rkdsc.common.train.presets import Preset

    d = asdict(Preset())  # all defaults
    assert d["student"] == {k: list(v) if isinstance(v, tuple) else v
                            for k, v in asdict(StudentConfig()).items() if k != "input_size"}
    assert d["cat"] == {k: v for k, v in asdict(CATConfig()).items() if k != "feature_dim"}
    assert [f.name for f in fields(p.student)] == [f.name for f in fields(StudentConfig)][1:]


def test_paper_preset_has_section_iv_a_values():
    p = load_preset("paper")
    s = p.search
    assert (s.epochs, s.lambda_j, s.t_alpha, s.t_beta, s.optimizer) == (200, 0.05, 1.0, 2.0, "sgd")
    assert (s.lr_alpha, s.lr_alpha_min, s.lr_w, s.lr_w_min, s.wd_alpha, s.wd_w) == (0.025, 1e-4, 3e-4, 1e-4, 1e-5, 1e-4)
    assert (p.stage1.epochs, p.stage1.lr, p.stage1.lr_min) == (300, 5e-4, 5e-5)
    assert (p.stage2.epochs, p.stage2.lr, p.stage2.lr_min) == (100, 5e-4, 1e-5)
    assert p.stage2.snr_db_range == [5.0, 20.0] and p.cat.compression_ratio == 0.8
    assert p.data.input_size == 224 and p.teacher.name == "vit_base_patch16_clip_224.openai"
    assert p.student.planes == [16, 32, 64, 128] and p.student.max_depth == 5 and p.cat.d_ff == 2048


def test_unknown_key_and_bad_value_errors_name_key_and_value(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[search]\nepochs = 3\nlamda_j = 0.1\n')
    with pytest.raises(PresetError, match=r"search\.lamda_j: unknown key 'lamda_j' .*got 0\.1"):
        load_preset(str(bad))
    with pytest.raises(PresetError, match=r"unknown key 'colour'"):
        load_preset("smoke", {"data.colour": "red"})
    with pytest.raises(PresetError, match=r"unknown key 'optimiser'"):
        load_preset("smoke", {"optimiser": "sgd"})
    with pytest.raises(PresetError, match=r"search\.epochs: expected an integer, got 'ten'"):
        load_preset("smoke", {"search.epochs": "ten"})
    with pytest.raises(PresetError, match=r"data\.dataset: expected one of digits, .*, got 'mnist'"):
        load_preset("smoke", {"data": {"dataset": "mnist"}})
    with pytest.raises(PresetError, match=r"stage2\.channels\[1\]: expected one of awgn, rayleigh, got 'rician2'"):
        load_preset("smoke", {"stage2.channels": ["awgn", "rician2"]})
    with pytest.raises(PresetError, match=r"student\.feature_dim: expected the teacher's feature_dim 64 .*got 32"):
        load_preset("smoke", {"student.feature_dim": 32})
    with pytest.raises(PresetError, match=r"search\.epochs: expected an integer, got True"):
        load_preset("smoke", {"search.epochs": True})
    with pytest.raises(PresetError, match=r"cat\.n_heads: expected a divisor of teacher\.feature_dim = 64, got 3"):
        load_preset("smoke", {"cat.n_heads": 3})
    with pytest.raises(PresetError, match=r"student\.input_size: unknown key 'input_size'"):  # derived: data.input_size
        load_preset("smoke", {"student.input_size": 64})
    with pytest.raises(PresetError, match=r"unknown \(built-in presets"):
        load_preset("no-such-preset")


def test_overrides_and_set_args():
    ov = parse_set_args(["search.epochs=7", "stage2.channels=[\"awgn\"]", "teacher.checkpoint=/x/y.safetensors",
                         "search.lambda_j=0.5"])
    assert ov == {"search.epochs": 7, "stage2.channels": ["awgn"], "teacher.checkpoint": "/x/y.safetensors",
                  "search.lambda_j": 0.5}
    p = load_preset("smoke", ov)
    assert p.search.epochs == 7 and p.stage2.channels == ["awgn"] and p.search.lambda_j == 0.5
    q = with_overrides(p, {"search": {"epochs": 2}})
    assert q.search.epochs == 2 and p.search.epochs == 7 and q.stage2.channels == ["awgn"]
    assert json.loads(q.to_json())["search"]["epochs"] == 2


# -- datasets -------------------------------------------------------------------------------

def test_digits_datasets_shapes_determinism_and_heldout_disjoint(smoke):
    from rkdsc.common.data.datasets import build_datasets, heldout_dataset
    from rkdsc.common.data.digits import split_indices

    tr, va, classes = build_datasets(smoke)
    assert classes == [str(i) for i in range(10)]
    x, y = tr[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(tr) + len(va) == 300 and len(va) == 60  # max_per_class 30, val_fraction 0.2
    assert np.bincount(tr.labels.numpy(), minlength=10).tolist() == [24] * 10
    # normalisation with the preset's mean / std
    raw = tr.images[0].permute(2, 0, 1).float() / 255
    assert torch.allclose(x, (raw - 0.3) / 0.33, atol=1e-6)
    # deterministic, and a different seed gives a different split
    tr2, va2, _ = build_datasets(load_preset("smoke"))
    assert np.array_equal(tr.indices, tr2.indices) and np.array_equal(va.indices, va2.indices)
    assert torch.equal(tr.images, tr2.images)
    tr3, _, _ = build_datasets(load_preset("smoke", {"seed": 1}))
    assert not np.array_equal(tr.indices, tr3.indices)
    # train / val / held-back are disjoint; the held-back part is the digits' fixed split
    held = heldout_dataset(smoke)
    _, held_idx = split_indices(1797)
    assert np.array_equal(held.indices, held_idx) and len(held) == 359
    assert not set(tr.indices) & set(va.indices)
    assert not (set(tr.indices) | set(va.indices)) & set(held.indices)
    # batched fetch equals item fetch
    batch = tr.__getitems__([3, 5])
    assert torch.equal(batch[1][0], tr[5][0]) and int(batch[1][1]) == int(tr[5][1])


def test_full_digits_split_uses_all_train_part_images():
    from rkdsc.common.data.datasets import build_datasets, heldout_dataset

    p = load_preset("default")
    tr, va, _ = build_datasets(p)
    held = heldout_dataset(p)
    assert len(tr) + len(va) + len(held) == 1797
    assert len(set(tr.indices) | set(va.indices) | set(held.indices)) == 1797


@pytest.mark.skipif(not (SHARED_DATA / "cifar10" / "train").is_dir(), reason="../shared/data/cifar10 not present")
def test_cifar10_folder_subsample():
    from rkdsc.common.data.datasets import build_datasets

    p = load_preset("cifar10-cpu", {"data.max_per_class": 4, "data.val_fraction": 0.25})
    tr, va, classes = build_datasets(p)
    assert classes[0] == "airplane" and len(classes) == 10
    assert len(tr) == 30 and len(va) == 10 and tr[0][0].shape == (3, p.data.input_size, p.data.input_size)
    assert np.bincount(va.labels.numpy(), minlength=10).tolist() == [1] * 10


def test_augment_batch_shifts_without_changing_shape():
    from rkdsc.common.data.datasets import augment_batch

    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert augment_batch(x, "none") is x
    out = augment_batch(x, "crop-flip", g, pad=2)
    assert out.shape == x.shape
    with pytest.raises(ValueError, match="rotate"):
        augment_batch(x, "rotate")


# -- common utilities -------------------------------------------------------------------------

def test_checkpoint_roundtrip_and_cosine(tmp_path):
    from rkdsc.common.train.common import JsonlLogger, cosine_lr, load_checkpoint, save_checkpoint, seed_everything

    seed_everything(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = cosine_lr(opt, 4, 1e-4)
    model(torch.randn(8, 4)).sum().backward()
    opt.step()
    sched.step()
    save_checkpoint(tmp_path / "ck", {"m": model}, {"opt": opt, "sched": sched}, {"epoch": 1, "note": "x"})
    seed_everything(1)
    model2 = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-2)
    sched2 = cosine_lr(opt2, 4, 1e-4)
    state = load_checkpoint(tmp_path / "ck", {"m": model2}, {"opt": opt2, "sched": sched2})
    assert state == {"epoch": 1, "note": "x"}
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    assert opt2.state_dict()["state"][0]["step"] == 1 and sched2.last_epoch == 1
    for _ in range(3):
        sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert load_checkpoint(tmp_path / "nothing", {"m": model2}) is None
    log = JsonlLogger(tmp_path / "log.jsonl")
    log(event="a", value=np.float32(1.5))
    log({"event": "b"})
    assert [r["event"] for r in log.read()] == ["a", "b"] and log.read()[0]["value"] == 1.5


# -- teacher ----------------------------------------------------------------------------------

def test_self_trained_teacher_is_saved_and_reused(teacher_workdir, smoke):
    from rkdsc.common.train.teacher import get_teacher, teacher_head

    wd, lines = teacher_workdir
    assert "no pretrained teacher checkpoint given: training the preset's own teacher" in lines
    meta = json.loads((wd / "teacher" / "teacher.json").read_text())
    assert meta["epochs"] == smoke.teacher.train_epochs and len(meta["history"]) == smoke.teacher.train_epochs
    assert 0.0 <= meta["val_acc"] <= 1.0 and meta["num_classes"] == 10
    lines2: list[str] = []
    t = get_teacher(smoke, wd, log=lines2.append, device=torch.device("cpu"))
    assert not any("training" in line for line in lines2) and any("reusing" in line for line in lines2)
    assert t.checkpoint_sha256 == meta["sha256"]
    assert not any(p.requires_grad for p in t.parameters())
    x = torch.randn(2, 3, 32, 32)
    assert t(x).shape == (2, smoke.teacher.feature_dim)
    head = teacher_head(wd)
    assert head(t(x)).shape == (2, 10)
    # the same file given as an explicit checkpoint gives the same teacher
    t2 = get_teacher(load_preset("smoke", {"teacher.checkpoint": str(wd / "teacher" / "teacher.safetensors"),
                                           "teacher.train_epochs": 0}), wd, log=lambda _m: None,
                     device=torch.device("cpu"))
    assert torch.equal(t(x), t2(x))


def test_changed_teacher_settings_retrain(teacher_workdir, tmp_path):
    import shutil

    from rkdsc.common.train.teacher import get_teacher

    wd, _ = teacher_workdir
    shutil.copytree(wd / "teacher", tmp_path / "teacher")
    lines: list[str] = []
    get_teacher(load_preset("smoke", {"teacher.train_epochs": 1}), tmp_path, log=lines.append,
                device=torch.device("cpu"))
    assert any("trained with other settings: retraining" in line for line in lines)
    assert json.loads((tmp_path / "teacher" / "teacher.json").read_text())["epochs"] == 1


def test_teacher_without_checkpoint_or_training_is_an_error(tmp_path):
    from rkdsc.common.train.teacher import TeacherError, get_teacher

    p = load_preset("smoke", {"teacher.train_epochs": 0})
    with pytest.raises(TeacherError, match="teacher.checkpoint"):
        get_teacher(p, tmp_path)
    p = load_preset("smoke", {"teacher.checkpoint": str(tmp_path / "missing.safetensors")})
    with pytest.raises(TeacherError, match="missing.safetensors"):
        get_teacher(p, tmp_path)


# -- feature cache ---------------------------------------------------------------------------

def test_feature_cache_computes_once_and_key_changes_invalidate(teacher_workdir, smoke, tmp_path):
    from rkdsc.common.data.datasets import build_datasets
    from rkdsc.common.train.features import FeatureDataset, cached_teacher_features, feature_key
    from rkdsc.common.train.teacher import get_teacher

    wd, _ = teacher_workdir
    teacher = get_teacher(smoke, wd, log=lambda _m: None, device=torch.device("cpu"))
    calls = []
    teacher.backbone.register_forward_hook(lambda *_: calls.append(1))
    tr, va, _ = build_datasets(smoke)
    cache = tmp_path / "features"
    key = feature_key(teacher, tr)
    f1 = cached_teacher_features(teacher, tr, cache, key, batch_size=64)
    n_first = len(calls)
    assert f1.shape == (len(tr), smoke.teacher.feature_dim) and n_first == 4  # ceil(240 / 64) batches
    with torch.no_grad():
        assert torch.allclose(f1[:5], teacher(torch.stack([tr[i][0] for i in range(5)])), atol=1e-5)
    n_first = len(calls)
    f2 = cached_teacher_features(teacher, tr, cache, key, batch_size=64)
    assert len(calls) == n_first and torch.equal(f1, f2)  # second call: no teacher forward
    assert len(list(cache.glob("*.safetensors"))) == 1 and len(list(cache.glob("*.json"))) == 1
    # another split -> another key -> recomputed
    fv = cached_teacher_features(teacher, va, cache, feature_key(teacher, va), batch_size=64)
    assert len(calls) == n_first + 1 and fv.shape[0] == len(va)
    # other teacher weights (sha) -> recomputed; another seed's split -> recomputed
    key_other = dict(key, teacher_sha256="0" * 64)
    cached_teacher_features(teacher, tr, cache, key_other, batch_size=64)
    assert len(calls) == n_first + 1 + 4
    tr_seed1, _, _ = build_datasets(load_preset("smoke", {"seed": 1}))
    assert feature_key(teacher, tr_seed1) != key
    assert len(list(cache.glob("*.safetensors"))) == 3
    ds = FeatureDataset(tr, f1)
    x, y, f = ds[7]
    assert torch.equal(f, f1[7]) and torch.equal(x, tr[7][0])
    with pytest.raises(ValueError, match="rows"):
        FeatureDataset(tr, f1[:-1])


def test_time_feature_cache_reports_both_epochs(teacher_workdir, smoke):
    from rkdsc.common.train.features import time_feature_cache

    wd, _ = teacher_workdir
    res = time_feature_cache(smoke, wd, max_batches=3, log=lambda _m: None)
    assert res["batches"] == 3 and res["epoch_s_recompute"] > 0 and res["epoch_s_cached"] > 0
    assert res["speedup"] == pytest.approx(res["epoch_s_recompute"] / res["epoch_s_cached"], rel=1e-2)
