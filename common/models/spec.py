"""One description of a model's architecture: ``ModelSpec`` (method + the model configs).

``ModelSpec`` = method name + ``StudentConfig`` and depths (when the method has a student) +
``CATConfig`` (RKD-SC only) + ``TeacherConfig`` (JSCC-teacher only) + ``TDeepSCConfig`` /
``RTSCConfig`` (the T-DeepSC / RTSC baselines; their ``feature_dim`` is the number of real values
they send, 10 / 512, at compression ratio 0, like the JSCC baselines) + the head width, the
feature size and the number of classes. Everything that records an architecture uses it:
``model.json`` of a trained task folder (``to_json`` gives its architecture keys, merged with the
trainer's own keys), the ``tasks`` entries of a bundle's provenance, and ``rkdsc profile``.

``read_model_spec(doc)`` is the one reader: it accepts a whole ``model.json`` (or a provenance task
entry) and reads the keys written so far::

    method, feature_dim, head: {hidden}, depths, student: asdict(StudentConfig),
    cat: asdict(CATConfig), teacher: {name, img_size, feature_dim, timm_kwargs, source},
    tdeepsc: asdict(TDeepSCConfig), rtsc: asdict(RTSCConfig)  (absent from older model.json files),
    class_names (-> num_classes), compression_ratio / compact_dim (derived, not read back)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .cat import CATConfig
from .rtsc import RTSCConfig
from .student import StudentConfig
from .tdeepsc import TDeepSCConfig

PAPER_TEACHER = "vit_base_patch16_clip_224.openai"  # the paper's CLIP ViT-B/16 (timm name)


@dataclass
class TeacherConfig:
    """The frozen timm teacher (``build_teacher(name, None, feature_dim, img_size, **timm_kwargs)``)."""
    name: str = PAPER_TEACHER  # timm model name
    img_size: int | None = None  # input size of the teacher (None: the model's own)
    feature_dim: int = 512  # output size (an adapter is added when the timm output differs)
    timm_kwargs: dict = field(default_factory=dict)  # extra timm.create_model kwargs
    source: str = ""  # where its weights came from (checkpoint path; informational)


@dataclass
class ModelSpec:
    """What to build for one task of one method (weights excluded)."""
    method: str  # registry name: "rkd-sc", "jscc-student", "jscc-teacher", "t-deepsc", "rtsc"
    feature_dim: int = 512  # semantic feature size F
    num_classes: int = 10  # classes of the task head
    head_hidden: int = 256  # hidden width of the task head (0 = linear)
    depths: list[int] | None = None  # student depths per layer (methods with a student)
    student: StudentConfig | None = None  # student architecture (methods with a student)
    cat: CATConfig | None = None  # CAT codec (RKD-SC)
    teacher: TeacherConfig | None = None  # teacher encoder (JSCC-teacher)
    tdeepsc: TDeepSCConfig | None = None  # T-DeepSC encoder / decoder (feature_dim = its n_values)
    rtsc: RTSCConfig | None = None  # RTSC encoder / decoder (feature_dim = its n_values)

    @property
    def compression_ratio(self) -> float:
        return float(self.cat.compression_ratio) if self.cat is not None else 0.0

    @property
    def compact_dim(self) -> int:
        """Real values sent per image: the CAT's compact dim, else the feature itself."""
        return int(self.cat.compact_dim) if self.cat is not None else int(self.feature_dim)

    def to_json(self) -> dict[str, Any]:
        """The architecture keys of ``model.json`` (JSON types only; None parts are left out)."""
        out: dict[str, Any] = {"method": self.method, "feature_dim": int(self.feature_dim),
                               "head": {"hidden": int(self.head_hidden)},
                               "compression_ratio": self.compression_ratio, "compact_dim": self.compact_dim}
        if self.student is not None:
            out["depths"] = [int(d) for d in self.depths or []]
            out["student"] = config_dict(self.student)
        if self.cat is not None:
            out["cat"] = config_dict(self.cat)
        if self.teacher is not None:
            out["teacher"] = config_dict(self.teacher)
        if self.tdeepsc is not None:
            out["tdeepsc"] = config_dict(self.tdeepsc)
        if self.rtsc is not None:
            out["rtsc"] = config_dict(self.rtsc)
        return out


def config_dict(cfg: Any) -> dict[str, Any]:
    """``dataclasses.asdict`` with tuples as lists (what JSON gives back)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def student_config(d: dict[str, Any]) -> StudentConfig:
    """StudentConfig from its ``config_dict`` (lists back to tuples)."""
    d = dict(d)
    for k in ("stem_widths", "planes"):
        if k in d:
            d[k] = tuple(d[k])
    return StudentConfig(**d)


def read_model_spec(doc: dict[str, Any], method: str | None = None) -> ModelSpec:
    """ModelSpec from a ``model.json`` document (or a provenance task entry); ``method`` overrides
    the document's own ``method`` key."""
    method = method or doc.get("method")
    if not method:
        raise ValueError(f"model spec: no 'method' key (keys: {sorted(doc)})")
    student = student_config(doc["student"]) if doc.get("student") else None
    cat = CATConfig(**doc["cat"]) if doc.get("cat") else None
    teacher = TeacherConfig(**doc["teacher"]) if doc.get("teacher") else None
    tdeepsc = TDeepSCConfig(**doc["tdeepsc"]) if doc.get("tdeepsc") else None
    rtsc = RTSCConfig(**{k: tuple(v) if k == "stem_widths" else v for k, v in doc["rtsc"].items()}) \
        if doc.get("rtsc") else None
    feature_dim = doc.get("feature_dim")
    if feature_dim is None:
        codec = tdeepsc or rtsc
        feature_dim = codec.n_values if codec is not None else (cat or student or teacher or TeacherConfig()).feature_dim
    num_classes = len(doc["class_names"]) if doc.get("class_names") else int(doc.get("num_classes", 10))
    return ModelSpec(method=str(method), feature_dim=int(feature_dim), num_classes=num_classes,
                     head_hidden=int((doc.get("head") or {}).get("hidden", 256)),
                     depths=[int(d) for d in doc["depths"]] if doc.get("depths") else None,
                     student=student, cat=cat, teacher=teacher, tdeepsc=tdeepsc, rtsc=rtsc)


__all__ = ["ModelSpec", "TeacherConfig", "PAPER_TEACHER", "read_model_spec", "config_dict", "student_config"]
