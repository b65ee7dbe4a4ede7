"""Bundle manifest: schema, sha256 checksums and verification (stdlib only, no torch).

A bundle is a directory holding ``manifest.json`` and the component files it names
(ONNX models). The manifest schema is fixed by the project contract (design note, item 4)
and by ``docs/architecture.md`` ("Bundle"):

    format_version      int, == FORMAT_VERSION
    tasks               non-empty list of {name, num_classes, class_names,
                        compression_ratio, compact_dim, symbols_per_image, edge, server}
                        (the last five may be left out of a task: they then default to the
                        top-level values and to the components "<name>.edge" /
                        "<name>.server"; ``write_manifest`` always writes them out)
    feature_dim         int > 0 (the student / teacher feature width F)
    compact_dim         int == floor(feature_dim * (1 - compression_ratio))
    compression_ratio   number in [0, 1)
    symbols_per_image   int == ceil(compact_dim / 2) complex symbols per image
    input               {size: int or [H, W], mean: [3 numbers], std: [3 numbers > 0]}
    snr_train_db        [lo, hi] with lo <= hi (the SNR range seen in training)
    components          name -> {file, sha256, params, inputs?, outputs?}
    provenance          dict (created, command, git, preset, seed, method, ...)

Top-level ``compact_dim`` / ``compression_ratio`` / ``symbols_per_image`` are those of the
first task. Every problem message names the offending key (``tasks[0].num_classes: ...``)
or file, so ``rkdsc bundle verify`` and the services can say exactly what is wrong.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class BundleError(Exception):
    """A bundle that cannot be used: missing, unreadable, or failing verification."""


# ----------------------------------------------------------------------------- helpers

def compact_dim_for(feature_dim: int, compression_ratio: float) -> int:
    """CAT compact dimension: floor(feature_dim * (1 - compression_ratio)) (paper Table II),
    guarded against float error exactly like ``rkdsc.common.models.cat.compact_dim``
    (512 * (1 - 0.8) = 102.39999... -> 102; 10 * (1 - 0.9) = 0.99999... -> 1)."""
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


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _show(value: Any) -> str:
    text = json.dumps(value) if _jsonable(value) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


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


def task_specs(manifest: dict) -> list[TaskSpec]:
    """Resolve every task of a (valid) manifest to a TaskSpec."""
    specs = []
    for task in manifest["tasks"]:
        name = task["name"]
        specs.append(TaskSpec(
            name=name,
            num_classes=int(task["num_classes"]),
            class_names=tuple(task["class_names"]),
            compression_ratio=float(task.get("compression_ratio", manifest["compression_ratio"])),
            compact_dim=int(task.get("compact_dim", manifest["compact_dim"])),
            symbols_per_image=int(task.get("symbols_per_image", manifest["symbols_per_image"])),
            edge=task.get("edge", f"{name}.edge"),
            server=task.get("server", f"{name}.server"),
        ))
    return specs


# ----------------------------------------------------------------------------- validation

class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}")

    def require(self, obj: dict, key: str, where: str) -> Any:
        if key not in obj:
            self.add(where + key, "missing required key")
            return None
        return obj[key]

    def pos_int(self, value: Any, key: str) -> bool:
        if value is None:
            return False
        if not _is_int(value) or value <= 0:
            self.add(key, f"expected positive int, got {_show(value)}")
            return False
        return True

    def ratio(self, value: Any, key: str) -> bool:
        if value is None:
            return False
        if not _is_number(value) or not 0.0 <= value < 1.0:
            self.add(key, f"expected number in [0, 1), got {_show(value)}")
            return False
        return True

    def string(self, value: Any, key: str) -> bool:
        if value is None:
            return False
        if not isinstance(value, str) or not value:
            self.add(key, f"expected non-empty string, got {_show(value)}")
            return False
        return True


def _check_codec_dims(c: _Checker, where: str, feature_dim: Any, ratio: Any,
                      compact: Any, symbols: Any) -> None:
    """compact_dim / symbols_per_image consistency; only once their types are sound."""
    if _is_int(feature_dim) and feature_dim > 0 and _is_number(ratio) and 0 <= ratio < 1 \
            and _is_int(compact) and compact > 0:
        expected = compact_dim_for(feature_dim, ratio)
        if compact != expected:
            c.add(where + "compact_dim",
                  f"expected floor(feature_dim * (1 - compression_ratio)) = "
                  f"floor({feature_dim} * (1 - {ratio})) = {expected}, got {compact}")
    if _is_int(compact) and compact > 0 and _is_int(symbols) and symbols > 0:
        expected = symbols_for(compact)
        if symbols != expected:
            c.add(where + "symbols_per_image",
                  f"expected ceil(compact_dim / 2) = ceil({compact} / 2) = {expected}, got {symbols}")


def validate_manifest(manifest: Any) -> list[str]:
    """Schema problems of a manifest dict, each naming the key; empty when sound."""
    c = _Checker()
    if not isinstance(manifest, dict):
        return [f"manifest: expected a JSON object, got {type(manifest).__name__}"]

    version = c.require(manifest, "format_version", "")
    if version is not None and (not _is_int(version) or version != FORMAT_VERSION):
        c.add("format_version", f"expected {FORMAT_VERSION}, got {_show(version)}")

    feature_dim = c.require(manifest, "feature_dim", "")
    c.pos_int(feature_dim, "feature_dim")
    ratio = c.require(manifest, "compression_ratio", "")
    c.ratio(ratio, "compression_ratio")
    compact = c.require(manifest, "compact_dim", "")
    c.pos_int(compact, "compact_dim")
    symbols = c.require(manifest, "symbols_per_image", "")
    c.pos_int(symbols, "symbols_per_image")
    _check_codec_dims(c, "", feature_dim, ratio, compact, symbols)

    # input
    spec = c.require(manifest, "input", "")
    if spec is not None:
        if not isinstance(spec, dict):
            c.add("input", f"expected object {{size, mean, std}}, got {_show(spec)}")
        else:
            size = c.require(spec, "size", "input.")
            if size is not None:
                ok = (_is_int(size) and size > 0) or (
                    isinstance(size, list) and len(size) == 2
                    and all(_is_int(v) and v > 0 for v in size))
                if not ok:
                    c.add("input.size", f"expected positive int or [H, W], got {_show(size)}")
            for key in ("mean", "std"):
                vals = c.require(spec, key, "input.")
                if vals is None:
                    continue
                if not (isinstance(vals, list) and len(vals) == 3 and all(_is_number(v) for v in vals)):
                    c.add(f"input.{key}", f"expected list of 3 numbers, got {_show(vals)}")
                elif key == "std" and any(v <= 0 for v in vals):
                    c.add("input.std", f"expected 3 positive numbers, got {_show(vals)}")

    # snr_train_db
    snr = c.require(manifest, "snr_train_db", "")
    if snr is not None:
        if not (isinstance(snr, list) and len(snr) == 2 and all(_is_number(v) for v in snr)):
            c.add("snr_train_db", f"expected [lo, hi] in dB, got {_show(snr)}")
        elif snr[0] > snr[1]:
            c.add("snr_train_db", f"expected lo <= hi, got {_show(snr)}")

    # components
    components = c.require(manifest, "components", "")
    component_names: set[str] = set()
    if components is not None:
        if not isinstance(components, dict) or not components:
            c.add("components", f"expected non-empty object name -> component, got {_show(components)}")
        else:
            for name, comp in components.items():
                where = f"components.{name}"
                component_names.add(name)
                if not isinstance(comp, dict):
                    c.add(where, f"expected object {{file, sha256, params}}, got {_show(comp)}")
                    continue
                file = c.require(comp, "file", where + ".")
                if c.string(file, where + ".file"):
                    p = Path(file)
                    if p.is_absolute() or ".." in p.parts or "\\" in file:
                        c.add(where + ".file", f"expected a path relative to the bundle, got {_show(file)}")
                sha = c.require(comp, "sha256", where + ".")
                if sha is not None and not (isinstance(sha, str) and _SHA256_RE.match(sha)):
                    c.add(where + ".sha256", f"expected 64 lowercase hex digits, got {_show(sha)}")
                params = c.require(comp, "params", where + ".")
                if params is not None and (not _is_int(params) or params < 0):
                    c.add(where + ".params", f"expected non-negative int, got {_show(params)}")
                for key in ("inputs", "outputs"):
                    if key in comp and not isinstance(comp[key], dict):
                        c.add(f"{where}.{key}", f"expected object name -> description, got {_show(comp[key])}")

    # tasks
    tasks = c.require(manifest, "tasks", "")
    if tasks is not None:
        if not isinstance(tasks, list) or not tasks:
            c.add("tasks", f"expected non-empty list of tasks, got {_show(tasks)}")
        else:
            seen: set[str] = set()
            for i, task in enumerate(tasks):
                where = f"tasks[{i}]."
                if not isinstance(task, dict):
                    c.add(f"tasks[{i}]", f"expected object {{name, num_classes, class_names}}, got {_show(task)}")
                    continue
                name = c.require(task, "name", where)
                if c.string(name, where + "name"):
                    if name in seen:
                        c.add(where + "name", f"duplicate task name {_show(name)}")
                    seen.add(name)
                n = c.require(task, "num_classes", where)
                n_ok = c.pos_int(n, where + "num_classes")
                names = c.require(task, "class_names", where)
                if names is not None:
                    if not (isinstance(names, list) and all(isinstance(v, str) for v in names)):
                        c.add(where + "class_names", f"expected list of strings, got {_show(names)}")
                    elif n_ok and len(names) != n:
                        c.add(where + "class_names",
                              f"expected {n} names (num_classes), got {len(names)}")
                t_ratio = task.get("compression_ratio", ratio)
                t_compact = task.get("compact_dim", compact)
                t_symbols = task.get("symbols_per_image", symbols)
                if "compression_ratio" in task:
                    c.ratio(t_ratio, where + "compression_ratio")
                if "compact_dim" in task:
                    c.pos_int(t_compact, where + "compact_dim")
                if "symbols_per_image" in task:
                    c.pos_int(t_symbols, where + "symbols_per_image")
                if any(k in task for k in ("compression_ratio", "compact_dim", "symbols_per_image")):
                    _check_codec_dims(c, where, feature_dim, t_ratio, t_compact, t_symbols)
                if i == 0:
                    for key, top in (("compression_ratio", ratio), ("compact_dim", compact),
                                     ("symbols_per_image", symbols)):
                        if key in task and top is not None and task[key] != top:
                            c.add(key, f"expected the first task's value {_show(task[key])} "
                                       f"(tasks[0].{key}), got {_show(top)}")
                for role in ("edge", "server"):
                    comp_name = task.get(role, f"{name}.{role}" if isinstance(name, str) else None)
                    if role in task and not c.string(comp_name, where + role):
                        continue
                    if comp_name is not None and isinstance(components, dict) and components \
                            and comp_name not in component_names:
                        c.add(where + role, f"names component {_show(comp_name)}, which is not in "
                                            f"components (have {sorted(component_names)})")

    prov = c.require(manifest, "provenance", "")
    if prov is not None and not isinstance(prov, dict):
        c.add("provenance", f"expected object, got {_show(prov)}")
    return c.problems


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
    """Parse manifest.json (no validation). Raises BundleError naming the file."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_NAME
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: bundle directory not found")
    if not path.is_file():
        raise BundleError(f"{path}: manifest missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: invalid JSON: {exc}") from exc


def verify_bundle(bundle_dir: str | os.PathLike, check_files: bool = True) -> list[str]:
    """Every problem of a bundle directory; empty when sound.

    Checks, in order: the directory and manifest.json exist and parse, the schema
    (``validate_manifest``; messages prefixed with the manifest path and naming the key),
    and, with ``check_files``, that every component file exists and matches its sha256
    (messages start with the file's path).
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
    return problems
