"""Several codecs (compression ratios) of one task in one bundle, and the SNR-adaptive rate
policy recorded with them (no torch).

    policy = fewest_symbols_policy(accuracy, symbols, margin=0.02, channel="awgn", split="val")
    combine_codecs({"cr-0.95": B1, "cr-0.8": B2, "cr-0.5": B3}, out, task="digits",
                   default="cr-0.8", accuracy=accuracy, policy=policy)

Contract:

* ``fewest_symbols_policy(accuracy, symbols, margin)``: ``accuracy`` = codec -> {snr_db: accuracy}
  (every codec evaluated at the same SNRs), ``symbols`` = codec -> symbols per image. At each
  SNR the policy takes the codec with the fewest symbols whose accuracy is at least the best
  codec's accuracy there minus ``margin`` (ties: the more accurate). Rows whose codec equals
  the previous row's are merged, so the table lists the SNRs where the choice changes.
  ``TaskSpec.choose_codec`` reads it: at link SNR x the last row with snr_db <= x, below the
  first row the first row (the most robust choice the evaluation saw).
* ``combine_codecs(sources, out, task, default, ...)``: every source a verified one-task bundle
  of task ``task`` (same class names and input); its parts become components
  ``<task>.<codec>.edge`` / ``.server`` (files ``<task>.<codec>.edge.onnx`` ...), the task's own
  fields are the ``default`` codec's, ``codecs`` lists all of them with their accuracy at export,
  and ``rate_policy`` is ``policy``. The result is a format-2 bundle (mergeable with others).
"""
from __future__ import annotations

import copy
import datetime
import os
import shutil
import tempfile
from pathlib import Path
from typing import Mapping

from rkdsc.common.bundle.manifest import (FORMAT_VERSION, BundleError, drop_top_level_repeats, read_manifest,
                                          verify_bundle, write_manifest)
from rkdsc.common.bundle.merge import resolved_task


def fewest_symbols_policy(accuracy: Mapping[str, Mapping[float, float]], symbols: Mapping[str, int],
                          margin: float, channel: str = "awgn", split: str = "") -> dict:
    """The ``fewest-symbols-within-margin`` rate policy (see the module doc)."""
    if not accuracy:
        raise ValueError("accuracy: expected at least one codec")
    if not 0.0 <= margin <= 1.0:
        raise ValueError(f"margin: expected a fraction in [0, 1], got {margin!r}")
    snrs = sorted({float(s) for acc in accuracy.values() for s in acc})
    for name, acc in accuracy.items():
        if sorted(float(s) for s in acc) != snrs:
            raise ValueError(f"accuracy[{name!r}]: expected the SNRs {snrs}, got {sorted(acc)}")
        if name not in symbols:
            raise ValueError(f"symbols: no symbol count for codec {name!r}")
    table: list[dict] = []
    for snr in snrs:
        at = {name: float(dict((float(k), v) for k, v in acc.items())[snr]) for name, acc in accuracy.items()}
        best = max(at.values())
        ok = [n for n in at if at[n] >= best - margin - 1e-12]
        pick = min(ok, key=lambda n: (symbols[n], -at[n], n))
        if not table or table[-1]["codec"] != pick:
            table.append({"snr_db": snr, "codec": pick})
    return {"kind": "fewest-symbols-within-margin", "margin": float(margin), "channel": channel, "split": split,
            "table": table}


def combine_codecs(sources: Mapping[str, str | os.PathLike], out: str | os.PathLike, task: str, default: str,
                   accuracy: Mapping[str, Mapping] | None = None, policy: dict | None = None,
                   provenance: dict | None = None) -> dict:
    """One bundle whose task ``task`` has one codec per source bundle (see the module doc)."""
    if default not in sources:
        raise ValueError(f"default: expected one of the codecs {list(sources)}, got {default!r}")
    out = Path(out)
    entries, comps, first = [], {}, None
    for name, src in sources.items():
        src = Path(src)
        problems = verify_bundle(src)
        if problems:
            raise BundleError(f"codecs: bundle {src} does not verify:\n  " + "\n  ".join(problems))
        man = read_manifest(src)
        tasks = {t["name"]: t for t in man["tasks"]}
        if task not in tasks:
            raise BundleError(f"codecs: bundle {src} has no task {task!r} (tasks: {', '.join(tasks)})")
        t = resolved_task(man, tasks[task])
        if first is None:
            first = (man, t)
        elif (t["class_names"], t["input"], t["feature_dim"]) != (first[1]["class_names"], first[1]["input"],
                                                                    first[1]["feature_dim"]):
            raise BundleError(f"codecs: bundle {src} task {task!r} differs from {list(sources.values())[0]} in "
                              f"class_names, input or feature_dim; codecs of one task share them")
        parts = {}
        for role in ("edge", "server"):
            comp = copy.deepcopy(man["components"][t[role]])
            new_name = f"{task}.{name}.{role}"
            comps[new_name] = (src / comp["file"], {**comp, "file": f"{new_name}.onnx"})
            parts[role] = new_name
        entries.append((name, t, parts))
    codecs = [{"name": name, "compression_ratio": t["compression_ratio"], "compact_dim": t["compact_dim"],
               "symbols_per_image": t["symbols_per_image"], "edge": parts["edge"], "server": parts["server"],
               "accuracy": copy.deepcopy(dict((accuracy or {}).get(name) or {}))}
              for name, t, parts in entries]
    base_man, base = first
    d_name, d_task, d_parts = next(e for e in entries if e[0] == default)
    task_entry = {**copy.deepcopy(base), "compression_ratio": d_task["compression_ratio"],
                  "compact_dim": d_task["compact_dim"], "symbols_per_image": d_task["symbols_per_image"],
                  "edge": d_parts["edge"], "server": d_parts["server"], "codecs": codecs}
    if policy is not None:
        task_entry["rate_policy"] = copy.deepcopy(policy)
    manifest = {
        "format_version": FORMAT_VERSION, "tasks": [task_entry],
        "feature_dim": task_entry["feature_dim"], "compact_dim": task_entry["compact_dim"],
        "compression_ratio": task_entry["compression_ratio"], "symbols_per_image": task_entry["symbols_per_image"],
        "input": copy.deepcopy(task_entry["input"]), "snr_train_db": list(task_entry["snr_train_db"]),
        "components": {n: c for n, (_, c) in comps.items()},
        "provenance": {"created": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
                       "codecs_from": {name: str(src) for name, src in sources.items()},
                       "tasks": (base_man.get("provenance") or {}).get("tasks", {}), **(provenance or {})},
    }
    drop_top_level_repeats(manifest)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-codecs-", dir=out.parent))
    try:
        tmp.chmod(0o755)
        for n, (path, comp) in comps.items():
            shutil.copy2(path, tmp / comp["file"])
        written = write_manifest(tmp, manifest)
        problems = verify_bundle(tmp)
        if problems:
            raise BundleError("codecs: the combined bundle does not verify:\n  " + "\n  ".join(problems))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written
