"""Bundle: ONNX export parity, manifest schema and verification, runtime, CLI."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from rkdsc.common import channel  # noqa: E402
from rkdsc.common.bundle import cli as bundle_cli  # noqa: E402
from rkdsc.common.bundle.export import build_random_bundle, build_random_parts, export_bundle  # noqa: E402
from rkdsc.common.bundle.manifest import (FORMAT_VERSION, MANIFEST_NAME, BundleError,  # noqa: E402
                                    compact_dim_for, read_manifest, sha256_file, symbols_for,
                                    validate_manifest, verify_bundle, write_manifest)
from rkdsc.common.bundle.runtime import (EdgeModel, InProcessPipeline, ServerModel,  # noqa: E402
                                   UnknownTaskError, load_bundle, softmax, topk)
from rkdsc.common.models.cat import CATConfig, CATDecoder, CATEncoder  # noqa: E402
from rkdsc.common.models.complexity import count_params  # noqa: E402
from rkdsc.common.models.heads import ClassifierHead  # noqa: E402
from rkdsc.common.models.student import Student, StudentConfig  # noqa: E402
from rkdsc.common.models.system import EdgePart, ServerPart  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SNRS_DB = (-10.0, 0.0, 10.0, 25.0)
INPUT_SIZE = 32


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def paper_bundle(tmp_path_factory):
    """Paper feature_dim 512, ratio 0.8 (compact 102), real Student at 32 px, smaller CAT FFN."""
    torch.manual_seed(0)
    scfg = StudentConfig(input_size=INPUT_SIZE)  # paper widths, feature_dim 512
    ccfg = CATConfig(feature_dim=512, n_heads=8, d_ff=256, compression_ratio=0.8)
    edge = EdgePart(Student(scfg, [1, 2, 2, 2]), CATEncoder(ccfg)).eval()
    server = ServerPart(CATDecoder(ccfg), ClassifierHead(512, 10, 64)).eval()
    out = tmp_path_factory.mktemp("paper") / "bundle"
    export_bundle(out, [{"name": "digits", "class_names": [str(i) for i in range(10)],
                         "edge_part": edge, "server_part": server, "compression_ratio": 0.8,
                         "compact_dim": 102}],
                  feature_dim=512, input_spec={"size": INPUT_SIZE, "mean": [0.5] * 3, "std": [0.25] * 3},
                  snr_train_db=[5.0, 20.0],
                  provenance={"method": "rkd-sc", "preset": "test", "seed": 0, "command": "pytest"})
    return out, edge, server


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    """build_random_bundle with an odd compact_dim (64 * 0.15 = 9.6 -> 9, 5 symbols)."""
    out = tmp_path_factory.mktemp("tiny") / "bundle"
    build_random_bundle(out, compression_ratio=0.85, num_classes=4, task="shapes", seed=3)
    return out


@pytest.fixture
def bundle_copy(paper_bundle, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(paper_bundle[0], dst)
    return dst


def _edit_manifest(bundle_dir: Path, edit) -> None:
    path = bundle_dir / MANIFEST_NAME
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m))


# ----------------------------------------------------------------------------- export parity

@pytest.mark.parametrize("batch", [1, 32])
def test_edge_onnx_matches_torch(paper_bundle, batch):
    bundle_dir, edge, _ = paper_bundle
    model = EdgeModel(load_bundle(bundle_dir), "digits")
    rng = np.random.default_rng(batch)
    images = rng.standard_normal((batch, 3, INPUT_SIZE, INPUT_SIZE)).astype(np.float32)
    for snr in [*SNRS_DB, None]:
        snr_db = (rng.uniform(-10, 25, batch) if snr is None else np.full(batch, snr)).astype(np.float32)
        got = model.encode(images, snr_db)
        with torch.no_grad():
            ref = edge(torch.from_numpy(images), torch.from_numpy(snr_db)).numpy()
        assert got.shape == (batch, 102) and got.dtype == np.float32
        assert np.max(np.abs(got - ref)) < 1e-4, f"snr {snr}: max abs {np.max(np.abs(got - ref))}"


@pytest.mark.parametrize("batch", [1, 32])
def test_server_onnx_matches_torch(paper_bundle, batch):
    bundle_dir, _, server = paper_bundle
    model = ServerModel(load_bundle(bundle_dir), "digits")
    rng = np.random.default_rng(100 + batch)
    symbols = rng.standard_normal((batch, 102)).astype(np.float32)
    for snr in [*SNRS_DB, None]:
        snr_db = (rng.uniform(-10, 25, batch) if snr is None else np.full(batch, snr)).astype(np.float32)
        got = model.decode(symbols, snr_db)
        with torch.no_grad():
            ref = server(torch.from_numpy(symbols), torch.from_numpy(snr_db)).numpy()
        assert got.shape == (batch, 10) and got.dtype == np.float32
        assert np.max(np.abs(got - ref)) < 1e-4, f"snr {snr}: max abs {np.max(np.abs(got - ref))}"


def test_snr_input_changes_the_output(paper_bundle):
    """The SNR input is wired through (not constant-folded away by the exporter)."""
    model = EdgeModel(load_bundle(paper_bundle[0]), "digits")
    images = np.random.default_rng(0).standard_normal((2, 3, INPUT_SIZE, INPUT_SIZE)).astype(np.float32)
    lo, hi = model.encode(images, np.full(2, -10.0)), model.encode(images, np.full(2, 25.0))
    assert np.max(np.abs(lo - hi)) > 1e-3


def test_exported_files_and_manifest(paper_bundle):
    bundle_dir, edge, server = paper_bundle
    m = read_manifest(bundle_dir)
    assert validate_manifest(m) == []
    assert m["format_version"] == FORMAT_VERSION
    assert (m["feature_dim"], m["compact_dim"], m["symbols_per_image"]) == (512, 102, 51)
    assert m["tasks"][0]["num_classes"] == 10 and m["tasks"][0]["edge"] == "digits.edge"
    assert m["components"]["digits.edge"]["params"] == count_params(edge)
    assert m["components"]["digits.server"]["params"] == count_params(server)
    for name, comp in m["components"].items():
        path = bundle_dir / comp["file"]
        assert comp["sha256"] == sha256_file(path)
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
        opset = {o.domain: o.version for o in model.opset_import}[""]
        assert opset >= 17
        for value in list(model.graph.input) + list(model.graph.output):  # dynamic batch axis
            dim0 = value.type.tensor_type.shape.dim[0]
            assert dim0.HasField("dim_param") and not dim0.HasField("dim_value"), (name, value.name)
        names = ([i.name for i in model.graph.input], [o.name for o in model.graph.output])
        expected = (["image", "snr_db"], ["symbols"]) if name.endswith(".edge") else (["symbols", "snr_db"], ["logits"])
        assert names == expected
    prov = m["provenance"]
    assert prov["method"] == "rkd-sc" and prov["seed"] == 0 and prov["command"] == "pytest"
    assert "created" in prov and "git" in prov


def test_export_rejects_wrong_compact_dim(tmp_path):
    ccfg = CATConfig(feature_dim=64, n_heads=4, d_ff=32)
    with pytest.raises(ValueError, match=r"tasks\[0\]\.compact_dim"):
        export_bundle(tmp_path, [{"name": "t", "class_names": ["a", "b"], "edge_part": CATEncoder(ccfg),
                                  "server_part": CATDecoder(ccfg), "compression_ratio": 0.8,
                                  "compact_dim": 13}],
                      feature_dim=64, input_spec={"size": 32, "mean": [0] * 3, "std": [1] * 3},
                      snr_train_db=[0, 10])


# ----------------------------------------------------------------------------- manifest

def test_compact_dim_rule_matches_paper_table_ii():
    assert [compact_dim_for(512, r) for r in (0.8, 0.2, 0.1)] == [102, 409, 460]
    assert [symbols_for(c) for c in (102, 409, 460, 1)] == [51, 205, 230, 1]
    for f, r in [(512, 0.8), (64, 0.85), (10, 0.9), (100, 0.7)]:
        assert compact_dim_for(f, r) == CATConfig(feature_dim=f, n_heads=1, compression_ratio=r).compact_dim


def test_one_compact_dim_rule_for_model_preset_and_manifest():
    """F = 10, r = 0.9: 10 * (1 - 0.9) = 0.9999... keeps 1 compact value in the model, the preset
    and the manifest alike (one rule, compact_dim_for, with its float guard); r = 0.95 keeps none
    and all three refuse it."""
    from rkdsc.common.train.presets import PresetError, load_preset

    assert compact_dim_for(10, 0.9) == 1 and symbols_for(1) == 1
    assert CATConfig(feature_dim=10, n_heads=1, compression_ratio=0.9).compact_dim == 1
    dims = {"teacher.feature_dim": 10, "student.feature_dim": 10, "cat.n_heads": 1}
    p = load_preset("smoke", {**dims, "cat.compression_ratio": 0.9})
    assert p.cat_config().compact_dim == 1
    m = _good_manifest()
    m.update(feature_dim=10, compression_ratio=0.9, compact_dim=1, symbols_per_image=1)
    m["tasks"][0].update(compression_ratio=0.9, compact_dim=1, symbols_per_image=1)
    assert validate_manifest(m) == []

    assert compact_dim_for(10, 0.95) == 0
    with pytest.raises(ValueError, match="leaves no compact dimension"):
        CATConfig(feature_dim=10, n_heads=1, compression_ratio=0.95)
    with pytest.raises(PresetError, match=r"cat\.compression_ratio: expected a ratio leaving >= 1 compact value "
                                          r"of feature_dim 10, got 0\.95"):
        load_preset("smoke", {**dims, "cat.compression_ratio": 0.95})
    m["compression_ratio"] = m["tasks"][0]["compression_ratio"] = 0.95
    assert any(p.startswith("compact_dim: expected floor(feature_dim * (1 - compression_ratio)) = "
                            "floor(10 * (1 - 0.95)) = 0, got 1") for p in validate_manifest(m)), validate_manifest(m)


def test_manifest_round_trip(paper_bundle, tmp_path):
    m = read_manifest(paper_bundle[0])
    for comp in m["components"].values():
        shutil.copy(paper_bundle[0] / comp["file"], tmp_path / comp["file"])
        comp["sha256"] = "0" * 64  # write_manifest recomputes it
    written = write_manifest(tmp_path, m)
    assert read_manifest(tmp_path) == written
    assert written["components"] == read_manifest(paper_bundle[0])["components"]
    assert verify_bundle(tmp_path) == []


def test_write_manifest_refuses_invalid(tmp_path, paper_bundle):
    m = read_manifest(paper_bundle[0])
    for comp in m["components"].values():
        shutil.copy(paper_bundle[0] / comp["file"], tmp_path / comp["file"])
    m["tasks"][0]["class_names"] = ["only-one"]
    with pytest.raises(BundleError, match=r"tasks\[0\]\.class_names"):
        write_manifest(tmp_path, m)
    assert not (tmp_path / MANIFEST_NAME).exists()


def _good_manifest() -> dict:
    return {
        "format_version": 1,
        "tasks": [{"name": "digits", "num_classes": 3, "class_names": ["a", "b", "c"],
                   "compression_ratio": 0.8, "compact_dim": 102, "symbols_per_image": 51,
                   "edge": "digits.edge", "server": "digits.server"}],
        "feature_dim": 512, "compact_dim": 102, "compression_ratio": 0.8, "symbols_per_image": 51,
        "input": {"size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        "snr_train_db": [5.0, 20.0],
        "components": {"digits.edge": {"file": "digits.edge.onnx", "sha256": "a" * 64, "params": 1},
                       "digits.server": {"file": "digits.server.onnx", "sha256": "b" * 64, "params": 2}},
        "provenance": {"created": "2024-01-01T00:00:00+00:00"},
    }


def _set(path: str, value):
    def edit(m):
        obj = m
        keys = path.split(".")
        for k in keys[:-1]:
            obj = obj[int(k)] if isinstance(obj, list) else obj[k]
        if value is _DELETE:
            del obj[keys[-1]]
        else:
            obj[keys[-1]] = value
    return edit


_DELETE = object()


@pytest.mark.parametrize("path,value,expected_key", [
    ("tasks.0.num_classes", -1, "tasks[0].num_classes: expected a value >= 1, got -1"),
    ("tasks.0.num_classes", 4, "tasks[0].class_names: expected 4 names"),
    ("tasks.0.class_names", ["a", 1, "c"], "tasks[0].class_names[1]: expected a string, got 1"),
    ("tasks.0.name", "", "tasks[0].name"),
    ("tasks.0.edge", "nope.edge", "tasks[0].edge: names component 'nope.edge'"),
    ("tasks.0.compact_dim", 100, "tasks[0].compact_dim: expected floor"),
    ("tasks.0.symbols_per_image", 52, "tasks[0].symbols_per_image: expected ceil"),
    ("compact_dim", 100, "compact_dim: expected floor(feature_dim * (1 - compression_ratio))"),
    ("symbols_per_image", 50, "symbols_per_image: expected ceil(compact_dim / 2)"),
    ("compression_ratio", 1.2, "compression_ratio: expected a value < 1.0, got 1.2"),
    ("feature_dim", "512", "feature_dim: expected an integer, got '512'"),
    ("format_version", 3, "format_version: expected 1 or 2, got 3"),
    ("input.mean", [0.5, 0.5], "input.mean: expected 3 numbers, got [0.5, 0.5]"),
    ("input.std", [0.5, 0.0, 0.5], "input.std[1]: expected a value > 0.0, got 0.0"),
    ("input.size", 0, "input.size"),
    ("snr_train_db", [20.0, 5.0], "snr_train_db: expected lo <= hi"),
    ("components.digits.edge", None, None),  # special-cased below
    ("provenance", _DELETE, "provenance: required key is missing"),
    ("tasks", [], "tasks: expected a non-empty list of tasks, got []"),
])
def test_validate_manifest_names_the_key(path, value, expected_key):
    m = _good_manifest()
    assert validate_manifest(m) == []
    if path == "components.digits.edge":  # component names contain dots
        m["components"]["digits.edge"]["sha256"] = "XYZ"
        m["components"]["digits.edge"]["file"] = "../outside.onnx"
        m["components"]["digits.edge"]["params"] = -5
        problems = validate_manifest(m)
        joined = "\n".join(problems)
        assert "components.digits.edge.sha256: expected 64 lowercase hex digits" in joined
        assert "components.digits.edge.file: expected a path relative to the bundle" in joined
        assert "components.digits.edge.params: expected a value >= 0, got -5" in joined
        return
    _set(path, value)(m)
    problems = validate_manifest(m)
    assert any(expected_key in p for p in problems), problems


def test_validate_manifest_top_level_follows_first_task():
    m = _good_manifest()
    m["tasks"][0].update(compression_ratio=0.2, compact_dim=409, symbols_per_image=205)
    problems = validate_manifest(m)
    assert any(p.startswith("compact_dim: expected the first task's value 409") for p in problems), problems


def test_validate_manifest_per_task_defaults():
    """Tasks may leave out their codec fields and component names (defaults from the top level)."""
    m = _good_manifest()
    for key in ("compression_ratio", "compact_dim", "symbols_per_image", "edge", "server"):
        del m["tasks"][0][key]
    assert validate_manifest(m) == []
    m["tasks"].append({"name": "digits", "num_classes": 1, "class_names": ["x"]})
    assert any("tasks[1].name: duplicate task name" in p for p in validate_manifest(m))


def test_validate_manifest_rejects_non_object():
    assert validate_manifest([1, 2]) and "expected a JSON object" in validate_manifest([1, 2])[0]


# ----------------------------------------------------------------------------- verify

def test_verify_good_bundle(paper_bundle):
    assert verify_bundle(paper_bundle[0]) == []


def test_verify_detects_flipped_byte(bundle_copy):
    path = bundle_copy / "digits.edge.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    problems = verify_bundle(bundle_copy)
    assert len(problems) == 1
    assert "digits.edge.onnx" in problems[0] and "sha256 mismatch" in problems[0]


def test_verify_detects_missing_file(bundle_copy):
    (bundle_copy / "digits.server.onnx").unlink()
    problems = verify_bundle(bundle_copy)
    assert any("digits.server.onnx" in p and "missing" in p for p in problems), problems


def test_verify_detects_schema_error(bundle_copy):
    _edit_manifest(bundle_copy, _set("tasks.0.num_classes", -1))
    problems = verify_bundle(bundle_copy)
    assert any(MANIFEST_NAME in p and "tasks[0].num_classes: expected a value >= 1, got -1" in p
               for p in problems), problems


def test_verify_detects_wrong_compact_dim(bundle_copy):
    def edit(m):
        m["compact_dim"] = 104
        m["symbols_per_image"] = 52
    _edit_manifest(bundle_copy, edit)
    problems = verify_bundle(bundle_copy)
    assert any("compact_dim: expected floor(feature_dim * (1 - compression_ratio))" in p and "102" in p
               for p in problems), problems


def test_verify_detects_bad_json_and_missing_manifest(bundle_copy, tmp_path):
    (bundle_copy / MANIFEST_NAME).write_text("{not json")
    problems = verify_bundle(bundle_copy)
    assert len(problems) == 1 and MANIFEST_NAME in problems[0] and "invalid JSON" in problems[0]
    (bundle_copy / MANIFEST_NAME).unlink()
    assert "manifest missing" in verify_bundle(bundle_copy)[0]
    assert "not found" in verify_bundle(tmp_path / "nowhere")[0]


def test_load_bundle_refuses_corrupted_bundle(bundle_copy):
    path = bundle_copy / "digits.server.onnx"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="digits.server.onnx"):
        load_bundle(bundle_copy)
    load_bundle(bundle_copy, verify=False)  # schema still fine: loads without checksums


def test_load_bundle_refuses_bad_schema_even_without_verify(bundle_copy):
    _edit_manifest(bundle_copy, _set("input.size", -3))
    with pytest.raises(BundleError, match=r"input\.size"):
        load_bundle(bundle_copy, verify=False)


# ----------------------------------------------------------------------------- CLI

def test_cli_verify_and_info(paper_bundle, bundle_copy, capsys):
    assert bundle_cli.cli(["verify", str(paper_bundle[0])]) == 0
    assert capsys.readouterr().out.startswith("OK")
    path = bundle_copy / "digits.edge.onnx"
    path.write_bytes(path.read_bytes() + b"\0")
    assert bundle_cli.cli(["verify", str(bundle_copy)]) != 0
    err = capsys.readouterr().err
    assert "digits.edge.onnx" in err and "sha256" in err
    assert bundle_cli.cli(["info", str(paper_bundle[0])]) == 0
    out = capsys.readouterr().out
    for needle in ("digits: 10 classes", "compact_dim 102", "symbols_per_image 51", "feature_dim 512",
                   "digits.edge.onnx", "params", "method: rkd-sc", "MiB"):
        assert needle in out, needle


def test_cli_verify_subprocess(paper_bundle, bundle_copy):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    good = subprocess.run([sys.executable, "-m", "rkdsc.common.bundle.cli", "verify", str(paper_bundle[0])],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert good.returncode == 0 and "OK" in good.stdout, good.stderr
    _edit_manifest(bundle_copy, _set("tasks.0.num_classes", -1))
    bad = subprocess.run([sys.executable, "-m", "rkdsc.common.bundle.cli", "verify", str(bundle_copy)],
                         capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert bad.returncode != 0 and "tasks[0].num_classes" in bad.stderr


def test_runtime_side_never_imports_torch():
    code = ("import sys, rkdsc.common.bundle, rkdsc.common.bundle.manifest, rkdsc.common.bundle.runtime, "
            "rkdsc.common.bundle.cli, rkdsc.common.data.images; "
            "assert 'torch' not in sys.modules, 'torch imported'; print('clean')")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env,
                         timeout=120)
    assert res.returncode == 0 and "clean" in res.stdout, res.stderr


# ----------------------------------------------------------------------------- runtime

def test_unknown_task_names_known_tasks(paper_bundle):
    bundle = load_bundle(paper_bundle[0])
    assert bundle.task("digits").compact_dim == 102 and bundle.task().name == "digits"
    with pytest.raises(KeyError) as info:
        bundle.task("cifar10")
    assert isinstance(info.value, UnknownTaskError)
    assert "cifar10" in str(info.value) and "known tasks: digits" in str(info.value)


def test_encode_checks_shapes_and_threads(paper_bundle):
    bundle = load_bundle(paper_bundle[0])
    edge = EdgeModel(bundle, "digits", intra_op_threads=1)
    with pytest.raises(ValueError, match="images: expected float32 \\[B, 3, 32, 32\\]"):
        edge.encode(np.zeros((1, 3, 16, 16), np.float32), np.zeros(1, np.float32))
    with pytest.raises(ValueError, match="snr_db"):
        edge.encode(np.zeros((2, 3, 32, 32), np.float32), np.zeros(3, np.float32))
    assert edge.encode(np.zeros((2, 3, 32, 32), np.float32), 10.0).shape == (2, 102)  # scalar SNR
    with pytest.raises(ValueError, match="symbols: expected float32 \\[B, 102\\]"):
        ServerModel(bundle, "digits").decode(np.zeros((1, 51), np.float32), np.zeros(1, np.float32))
    with pytest.raises(ValueError, match="intra_op_threads"):
        EdgeModel(bundle, "digits", intra_op_threads=0)


def test_softmax_and_topk():
    logits = np.array([[1.0, 3.0, 2.0, -1.0], [0.0, 0.0, 5.0, 0.0]], dtype=np.float32)
    p = softmax(logits)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-6)
    e = np.exp(logits[0] - logits[0].max())
    np.testing.assert_allclose(p[0], e / e.sum(), rtol=1e-6)
    idx, scores = topk(logits, 2)
    assert idx.tolist() == [[1, 2], [2, 0]]  # ties keep the lower index first
    np.testing.assert_allclose(scores, np.take_along_axis(p, idx, axis=-1))
    idx1, scores1 = topk(logits[0], 10)  # k clipped to C, 1-D in -> 1-D out
    assert idx1.tolist() == [1, 2, 0, 3] and scores1.shape == (4,)
    assert np.all(np.isfinite(softmax(np.array([1e4, -1e4], dtype=np.float32))))


def test_random_bundle_odd_compact_dim(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    spec = bundle.task("shapes")
    assert (bundle.feature_dim, spec.compact_dim, spec.symbols_per_image, spec.num_classes) == (64, 9, 5, 4)
    assert bundle.manifest["provenance"]["method"] == "random-init"
    images = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    edge, server = build_random_parts(compression_ratio=0.85, num_classes=4, seed=3)
    with torch.no_grad():  # the exported bundle holds exactly the parts of this seed
        ref = edge(torch.from_numpy(images), torch.full((3,), 10.0)).numpy()
    np.testing.assert_allclose(EdgeModel(bundle, "shapes").encode(images, np.full(3, 10.0)), ref, atol=1e-4)
    other, _ = build_random_parts(compression_ratio=0.85, num_classes=4, seed=4)
    state, state4 = edge.state_dict(), other.state_dict()
    assert any(not torch.equal(state[k], state4[k]) for k in state)  # another seed, other weights
    before = torch.random.get_rng_state()
    build_random_parts(seed=5)
    assert torch.equal(before, torch.random.get_rng_state())  # global RNG untouched


def test_in_process_pipeline(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    images = np.random.default_rng(2).standard_normal((16, 3, 32, 32)).astype(np.float32)
    labels = np.arange(16) % 4

    # Near-noiseless AWGN: the receiver gets the transmitted unit-power symbols back, so the
    # demapped vector is the encoder output scaled by 1 / rms over the K complex symbols.
    out = InProcessPipeline(bundle, "shapes", seed=0).run(images, np.full(16, 90.0), "awgn", labels)
    x = out["x"]
    assert x.shape == (16, 9) and out["z"].shape == (16, 5) and out["x_hat"].shape == (16, 9)
    np.testing.assert_allclose(np.mean(np.abs(out["z"]) ** 2, axis=1), 1.0, rtol=1e-5)
    scale = 1.0 / np.sqrt(np.sum(x.astype(np.float64) ** 2, axis=1, keepdims=True) / 5)
    np.testing.assert_allclose(out["x_hat"], x * scale, rtol=1e-3, atol=1e-4)
    server = ServerModel(bundle, "shapes")
    np.testing.assert_allclose(out["logits"], server.decode((x * scale).astype(np.float32), np.full(16, 90.0)),
                               atol=1e-3)
    assert out["pred"].shape == (16,) and 0.0 <= out["accuracy"] <= 1.0
    assert np.array_equal(out["correct"], out["pred"] == labels)

    # Same seed -> same channel draws; another seed -> different ones.
    r1 = InProcessPipeline(bundle, "shapes", seed=7).run(images, 0.0, "rayleigh")
    r2 = InProcessPipeline(bundle, "shapes", seed=7).run(images, 0.0, "rayleigh")
    r3 = InProcessPipeline(bundle, "shapes", seed=8).run(images, 0.0, "rayleigh")
    np.testing.assert_array_equal(r1["y"], r2["y"])
    np.testing.assert_array_equal(r1["logits"], r2["logits"])
    assert not np.allclose(r1["y"], r3["y"])
    assert r1["h"].shape == (16, 1) and r1["noise_var"].shape == (16,)
    np.testing.assert_allclose(r1["noise_var"], 1.0)  # sigma^2 = 10^(-0/10)

    # The pipeline is exactly encode -> map -> normalize -> simulate -> demap -> decode.
    rng = np.random.default_rng(7)
    z = channel.normalize_power(channel.real_to_complex(r1["x"]))
    y, _, _ = channel.simulate(z, np.zeros(16), "rayleigh", rng, equalize=True)
    np.testing.assert_allclose(r1["y"], y, rtol=1e-6)
    np.testing.assert_allclose(r1["x_hat"], channel.complex_to_real(y, 9), rtol=1e-6)


def test_bundle_manifest_is_valid_json_on_disk(paper_bundle):
    text = (paper_bundle[0] / MANIFEST_NAME).read_text()
    m = json.loads(text)
    assert m == copy.deepcopy(read_manifest(paper_bundle[0]))
    assert set(m) >= {"format_version", "tasks", "feature_dim", "compact_dim", "compression_ratio",
                      "symbols_per_image", "input", "snr_train_db", "components", "provenance"}


# ----------------------------------------------------------------------------- hardening: bad manifests

@pytest.mark.parametrize("text,kind", [("[1, 2, 3]", "an array"), ('"bundle"', "a string"), ("null", "null"),
                                       ("7", "a number")])
def test_a_manifest_that_is_json_but_not_an_object_is_a_bundle_error_naming_the_file(bundle_copy, text, kind):
    (bundle_copy / MANIFEST_NAME).write_text(text)
    with pytest.raises(BundleError) as err:
        read_manifest(bundle_copy)
    assert str(err.value) == f"{bundle_copy / MANIFEST_NAME}: expected a JSON object (the manifest), got {kind}"
    assert verify_bundle(bundle_copy) == [str(err.value)]
    with pytest.raises(BundleError, match="expected a JSON object"):
        load_bundle(bundle_copy, verify=False)


def test_a_manifest_that_is_not_utf8_names_the_file_and_the_offset(bundle_copy):
    data = b'{"format_version": 1, "x": "\xff"}'
    (bundle_copy / MANIFEST_NAME).write_bytes(data)
    problems = verify_bundle(bundle_copy)
    offset = data.index(b"\xff")
    assert len(problems) == 1 and MANIFEST_NAME in problems[0] and f"byte offset {offset}:" in problems[0], problems


def test_commands_refuse_a_non_object_manifest_without_a_traceback(bundle_copy, tmp_path):
    """`rkdsc bundle verify|info`, `rkdsc server`, `rkdsc edge` as processes: a clear message naming
    manifest.json, never an AttributeError traceback."""
    (bundle_copy / MANIFEST_NAME).write_text("[1, 2, 3]")
    rkdsc = str(Path(sys.executable).with_name("rkdsc"))
    config = tmp_path / "t.toml"
    config.write_text(f'[bundle]\npath = "{bundle_copy}"\n[server]\nport = 0\nmetrics_port = -1\n'
                      f'[[transmitters]]\nid = "a"\nimages = "{tmp_path}"\n')
    runs = {"verify": ([rkdsc, "bundle", "verify", str(bundle_copy)], 1),
            "info": ([rkdsc, "bundle", "info", str(bundle_copy)], 1),
            "server": ([rkdsc, "server", "--config", str(config)], 2),
            "edge": ([rkdsc, "edge", "--config", str(config), "--id", "a", "--out", str(tmp_path / "o")], 2)}
    for name, (args, status) in runs.items():
        proc = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == status, (name, proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr, (name, proc.stderr)
        assert f"{bundle_copy / MANIFEST_NAME}: expected a JSON object (the manifest), got an array" in proc.stderr, \
            (name, proc.stderr)


def test_verify_checks_num_classes_and_compact_dim_against_the_declared_model_shapes(bundle_copy):
    """A hand-edited num_classes (the manifest's class count no longer the width of the exported
    logits) used to verify OK and then fail every frame at the server."""
    def edit(m):
        m["tasks"][0]["num_classes"] = 11
        m["tasks"][0]["class_names"].append("extra")
    _edit_manifest(bundle_copy, edit)
    problems = verify_bundle(bundle_copy)
    assert len(problems) == 1, problems
    assert "tasks[0].num_classes: expected 10, the width of component 'digits.server' outputs.logits" in problems[0]
    assert "got 11" in problems[0]
    m = json.loads((bundle_copy / MANIFEST_NAME).read_text())
    m["tasks"][0]["num_classes"] = 10
    m["tasks"][0]["class_names"].pop()
    m["components"]["digits.edge"]["outputs"]["symbols"]["shape"] = ["batch", 100]
    assert any("tasks[0].compact_dim: expected 100, the width of component 'digits.edge' outputs.symbols" in p
               for p in validate_manifest(m))
