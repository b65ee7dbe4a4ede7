"""Bundle manifest: schema, sha256 checksums and verification (no torch).

A bundle is a directory holding ``manifest.json`` and the component files it names (ONNX
models). Contract (design note item 4, ``docs/architecture.md`` "Bundle"):

    format_version      int, 2 (FORMAT_VERSION; written) or 1 (read: the single-input format)
    tasks               non-empty list of {name, num_classes, class_names, compression_ratio,
                        compact_dim, symbols_per_image, edge, server, input, feature_dim,
                        snr_train_db}; all but the first three may be left out (the top-level
                        values, components "<name>.edge" / "<name>.server"); optional class_ids:
                        the data set's own ids (e.g. wnids), one per name. Version 2 writers
                        put ``input``, ``feature_dim`` and ``snr_train_db`` in a task only where
                        it differs from the top level (``drop_top_level_repeats``)
    feature_dim         int > 0 (the student / teacher feature width F)
    compact_dim         int == compact_dim_for(feature_dim, compression_ratio)
    compression_ratio   number in [0, 1)
    symbols_per_image   int == symbols_for(compact_dim) = ceil(compact_dim / 2)
    input               {size: int or [H, W], mean: [3 numbers], std: [3 numbers > 0]}
    snr_train_db        [lo, hi] with lo <= hi (the SNR range seen in training)
    components          name -> {file, sha256, params, inputs?, outputs?}
    provenance          object (created, command, git, preset, seed, method, ...)

Several codecs per task (SNR-adaptive rate): a task may list ``codecs`` ({name,
compression_ratio, compact_dim, symbols_per_image, edge, server, accuracy}: one edge/server
pair per compression ratio; the task's own fields are its default codec, which must be one of
them) and a ``rate_policy`` ({kind, margin, channel, split, table: [{snr_db, codec}] ascending}):
at link SNR x the edge uses the codec of the last row with snr_db <= x (the first row below the
table; ``TaskSpec.choose_codec``). Frames name their codec; "" is the default one.

Top-level ``compact_dim`` / ``compression_ratio`` / ``symbols_per_image`` / ``input`` /
``feature_dim`` / ``snr_train_db`` are the first task's (a version-1 reader sees a sound one-task
view; it refuses version 2, so it never applies one task's preprocessing to another). Version 1
is read as version 2 whose tasks all take the top-level values (``task_specs``).
Unknown keys are ignored (the format grows by adding keys). ``compact_dim_for`` is the project's
one compact-dimension rule (the CAT model and the presets call it too). ``validate_manifest``
returns one line per problem (``tasks[0].num_classes: expected a value >= 1, got -1``), through
``rkdsc.common.schema``; ``verify_bundle`` adds the files' checksums.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import AfterValidator, PlainValidator, ValidationInfo, field_validator, model_validator

from rkdsc.common.schema import (DbRange, Float, Int, NonEmptyStr, NonNegInt, PosFloat, PosInt, Problems,
                                 Ratio, SchemaError, Str, exactly, expected, one_of, schema, validate)

FORMAT_VERSION = 2           # what export and merge write
READABLE_VERSIONS = (1, 2)   # 1: one input spec / feature_dim for every task (read as 2)
MANIFEST_NAME = "manifest.json"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class BundleError(Exception):
    """A bundle that cannot be used: missing, unreadable, or failing verification."""


# ----------------------------------------------------------------------------- helpers

def compact_dim_for(feature_dim: int, compression_ratio: float) -> int:
    """CAT compact dimension: floor(feature_dim * (1 - compression_ratio)) (paper Table II: 512 ->
    102, 409, 460 for 0.8, 0.2, 0.1), guarded against float error (512 * (1 - 0.8) =
    102.39999... -> 102; 10 * (1 - 0.9) = 0.99999... -> 1). The one rule: CATConfig.compact_dim,
    the preset check and the manifest check all call it."""
    return int(math.floor(feature_dim * (1.0 - compression_ratio) + 1e-9))


def symbols_for(compact_dim: int) -> int:
    """Complex symbols per image: ceil(compact_dim / 2) (odd lengths are zero-padded)."""
    return (int(compact_dim) + 1) // 2


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ----------------------------------------------------------------------------- typed views

@dataclass(frozen=True)
class InputSpec:
    """Image preprocessing the edge model expects."""
    size: tuple[int, int]           # (H, W) in pixels the image is resized to
    mean: tuple[float, float, float]  # per-channel mean subtracted after scaling to [0, 1]
    std: tuple[float, float, float]   # per-channel std divided by after mean subtraction

    @classmethod
    def from_dict(cls, spec: "InputSpec | dict") -> "InputSpec":
        if isinstance(spec, InputSpec):
            return spec
        size = spec["size"]
        hw = (int(size), int(size)) if _is_int(size) else (int(size[0]), int(size[1]))
        return cls(size=hw, mean=tuple(float(v) for v in spec["mean"]),
                   std=tuple(float(v) for v in spec["std"]))


@dataclass(frozen=True)
class CodecSpec:
    """One codec of a task: an edge/server pair at one compression ratio."""
    name: str                  # codec name ("" = the task's default codec when it lists none)
    compression_ratio: float
    compact_dim: int           # real values the CAT encoder emits per image
    symbols_per_image: int     # complex channel symbols per image
    edge: str                  # component name of the edge part
    server: str                # component name of the server part


@dataclass(frozen=True)
class TaskSpec:
    """One task of a bundle, with the defaults of the top level resolved."""
    name: str                      # task name, e.g. "digits"
    num_classes: int               # C, the width of the logits
    class_names: tuple[str, ...]   # label index -> name, length C
    compression_ratio: float       # CAT compression ratio of this task's codec
    compact_dim: int               # real values the CAT encoder emits per image
    symbols_per_image: int         # complex channel symbols per image, ceil(compact_dim/2)
    edge: str                      # component name of the edge part (image, snr_db -> symbols)
    server: str                    # component name of the server part (symbols, snr_db -> logits)
    class_ids: tuple[str, ...] = ()  # the data set's own class ids (e.g. wnids), length C; () = the names
    input: InputSpec | None = None   # this task's preprocessing (task_specs always sets it)
    feature_dim: int = 0             # this task's feature width F (task_specs always sets it)
    snr_train_db: tuple[float, float] = (0.0, 0.0)  # the SNR range this task's codec was trained on
    codecs: tuple[CodecSpec, ...] = ()  # the task's codecs (several compression ratios); () = only the default
    rate_policy: Optional[dict] = None  # {kind, margin, channel, split, table: [{snr_db, codec}]}

    @property
    def default_codec(self) -> CodecSpec:
        """The codec of the task's own fields (edge, server, compact_dim, ...)."""
        for c in self.codecs:
            if (c.edge, c.server) == (self.edge, self.server):
                return c
        return CodecSpec("", self.compression_ratio, self.compact_dim, self.symbols_per_image, self.edge, self.server)

    @property
    def codec_names(self) -> list[str]:
        return [c.name for c in self.codecs] or [""]

    def codec(self, name: str | None = None) -> CodecSpec:
        """Codec ``name`` ("" or None: the default one); KeyError naming the known ones."""
        if not name:
            return self.default_codec
        for c in self.codecs:
            if c.name == name:
                return c
        raise KeyError(f"codec: unknown codec {name!r} of task {self.name!r} (known: "
                       f"{', '.join(repr(n) for n in self.codec_names)})")

    def choose_codec(self, snr_db: float) -> CodecSpec:
        """The codec the task's rate policy picks at link SNR ``snr_db`` (the default codec
        without a policy): the last table row with snr_db <= the link SNR, else the first row."""
        if not self.rate_policy:
            return self.default_codec
        table = self.rate_policy["table"]
        row = table[0]
        for r in table:
            if float(r["snr_db"]) <= float(snr_db):
                row = r
        return self.codec(row["codec"])

    def label_index(self, name: str) -> int | None:
        """Class index of a class name or a class id (a class folder may be named either way)."""
        for names in (self.class_names, self.class_ids):
            if name in names:
                return names.index(name)
        return None


