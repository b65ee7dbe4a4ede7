"""The methods of the project, one ``Method`` record each: how to build, cut and load them.

    from rkdsc.common.models.registry import get_method, load_trained
    m = get_method("rkd-sc")
    system = m.build(spec)                  # ModelSpec -> torch system (untrained)
    edge, server = m.parts(system)          # what is exported to ONNX (models/system.py)
    system, doc = m.load(task_dir)          # a trained task folder (model.json + weights)
    m.task_dirs(workdir)                    # its trained task folders in a work dir

``METHODS`` maps names to records, in a fixed order (``rkd-sc``, ``jscc-student``,
``jscc-teacher``, ``t-deepsc``, ``rtsc``); add a method by adding a record. ``load_trained(task_dir)`` loads any task
folder by the ``method`` its ``model.json`` names (``reads`` lists the extra names a record
accepts, e.g. the stage-1-only ablation of RKD-SC).

Work-dir layout: a method's trained tasks are ``workdir/<folder>/<task>/{model.json,
model.safetensors[, teacher.safetensors]}``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .spec import ModelSpec, read_model_spec
from .weights import load_weights


@dataclass(frozen=True)
class Method:
    name: str  # CLI / provenance name
    folder: str  # work-dir sub-folder holding its trained task folders
    description: str  # one line, for --help texts
    build: Callable[[ModelSpec], nn.Module]  # untrained torch system from its spec
    parts: Callable[[nn.Module], tuple[nn.Module, nn.Module]]  # system -> (edge part, server part)
    load_files: Callable[[nn.Module, Path], None]  # load a task folder's weight files into a built system
    reads: tuple[str, ...] = ()  # other model.json "method" values this record loads

    def load(self, task_dir: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
        """(system with the trained weights in eval mode, its model.json) from a task folder."""
        doc = read_model_doc(task_dir)
        system = self.build(read_model_spec(doc, self.name))
        self.load_files(system, Path(task_dir))
        return system.to(device).eval(), doc

    def edge(self, spec: ModelSpec) -> nn.Module:
        """The edge part of an untrained system (profiling: weights do not change the speed)."""
        return self.parts(self.build(spec))[0].eval()

    def root(self, workdir: str | Path) -> Path:
        return Path(workdir) / self.folder

    def task_dirs(self, workdir: str | Path) -> list[Path]:
        """Trained task folders in stage-2 task order (else sorted by name); FileNotFoundError if none."""
        root = self.root(workdir)
        found = {d.name: d for d in sorted(root.glob("*/")) if (d / "model.json").is_file()} if root.is_dir() else {}
        if not found:
            raise FileNotFoundError(f"{root}: no trained tasks (no */model.json); train {self.name} first")
        order = []
        s2 = Path(workdir) / "stage2" / "stage2.json"
        if s2.is_file():
            order = [t["task"] for t in json.loads(s2.read_text(encoding="utf-8")).get("tasks", [])]
        names = [n for n in order if n in found] + sorted(n for n in found if n not in order)
        return [found[n] for n in names]


def read_model_doc(task_dir: str | Path) -> dict:
    """The model.json of a trained task folder (FileNotFoundError when training did not finish)."""
    f = Path(task_dir) / "model.json"
    if not f.is_file():
        raise FileNotFoundError(f"{f}: not found (training not finished?)")
    return json.loads(f.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- builders

def build_student(spec: ModelSpec) -> nn.Module:
    from .student import Student

    if spec.student is None or not spec.depths:
        raise ValueError(f"model spec of {spec.method}: no student / depths")
    return Student(spec.student, spec.depths)


def _build_rkd(spec: ModelSpec) -> nn.Module:
    from .system import TaskSystem

    if spec.cat is None:
        raise ValueError("model spec of rkd-sc: no cat config")
    return TaskSystem(build_student(spec), spec.cat, spec.num_classes, spec.head_hidden)


def _build_jscc_student(spec: ModelSpec) -> nn.Module:
    from .system import JSCCSystem

    return JSCCSystem(build_student(spec), spec.feature_dim, spec.num_classes, spec.head_hidden)


def _build_jscc_teacher(spec: ModelSpec) -> nn.Module:
    from .system import JSCCSystem
    from .teacher import build_teacher

    t = spec.teacher
    if t is None:
        raise ValueError("model spec of jscc-teacher: no teacher config")
    encoder = build_teacher(t.name, None, t.feature_dim, t.img_size, **t.timm_kwargs)
    return JSCCSystem(encoder, spec.feature_dim, spec.num_classes, spec.head_hidden)


def _codec_config(spec: ModelSpec, attr: str):
    cfg = getattr(spec, attr)
    if cfg is None:
        raise ValueError(f"model spec of {spec.method}: no {attr} config")
    if int(spec.feature_dim) != int(cfg.n_values):
        raise ValueError(f"model spec of {spec.method}: feature_dim {spec.feature_dim} must equal the "
                         f"{cfg.n_values} values the {attr} encoder sends")
    return cfg


def _build_tdeepsc(spec: ModelSpec) -> nn.Module:
    from .tdeepsc import build_tdeepsc

    return build_tdeepsc(_codec_config(spec, "tdeepsc"), spec.num_classes, spec.head_hidden)


def _build_rtsc(spec: ModelSpec) -> nn.Module:
    from .rtsc import build_rtsc

    return build_rtsc(_codec_config(spec, "rtsc"), spec.num_classes, spec.head_hidden)


def _rkd_parts(system: nn.Module) -> tuple[nn.Module, nn.Module]:
    from .system import EdgePart, ServerPart

    return EdgePart(system.student, system.cat_encoder), ServerPart(system.cat_decoder, system.head)


def _jscc_parts(system: nn.Module) -> tuple[nn.Module, nn.Module]:
    from .system import JSCCEdgePart, JSCCServerPart

    return JSCCEdgePart(system.encoder), JSCCServerPart(system.head)


def _codec_parts(system: nn.Module) -> tuple[nn.Module, nn.Module]:
    """T-DeepSC / RTSC: the whole encoder at the edge, the whole decoder (ending in its head) at the
    server; both ignore snr_db (the JSCC halves keep it as a graph input)."""
    from .system import JSCCEdgePart, JSCCServerPart

    return JSCCEdgePart(system.encoder), JSCCServerPart(system.decoder)


def _load_system(system: nn.Module, task_dir: Path) -> None:
    load_weights(task_dir / "model.safetensors", system)


def _load_teacher_system(system: nn.Module, task_dir: Path) -> None:
    """JSCC-teacher: the frozen teacher in teacher.safetensors, the head-only system in model.safetensors."""
    encoder = system.encoder
    load_weights(task_dir / "teacher.safetensors", encoder)
    system.encoder = None  # model.safetensors holds the system as trained: head only
    try:
        load_weights(task_dir / "model.safetensors", system)
    finally:
        system.encoder = encoder


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("rkd-sc", "stage2", "stage-2 student + CAT encoder / CAT decoder + head (two-stage RKD)",
           _build_rkd, _rkd_parts, _load_system, reads=("stage1-only-ablation",)),
    Method("jscc-student", "baseline-jscc-student", "baseline: searched student + head, no CAT, trained end to end",
           _build_jscc_student, _jscc_parts, _load_system),
    Method("jscc-teacher", "baseline-jscc-teacher", "baseline: frozen teacher + trained head, no CAT",
           _build_jscc_teacher, _jscc_parts, _load_teacher_system),
    Method("t-deepsc", "baseline-t-deepsc", "baseline: ViT task encoder -> 10 values (KB scores) / KB-reading "
                                           "transformer decoder, trained end to end at a fixed SNR (12 dB)",
           _build_tdeepsc, _codec_parts, _load_system),
    Method("rtsc", "baseline-rtsc", "baseline: real-time ViT codec at 32x32 -> 512 values / ViT decoder + head, "
                                    "trained end to end",
           _build_rtsc, _codec_parts, _load_system),
)}


def method_names() -> tuple[str, ...]:
    return tuple(METHODS)


def get_method(name: str) -> Method:
    """The record of ``name`` (also a name listed in a record's ``reads``); ValueError otherwise."""
    if name in METHODS:
        return METHODS[name]
    for m in METHODS.values():
        if name in m.reads:
            return m
    raise ValueError(f"method: expected one of {list(METHODS)}, got {name!r}")


def load_trained(task_dir: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """(trained system in eval mode, model.json) of any task folder, by the method its model.json names."""
    return get_method(read_model_doc(task_dir)["method"]).load(task_dir, device)


__all__ = ["Method", "METHODS", "method_names", "get_method", "load_trained", "read_model_doc", "build_student"]
