"""Training presets: TOML files -> a validated ``Preset`` of dataclass sections.

Contract:

* Built-in presets: ``common/train/presets/<name>.toml`` (``smoke``, ``default``, ``cifar10-cpu``,
  ``tinyimagenet-cpu``, ``paper``); any other path to a ``.toml`` file works too.
* Every section and key is optional; missing keys take the defaults below (the paper's Section
  IV.A values where the paper gives one). ``[student]`` and ``[cat]`` ARE the fields of the model
  configs ``StudentConfig`` / ``CATConfig`` (names, order and defaults read from them), less the
  derived ``input_size`` (= ``data.input_size``) and ``feature_dim`` (= ``teacher.feature_dim``);
  ``student_config()`` / ``cat_config()`` build those configs.
* Unknown keys, wrong types, out-of-range or inconsistent values raise ``PresetError`` naming the
  preset, the key and the value (``preset 'smoke': search.epochs: expected an integer, got 'ten'``),
  through ``rkdsc.common.schema``; the compact dimension follows ``compact_dim_for``.
* ``load_preset(name_or_path, overrides)`` applies ``overrides`` after the file, nested
  (``{"search": {"epochs": 2}}``) or dotted (``{"search.epochs": 2}``); ``parse_set_args`` turns
  ``--set search.epochs=2`` into the latter.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import tomllib
import typing
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any

from pydantic import model_validator

from rkdsc.common.bundle.manifest import compact_dim_for
from rkdsc.common.models.cat import CATConfig
from rkdsc.common.models.student import StudentConfig
from rkdsc.common.schema import (DbRange, Field, Float, Int, NonEmptyStr, NonNegFloat, NonNegInt, PosFloat,
                                 PosInt, Problems, Ratio, SchemaError, Str, exactly, one_of, schema,
                                 section_of, validate)

PRESET_DIR = Path(__file__).resolve().parent / "presets"
REPO_ROOT = Path(__file__).resolve().parents[2]  # relative data roots resolve against this
DATASETS = ("digits", "shapes", "cifar10", "tinyimagenet", "cifar100", "folder")
CHANNELS = ("awgn", "rayleigh")  # the channels training draws from (a subset of channel.FADINGS)
AUGMENTS = ("none", "crop", "crop-flip")
OPTIMIZERS = ("sgd", "adam")
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


class PresetError(ValueError):
    """A preset that cannot be used; the message names the preset, the key and the value."""


Dataset, Augment, Optimizer, Channel = one_of(DATASETS), one_of(AUGMENTS), one_of(OPTIMIZERS), one_of(CHANNELS)
TeacherOptimizer, TeacherSchedule = one_of(("adamw", "sgd")), one_of(("cosine", "onecycle"))
Fraction = Annotated[Float, Field(gt=0.0, lt=1.0)]
Unit = Annotated[Float, Field(ge=0.0, lt=1.0)]
Channels = Annotated[list[Channel], Field(min_length=1)]


@schema
class DataSection:
    dataset: Dataset = "digits"  # digits | shapes | cifar10 | tinyimagenet | cifar100 | folder
    root: Str = ""  # image folder (folder datasets); "" = ../shared/data/<dataset>/train from the repo root
    input_size: Annotated[Int, Field(ge=32)] = 32  # square model input side in pixels (>= the student's stride 32)
    mean: exactly(3, Float, "numbers (R, G, B)") = field(default_factory=lambda: list(CLIP_MEAN))  # normalisation mean
    std: exactly(3, PosFloat, "numbers (R, G, B)") = field(default_factory=lambda: list(CLIP_STD))  # normalisation std
    val_fraction: Fraction = 0.1  # fraction of the training images kept as the validation split
    max_per_class: NonNegInt = 0  # deterministic subsample per class before the split (0 = all)
    num_workers: NonNegInt = 0  # DataLoader worker processes (0 = load in the main process)
    augment: Augment = "none"  # teacher training augmentation: none | crop (pad-4 random crop) | crop-flip

    @model_validator(mode="after")
    def _folder_has_a_root(self) -> "DataSection":
        if self.dataset == "folder" and not self.root:
            problems = Problems()
            problems.expected("root", "an image folder for dataset 'folder'", self.root)
            problems.raise_if_any()
        return self


@schema
class TeacherSection:
    name: NonEmptyStr = "vit_base_patch16_clip_224.openai"  # timm model name
    checkpoint: Str = ""  # local weights (.safetensors / .pt); "" = none (train own when train_epochs > 0)
    img_size: Annotated[Int, Field(ge=16)] = 224  # teacher input side (inputs are resized to it)
    timm_kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm.create_model arguments
    feature_dim: PosInt = 512  # semantic feature size h^Tea (= student.feature_dim = CAT width)
    train_epochs: NonNegInt = 0  # epochs of self-training when no checkpoint is given (0 = require a checkpoint)
    train_lr: PosFloat = 1e-3  # peak learning rate of self-training (after the warm-up)
    batch_size: PosInt = 128  # self-training and feature-extraction batch size
    train_weight_decay: NonNegFloat = 0.05  # weight decay of self-training (AdamW: decoupled; SGD: L2)
    train_optimizer: TeacherOptimizer = "adamw"  # self-training optimizer: adamw | sgd (Nesterov, momentum 0.9)
    train_schedule: TeacherSchedule = "cosine"  # after the warm-up: cosine (to 1 % of train_lr) | onecycle (linear to 0)
    train_warmup: Unit = 0.05  # fraction of the self-training steps with a linear learning-rate warm-up
    label_smoothing: Unit = 0.1  # label smoothing of the self-training cross-entropy
    train_clip_norm: NonNegFloat = 1.0  # gradient-norm clip of self-training (0 = none)
    train_threads: NonNegInt = 0  # torch intra-op threads while self-training (0 = leave them as set)
    cache_dir: Str = ""  # cache of self-trained teachers by content ("" = $RKDSC_TEACHER_CACHE, else WORKDIR/../teacher-cache)


# [student]: StudentConfig's fields (Table I stem widths, Bottleneck planes of layers 1-4, expansion,
# candidate depths 1..max_depth, feature_dim = teacher.feature_dim, attention-pool heads).
StudentSection = section_of(StudentConfig, "StudentSection", module=__name__, derived=("input_size",), types={
    "stem_widths": exactly(3, PosInt, "positive ints"), "planes": exactly(4, PosInt, "positive ints"),
    "expansion": PosInt, "max_depth": PosInt, "feature_dim": PosInt, "heads": PosInt})


@schema
class SearchSection:
    epochs: NonNegInt = 200  # search epochs (paper: 200)
    batch_size: PosInt = 64  # batch size of both halves
    lambda_j: NonNegFloat = 0.05  # lambda_J of Eq. (19), complexity penalty weight (KDL-DARTS only)
    t_alpha: PosFloat = 1.0  # T_alpha of Eq. (13), temperature of the mixture softmax
    t_beta: PosFloat = 2.0  # T_beta of Eq. (17), temperature of the penalty softmax ("temperature of architecture weights")
    lr_alpha: PosFloat = 0.025  # initial architecture learning rate (cosine)
    lr_alpha_min: NonNegFloat = 1e-4  # final architecture learning rate
    lr_w: PosFloat = 3e-4  # initial weight learning rate (cosine)
    lr_w_min: NonNegFloat = 1e-4  # final weight learning rate
    wd_alpha: NonNegFloat = 1e-5  # weight decay of alpha
    wd_w: NonNegFloat = 1e-4  # weight decay of the network weights and the search head
    optimizer: Optimizer = "sgd"  # weight-step optimizer: sgd (momentum) | adam
    optimizer_alpha: Optimizer = "sgd"  # alpha-step optimizer (sgd keeps the penalty's per-candidate gradient beta; see search.py)
    momentum: Unit = 0.9  # SGD momentum
    kd_weight: Annotated[Float, Field(ge=0.0, le=1.0)] = 0.5  # lambda of Eq. (11) in KDL-DARTS steps: kd * MSE + (1 - kd) * CE
    depths: exactly(4, PosInt, "ints") = field(default_factory=lambda: [1, 2, 2, 2])  # fixed depths when the search is skipped
    max_images: NonNegInt = 0  # use at most this many training images in the search (0 = all)


@schema
class Stage1Section:
    epochs: NonNegInt = 300  # stage-1 (MSE distillation) epochs
    batch_size: PosInt = 128  # batch size
    lr: PosFloat = 5e-4  # initial learning rate (cosine)
    lr_min: NonNegFloat = 5e-5  # final learning rate (<= lr)


@schema
class Stage2Section:
    epochs: NonNegInt = 100  # stage-2 (joint with CAT over the channel) epochs
    batch_size: PosInt = 128  # batch size
    lr: PosFloat = 5e-4  # initial learning rate (cosine)
    lr_min: NonNegFloat = 1e-5  # final learning rate (<= lr)
    lambda_kd: NonNegFloat = 1.0  # lambda_KD of Eq. (26): MSE(h_tilde, h^Tea)
    lambda_re: NonNegFloat = 1.0  # lambda_RE of Eq. (26): MSE(h_tilde, h)
    lambda_task: NonNegFloat = 1.0  # lambda_task of Eq. (26): cross-entropy of the head
    lambda_anchor: NonNegFloat = 0.0  # not in Eq. (26): stage 1's MSE(h, h^Tea) kept in stage 2 (holds h's scale); 0 = paper
    snr_db_range: DbRange = field(default_factory=lambda: [5.0, 20.0])  # training SNR drawn uniformly in [lo, hi] dB
    channels: Channels = field(default_factory=lambda: ["awgn", "rayleigh"])  # training channels, one drawn per batch


# [cat]: CATConfig's fields (heads and feed-forward width of the CAT blocks, Eq. (22) compression
# ratio -- paper: 0.8 cifar10, 0.2 cifar100, 0.1 imagenet -- and dropout); width = teacher.feature_dim.
CATSection = section_of(CATConfig, "CATSection", module=__name__, derived=("feature_dim",), types={
    "n_heads": PosInt, "d_ff": PosInt, "compression_ratio": Ratio, "dropout": Unit})


@schema
class HeadSection:
    hidden: NonNegInt = 256  # hidden width of the semantic decoder (0 = linear)


@schema
class BaselineSection:
    epochs: NonNegInt = 100  # JSCC baseline epochs
    batch_size: PosInt = 128  # batch size
    lr: PosFloat = 5e-4  # initial learning rate (cosine)
    lr_min: NonNegFloat = 1e-5  # final learning rate (<= lr)
    snr_db_range: DbRange = field(default_factory=lambda: [5.0, 20.0])  # training SNR range in dB
    channels: Channels = field(default_factory=lambda: ["awgn", "rayleigh"])  # training channels
    tdeepsc_snr_db: Float = 12.0  # T-DeepSC trains at this one SNR (paper Fig. 6: "trained at 12 dB")
    tdeepsc: dict[str, Any] = field(default_factory=dict)  # TDeepSCConfig overrides ({} = paper size at data.input_size)
    rtsc: dict[str, Any] = field(default_factory=dict)  # RTSCConfig overrides ({} = the paper size, 32 px native)


SECTIONS: dict[str, type] = {
    "data": DataSection, "teacher": TeacherSection, "student": StudentSection, "search": SearchSection,
    "stage1": Stage1Section, "stage2": Stage2Section, "cat": CATSection, "head": HeadSection,
    "baseline": BaselineSection,
}


@schema
class Preset:
    name: Str = "unnamed"  # preset name (file stem by default)
    seed: Int = 0  # seed of splits, initialisations and shuffling
    workdir_default: Str = "runs/unnamed"  # work directory when none is given
    description: Str = ""  # one line shown by the CLIs
    data: DataSection = field(default_factory=DataSection)
    teacher: TeacherSection = field(default_factory=TeacherSection)
    student: StudentSection = field(default_factory=StudentSection)
    search: SearchSection = field(default_factory=SearchSection)
    stage1: Stage1Section = field(default_factory=Stage1Section)
    stage2: Stage2Section = field(default_factory=Stage2Section)
    cat: CATSection = field(default_factory=CATSection)
    head: HeadSection = field(default_factory=HeadSection)
    baseline: BaselineSection = field(default_factory=BaselineSection)
    source: str = field(default="", init=False)  # the TOML file it was read from (not a TOML key)

    @model_validator(mode="after")
    def _consistent(self) -> "Preset":
        """Checks across keys and sections; then the model configs must accept the preset."""
        p, t, s = Problems(), self.teacher, self.student
        width = s.planes[-1] * s.expansion
        if width % s.heads:
            p.expected(("student", "heads"), f"a divisor of planes[-1] * expansion = {width}", s.heads)
        if s.feature_dim != t.feature_dim:
            p.expected(("student", "feature_dim"), f"the teacher's feature_dim {t.feature_dim} "
                       "(the student distils the teacher's features)", s.feature_dim)
        if any(d > s.max_depth for d in self.search.depths):
            p.expected(("search", "depths"), f"4 ints in 1..student.max_depth={s.max_depth}", self.search.depths)
        for sec in ("stage1", "stage2", "baseline"):
            obj = getattr(self, sec)
            if obj.lr_min > obj.lr:
                p.expected((sec, "lr_min"), f"a number in [0, {sec}.lr={obj.lr}]", obj.lr_min)
        if t.feature_dim % self.cat.n_heads:
            p.expected(("cat", "n_heads"), f"a divisor of teacher.feature_dim = {t.feature_dim}", self.cat.n_heads)
        if compact_dim_for(t.feature_dim, self.cat.compression_ratio) < 1:
            p.expected(("cat", "compression_ratio"), f"a ratio leaving >= 1 compact value of feature_dim "
                       f"{t.feature_dim}", self.cat.compression_ratio)
        if not p:  # the models' own checks (a preset that validates builds its models)
            for sec, build in (("student", self.student_config), ("cat", self.cat_config)):
                try:
                    build()
                except ValueError as exc:
                    p.note(sec, f"not a valid {type(getattr(self, sec)).__name__}: {exc}")
            for key, cls, build in (("tdeepsc", "TDeepSCConfig", self.tdeepsc_config),
                                    ("rtsc", "RTSCConfig", self.rtsc_config)):
                try:
                    build()
                except (TypeError, ValueError) as exc:
                    p.note(("baseline", key), f"not valid {cls} overrides: {exc}")
        p.raise_if_any()
        return self

    # -- conveniences for the training code ------------------------------------------------
    def student_config(self) -> StudentConfig:
        """`rkdsc.common.models.StudentConfig` of this preset (input_size from [data])."""
        return _model_config(StudentConfig, self.student, input_size=self.data.input_size)

    def cat_config(self) -> CATConfig:
        """`rkdsc.common.models.CATConfig` of this preset (width = teacher.feature_dim)."""
        return _model_config(CATConfig, self.cat, feature_dim=self.teacher.feature_dim)

    def tdeepsc_config(self) -> "TDeepSCConfig":
        """`rkdsc.common.models.tdeepsc.TDeepSCConfig` of this preset: the paper size at data.input_size
        (``TDeepSCConfig.for_input``), with the ``baseline.tdeepsc`` overrides."""
        from rkdsc.common.models.tdeepsc import TDeepSCConfig

        return TDeepSCConfig.for_input(self.data.input_size, **self.baseline.tdeepsc)

    def rtsc_config(self) -> "RTSCConfig":
        """`rkdsc.common.models.rtsc.RTSCConfig` of this preset: the paper size with the ``baseline.rtsc``
        overrides (it runs at its native size whatever data.input_size)."""
        from rkdsc.common.models.rtsc import RTSCConfig

        return RTSCConfig(**{k: tuple(v) if k == "stem_widths" else v for k, v in self.baseline.rtsc.items()})

    def data_root(self) -> Path:
        """Resolved image root of [data] (absolute)."""
        return resolve_data_root(self.data.dataset, self.data.root)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


@functools.cache
def _tuple_fields(cls: type) -> frozenset[str]:
    hints = typing.get_type_hints(cls)
    return frozenset(k for k, tp in hints.items() if typing.get_origin(tp) is tuple)


def _model_config(cls: type, section: Any, **derived: Any) -> Any:
    """The model config `cls` from its preset section (lists back to tuples) and the derived fields."""
    tuples = _tuple_fields(cls)
    values = {k: tuple(v) if k in tuples else v for k, v in dataclasses.asdict(section).items()}
    return cls(**derived, **values)


DEFAULT_ROOTS = {"cifar10": "../shared/data/cifar10/train", "tinyimagenet": "../shared/data/tiny-imagenet/train",
                 "cifar100": "../shared/data/cifar100", "digits": "", "shapes": "", "folder": ""}


def resolve_data_root(dataset: str, root: str) -> Path:
    raw = root or DEFAULT_ROOTS.get(dataset, "")
    if not raw:
        return Path()
    p = Path(raw).expanduser()
    return p if p.is_absolute() else (REPO_ROOT / p).resolve()


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def preset_from_dict(raw: dict[str, Any], name: str = "unnamed", source: str = "") -> Preset:
    """Build and validate a Preset from a TOML-like nested dict."""
    raw = dict(raw)
    pname = raw.pop("name", name)
    if not isinstance(pname, str):
        raise PresetError(f"preset {name!r}: name: expected a string, got {pname!r}")
    try:
        preset = validate(Preset, {"name": pname, **raw})
    except SchemaError as exc:
        raise PresetError(f"preset {pname!r}: {exc}") from None
    preset.source = source
    return preset


def _merge(base: dict[str, Any], overrides: dict[str, Any], preset_name: str) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if "." in key:
            section, sub = key.split(".", 1)
            if "." in sub:
                raise PresetError(f"preset {preset_name!r}: override {key!r}: expected SECTION.KEY")
            value = {sub: value}
            key = section
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise PresetError(f"preset {preset_name!r}: override {key} = {value!r}: expected a table")
            out.setdefault(key, {})
            if not isinstance(out[key], dict):
                raise PresetError(f"preset {preset_name!r}: [{key}] must be a table")
            out[key].update(copy.deepcopy(value))
        else:
            out[key] = copy.deepcopy(value)
    return out


def _find(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise PresetError(f"preset file {name_or_path!r}: no such file")
        return p
    candidate = PRESET_DIR / f"{name_or_path}.toml"
    if not candidate.is_file():
        raise PresetError(f"preset {name_or_path!r}: unknown (built-in presets: {', '.join(available_presets())}; "
                          "or give a path to a .toml file)")
    return candidate


def load_preset(name_or_path: str, overrides: dict[str, Any] | None = None) -> Preset:
    """Read a built-in preset by name or a TOML file by path, apply `overrides`, validate."""
    path = _find(str(name_or_path))
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise PresetError(f"preset file {path}: invalid TOML: {e}") from None
    raw = _merge(raw, overrides or {}, raw.get("name", path.stem))
    return preset_from_dict(raw, name=path.stem, source=str(path))


def with_overrides(preset: Preset, overrides: dict[str, Any]) -> Preset:
    """A validated copy of `preset` with `overrides` (nested or dotted keys) applied."""
    return preset_from_dict(_merge(preset.to_dict(), overrides, preset.name), name=preset.name, source=preset.source)


def parse_set_args(items: list[str] | None) -> dict[str, Any]:
    """['search.epochs=2', 'stage2.channels=["awgn"]'] -> {'search.epochs': 2, ...}; values are
    TOML literals, bare words are strings."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise PresetError(f"--set {item!r}: expected SECTION.KEY=VALUE")
        key, text = item.split("=", 1)
        key = key.strip()
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        out[key] = value
    return out


__all__ = [
    "Preset", "PresetError", "DataSection", "TeacherSection", "StudentSection", "SearchSection",
    "Stage1Section", "Stage2Section", "CATSection", "HeadSection", "BaselineSection", "load_preset",
    "with_overrides", "parse_set_args", "available_presets", "preset_from_dict", "resolve_data_root",
    "PRESET_DIR", "REPO_ROOT", "CLIP_MEAN", "CLIP_STD",
]
