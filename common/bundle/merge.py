"""``merge_bundles(sources, out)``: several bundles -> one multi-task bundle (no torch).

    merge_bundles(["runs/a/bundle", "runs/b/bundle"], "runs/ab")   # = rkdsc bundle merge A B --out C

Contract:

* Every source must verify (``verify_bundle``: schema, sha256, manifest against the ONNX
  graphs); a failing one is refused with its problems.
* Task names, component names and component file names must be unique across the sources; a
  clash is refused with a ``BundleError`` naming the key, the value and both bundles (rename
  the task when exporting it, or leave one of the bundles out). Nothing is written then.
* The merged manifest is format 2 (``FORMAT_VERSION``): every task entry carries its
  compression ratio, compact dim, symbols and component names resolved from its source (a
  version-1 source's top-level values), its own ``input``, ``feature_dim`` and
  ``snr_train_db`` where they differ from the first task's (which the top level holds), and
  any further keys of the source task (``class_ids``, ``codecs``) unchanged. Component entries and files are copied unchanged (their sha256 is
  recomputed and must match).
* Provenance: ``created``, ``command``, ``merged_from`` (per source: its path, manifest sha256,
  task names and whole provenance), ``tasks`` (the union of the sources' per-task provenance)
  and ``method`` / ``preset`` / ``seed`` when all sources agree (else lists).
* ``out`` is written beside itself and renamed into place, so it may be one of the sources
  (merging a task into an existing bundle) and a failed merge leaves it unchanged. An
  existing ``out`` that is not a source is replaced only with ``overwrite``.
"""
from __future__ import annotations

import copy
import datetime
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from rkdsc.common.bundle.manifest import (FORMAT_VERSION, MANIFEST_NAME, BundleError, drop_top_level_repeats,
                                          read_manifest, sha256_file, verify_bundle, write_manifest)

TASK_KEYS_RESOLVED = ("compression_ratio", "compact_dim", "symbols_per_image", "input", "feature_dim", "snr_train_db")


def resolved_task(manifest: dict, task: dict) -> dict:
    """A task entry with every value that may default to the top level filled in (format 2)."""
    out = copy.deepcopy(task)
    for key in TASK_KEYS_RESOLVED:
        if out.get(key) is None:
            out[key] = copy.deepcopy(manifest[key])
    out.setdefault("edge", f"{task['name']}.edge")
    out.setdefault("server", f"{task['name']}.server")
    return out


def _agreed(values: list):
    return values[0] if all(v == values[0] for v in values) else values


def merge_bundles(sources: Sequence[str | os.PathLike], out: str | os.PathLike, overwrite: bool = False,
                  command: str | None = None) -> dict:
    """Merge ``sources`` into bundle directory ``out`` (see the module doc); returns the manifest."""
    sources = [Path(s) for s in sources]
    out = Path(out)
    if len(sources) < 2:
        raise BundleError(f"merge: expected at least two bundles, got {len(sources)}")
    resolved = [s.resolve() for s in sources]
    if len(set(resolved)) != len(resolved):
        raise BundleError(f"merge: a bundle is given twice: {[str(s) for s in sources]}")
    manifests = []
    for src in sources:
        problems = verify_bundle(src)
        if problems:
            raise BundleError(f"merge: bundle {src} does not verify:\n  " + "\n  ".join(problems))
        manifests.append(read_manifest(src))
    if out.exists() and out.resolve() not in resolved and not overwrite:
        if not out.is_dir() or any(out.iterdir()):
            raise BundleError(f"merge: --out {out} exists and is not one of the bundles merged "
                              f"(use --force to replace it)")

    tasks, components = [], {}
    owner: dict[tuple[str, str], Path] = {}  # (what, value) -> the source that has it

    def claim(what: str, value: str, src: Path) -> None:
        other = owner.get((what, value))
        if other is not None:
            raise BundleError(f"merge: {what} {value!r} is in both {other} and {src}; names must be unique "
                              f"in a bundle (export one of the tasks under another name, or leave a bundle out)")
        owner[(what, value)] = src

    for src, man in zip(sources, manifests):
        for task in man["tasks"]:
            claim("task name", task["name"], src)
            tasks.append(resolved_task(man, task))
        for name, comp in man["components"].items():
            claim("component", name, src)
            claim("component file", comp["file"], src)
            components[name] = (src, copy.deepcopy(comp))

    first = tasks[0]
    provs = [m.get("provenance") or {} for m in manifests]
    task_prov: dict = {}
    for p in provs:
        if isinstance(p.get("tasks"), dict):
            task_prov.update(copy.deepcopy(p["tasks"]))
    provenance = {
        "created": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "command": command if command is not None else
        "rkdsc bundle merge " + " ".join(str(s) for s in sources) + f" --out {out}",
        "merged_from": [{"bundle": str(src), "manifest_sha256": sha256_file(src / MANIFEST_NAME),
                         "tasks": [t["name"] for t in man["tasks"]], "provenance": copy.deepcopy(p)}
                        for src, man, p in zip(sources, manifests, provs)],
        "tasks": task_prov,
    }
    for key in ("method", "preset", "seed"):
        values = [p.get(key) for p in provs]
        if any(v is not None for v in values):
            provenance[key] = _agreed(values)
    manifest = {
        "format_version": FORMAT_VERSION,
        "tasks": tasks,
        "feature_dim": first["feature_dim"], "compact_dim": first["compact_dim"],
        "compression_ratio": first["compression_ratio"], "symbols_per_image": first["symbols_per_image"],
        "input": copy.deepcopy(first["input"]), "snr_train_db": list(first["snr_train_db"]),
        "components": {name: comp for name, (_, comp) in components.items()},
        "provenance": provenance,
    }
    drop_top_level_repeats(manifest)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-merge-", dir=out.parent))
    try:
        tmp.chmod(0o755)
        for name, (src, comp) in components.items():
            shutil.copy2(src / comp["file"], tmp / comp["file"])
        written = write_manifest(tmp, manifest)
        for name, (_, comp) in components.items():
            if written["components"][name]["sha256"] != comp["sha256"]:
                raise BundleError(f"merge: component {name!r} file {comp['file']} changed while copying")
        problems = verify_bundle(tmp)
        if problems:
            raise BundleError("merge: the merged bundle does not verify:\n  " + "\n  ".join(problems))
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}-old-", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written
