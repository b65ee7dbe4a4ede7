"""torch -> ONNX export of the edge and server parts, and bundle writing (needs torch + onnx).

Every task contributes two ONNX components (``docs/architecture.md``, "Model interfaces"):

    <task>.edge    EdgePart   (image float32 [B,3,H,W], snr_db float32 [B]) -> symbols float32 [B, compact_dim]
    <task>.server  ServerPart (symbols float32 [B, compact_dim], snr_db float32 [B]) -> logits float32 [B, C]

with a dynamic batch axis named ``batch``. After export each file passes
``onnx.checker.check_model(full_check=True)`` and an onnxruntime-vs-torch parity check at
two batch sizes different from the export example (so a batch dimension frozen by the
exporter is caught here, not in a service).

The default exporter is ``dynamo`` (torch.export with a ``batch`` Dim; example batch 2);
why, and what the TorchScript exporter does to the CAT: docs/decisions.md, "ONNX exporter".
``build_random_parts`` / ``build_random_bundle`` make a small seeded RKD-SC system through the
method registry; its provenance ``tasks`` entry holds the ``ModelSpec`` keys, so the exact
torch twin can be rebuilt from the manifest.
"""
from __future__ import annotations

import copy
import datetime
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from rkdsc.common.bundle.manifest import (FORMAT_VERSION, BundleError, compact_dim_for, drop_top_level_repeats,
                                    symbols_for, write_manifest)

OPSET = 18  # ONNX opset of the exported graphs (>= 17 for LayerNormalization)
EXPORTERS = ("torchscript", "dynamo")
_TASK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# CLIP's image normalisation, the default input spec of the project's models.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


DEFAULT_EXPORTER = "dynamo"


# ----------------------------------------------------------------------------- provenance

