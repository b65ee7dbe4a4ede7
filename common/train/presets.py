"""Training presets: plain TOML files -> nested dataclasses with validation.

The built-in presets live in ``common/train/presets/<name>.toml`` (``smoke``, ``default``,
``cifar10-cpu``, ``tinyimagenet-cpu``, ``paper``); any other path to a ``.toml`` file works too.
Every section and key is optional in the file: missing keys take the dataclass defaults below,
which are the paper's Section IV.A values where the paper gives one. Unknown sections or keys
and values of the wrong type or out of range raise ``PresetError`` naming the preset, the key
and the value.

``load_preset(name_or_path, overrides)`` applies ``overrides`` after the file, either nested
(``{"search": {"epochs": 2}}``) or dotted (``{"search.epochs": 2}``); the CLIs turn
``--set search.epochs=2`` into the latter with ``parse_set_args``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRESET_DIR = Path(__file__).resolve().parent / "presets"
REPO_ROOT = Path(__file__).resolve().parents[2]  # relative data roots resolve against this
DATASETS = ("digits", "cifar10", "tinyimagenet", "cifar100", "folder")
CHANNELS = ("awgn", "rayleigh")
AUGMENTS = ("none", "crop", "crop-flip")
OPTIMIZERS = ("sgd", "adam")
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


class PresetError(ValueError):
    """A preset that cannot be used; the message names the preset, the key and the value."""


@dataclass
class DataSection:
    dataset: str = "digits"  # digits | cifar10 | tinyimagenet | cifar100 | folder
    root: str = ""  # image folder (folder datasets); "" = ../shared/data/<dataset>/train from the repo root
    input_size: int = 32  # square model input side in pixels
    mean: list[float] = field(default_factory=lambda: list(CLIP_MEAN))  # per-channel mean of the normalisation
    std: list[float] = field(default_factory=lambda: list(CLIP_STD))  # per-channel std of the normalisation
    val_fraction: float = 0.1  # fraction of the training images kept as the validation split
    max_per_class: int = 0  # deterministic subsample per class before the split (0 = all)
    num_workers: int = 0  # DataLoader worker processes (0 = load in the main process)
    augment: str = "none"  # teacher training augmentation: none | crop (pad-4 random crop) | crop-flip


@dataclass
class TeacherSection:
    name: str = "vit_base_patch16_clip_224.openai"  # timm model name
    checkpoint: str = ""  # local weights (.safetensors / .pt); "" = none (train own when train_epochs > 0)
    img_size: int = 224  # teacher input side (inputs are resized to it)
    timm_kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm.create_model arguments
    feature_dim: int = 512  # semantic feature size h^Tea (= student.feature_dim = CAT width)
    train_epochs: int = 0  # epochs of self-training when no checkpoint is given (0 = require a checkpoint)
    train_lr: float = 1e-3  # AdamW peak learning rate of self-training (cosine to 1 %)
    batch_size: int = 128  # self-training and feature-extraction batch size
    train_weight_decay: float = 0.05  # AdamW weight decay of self-training


@dataclass
class StudentSection:
    stem_widths: list[int] = field(default_factory=lambda: [32, 32, 64])  # Table I stem convs
    planes: list[int] = field(default_factory=lambda: [16, 32, 64, 128])  # Bottleneck widths of layers 1-4
    expansion: int = 4  # Bottleneck output = planes * expansion
    max_depth: int = 5  # candidate depths 1..max_depth per layer (Table I: 5)
    feature_dim: int = 512  # student output size (must equal teacher.feature_dim)
    heads: int = 8  # attention-pool heads


@dataclass
class SearchSection:
    epochs: int = 200  # search epochs (paper: 200)
    batch_size: int = 64  # batch size of both halves
    lambda_j: float = 0.05  # lambda_J of Eq. (19), complexity penalty weight (KDL-DARTS only)
    t_alpha: float = 1.0  # T_alpha of Eq. (13), temperature of the mixture softmax
    t_beta: float = 2.0  # T_beta of Eq. (17), temperature of the penalty softmax ("temperature of architecture weights")
    lr_alpha: float = 0.025  # initial architecture learning rate (cosine)
    lr_alpha_min: float = 1e-4  # final architecture learning rate
    lr_w: float = 3e-4  # initial weight learning rate (cosine)
    lr_w_min: float = 1e-4  # final weight learning rate
    wd_alpha: float = 1e-5  # weight decay of alpha
    wd_w: float = 1e-4  # weight decay of the network weights and the search head
    optimizer: str = "sgd"  # weight-step optimizer: sgd (momentum) | adam
    optimizer_alpha: str = "sgd"  # alpha-step optimizer (sgd keeps the penalty's per-candidate gradient beta; see search.py)
    momentum: float = 0.9  # SGD momentum
    kd_weight: float = 0.5  # lambda of Eq. (11) in KDL-DARTS steps: kd * MSE + (1 - kd) * CE
    depths: list[int] = field(default_factory=lambda: [1, 2, 2, 2])  # fixed depths when the search is skipped
    max_images: int = 0  # use at most this many training images in the search (0 = all)


@dataclass
class Stage1Section:
    epochs: int = 300  # stage-1 (MSE distillation) epochs
    batch_size: int = 128  # batch size
    lr: float = 5e-4  # initial learning rate (cosine)
    lr_min: float = 5e-5  # final learning rate


@dataclass
class Stage2Section:
    epochs: int = 100  # stage-2 (joint with CAT over the channel) epochs
    batch_size: int = 128  # batch size
    lr: float = 5e-4  # initial learning rate (cosine)
    lr_min: float = 1e-5  # final learning rate
    lambda_kd: float = 1.0  # lambda_KD of Eq. (26): MSE(h_tilde, h^Tea)
    lambda_re: float = 1.0  # lambda_RE of Eq. (26): MSE(h_tilde, h)
    lambda_task: float = 1.0  # lambda_task of Eq. (26): cross-entropy of the head
    snr_db_range: list[float] = field(default_factory=lambda: [5.0, 20.0])  # training SNR drawn uniformly in [lo, hi] dB
    channels: list[str] = field(default_factory=lambda: ["awgn", "rayleigh"])  # training channels, one drawn per batch


@dataclass
class CATSection:
    d_ff: int = 2048  # feed-forward width of the CAT blocks
    n_heads: int = 8  # attention heads of the CAT blocks
    compression_ratio: float = 0.8  # Eq. (22); paper: 0.8 cifar10, 0.2 cifar100, 0.1 imagenet


@dataclass
class HeadSection:
    hidden: int = 256  # hidden width of the semantic decoder (0 = linear)


@dataclass
class BaselineSection:
    epochs: int = 100  # JSCC baseline epochs
    batch_size: int = 128  # batch size
    lr: float = 5e-4  # initial learning rate (cosine)
    lr_min: float = 1e-5  # final learning rate
    snr_db_range: list[float] = field(default_factory=lambda: [5.0, 20.0])  # training SNR range in dB
    channels: list[str] = field(default_factory=lambda: ["awgn", "rayleigh"])  # training channels


SECTIONS: dict[str, type] = {
    "data": DataSection, "teacher": TeacherSection, "student": StudentSection, "search": SearchSection,
    "stage1": Stage1Section, "stage2": Stage2Section, "cat": CATSection, "head": HeadSection,
    "baseline": BaselineSection,
}


@dataclass
class Preset:
    name: str = "unnamed"  # preset name (file stem by default)
    seed: int = 0  # seed of splits, initialisations and shuffling
    workdir_default: str = "runs/unnamed"  # work directory when none is given
    description: str = ""  # one line shown by the CLIs
    data: DataSection = field(default_factory=DataSection)
    teacher: TeacherSection = field(default_factory=TeacherSection)
    student: StudentSection = field(default_factory=StudentSection)
    search: SearchSection = field(default_factory=SearchSection)
    stage1: Stage1Section = field(default_factory=Stage1Section)
    stage2: Stage2Section = field(default_factory=Stage2Section)
    cat: CATSection = field(default_factory=CATSection)
    head: HeadSection = field(default_factory=HeadSection)
    baseline: BaselineSection = field(default_factory=BaselineSection)
    source: str = ""  # the TOML file it was read from (not a TOML key)

    # -- conveniences for the training code ------------------------------------------------
    def student_config(self):
        """`rkdsc.common.models.StudentConfig` of this preset (input_size from [data])."""
        from rkdsc.common.models.student import StudentConfig

        s = self.student
        return StudentConfig(input_size=self.data.input_size, stem_widths=tuple(s.stem_widths),
                             planes=tuple(s.planes), expansion=s.expansion, max_depth=s.max_depth,
                             feature_dim=s.feature_dim, heads=s.heads)

    def cat_config(self):
        """`rkdsc.common.models.CATConfig` of this preset (width = teacher.feature_dim)."""
        from rkdsc.common.models.cat import CATConfig

        return CATConfig(feature_dim=self.teacher.feature_dim, n_heads=self.cat.n_heads, d_ff=self.cat.d_ff,
                         compression_ratio=self.cat.compression_ratio)

    def data_root(self) -> Path:
        """Resolved image root of [data] (absolute)."""
        return resolve_data_root(self.data.dataset, self.data.root)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


DEFAULT_ROOTS = {"cifar10": "../shared/data/cifar10/train", "tinyimagenet": "../shared/data/tiny-imagenet/train",
                 "cifar100": "../shared/data/cifar100", "digits": "", "folder": ""}


def resolve_data_root(dataset: str, root: str) -> Path:
    raw = root or DEFAULT_ROOTS.get(dataset, "")
    if not raw:
        return Path()
    p = Path(raw).expanduser()
    return p if p.is_absolute() else (REPO_ROOT / p).resolve()


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


# -- validation ---------------------------------------------------------------------------

def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """(ok, converted value) for the dataclass annotation `tp`."""
    origin = typing.get_origin(tp)
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            return False, value
        out = []
        for v in value:
            ok, cv = _type_ok(v, inner)
            if not ok:
                return False, value
            out.append(cv)
        return True, out
    if origin is dict:
        return isinstance(value, dict), dict(value) if isinstance(value, dict) else value
    raise TypeError(f"unsupported annotation {tp!r}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "table"
    return getattr(tp, "__name__", str(tp))


def _build_section(cls: type, values: dict[str, Any], where: str, preset_name: str):
    if not isinstance(values, dict):
        raise PresetError(f"preset {preset_name!r}: [{where}] must be a table, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known or isinstance(hints[key], type) and dataclasses.is_dataclass(hints[key]):
            raise PresetError(f"preset {preset_name!r}: unknown key {key!r} in [{where}] "
                              f"(value {value!r}; known keys: {', '.join(sorted(known - set(SECTIONS)))})")
        ok, converted = _type_ok(value, hints[key])
        if not ok:
            raise PresetError(f"preset {preset_name!r}: {where}.{key} = {value!r}: expected {_type_name(hints[key])}")
        kwargs[key] = converted
    return cls(**kwargs)


def _check(cond: bool, preset: Preset, key: str, value: Any, expected: str) -> None:
    if not cond:
        raise PresetError(f"preset {preset.name!r}: {key} = {value!r}: expected {expected}")


def validate(p: Preset) -> Preset:
    """Range and consistency checks; raises PresetError naming the key and the value."""
    d, t, s, se = p.data, p.teacher, p.student, p.search
    _check(d.dataset in DATASETS, p, "data.dataset", d.dataset, f"one of {', '.join(DATASETS)}")
    _check(d.dataset != "folder" or bool(d.root), p, "data.root", d.root, "an image folder for dataset 'folder'")
    _check(d.input_size >= 32, p, "data.input_size", d.input_size, "an int >= 32 (the student's overall stride)")
    for key in ("mean", "std"):
        v = getattr(d, key)
        _check(len(v) == 3, p, f"data.{key}", v, "3 numbers (R, G, B)")
    _check(all(x > 0 for x in d.std), p, "data.std", d.std, "positive numbers")
    _check(0.0 < d.val_fraction < 1.0, p, "data.val_fraction", d.val_fraction, "a fraction in (0, 1)")
    _check(d.max_per_class >= 0, p, "data.max_per_class", d.max_per_class, "an int >= 0 (0 = all)")
    _check(d.num_workers >= 0, p, "data.num_workers", d.num_workers, "an int >= 0")
    _check(d.augment in AUGMENTS, p, "data.augment", d.augment, f"one of {', '.join(AUGMENTS)}")
    _check(bool(t.name), p, "teacher.name", t.name, "a timm model name")
    _check(t.img_size >= 16, p, "teacher.img_size", t.img_size, "an int >= 16")
    _check(t.feature_dim >= 1, p, "teacher.feature_dim", t.feature_dim, "an int >= 1")
    _check(t.train_epochs >= 0, p, "teacher.train_epochs", t.train_epochs, "an int >= 0")
    _check(t.train_lr > 0, p, "teacher.train_lr", t.train_lr, "a positive number")
    _check(t.batch_size >= 1, p, "teacher.batch_size", t.batch_size, "an int >= 1")
    _check(t.train_weight_decay >= 0, p, "teacher.train_weight_decay", t.train_weight_decay, "a number >= 0")
    _check(len(s.stem_widths) == 3 and all(w >= 1 for w in s.stem_widths), p, "student.stem_widths",
           s.stem_widths, "3 positive ints")
    _check(len(s.planes) == 4 and all(w >= 1 for w in s.planes), p, "student.planes", s.planes, "4 positive ints")
    _check(s.expansion >= 1, p, "student.expansion", s.expansion, "an int >= 1")
    _check(s.max_depth >= 1, p, "student.max_depth", s.max_depth, "an int >= 1")
    _check(s.heads >= 1 and (s.planes[-1] * s.expansion) % s.heads == 0, p, "student.heads", s.heads,
           f"a divisor of planes[-1] * expansion = {s.planes[-1] * s.expansion}")
    _check(s.feature_dim == t.feature_dim, p, "student.feature_dim", s.feature_dim,
           f"the teacher's feature_dim {t.feature_dim} (the student distils the teacher's features)")
    _check(se.epochs >= 0, p, "search.epochs", se.epochs, "an int >= 0")
    _check(se.batch_size >= 1, p, "search.batch_size", se.batch_size, "an int >= 1")
    _check(se.lambda_j >= 0, p, "search.lambda_j", se.lambda_j, "a number >= 0")
    for key in ("t_alpha", "t_beta", "lr_alpha", "lr_w"):
        _check(getattr(se, key) > 0, p, f"search.{key}", getattr(se, key), "a positive number")
    for key in ("lr_alpha_min", "lr_w_min", "wd_alpha", "wd_w"):
        _check(getattr(se, key) >= 0, p, f"search.{key}", getattr(se, key), "a number >= 0")
    _check(se.optimizer in OPTIMIZERS, p, "search.optimizer", se.optimizer, f"one of {', '.join(OPTIMIZERS)}")
    _check(se.optimizer_alpha in OPTIMIZERS, p, "search.optimizer_alpha", se.optimizer_alpha,
           f"one of {', '.join(OPTIMIZERS)}")
    _check(0.0 <= se.momentum < 1.0, p, "search.momentum", se.momentum, "a number in [0, 1)")
    _check(0.0 <= se.kd_weight <= 1.0, p, "search.kd_weight", se.kd_weight, "a number in [0, 1]")
    _check(len(se.depths) == 4 and all(1 <= x <= s.max_depth for x in se.depths), p, "search.depths",
           se.depths, f"4 ints in 1..student.max_depth={s.max_depth}")
    _check(se.max_images >= 0, p, "search.max_images", se.max_images, "an int >= 0 (0 = all)")
    for sec in ("stage1", "stage2", "baseline"):
        obj = getattr(p, sec)
        _check(obj.epochs >= 0, p, f"{sec}.epochs", obj.epochs, "an int >= 0")
        _check(obj.batch_size >= 1, p, f"{sec}.batch_size", obj.batch_size, "an int >= 1")
        _check(obj.lr > 0, p, f"{sec}.lr", obj.lr, "a positive number")
        _check(0 <= obj.lr_min <= obj.lr, p, f"{sec}.lr_min", obj.lr_min, f"a number in [0, {sec}.lr={obj.lr}]")
    for key in ("lambda_kd", "lambda_re", "lambda_task"):
        _check(getattr(p.stage2, key) >= 0, p, f"stage2.{key}", getattr(p.stage2, key), "a number >= 0")
    for sec in ("stage2", "baseline"):
        obj = getattr(p, sec)
        r = obj.snr_db_range
        _check(len(r) == 2 and r[0] <= r[1], p, f"{sec}.snr_db_range", r, "[low, high] in dB with low <= high")
        _check(len(obj.channels) >= 1 and all(c in CHANNELS for c in obj.channels), p, f"{sec}.channels",
               obj.channels, f"a non-empty list of {', '.join(CHANNELS)}")
    _check(0.0 <= p.cat.compression_ratio < 1.0, p, "cat.compression_ratio", p.cat.compression_ratio,
           "a number in [0, 1)")
    _check(p.cat.n_heads >= 1 and t.feature_dim % p.cat.n_heads == 0, p, "cat.n_heads", p.cat.n_heads,
           f"a divisor of teacher.feature_dim = {t.feature_dim}")
    _check(p.cat.d_ff >= 1, p, "cat.d_ff", p.cat.d_ff, "an int >= 1")
    _check(int(t.feature_dim * (1 - p.cat.compression_ratio)) >= 1, p, "cat.compression_ratio",
           p.cat.compression_ratio, f"a ratio leaving >= 1 compact value of feature_dim {t.feature_dim}")
    _check(p.head.hidden >= 0, p, "head.hidden", p.head.hidden, "an int >= 0")
    return p


def preset_from_dict(raw: dict[str, Any], name: str = "unnamed", source: str = "") -> Preset:
    """Build and validate a Preset from a TOML-like nested dict."""
    raw = dict(raw)
    top_hints = typing.get_type_hints(Preset)
    kwargs: dict[str, Any] = {"name": raw.pop("name", name), "source": source}
    pname = kwargs["name"]
    if not isinstance(pname, str):
        raise PresetError(f"preset {name!r}: name = {pname!r}: expected str")
    for key, value in raw.items():
        if key in SECTIONS:
            kwargs[key] = _build_section(SECTIONS[key], value, key, pname)
        elif key in ("seed", "workdir_default", "description"):
            ok, converted = _type_ok(value, top_hints[key])
            if not ok:
                raise PresetError(f"preset {pname!r}: {key} = {value!r}: expected {_type_name(top_hints[key])}")
            kwargs[key] = converted
        else:
            raise PresetError(f"preset {pname!r}: unknown key {key!r} (value {value!r}; known: name, seed, "
                              f"workdir_default, description and sections [{'], ['.join(SECTIONS)}])")
    return validate(Preset(**kwargs))


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
