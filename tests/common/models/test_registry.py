"""The method registry and the one architecture description (ModelSpec / model.json)."""
from __future__ import annotations

import json

import pytest
import torch

from rkdsc.common.models import CATConfig, RTSCConfig, StudentConfig, TDeepSCConfig, TeacherConfig
from rkdsc.common.models.registry import METHODS, get_method, load_trained
from rkdsc.common.models.spec import ModelSpec, read_model_spec
from rkdsc.common.models.system import EdgePart, JSCCEdgePart, JSCCSystem, ServerPart, TaskSystem
from rkdsc.common.models.tdeepsc import CodecSystem
from rkdsc.common.models.weights import save_weights

STUDENT = StudentConfig(input_size=32, stem_widths=(8, 8, 16), planes=(4, 8, 16, 16), max_depth=3, feature_dim=32,
                        heads=4)
CAT = CATConfig(feature_dim=32, n_heads=4, d_ff=32, compression_ratio=0.5)
TEACHER = TeacherConfig(name="vit_tiny_patch16_224", img_size=32, feature_dim=32,
                        timm_kwargs={"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2, "num_classes": 32})
TDEEPSC = TDeepSCConfig(input_size=32, patch_size=8, embed_dim=16, depth=1, n_heads=2, dec_dim=16, dec_depth=1,
                        dec_heads=2)
RTSC = RTSCConfig(stem_widths=(4, 8), embed_dim=16, depth=1, n_heads=2, values_per_token=2, dec_depth=1)
SYSTEM = {"rkd-sc": TaskSystem, "jscc-student": JSCCSystem, "jscc-teacher": JSCCSystem, "t-deepsc": CodecSystem,
          "rtsc": CodecSystem}
COMPACT = {"rkd-sc": 16, "jscc-student": 32, "jscc-teacher": 32, "t-deepsc": 10, "rtsc": 128}  # values sent


def spec_of(method: str) -> ModelSpec:
    if method in ("t-deepsc", "rtsc"):
        return ModelSpec(method=method, feature_dim=COMPACT[method], num_classes=5, head_hidden=16,
                         **({"tdeepsc": TDEEPSC} if method == "t-deepsc" else {"rtsc": RTSC}))
    return ModelSpec(method=method, feature_dim=32, num_classes=5, head_hidden=16,
                     depths=[1, 2, 1, 1] if method != "jscc-teacher" else None,
                     student=STUDENT if method != "jscc-teacher" else None, cat=CAT if method == "rkd-sc" else None,
                     teacher=TEACHER if method == "jscc-teacher" else None)


def test_registry_names_and_folders():
    assert list(METHODS) == ["rkd-sc", "jscc-student", "jscc-teacher", "t-deepsc", "rtsc"]
    assert [m.folder for m in METHODS.values()] == ["stage2", "baseline-jscc-student", "baseline-jscc-teacher",
                                                    "baseline-t-deepsc", "baseline-rtsc"]
    assert get_method("stage1-only-ablation") is METHODS["rkd-sc"]
    with pytest.raises(ValueError, match="expected one of"):
        get_method("no-such-method")


@pytest.mark.parametrize("method", list(METHODS))
def test_spec_round_trips_through_json(method):
    spec = spec_of(method)
    doc = json.loads(json.dumps({"task": "t", "class_names": list("abcde"), **spec.to_json()}))
    assert read_model_spec(doc) == spec
    assert doc["compact_dim"] == COMPACT[method]


def test_reads_model_json_written_before_the_registry():
    """The stage-2 model.json keys as trained work dirs hold them (no compression_ratio / compact_dim)."""
    doc = {"task": "digits", "method": "rkd-sc", "class_names": [str(i) for i in range(10)], "depths": [1, 1, 1, 1],
           "student": {"input_size": 32, "stem_widths": [8, 8, 16], "planes": [4, 8, 16, 16], "expansion": 4,
                       "max_depth": 5, "feature_dim": 32, "heads": 4},
           "cat": {"feature_dim": 32, "n_heads": 4, "d_ff": 32, "compression_ratio": 0.8, "dropout": 0.0},
           "head": {"hidden": 16}, "feature_dim": 32}
    spec = read_model_spec(doc)
    assert spec.student.stem_widths == (8, 8, 16) and spec.num_classes == 10 and spec.compact_dim == 6


@pytest.mark.parametrize("method", list(METHODS))
def test_build_parts_and_load(method, tmp_path):
    m = get_method(method)
    torch.manual_seed(0)
    system = m.build(spec_of(method))
    assert isinstance(system, SYSTEM[method])
    edge, server = m.parts(system)
    assert isinstance(edge, EdgePart if method == "rkd-sc" else JSCCEdgePart)
    x, snr = torch.randn(2, 3, 32, 32), torch.tensor([0.0, 10.0])
    with torch.no_grad():
        sym = edge.eval()(x, snr)
        assert sym.shape == (2, spec_of(method).compact_dim)
        assert server.eval()(sym, snr).shape == (2, 5)
    # a task folder as the trainers write it
    d = tmp_path / m.folder / "t"
    if method == "jscc-teacher":  # trained head-only; the teacher in its own file
        save_weights(d / "teacher.safetensors", system.encoder)
        save_weights(d / "model.safetensors", _head_only(system))
    else:
        save_weights(d / "model.safetensors", system)
    (d / "model.json").write_text(json.dumps({"task": "t", "class_names": list("abcde"),
                                              **spec_of(method).to_json()}))
    loaded, doc = load_trained(d)
    assert doc["method"] == method and not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(m.parts(loaded)[0](x, snr), sym)
    assert m.task_dirs(tmp_path) == [d]


def _head_only(system: JSCCSystem) -> JSCCSystem:
    out = JSCCSystem(None, 32, 5, 16)
    out.head.load_state_dict(system.head.state_dict())
    return out


def test_task_dirs_without_training_names_the_method(tmp_path):
    with pytest.raises(FileNotFoundError, match="train jscc-student first"):
        get_method("jscc-student").task_dirs(tmp_path)
