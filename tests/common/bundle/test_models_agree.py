"""The manifest must agree with its ONNX files (issue "Multi-task Fig. 1", item 6).

A manifest whose ``input.size``, ``num_classes`` or (self-consistent) ``compact_dim`` no longer
matches the models used to verify OK, and then the edge crashed mid-run with an onnxruntime
traceback or the server failed every frame. Each case below edits manifest.json in a copy of the
bundle (the components' sha256 covers only the ONNX files) *and* the shapes its components
declare, so that only the check against the real ONNX graphs can catch it: ``rkdsc bundle
verify`` exits 1, ``load_bundle`` raises, and ``rkdsc server`` / ``rkdsc edge`` exit 2, each
naming the key and the file.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rkdsc.common.bundle.manifest import (MANIFEST_NAME, BundleError, compact_dim_for, model_problems,
                                          onnx_io_shapes, sha256_file, symbols_for, validate_manifest,
                                          verify_bundle)
from rkdsc.common.bundle.runtime import EdgeModel, ServerModel, load_bundle, make_session
from tests.conftest import write_toml

RKDSC = [sys.executable, "-m", "rkdsc.common.cli"]


def _shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


@pytest.fixture
def copy_dir(bundle_dir, tmp_path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(bundle_dir, dst)
    return dst


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / MANIFEST_NAME).read_text())


def _write(bundle: Path, m: dict) -> None:
    (bundle / MANIFEST_NAME).write_text(json.dumps(m, indent=2))


def _task(m: dict) -> tuple[dict, str, str]:
    t = m["tasks"][0]
    return t, t.get("edge", f"{t['name']}.edge"), t.get("server", f"{t['name']}.server")


def _real(bundle: Path, m: dict, comp: str):
    return onnx_io_shapes(bundle / m["components"][comp]["file"])


# ----------------------------------------------------------------------------- the three mismatches

def _wrong_input_size(bundle: Path) -> list[str]:
    """input.size twice the model's (the declared image shape edited to match)."""
    m = _manifest(bundle)
    _, edge, _ = _task(m)
    image = _real(bundle, m, edge)[0]["image"]
    h = image[2]
    m["input"]["size"] = 2 * h
    m["components"][edge].setdefault("inputs", {})["image"] = {"dtype": "float32",
                                                               "shape": [image[0], 3, 2 * h, 2 * h]}
    _write(bundle, m)
    return [f"input.size: expected {h} (the input of component {edge!r} {m['components'][edge]['file']}: "
            f"image {_shape(image)}), got {2 * h}"]