PER_TASK_DEFAULTED = ("input", "feature_dim", "snr_train_db")  # format 2: a task's own, else the top level


def drop_top_level_repeats(manifest: dict) -> dict:
    """Remove from every task the ``PER_TASK_DEFAULTED`` values equal to the top level (in place;
    returns the manifest): a task carries its own input / feature_dim / snr_train_db only where
    it differs, so a one-task bundle has each value once (``input.size`` is the key to edit)."""
    for task in manifest.get("tasks", []):
        for key in PER_TASK_DEFAULTED:
            if key in task and task[key] == manifest.get(key):
                del task[key]
    return manifest


def task_specs(manifest: dict) -> list[TaskSpec]:
    """Resolve every task of a (valid) manifest to a TaskSpec."""
    specs = []
    top_input = InputSpec.from_dict(manifest["input"])
    for task in manifest["tasks"]:
        name = task["name"]
        snr = task.get("snr_train_db") or manifest["snr_train_db"]
        specs.append(TaskSpec(
            name=name,
            num_classes=int(task["num_classes"]),
            class_names=tuple(task["class_names"]),
            compression_ratio=float(task.get("compression_ratio", manifest["compression_ratio"])),
            compact_dim=int(task.get("compact_dim", manifest["compact_dim"])),
            symbols_per_image=int(task.get("symbols_per_image", manifest["symbols_per_image"])),
            edge=task.get("edge", f"{name}.edge"),
            server=task.get("server", f"{name}.server"),
            class_ids=tuple(task.get("class_ids") or ()),
            input=InputSpec.from_dict(task["input"]) if task.get("input") else top_input,
            feature_dim=int(task.get("feature_dim") or manifest["feature_dim"]),
            snr_train_db=(float(snr[0]), float(snr[1])),
            codecs=tuple(CodecSpec(str(c["name"]), float(c["compression_ratio"]), int(c["compact_dim"]),
                                   int(c["symbols_per_image"]), str(c["edge"]), str(c["server"]))
                         for c in task.get("codecs") or ()),
            rate_policy=copy.deepcopy(task.get("rate_policy")) or None,
        ))
    return specs


