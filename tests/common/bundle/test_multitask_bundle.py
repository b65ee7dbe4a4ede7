"""Multi-task bundles (issue 12): per-task input / feature width in manifest format 2, the
format-1 reader, ``rkdsc bundle merge`` and its refusals, per-task checks against the models."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from rkdsc.common.bundle import load_bundle  # noqa: E402
from rkdsc.common.bundle.cli import cli as bundle_cli  # noqa: E402
from rkdsc.common.bundle.manifest import (FORMAT_VERSION, MANIFEST_NAME, BundleError, read_manifest,  # noqa: E402
                                          task_specs, validate_manifest, verify_bundle, write_manifest)
from rkdsc.common.bundle.merge import merge_bundles  # noqa: E402


def _v1_manifest() -> dict:
    return {
        "format_version": 1,
        "tasks": [{"name": "a", "num_classes": 2, "class_names": ["x", "y"]},
                  {"name": "b", "num_classes": 3, "class_names": ["p", "q", "r"]}],
        "feature_dim": 64, "compact_dim": 12, "compression_ratio": 0.8, "symbols_per_image": 6,
        "input": {"size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        "snr_train_db": [5.0, 20.0],
        "components": {f"{t}.{r}": {"file": f"{t}.{r}.onnx", "sha256": "a" * 64, "params": 1}
                       for t in "ab" for r in ("edge", "server")},
        "provenance": {},
    }


def test_format_1_is_read_with_the_top_level_values_for_every_task():
    m = _v1_manifest()
    assert FORMAT_VERSION == 2
    assert validate_manifest(m) == []
    specs = task_specs(m)
    assert [s.input.size for s in specs] == [(32, 32), (32, 32)]
    assert [s.feature_dim for s in specs] == [64, 64]
    assert [s.snr_train_db for s in specs] == [(5.0, 20.0), (5.0, 20.0)]


def test_per_task_input_overrides_the_top_level():
    m = _v1_manifest()
    m["format_version"] = 2
    m["tasks"][1]["input"] = {"size": 48, "mean": [0.5] * 3, "std": [0.2] * 3}
    assert validate_manifest(m) == []
    assert task_specs(m)[1].input.size == (48, 48)
    assert task_specs(m)[0].input.size == (32, 32)


def test_format_2_compact_rule_uses_the_task_feature_dim():
    m = _v1_manifest()
    m["format_version"] = 2
    m["tasks"][1].update(feature_dim=128, compression_ratio=0.5, compact_dim=64, symbols_per_image=32)
    assert validate_manifest(m) == []
    m["tasks"][1]["compact_dim"] = 12  # right for the top-level width 64, wrong for the task's 128
    problems = validate_manifest(m)
    assert any(p.startswith("tasks[1].compact_dim: expected floor(feature_dim * (1 - compression_ratio)) = "
                            "floor(128 * (1 - 0.5)) = 64") for p in problems), problems


def test_format_2_top_level_input_is_the_first_task():
    m = _v1_manifest()
    m["format_version"] = 2
    m["tasks"][0]["input"] = {"size": 40, "mean": [0.5] * 3, "std": [0.25] * 3}
    problems = validate_manifest(m)
    assert any(p.startswith("input: expected the first task's value") for p in problems), problems


# ----------------------------------------------------------------------------- real bundles

def test_merged_bundle_serves_each_task_at_its_own_size(multitask_bundle_dir):
    assert verify_bundle(multitask_bundle_dir) == []
    m = read_manifest(multitask_bundle_dir)
    assert m["format_version"] == 2
    assert "input" not in m["tasks"][0] and m["tasks"][1]["input"]["size"] == 48  # only where it differs
    b = load_bundle(multitask_bundle_dir)
    assert b.task_names == ["digits", "shapes"]
    digits, shapes = b.task("digits"), b.task("shapes")
    assert (digits.input.size, shapes.input.size) == ((32, 32), (48, 48))
    assert (digits.num_classes, shapes.num_classes) == (10, 8)
    assert (digits.compact_dim, shapes.compact_dim) == (12, 32)  # 64 * (1 - 0.8), 64 * (1 - 0.5)
    from rkdsc.common.bundle import EdgeModel, InProcessPipeline

    rng = np.random.default_rng(0)
    out = InProcessPipeline(b, "shapes", seed=3).run(rng.normal(size=(3, 3, 48, 48)).astype(np.float32), 10.0)
    assert out["logits"].shape == (3, 8) and np.isfinite(out["logits"]).all()
    with pytest.raises(ValueError, match=r"images: expected float32 \[B, 3, 48, 48\]"):
        EdgeModel(b, "shapes").encode(np.zeros((1, 3, 32, 32), np.float32), 10.0)
    prov = m["provenance"]
    assert [s["tasks"] for s in prov["merged_from"]] == [["digits"], ["shapes"]]
    assert set(prov["tasks"]) == {"digits", "shapes"}


def test_bundle_info_shows_every_task(multitask_bundle_dir, capsys):
    assert bundle_cli(["info", str(multitask_bundle_dir)]) == 0
    text = capsys.readouterr().out
    assert "digits: 10 classes" in text and "shapes: 8 classes" in text
    assert "input 32x32 RGB" in text and "input 48x48 RGB" in text
    assert "symbols_per_image 6" in text and "symbols_per_image 16" in text


def test_per_task_input_size_is_checked_against_its_model(multitask_bundle_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(multitask_bundle_dir, bad)
    m = read_manifest(bad)
    m["tasks"][1]["input"]["size"] = 64
    write_manifest(bad, m)
    problems = verify_bundle(bad)
    assert any("tasks[1].input.size: expected 48" in p and "shapes.edge.onnx" in p for p in problems), problems
    with pytest.raises(BundleError, match=r"tasks\[1\]\.input\.size: expected 48"):
        load_bundle(bad)


def test_merge_refuses_a_task_name_clash_and_writes_nothing(bundle_dir, multitask_bundle_dir, tmp_path, capsys):
    out = tmp_path / "clash"
    rc = bundle_cli(["merge", str(multitask_bundle_dir), str(bundle_dir), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "task name 'digits' is in both" in err and str(bundle_dir) in err and str(multitask_bundle_dir) in err
    assert not out.exists()
    assert not list(tmp_path.glob(".clash-*"))  # no half-written folder left beside it


def test_merge_refuses_a_bundle_that_does_not_verify(bundle_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(bundle_dir, broken)
    m = read_manifest(broken)
    (broken / m["components"]["digits.server"]["file"]).write_bytes(b"not the model")
    renamed = tmp_path / "renamed"
    shutil.copytree(bundle_dir, renamed)
    _rename_task(renamed, "digits", "other")
    with pytest.raises(BundleError, match=r"bundle .*broken does not verify:\n.*sha256 mismatch"):
        merge_bundles([broken, renamed], tmp_path / "out")


def _rename_task(bundle: Path, old: str, new: str) -> None:
    """Rename a task, its components and their files (as exporting it under another name would)."""
    m = read_manifest(bundle)
    comps = {}
    for name, comp in m["components"].items():
        new_name, new_file = name.replace(old, new, 1), comp["file"].replace(old, new, 1)
        (bundle / comp["file"]).rename(bundle / new_file)
        comps[new_name] = {**comp, "file": new_file}
    m["components"] = comps
    for t in m["tasks"]:
        if t["name"] == old:
            t.update(name=new, edge=t["edge"].replace(old, new, 1), server=t["server"].replace(old, new, 1))
    write_manifest(bundle, m)


def test_merge_reads_format_1_and_can_write_into_a_source(bundle_dir, tmp_path):
    """A version-1 bundle (the committed default before issue 12) merges; --out may be a source."""
    v1 = tmp_path / "v1"
    shutil.copytree(bundle_dir, v1)
    m = read_manifest(v1)
    m["format_version"] = 1
    for t in m["tasks"]:
        for key in ("input", "feature_dim", "snr_train_db"):
            t.pop(key, None)
    (v1 / MANIFEST_NAME).write_text(json.dumps(m))
    assert verify_bundle(v1) == []
    other = tmp_path / "other"
    shutil.copytree(bundle_dir, other)
    _rename_task(other, "digits", "digits2")
    merged = merge_bundles([v1, other], v1)
    assert [t["name"] for t in merged["tasks"]] == ["digits", "digits2"]
    assert "input" not in merged["tasks"][0] and merged["input"] == m["input"]  # the first task's, at the top
    assert merged["tasks"][1].get("input") is None  # the same preprocessing: not repeated
    assert verify_bundle(v1) == []
    assert load_bundle(v1).task("digits2").compact_dim == load_bundle(bundle_dir).task("digits").compact_dim


def test_merge_keeps_the_sources_outputs_identical(bundle_dir, multitask_bundle_dir):
    """The merged digits task computes exactly what the single-task bundle computes."""
    from rkdsc.common.bundle import InProcessPipeline

    x = np.random.default_rng(1).normal(size=(4, 3, 32, 32)).astype(np.float32)
    a = InProcessPipeline(load_bundle(bundle_dir), "digits", seed=5).run(x, 5.0)["logits"]
    b = InProcessPipeline(load_bundle(multitask_bundle_dir), "digits", seed=5).run(x, 5.0)["logits"]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("key,edit,want", [
    ("num_classes", lambda m: (m["tasks"][1].update(num_classes=5, class_names=list("abcde")),
                               m["components"]["shapes.server"].pop("outputs")),
     "tasks[1].num_classes: expected 8"),
    ("compact_dim", lambda m: (m["tasks"][1].update(compression_ratio=0.8, compact_dim=12, symbols_per_image=6),
                               m["components"]["shapes.server"].pop("inputs"),
                               m["components"]["shapes.edge"].pop("outputs")),
     "tasks[1].compact_dim: expected 32"),
])
def test_second_task_dimensions_are_checked_against_its_models(multitask_bundle_dir, tmp_path, key, edit, want):
    """Item 6 per task: a self-consistent but wrong second task is refused by verify and at load,
    naming the key and the file (the declared shapes removed, so only the ONNX graphs can tell)."""
    bad = tmp_path / key
    shutil.copytree(multitask_bundle_dir, bad)
    m = read_manifest(bad)
    edit(m)
    write_manifest(bad, m)
    problems = verify_bundle(bad)
    assert any(p.split(": ", 1)[1].startswith(want) and "shapes." in p and ".onnx" in p for p in problems), problems
    with pytest.raises(BundleError, match=want.replace("[", r"\[").replace("]", r"\]")):
        load_bundle(bad)