def _wrong_num_classes(bundle: Path) -> list[str]:
    """num_classes half the model's, with as many class_names and the declared logits edited."""
    m = _manifest(bundle)
    t, _, server = _task(m)
    logits = _real(bundle, m, server)[1]["logits"]
    c = logits[1]
    t["num_classes"] = c // 2
    t["class_names"] = t["class_names"][:c // 2]
    if t.get("class_ids"):
        t["class_ids"] = t["class_ids"][:c // 2]
    m["components"][server].setdefault("outputs", {})["logits"] = {"dtype": "float32", "shape": [logits[0], c // 2]}
    _write(bundle, m)
    return [f"tasks[0].num_classes: expected {c} (the output of component {server!r} "
            f"{m['components'][server]['file']}: logits {_shape(logits)}), got {c // 2}"]


def _wrong_compact_dim(bundle: Path) -> list[str]:
    """compression_ratio, compact_dim, symbols_per_image and the declared symbol shapes changed
    together (self-consistent), the models left as they are."""
    m = _manifest(bundle)
    t, edge, server = _task(m)
    old = t.get("compact_dim", m["compact_dim"])
    ratio = next(r for r in (0.75, 0.5, 0.9, 0.25) if compact_dim_for(m["feature_dim"], r) != old)
    new = compact_dim_for(m["feature_dim"], ratio)
    for obj in (m, t):
        obj.update(compression_ratio=ratio, compact_dim=new, symbols_per_image=symbols_for(new))
    for comp, kind in ((edge, "outputs"), (server, "inputs")):
        m["components"][comp].setdefault(kind, {})["symbols"] = {"dtype": "float32", "shape": ["batch", new]}
    _write(bundle, m)
    out_sym = _real(bundle, m, edge)[1]["symbols"]
    in_sym = _real(bundle, m, server)[0]["symbols"]
    return [f"tasks[0].compact_dim: expected {old} (the output of component {edge!r} "
            f"{m['components'][edge]['file']}: symbols {_shape(out_sym)}), got {new}",
            f"tasks[0].compact_dim: expected {old} (the input of component {server!r} "
            f"{m['components'][server]['file']}: symbols {_shape(in_sym)}), got {new}"]


CASES = {"input.size": _wrong_input_size, "num_classes": _wrong_num_classes, "compact_dim": _wrong_compact_dim}


def test_the_good_bundle_agrees_with_its_models(bundle_dir):
    assert verify_bundle(bundle_dir) == []
    load_bundle(bundle_dir)


def test_the_file_reader_sees_what_onnxruntime_sees(bundle_dir):
    """onnx_io_shapes (no onnx package, weights not decoded) == the session's own shapes."""
    m = _manifest(bundle_dir)
    for comp in m["components"].values():
        path = bundle_dir / comp["file"]
        session = make_session(path, intra_op_threads=1)
        assert onnx_io_shapes(path) == ({i.name: list(i.shape) for i in session.get_inputs()},
                                        {o.name: list(o.shape) for o in session.get_outputs()})


@pytest.mark.parametrize("case", list(CASES))
def test_verify_and_load_refuse_a_manifest_that_disagrees_with_its_models(copy_dir, case):
    want = CASES[case](copy_dir)
    manifest = copy_dir / MANIFEST_NAME
    # the manifest on its own is sound: only the real models can tell
    assert validate_manifest(_manifest(copy_dir)) == []
    problems = verify_bundle(copy_dir)
    assert problems == [f"{manifest}: {w}" for w in want], problems
    with pytest.raises(BundleError) as err:
        load_bundle(copy_dir)
    for w in want:
        assert w in str(err.value)
    # loaded without verification, the parts still compare the manifest with their sessions
    bundle = load_bundle(copy_dir, verify=False)
    task = bundle.task()
    refused = 0
    for part in (EdgeModel, ServerModel):
        try:
            part(bundle, task.name, intra_op_threads=1)
        except BundleError as exc:
            refused += 1
            assert case in str(exc) and str(copy_dir) in str(exc), str(exc)
    assert refused >= 1


@pytest.mark.parametrize("case", list(CASES))
def test_commands_refuse_at_start_naming_the_key_and_the_file(copy_dir, tmp_path, case):
    """`rkdsc bundle verify` exits 1; `rkdsc server` and `rkdsc edge` refuse to start (exit 2)
    without a traceback, before the edge writes anything."""
    want = CASES[case](copy_dir)
    task = _manifest(copy_dir)["tasks"][0]["name"]
    images = tmp_path / "images"
    images.mkdir()
    config = write_toml(tmp_path / "topology.toml", {},
                        {"bundle": {"path": str(copy_dir)},
                         "server": {"host": "127.0.0.1", "port": 0, "metrics_port": -1},
                         "basestation": {"host": "127.0.0.1", "port": 0, "metrics_port": -1}},
                        [{"id": "edge-a", "task": task, "snr_db": 10.0, "images": str(images)}])
    out = tmp_path / "out"
    runs = {"verify": ([*RKDSC, "bundle", "verify", str(copy_dir)], 1),
            "server": ([*RKDSC, "server", "--config", str(config)], 2),
            "edge": ([*RKDSC, "edge", "--config", str(config), "--id", "edge-a", "--out", str(out),
                      "--relay", "127.0.0.1:9"], 2)}
    for name, (args, status) in runs.items():
        proc = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == status, (name, proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr, (name, proc.stderr)
        for w in want:
            assert w in proc.stderr, (name, w, proc.stderr)
    assert not (out / "results.jsonl").exists()


def test_a_component_that_is_not_an_onnx_model_is_named(copy_dir):
    m = _manifest(copy_dir)
    _, edge, _ = _task(m)
    path = copy_dir / m["components"][edge]["file"]
    path.write_bytes(b"\x0a\x05hello this is not a model")
    m["components"][edge]["sha256"] = sha256_file(path)
    _write(copy_dir, m)
    problems = verify_bundle(copy_dir)
    assert len(problems) == 1 and str(path) in problems[0] and repr(edge) in problems[0], problems
    assert "cannot read the model's inputs and outputs" in problems[0]


# ----------------------------------------------------------------------------- model_problems itself

@pytest.fixture
def manifest(bundle_dir) -> dict:
    return _manifest(bundle_dir)


def test_dynamic_dimensions_are_skipped(manifest):
    _, edge, server = _task(manifest)
    assert model_problems(manifest, edge, {"image": ["b", 3, "h", None], "snr_db": ["b"]},
                          {"symbols": [None, "k"]}) == []
    assert model_problems(manifest, server, {"symbols": ["b", None], "snr_db": ["b"]},
                          {"logits": ["b", None]}) == []
    assert model_problems(manifest, server, {"symbols": None, "snr_db": None}, {"logits": None}) == []


def test_each_fixed_dimension_must_agree(manifest):
    t, edge, server = _task(manifest)
    h, w = (manifest["input"]["size"],) * 2 if isinstance(manifest["input"]["size"], int) else manifest["input"]["size"]
    k, c = t.get("compact_dim", manifest["compact_dim"]), t["num_classes"]
    key_k = "tasks[0].compact_dim" if "compact_dim" in t else "compact_dim"
    assert model_problems(manifest, edge, {"image": [1, 3, h, w], "snr_db": [1]}, {"symbols": [1, k]}) == []
    got = model_problems(manifest, edge, {"image": ["b", 3, h, w + 1], "snr_db": ["b"]}, {"symbols": ["b", k]},
                         file="e.onnx")
    assert got == [f"input.size: expected [{h}, {w + 1}] (the input of component {edge!r} e.onnx: "
                   f"image [b, 3, {h}, {w + 1}]), got {manifest['input']['size']!r}"]
    got = model_problems(manifest, edge, {"image": ["b", 1, h, w], "snr_db": ["b"]}, {"symbols": ["b", k]})
    assert len(got) == 1 and "3 channels" in got[0]
    got = model_problems(manifest, edge, {"image": ["b", 3, h], "snr_db": ["b"]}, {"symbols": ["b", k]})
    assert len(got) == 1 and "[batch, 3, H, W]" in got[0]
    got = model_problems(manifest, server, {"symbols": ["b", k + 1], "snr_db": ["b"]}, {"logits": ["b", c + 1]},
                         file="s.onnx")
    assert got == [f"{key_k}: expected {k + 1} (the input of component {server!r} s.onnx: symbols [b, {k + 1}]), "
                   f"got {k}",
                   f"tasks[0].num_classes: expected {c + 1} (the output of component {server!r} s.onnx: "
                   f"logits [b, {c + 1}]), got {c}"]
    got = model_problems(manifest, server, {"x": ["b", k], "snr_db": ["b"]}, {"logits": ["b", c]})
    assert len(got) == 1 and "tasks[0].server" in got[0] and "expected inputs ['symbols', 'snr_db']" in got[0]
    assert model_problems(manifest, "no-such-component", {}, {}) == []


def test_sessions_spin_wait_by_default_and_a_service_can_turn_it_off(bundle_dir):
    """onnxruntime's intra-op spinning: left on by default (the in-process pipeline), off for the
    edge server (``[server] onnx_spin_wait = false``, the default) and for ServerModel(spin_wait=False)."""
    from rkdsc.common.config import ServerConfig

    m = _manifest(bundle_dir)
    path = bundle_dir / next(iter(m["components"].values()))["file"]
    key = "session.intra_op.allow_spinning"
    off = make_session(path, intra_op_threads=2, spin_wait=False).get_session_options()
    assert off.get_session_config_entry(key) == "0"
    on = make_session(path, intra_op_threads=2).get_session_options()
    with pytest.raises(RuntimeError, match=key):  # not set: onnxruntime's default (spinning)
        on.get_session_config_entry(key)
    assert ServerConfig().onnx_spin_wait is False
    bundle = load_bundle(bundle_dir)
    server = ServerModel(bundle, bundle.task_names[0], spin_wait=False)
    assert server.session.get_session_options().get_session_config_entry(key) == "0"