# ----------------------------------------------------------------------------- validation

def _format_version(value: int) -> int:
    if value not in READABLE_VERSIONS:
        raise expected(" or ".join(str(v) for v in READABLE_VERSIONS))
    return value


def _image_size(value: Any) -> Any:
    if (_is_int(value) and value > 0) or (isinstance(value, list) and len(value) == 2
                                          and all(_is_int(v) and v > 0 for v in value)):
        return value
    raise expected("a positive int or [H, W]")


def _relative_file(value: str) -> str:
    p = Path(value)
    if p.is_absolute() or ".." in p.parts or "\\" in value:
        raise expected("a path relative to the bundle")
    return value


def _sha256(value: Any) -> str:
    if isinstance(value, str) and _SHA256_RE.match(value):
        return value
    raise expected("64 lowercase hex digits")


def _non_empty(what: str):
    def check(value):
        if not value:
            raise expected(f"a non-empty {what}")
        return value
    return AfterValidator(check)


@schema(extra="ignore")
class _Input:
    size: Annotated[Any, PlainValidator(_image_size)]
    mean: exactly(3, Float, "numbers")
    std: exactly(3, PosFloat, "numbers")


@schema(extra="ignore")
class _Component:
    file: Annotated[NonEmptyStr, AfterValidator(_relative_file)]
    sha256: Annotated[str, PlainValidator(_sha256)]
    params: NonNegInt
    inputs: dict[str, Any] = field(default_factory=dict)   # name -> description
    outputs: dict[str, Any] = field(default_factory=dict)


@schema(extra="ignore")
class _Codec:
    name: NonEmptyStr
    compression_ratio: Ratio
    compact_dim: PosInt
    symbols_per_image: PosInt
    edge: NonEmptyStr
    server: NonEmptyStr
    accuracy: dict[str, Any] = field(default_factory=dict)  # channel -> {"<snr>dB": accuracy} at export


@schema(extra="ignore")
class _PolicyRow:
    snr_db: Float
    codec: NonEmptyStr


RATE_POLICIES = ("fewest-symbols-within-margin",)