def git_commit(repo_dir: str | os.PathLike | None = None) -> str | None:
    """The current git commit of the project checkout (``+dirty`` when it has changes), or None."""
    repo_dir = Path(repo_dir) if repo_dir else Path(__file__).resolve().parents[2]
    git = shutil.which("git")
    if git is None:
        return None
    try:
        head = subprocess.run([git, "-C", str(repo_dir), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run([git, "-C", str(repo_dir), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def default_provenance(**fields: Any) -> dict:
    """created (UTC, ISO 8601), command (this process's argv), git, library versions; ``fields`` override."""
    import onnx

    prov = {
        "created": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "",
        "git": git_commit(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
    }
    prov.update(fields)
    return prov


# ----------------------------------------------------------------------------- export

def _io_desc(names: Sequence[str], shapes: Sequence[Sequence[Any]]) -> dict:
    return {n: {"dtype": "float32", "shape": list(s)} for n, s in zip(names, shapes)}


def _parity(path: Path, module: nn.Module, in_names: tuple[str, str], make_inputs, batches=(1, 3),
            atol: float = 1e-3) -> float:
    """Run the ONNX file and the module at each batch size; return the max abs difference."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for b in batches:
        a, snr = make_inputs(b)
        with torch.no_grad():
            ref = module(a, snr).float().cpu().numpy()
        got = sess.run(None, {in_names[0]: a.cpu().numpy(), in_names[1]: snr.cpu().numpy()})[0]
        if got.shape != ref.shape:
            raise BundleError(f"{path}: onnxruntime output shape {list(got.shape)} at batch {b}, "
                              f"torch gives {list(ref.shape)} (dynamic batch axis lost?)")
        worst = max(worst, float(np.max(np.abs(got - ref))) if ref.size else 0.0)
    if worst > atol:
        raise BundleError(f"{path}: onnxruntime and torch differ by {worst:.3g} (max abs) > {atol}")
    return worst


def export_part(module: nn.Module, path: str | os.PathLike, in_names: tuple[str, str], out_name: str,
                example: tuple[torch.Tensor, torch.Tensor], opset: int = OPSET,
                exporter: str = DEFAULT_EXPORTER) -> Path:
    """Export ``module(a, snr_db)`` to ONNX with a dynamic batch axis and check the file.

    ``example`` should have batch size >= 2 (the dynamo exporter specialises size-1 dims).
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter: expected one of {EXPORTERS}, got {exporter!r}")
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = dict(input_names=list(in_names), output_names=[out_name],
                                  opset_version=opset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            axes = {in_names[0]: {0: "batch"}, in_names[1]: {0: "batch"}, out_name: {0: "batch"}}
            torch.onnx.export(module, example, str(path), dynamo=False, dynamic_axes=axes,
                              do_constant_folding=True, **kwargs)
        else:
            batch = torch.export.Dim("batch", min=1, max=1 << 16)
            torch.onnx.export(module, example, str(path), dynamo=True, external_data=False,
                              dynamic_shapes=({0: batch}, {0: batch}), verbose=False, **kwargs)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    for value in list(model.graph.input) + list(model.graph.output):
        dim0 = value.type.tensor_type.shape.dim[0]
        if dim0.HasField("dim_value"):
            raise BundleError(f"{path}: {value.name!r} has a fixed batch size {dim0.dim_value} "
                              f"after export ({exporter}); expected a dynamic axis")
    return path


def _count_params(module: nn.Module) -> int:
    from rkdsc.common.models.complexity import count_params
    return int(count_params(module))


def export_bundle(out_dir: str | os.PathLike, tasks: list[dict], feature_dim: int, input_spec: dict,
                  snr_train_db: Sequence[float], provenance: dict | None = None, opset: int = OPSET,
                  exporter: str = DEFAULT_EXPORTER, check_parity: bool = True) -> Path:
    """Export every task's edge and server part to ``out_dir`` and write manifest.json.

    ``tasks``: list of dicts ``{name, class_names, edge_part: nn.Module, server_part:
    nn.Module, compression_ratio, compact_dim, input, feature_dim, snr_train_db}``
    (``compact_dim`` optional; it must equal floor(feature_dim * (1 - compression_ratio)) when
    given; ``input`` / ``feature_dim`` / ``snr_train_db`` optional, default the arguments of
    the same name: tasks of one bundle may have different input sizes, normalisations and
    feature widths). ``input_spec``: ``{size, mean, std}``. The top level holds the first
    task's values; a task whose values differ carries its own (format 2). ``provenance`` is merged over ``default_provenance()`` (created, command,
    git, versions); put ``preset``, ``seed``, ``method`` ("rkd-sc", "jscc-student",
    "jscc-teacher", ...) in it. Returns the bundle directory. Modules are exported in eval
    mode on their own device and left in the mode they came in.
    """
    out_dir = Path(out_dir)
    if not tasks:
        raise ValueError("tasks: expected at least one task")
    if not (isinstance(feature_dim, int) and feature_dim > 0):
        raise ValueError(f"feature_dim: expected positive int, got {feature_dim!r}")
    default_input, default_feature_dim, default_snr = input_spec, feature_dim, snr_train_db
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)

    manifest_tasks, components = [], {}
    names_seen: set[str] = set()
    for i, task in enumerate(tasks):
        name = task.get("name")
        if not isinstance(name, str) or not _TASK_NAME_RE.match(name) or name in names_seen:
            raise ValueError(f"tasks[{i}].name: expected a unique name of letters, digits, '_', '-', '.', "
                             f"got {name!r}")
        names_seen.add(name)
        input_spec = task.get("input") or default_input
        size = input_spec["size"]
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        feature_dim = int(task.get("feature_dim") or default_feature_dim)
        snr_train_db = task.get("snr_train_db") or default_snr
        class_names = [str(c) for c in task["class_names"]]
        class_ids = [str(c) for c in task.get("class_ids") or class_names]
        if len(class_ids) != len(class_names):
            raise ValueError(f"tasks[{i}].class_ids: expected {len(class_names)} ids (one per class name), "
                             f"got {len(class_ids)}")
        ratio = float(task["compression_ratio"])
        compact = compact_dim_for(feature_dim, ratio)
        if task.get("compact_dim") is not None and int(task["compact_dim"]) != compact:
            raise ValueError(f"tasks[{i}].compact_dim: expected floor({feature_dim} * (1 - {ratio})) = "
                             f"{compact}, got {task['compact_dim']}")
        edge, server = task["edge_part"], task["server_part"]
        mods = {"edge": edge, "server": server}
        modes = {k: m.training for k, m in mods.items()}
        try:
            for m in mods.values():
                m.eval()
            dev = next(edge.parameters()).device

            def edge_inputs(b: int) -> tuple[torch.Tensor, torch.Tensor]:
                img = torch.randn(b, 3, h, w, generator=gen).to(dev)
                return img, torch.linspace(-10.0, 25.0, b).to(dev)

            sdev = next(server.parameters()).device

            def server_inputs(b: int) -> tuple[torch.Tensor, torch.Tensor]:
                return (torch.randn(b, compact, generator=gen).to(sdev),
                        torch.linspace(-10.0, 25.0, b).to(sdev))

            with torch.no_grad():
                got = tuple(edge(*edge_inputs(2)).shape)
                if got != (2, compact):
                    raise ValueError(f"tasks[{i}].edge_part: output shape {list(got)} for a batch of 2, "
                                     f"expected [2, {compact}] (compact_dim)")
                got = tuple(server(*server_inputs(2)).shape)
                if got != (2, len(class_names)):
                    raise ValueError(f"tasks[{i}].server_part: output shape {list(got)} for a batch of 2, "
                                     f"expected [2, {len(class_names)}] (len(class_names))")

            edge_file, server_file = f"{name}.edge.onnx", f"{name}.server.onnx"
            export_part(edge, out_dir / edge_file, ("image", "snr_db"), "symbols", edge_inputs(2),
                        opset, exporter)
            export_part(server, out_dir / server_file, ("symbols", "snr_db"), "logits", server_inputs(2),
                        opset, exporter)
            if check_parity:
                _parity(out_dir / edge_file, edge, ("image", "snr_db"), edge_inputs)
                _parity(out_dir / server_file, server, ("symbols", "snr_db"), server_inputs)
        finally:
            for k, m in mods.items():
                m.train(modes[k])

        components[f"{name}.edge"] = {
            "file": edge_file, "sha256": "", "params": _count_params(edge),
            "bytes": (out_dir / edge_file).stat().st_size, "opset": opset, "exporter": exporter,
            "inputs": _io_desc(("image", "snr_db"), (["batch", 3, h, w], ["batch"])),
            "outputs": _io_desc(("symbols",), (["batch", compact],)),
        }
        components[f"{name}.server"] = {
            "file": server_file, "sha256": "", "params": _count_params(server),
            "bytes": (out_dir / server_file).stat().st_size, "opset": opset, "exporter": exporter,
            "inputs": _io_desc(("symbols", "snr_db"), (["batch", compact], ["batch"])),
            "outputs": _io_desc(("logits",), (["batch", len(class_names)],)),
        }
        manifest_tasks.append({
            "name": name, "num_classes": len(class_names), "class_names": class_names,
            **({"class_ids": class_ids} if class_ids != class_names else {}),
            "compression_ratio": ratio, "compact_dim": compact, "symbols_per_image": symbols_for(compact),
            "edge": f"{name}.edge", "server": f"{name}.server",
            "input": {"size": size if isinstance(size, int) else list(size),
                      "mean": [float(v) for v in input_spec["mean"]],
                      "std": [float(v) for v in input_spec["std"]]},
            "feature_dim": feature_dim,
            "snr_train_db": [float(snr_train_db[0]), float(snr_train_db[1])],
        })

    first = manifest_tasks[0]
    manifest = {
        "format_version": FORMAT_VERSION,
        "tasks": manifest_tasks,
        "feature_dim": first["feature_dim"],
        "compact_dim": first["compact_dim"],
        "compression_ratio": first["compression_ratio"],
        "symbols_per_image": first["symbols_per_image"],
        "input": copy.deepcopy(first["input"]),
        "snr_train_db": list(first["snr_train_db"]),
        "components": components,
        "provenance": default_provenance(exporter=exporter, opset=opset, **(provenance or {})),
    }
    write_manifest(out_dir, drop_top_level_repeats(manifest))
    return out_dir


# ----------------------------------------------------------------------------- small bundles

def random_model_spec(input_size: int = 32, feature_dim: int = 64, compression_ratio: float = 0.8,
                      num_classes: int = 10, depths: Sequence[int] = (1, 1, 1, 1),
                      planes: Sequence[int] = (4, 8, 16, 16), stem_widths: Sequence[int] = (8, 8, 16),
                      n_heads: int = 4, d_ff: int = 64, head_hidden: int = 32):
    """The ModelSpec (method ``rkd-sc``) of the small test system of ``build_random_parts``."""
    from rkdsc.common.models.cat import CATConfig
    from rkdsc.common.models.spec import ModelSpec
    from rkdsc.common.models.student import StudentConfig

    return ModelSpec(method="rkd-sc", feature_dim=feature_dim, num_classes=num_classes, head_hidden=head_hidden,
                     depths=list(depths),
                     student=StudentConfig(input_size=input_size, stem_widths=tuple(stem_widths),
                                           planes=tuple(planes), feature_dim=feature_dim, heads=n_heads),
                     cat=CATConfig(feature_dim=feature_dim, n_heads=n_heads, d_ff=d_ff,
                                   compression_ratio=compression_ratio))


def build_random_parts(input_size: int = 32, feature_dim: int = 64, compression_ratio: float = 0.8,
                       num_classes: int = 10, seed: int = 0, depths: Sequence[int] = (1, 1, 1, 1),
                       planes: Sequence[int] = (4, 8, 16, 16), stem_widths: Sequence[int] = (8, 8, 16),
                       n_heads: int = 4, d_ff: int = 64, head_hidden: int = 32) -> tuple[nn.Module, nn.Module]:
    """(EdgePart, ServerPart) of a small randomly initialised RKD-SC system built through the
    method registry (Student + CATEncoder, CATDecoder + ClassifierHead), in eval mode.
    Deterministic for a given ``seed``; the global torch RNG is left untouched."""
    from rkdsc.common.models.registry import get_method

    spec = random_model_spec(input_size, feature_dim, compression_ratio, num_classes, depths, planes, stem_widths,
                             n_heads, d_ff, head_hidden)
    m = get_method(spec.method)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        edge, server = m.parts(m.build(spec))
    return edge.eval(), server.eval()


def build_random_bundle(out_dir: str | os.PathLike, input_size: int = 32, feature_dim: int = 64,
                        compression_ratio: float = 0.8, num_classes: int = 10, seed: int = 0,
                        task: str = "digits", depths: Sequence[int] = (1, 1, 1, 1),
                        planes: Sequence[int] = (4, 8, 16, 16), stem_widths: Sequence[int] = (8, 8, 16),
                        n_heads: int = 4, d_ff: int = 64, head_hidden: int = 32,
                        snr_train_db: Sequence[float] = (5.0, 20.0), exporter: str = DEFAULT_EXPORTER,
                        class_names: Sequence[str] | None = None) -> Path:
    """Export ``build_random_parts(...)`` as a one-task bundle (for tests of the services;
    about 10-20 s on 2 CPU cores, mostly the dynamo exporter: build it once per test session).
    Class names are ``class_names`` when given, else "0".."9" for ten classes, else "class0", "class1", ...
    """
    edge, server = build_random_parts(input_size, feature_dim, compression_ratio, num_classes, seed,
                                      depths, planes, stem_widths, n_heads, d_ff, head_hidden)
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if len(class_names) != num_classes:
            raise ValueError(f"class_names: expected {num_classes} names (num_classes), got {len(class_names)}")
    else:
        class_names = ([str(i) for i in range(num_classes)] if num_classes == 10
                       else [f"class{i}" for i in range(num_classes)])
    return export_bundle(
        out_dir,
        [{"name": task, "class_names": class_names, "edge_part": edge, "server_part": server,
          "compression_ratio": compression_ratio}],
        feature_dim=feature_dim,
        input_spec={"size": input_size, "mean": list(CLIP_MEAN), "std": list(CLIP_STD)},
        snr_train_db=snr_train_db,
        provenance={"method": "random-init", "preset": "test-tiny", "seed": seed,
                    "tasks": {task: random_model_spec(input_size, feature_dim, compression_ratio, num_classes,
                                                      depths, planes, stem_widths, n_heads, d_ff,
                                                      head_hidden).to_json()}},
        exporter=exporter,
    )