def _fraction(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise expected("a fraction in [0, 1]")
    return value


@schema(extra="ignore")
class _RatePolicy:
    kind: one_of(RATE_POLICIES)
    margin: Annotated[Float, AfterValidator(_fraction)]
    channel: NonEmptyStr
    table: Annotated[list[_PolicyRow], _non_empty("list of {snr_db, codec} rows")]
    split: Str = ""

    @model_validator(mode="after")
    def _ascending(self) -> "_RatePolicy":
        snrs = [r.snr_db for r in self.table]
        if snrs != sorted(snrs) or len(set(snrs)) != len(snrs):
            problems = Problems()
            problems.expected("table", "rows in strictly ascending snr_db", snrs)
            problems.raise_if_any()
        return self


@schema(extra="ignore")
class _Task:
    name: NonEmptyStr
    num_classes: PosInt
    class_names: list[Str]
    class_ids: Optional[list[Str]] = None  # the data set's own ids (e.g. Tiny-ImageNet wnids), one per name
    # left out: the top-level value / the component "<name>.edge" / "<name>.server" (None here)
    compression_ratio: Ratio = None
    compact_dim: PosInt = None
    symbols_per_image: PosInt = None
    edge: NonEmptyStr = None
    server: NonEmptyStr = None
    # format 2: per-task preprocessing, feature width and training SNR range (None: the top level)
    input: Optional[_Input] = None
    feature_dim: PosInt = None
    snr_train_db: Optional[DbRange] = None
    # several codecs (compression ratios) and the rule that picks one from the link SNR
    codecs: Optional[list[_Codec]] = None
    rate_policy: Optional[_RatePolicy] = None

    @model_validator(mode="after")
    def _class_names_count(self) -> "_Task":
        problems = Problems()
        if len(self.class_names) != self.num_classes:
            problems.expected("class_names", f"{self.num_classes} names (num_classes)", self.class_names)
        if self.class_ids is not None and (len(self.class_ids) != self.num_classes
                                           or len(set(self.class_ids)) != len(self.class_ids)):
            problems.expected("class_ids", f"{self.num_classes} distinct ids (num_classes)", self.class_ids)
        problems.raise_if_any()
        return self


def _compact_problem(feature_dim: int, ratio: float, compact: int) -> str | None:
    want = compact_dim_for(feature_dim, ratio)
    return None if compact == want else (f"floor(feature_dim * (1 - compression_ratio)) = "
                                         f"floor({feature_dim} * (1 - {ratio})) = {want}")


def _symbols_problem(compact: int, symbols: int) -> str | None:
    want = symbols_for(compact)
    return None if symbols == want else f"ceil(compact_dim / 2) = ceil({compact} / 2) = {want}"


def _declared_width(components: dict, comp: str, kind: str, tensor: str) -> tuple[int | None, Any]:
    """The last dimension of a component's declared ``inputs``/``outputs`` tensor shape (None when
    not declared or symbolic), with the shape for the message."""
    c = components.get(comp)
    desc = getattr(c, kind, None) if c is not None else None
    entry = desc.get(tensor) if isinstance(desc, dict) else None
    shape = entry.get("shape") if isinstance(entry, dict) else None
    if isinstance(shape, list) and shape and _is_int(shape[-1]):
        return shape[-1], shape
    return None, shape


def _declared_widths(problems: Problems, i: int, t: "_Task", components: dict, compact: int | None) -> None:
    """A task's num_classes / compact_dim against the shapes its components declare (what the
    ONNX files were exported with; their sha256 ties them to the files)."""
    edge, server = t.edge or f"{t.name}.edge", t.server or f"{t.name}.server"
    for value, key, comp, kind, tensor in ((t.num_classes, "num_classes", server, "outputs", "logits"),
                                           (compact, "compact_dim", server, "inputs", "symbols"),
                                           (compact, "compact_dim", edge, "outputs", "symbols")):
        width, shape = _declared_width(components, comp, kind, tensor)
        if value is not None and width is not None and width != value:
            problems.expected((i, key), f"{width}, the width of component {comp!r} {kind}.{tensor} {shape}",
                              value)


def _codec_problems(problems: Problems, i: int, t: "_Task", components: dict, feature_dim: int | None) -> None:
    """A task's codecs (names unique, components present, dimension rules, the default codec
    among them) and its rate policy (naming codecs it has)."""
    names = [c.name for c in t.codecs or []]
    edge, server = t.edge or f"{t.name}.edge", t.server or f"{t.name}.server"
    for j, c in enumerate(t.codecs or []):
        key = (i, "codecs", j)
        if names.count(c.name) > 1:
            problems.note((*key, "name"), f"duplicate codec name {c.name!r}")
        if feature_dim is not None and (problem := _compact_problem(feature_dim, c.compression_ratio, c.compact_dim)):
            problems.expected((*key, "compact_dim"), problem, c.compact_dim)
        if problem := _symbols_problem(c.compact_dim, c.symbols_per_image):
            problems.expected((*key, "symbols_per_image"), problem, c.symbols_per_image)
        for role in ("edge", "server"):
            comp = getattr(c, role)
            if components and comp not in components:
                problems.note((*key, role), f"names component {comp!r}, which is not in components "
                                            f"(have {sorted(components)})")
        for value, k, comp, kind, tensor in ((c.compact_dim, "compact_dim", c.server, "inputs", "symbols"),
                                             (c.compact_dim, "compact_dim", c.edge, "outputs", "symbols"),
                                             (t.num_classes, "num_classes", c.server, "outputs", "logits")):
            width, shape = _declared_width(components, comp, kind, tensor)
            if width is not None and width != value:
                problems.expected((*key, k), f"{width}, the width of component {comp!r} {kind}.{tensor} {shape}", value)
    if t.codecs and not any((c.edge, c.server) == (edge, server) for c in t.codecs):
        problems.note((i, "codecs"), f"none is the task's default codec (edge {edge!r}, server {server!r})")
    if t.rate_policy is not None:
        if not t.codecs:
            problems.note((i, "rate_policy"), "needs codecs to choose from")
        for j, row in enumerate(t.rate_policy.table):
            if t.codecs and row.codec not in names:
                problems.expected((i, "rate_policy", "table", j, "codec"), f"one of the task's codecs {names}",
                                  row.codec)


@schema(extra="ignore")
class _Manifest:
    """The manifest schema (field order = validation order: later checks see earlier fields)."""
    format_version: Annotated[Int, AfterValidator(_format_version)]
    feature_dim: PosInt
    compression_ratio: Ratio
    compact_dim: PosInt
    symbols_per_image: PosInt
    input: _Input
    snr_train_db: DbRange
    components: Annotated[dict[str, _Component], _non_empty("object name -> component")]
    tasks: Annotated[list[_Task], _non_empty("list of tasks")]
    provenance: dict[str, Any]

    @field_validator("compact_dim")
    @classmethod
    def _compact_dim_rule(cls, compact: int, info: ValidationInfo) -> int:
        d = info.data  # the fields before this one that validated
        if "feature_dim" in d and "compression_ratio" in d:
            if problem := _compact_problem(d["feature_dim"], d["compression_ratio"], compact):
                raise expected(problem)
        return compact

    @field_validator("symbols_per_image")
    @classmethod
    def _symbols_rule(cls, symbols: int, info: ValidationInfo) -> int:
        if "compact_dim" in info.data and (problem := _symbols_problem(info.data["compact_dim"], symbols)):
            raise expected(problem)
        return symbols

    @field_validator("tasks")
    @classmethod
    def _tasks_consistent(cls, tasks: list[_Task], info: ValidationInfo) -> list[_Task]:
        d, problems, seen = info.data, Problems(), set()
        components = d.get("components")
        for i, t in enumerate(tasks):
            if t.name in seen:
                problems.note((i, "name"), f"duplicate task name {t.name!r}")
            seen.add(t.name)
            feature_dim = d.get("feature_dim") if t.feature_dim is None else t.feature_dim
            if any(v is not None for v in (t.compression_ratio, t.compact_dim, t.symbols_per_image, t.feature_dim)):
                ratio = d.get("compression_ratio") if t.compression_ratio is None else t.compression_ratio
                compact = d.get("compact_dim") if t.compact_dim is None else t.compact_dim
                symbols = d.get("symbols_per_image") if t.symbols_per_image is None else t.symbols_per_image
                if None not in (feature_dim, ratio, compact) and \
                        (problem := _compact_problem(feature_dim, ratio, compact)):
                    problems.expected((i, "compact_dim"), problem, compact)
                if None not in (compact, symbols) and (problem := _symbols_problem(compact, symbols)):
                    problems.expected((i, "symbols_per_image"), problem, symbols)
            for role in ("edge", "server"):
                comp = getattr(t, role) or f"{t.name}.{role}"
                if components and comp not in components:
                    problems.note((i, role), f"names component {comp!r}, which is not in components "
                                             f"(have {sorted(components)})")
            compact = d.get("compact_dim") if t.compact_dim is None else t.compact_dim
            _declared_widths(problems, i, t, components or {}, compact)
            _codec_problems(problems, i, t, components or {}, feature_dim)
        problems.raise_if_any()
        return tasks

    @model_validator(mode="after")
    def _top_level_is_the_first_task(self) -> "_Manifest":
        problems, first = Problems(), self.tasks[0]
        for key in ("compression_ratio", "compact_dim", "symbols_per_image", "input", "feature_dim", "snr_train_db"):
            mine, top = getattr(first, key), getattr(self, key)
            if mine is not None and mine != top:
                problems.expected(key, f"the first task's value {mine!r} (tasks[0].{key})", top)
        problems.raise_if_any()
        return self


def validate_manifest(manifest: Any) -> list[str]:
    """Schema problems of a manifest dict, each naming the key; empty when sound."""
    if not isinstance(manifest, dict):
        return [f"manifest: expected a JSON object, got {type(manifest).__name__}"]
    try:
        validate(_Manifest, manifest, table="an object")
    except SchemaError as exc:
        return exc.problems
    return []


# ----------------------------------------------------------------------------- the models' own shapes

# What each part's ONNX graph must look like: the role's input and output tensor names (the
# runtime feeds and fetches these).
PART_TENSORS = {"edge": (("image", "snr_db"), "symbols"), "server": (("symbols", "snr_db"), "logits")}

Shape = Optional[list]  # ints (fixed dims), strings (named dynamic dims), None (unknown); None = no shape


class _Wire:
    """Just enough of the protobuf wire format to walk an ONNX file's fields without the onnx
    package (the service images do not have it) and without loading the weights: every field
    that is not wanted (initializers, nodes) is skipped by its length prefix."""

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf

    def varint(self, pos: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            if pos >= len(self.buf) or shift > 63:
                raise ValueError("truncated varint")
            byte = self.buf[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value, pos
            shift += 7

    def fields(self, start: int = 0, end: int | None = None):
        """(field number, wire type, value) of a message: an int for varints, (start, end) of the
        bytes for length-delimited fields, None for fixed-width ones."""
        end = len(self.buf) if end is None else end
        pos = start
        while pos < end:
            key, pos = self.varint(pos)
            number, kind = key >> 3, key & 7
            if kind == 0:
                value, pos = self.varint(pos)
            elif kind == 2:
                size, pos = self.varint(pos)
                value = (pos, pos + size)
                pos += size
            elif kind in (1, 5):
                value = None
                pos += 8 if kind == 1 else 4
            else:
                raise ValueError(f"unsupported protobuf wire type {kind}")
            if pos > end:
                raise ValueError("truncated field")
            yield number, kind, value

    def text(self, span: tuple[int, int]) -> str:
        return bytes(self.buf[span[0]:span[1]]).decode("utf-8")


def _value_info(wire: _Wire, span: tuple[int, int]) -> tuple[str, Shape]:
    """ValueInfoProto {1: name, 2: TypeProto {1: Tensor {2: TensorShapeProto {1: Dimension
    {1: dim_value, 2: dim_param}}}}} -> (name, shape)."""
    name, shape = "", None
    for number, kind, value in wire.fields(*span):
        if number == 1 and kind == 2:
            name = wire.text(value)
        elif number == 2 and kind == 2:
            for n_t, k_t, tensor in wire.fields(*value):
                if n_t != 1 or k_t != 2:
                    continue  # not a tensor type
                for n_s, k_s, shp in wire.fields(*tensor):
                    if n_s != 2 or k_s != 2:
                        continue
                    shape = []
                    for n_d, k_d, dim in wire.fields(*shp):
                        if n_d != 1 or k_d != 2:
                            continue
                        size: Any = None
                        for n_v, k_v, v in wire.fields(*dim):
                            if n_v == 1 and k_v == 0:
                                size = v - (1 << 64) if v >= 1 << 63 else v
                            elif n_v == 2 and k_v == 2:
                                size = wire.text(v) or None
                        shape.append(size)
    return name, shape


def onnx_io_shapes(path: str | os.PathLike) -> tuple[dict[str, Shape], dict[str, Shape]]:
    """The graph inputs and outputs of an ONNX file, name -> shape, read from the file's protobuf
    without the onnx package and without decoding the weights (cheap: the services verify their
    bundle at every start). Raises ValueError when the file is not an ONNX model, OSError when unreadable."""
    data = Path(path).read_bytes()
    if not data:
        raise ValueError("empty file")
    wire = _Wire(memoryview(data))
    inputs: dict[str, Shape] = {}
    outputs: dict[str, Shape] = {}
    try:
        graph = None
        for number, kind, value in wire.fields():
            if number == 7 and kind == 2:  # ModelProto.graph
                graph = value
        if graph is None:
            raise ValueError("no graph (not an ONNX model)")
        initializers = set()
        for number, kind, value in wire.fields(*graph):
            if kind != 2:
                continue
            if number in (11, 12):  # GraphProto.input / .output
                name, shape = _value_info(wire, value)
                (inputs if number == 11 else outputs)[name] = shape
            elif number == 5:  # initializer (listed among the inputs by old exporters)
                for n_i, k_i, v in wire.fields(*value):
                    if n_i == 8 and k_i == 2:
                        initializers.add(wire.text(v))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not an ONNX model ({exc.reason})") from None
    for name in initializers:
        inputs.pop(name, None)
    return inputs, outputs


def _show_shape(shape: Shape) -> str:
    if shape is None:
        return "(no shape)"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _fixed(dim: Any) -> int | None:
    return dim if _is_int(dim) and dim >= 0 else None


def model_problems(manifest: dict, component: str, inputs: dict[str, Shape], outputs: dict[str, Shape],
                   file: str | None = None) -> list[str]:
    """A (valid) manifest against the real graph of one of its components' ONNX files.

    ``inputs`` / ``outputs``: the model's tensors, name -> shape (``onnx_io_shapes``, or an
    onnxruntime session's ``get_inputs()`` / ``get_outputs()`` shapes). For every task whose edge
    or server part is ``component``: the tensor names the runtime feeds, then the edge input
    ``image`` [batch, 3, H, W] against ``input.size``, the edge output and server input
    ``symbols`` [batch, compact_dim] against the task's ``compact_dim``, the server output
    ``logits`` [batch, C] against ``num_classes``. Dynamic dimensions (names, unknown) are
    skipped; fixed ones must agree. One line per problem, naming the manifest key and the file
    (``input.size: expected 32 (the input of component 'digits.edge' digits.edge.onnx: image
    [batch, 3, 32, 32]), got 64``)."""
    comps = manifest.get("components") or {}
    file = file or str((comps.get(component) or {}).get("file", component))
    problems: list[str] = []

    def add(line: str) -> None:
        if line not in problems:
            problems.append(line)

    raw_tasks = manifest.get("tasks") or []
    for i, task_spec in enumerate(task_specs(manifest)):
        raw_task = raw_tasks[i] if i < len(raw_tasks) and isinstance(raw_tasks[i], dict) else {}
        # the task's own parts, then each codec's (a codec's compact_dim is its own key)
        parts = [(task_spec, raw_task, f"tasks[{i}]")]
        parts += [(dataclasses.replace(task_spec, edge=c.edge, server=c.server, compact_dim=c.compact_dim),
                   {"compact_dim": c.compact_dim, **({"input": raw_task["input"]} if raw_task.get("input") else {})},
                   f"tasks[{i}].codecs[{j}]") for j, c in enumerate(task_spec.codecs)
                  if (c.edge, c.server) != (task_spec.edge, task_spec.server)]
        for spec, raw, prefix in parts:
            _part_problems(manifest, component, inputs, outputs, file, i, spec, raw, prefix, add)
    return problems


def _part_problems(manifest: dict, component: str, inputs: dict, outputs: dict, file: str, i: int, spec: "TaskSpec",
                   raw: dict, prefix: str, add) -> None:
    """``model_problems`` for one edge/server pair of task ``i`` (its own, or a codec's: ``prefix``)."""
    for role in ("edge", "server"):
        if getattr(spec, role) != component:
            continue
        in_names, out_name = PART_TENSORS[role]
        if sorted(inputs) != sorted(in_names) or out_name not in outputs:
            add(f"{prefix}.{role}: component {component!r} {file}: expected inputs {list(in_names)} "
                f"and output {out_name!r}, the model has inputs {list(inputs)}, outputs {list(outputs)}")
            continue

        def where(kind: str, tensor: str, shape: Shape) -> str:
            return f"the {kind} of component {component!r} {file}: {tensor} {_show_shape(shape)}"

        def rank(kind: str, tensor: str, shape: Shape, want: str, n: int) -> bool:
            if shape is not None and len(shape) != n:
                add(f"{prefix}.{role}: component {component!r} {file}: {kind} {tensor!r} has shape "
                    f"{_show_shape(shape)}, expected {want}")
                return False
            return shape is not None

        compact_key = f"{prefix}.compact_dim" if "compact_dim" in raw else "compact_dim"
        if role == "edge":
            image = inputs["image"]
            h, w = spec.input.size
            size_key = f"tasks[{i}].input.size" if raw.get("input") else "input.size"
            if rank("input", "image", image, "[batch, 3, H, W]", 4):
                if _fixed(image[1]) is not None and image[1] != 3:
                    add(f"{prefix}.{role}: component {component!r} {file}: input 'image' has shape "
                        f"{_show_shape(image)}, expected 3 channels [batch, 3, H, W]")
                mh, mw = _fixed(image[2]), _fixed(image[3])
                if (mh is not None and mh != h) or (mw is not None and mw != w):
                    size = (raw.get("input") or manifest["input"])["size"]
                    if mh is not None and mh == mw and _is_int(size):
                        want = str(mh)
                    else:
                        want = f"[{'any' if mh is None else mh}, {'any' if mw is None else mw}]"
                    add(f"{size_key}: expected {want} ({where('input', 'image', image)}), got {size!r}")
            checks = (("output", "symbols", outputs["symbols"], compact_key, spec.compact_dim),)
        else:
            checks = (("input", "symbols", inputs["symbols"], compact_key, spec.compact_dim),
                      ("output", "logits", outputs["logits"], f"tasks[{i}].num_classes", spec.num_classes))
        for kind, tensor, shape, key, value in checks:
            if rank(kind, tensor, shape, f"[batch, {key.rsplit('.', 1)[-1]}]", 2):
                width = _fixed(shape[1])
                if width is not None and width != value:
                    add(f"{key}: expected {width} ({where(kind, tensor, shape)}), got {value}")


# ----------------------------------------------------------------------------- read / write

def write_manifest(bundle_dir: str | os.PathLike, manifest: dict) -> dict:
    """Fill in the sha256 of every component file, validate, and write manifest.json.

    Returns the manifest as written. Raises BundleError (naming the key or the file) when
    a component file is missing or the manifest fails validation.
    """
    bundle_dir = Path(bundle_dir)
    out = copy.deepcopy(manifest)
    out.setdefault("format_version", FORMAT_VERSION)
    for name, comp in out.get("components", {}).items():
        path = bundle_dir / comp["file"]
        if not path.is_file():
            raise BundleError(f"{path}: component {name!r} file missing")
        comp["sha256"] = sha256_file(path)
    problems = validate_manifest(out)
    if problems:
        raise BundleError(f"{bundle_dir / MANIFEST_NAME}: refusing to write an invalid manifest:\n  "
                          + "\n  ".join(problems))
    tmp = bundle_dir / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, bundle_dir / MANIFEST_NAME)
    return out


def read_manifest(bundle_dir: str | os.PathLike) -> dict:
    """Parse manifest.json into a dict (no schema validation). Raises BundleError naming the
    file when it is missing, unreadable, not UTF-8 JSON, or JSON that is not an object."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_NAME
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: bundle directory not found")
    if not path.is_file():
        raise BundleError(f"{path}: manifest missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the manifest: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise BundleError(f"{path}: not UTF-8 text: byte offset {exc.start}: {exc.reason}") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise BundleError(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        kind = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
                type(None): "null"}.get(type(manifest), type(manifest).__name__)
        raise BundleError(f"{path}: expected a JSON object (the manifest), got {kind}")
    return manifest


def verify_bundle(bundle_dir: str | os.PathLike, check_files: bool = True) -> list[str]:
    """Every problem of a bundle directory; empty when sound.

    Checks, in order: the directory and manifest.json exist and parse, the schema
    (``validate_manifest``; messages prefixed with the manifest path and naming the key),
    and, with ``check_files``, that every component file exists and matches its sha256
    (messages start with the file's path), then, when all that is sound, that the manifest
    agrees with the ONNX graphs themselves (``model_problems``: input.size, compact_dim,
    num_classes against the models' tensor shapes; prefixed with the manifest path, naming the
    key and the file).
    """
    bundle_dir = Path(bundle_dir)
    try:
        manifest = read_manifest(bundle_dir)
    except BundleError as exc:
        return [str(exc)]
    manifest_path = bundle_dir / MANIFEST_NAME
    problems = [f"{manifest_path}: {p}" for p in validate_manifest(manifest)]
    if not check_files:
        return problems
    components = manifest.get("components")
    if not isinstance(components, dict):
        return problems
    sound: list[tuple[str, Path]] = []  # components whose file is there and matches its sha256
    for name, comp in components.items():
        if not isinstance(comp, dict) or not isinstance(comp.get("file"), str) or not comp["file"]:
            continue  # already reported by the schema check
        path = bundle_dir / comp["file"]
        if not path.is_file():
            problems.append(f"{path}: file missing (component {name!r})")
            continue
        expected = comp.get("sha256")
        if not isinstance(expected, str):
            continue
        actual = sha256_file(path)
        if actual != expected:
            problems.append(f"{path}: sha256 mismatch (component {name!r}): "
                            f"manifest says {expected}, file has {actual}")
            continue
        sound.append((name, path))
    if problems:  # the models are compared with a sound manifest only
        return problems
    for name, path in sound:
        try:
            inputs, outputs = onnx_io_shapes(path)
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: cannot read the model's inputs and outputs (component {name!r}): {exc}")
            continue
        problems += [f"{manifest_path}: {p}" for p in
                     model_problems(manifest, name, inputs, outputs)]
    return problems
