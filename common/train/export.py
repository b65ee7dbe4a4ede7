"""``rkdsc export``: a trained work directory -> a deployable bundle (ONNX + manifest).

    rkdsc export --workdir runs/default --method rkd-sc --out deploy/bundle
    rkdsc export --workdir runs/default --method jscc-student --out runs/default/bundles/jscc-student
    rkdsc export --workdir runs/default --method t-deepsc --out runs/default/bundles/t-deepsc

Every trained task of the method (``rkdsc.common.models.registry``: its folder, how to load it
and how to cut it into edge and server part) becomes one bundle task; compact_dim is the
CAT's ``floor(F * (1 - compression_ratio))`` for ``rkd-sc``, the feature itself
(``feature_dim``, ratio 0.0) for the JSCC baselines, and the values their encoders send for
``t-deepsc`` (10) and ``rtsc`` (512), also at ratio 0.0 (their ``feature_dim`` is that count).

The provenance records the method, preset, seed, git commit, command line, the work
directory, per task its architecture (``ModelSpec.to_json()`` keys: method, depths, student,
cat, teacher, head, feature_dim, compression_ratio, compact_dim), parameter counts, SNR range and
channels, and the metrics known at export time (validation accuracies of training, and
``workdir/eval/<method>-*.json`` when present).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rkdsc.common.models.registry import get_method, method_names

METHODS = method_names()


def _eval_metrics(workdir: Path, method: str) -> dict:
    out = {}
    for f in sorted((workdir / "eval").glob(f"{method}-*.json")):
        try:
            res = json.loads(f.read_text(encoding="utf-8"))
            out[f.stem] = {f"{p['snr_db']:g}dB": round(p["accuracy"], 4) for p in res.get("points", [])}
        except (ValueError, KeyError):
            continue
    return out


def export_from_workdir(workdir: str | Path, out: str | Path, method: str, provenance: dict | None = None,
                        max_bytes: int | None = None) -> Path:
    """Export ``method`` of ``workdir`` to bundle directory ``out`` (verified afterwards).

    ``max_bytes``: fail (and remove nothing) when the bundle's files exceed it.
    """
    import torch

    from rkdsc.common.bundle.export import export_bundle
    from rkdsc.common.bundle.manifest import verify_bundle
    from rkdsc.common.models.spec import read_model_spec

    m = get_method(method)
    workdir = Path(workdir)
    tasks, specs, archs = [], [], {}
    with torch.no_grad():
        for d in m.task_dirs(workdir):
            system, spec = m.load(d)
            arch = read_model_spec(spec, m.name)
            edge, server = m.parts(system)
            tasks.append({"name": spec["task"], "class_names": spec["class_names"],
                          "class_ids": spec.get("class_ids"), "edge_part": edge.eval(),
                          "server_part": server.eval(), "compression_ratio": arch.compression_ratio,
                          "compact_dim": arch.compact_dim, "input": spec["input"],
                          "feature_dim": int(spec["feature_dim"]), "snr_train_db": spec.get("snr_train_db")})
            specs.append(spec)
            archs[spec["task"]] = arch.to_json()
    first = specs[0]  # each task carries its own input spec and feature_dim (manifest format 2)
    prov: dict[str, Any] = {
        "method": method, "preset": first["preset"] if len(specs) == 1 else [s["preset"] for s in specs],
        "seed": first["seed"], "workdir": str(workdir.resolve()),
        "tasks": {s["task"]: {**archs[s["task"]],
                              **{k: s[k] for k in ("params", "snr_train_db", "channels") if k in s}}
                  for s in specs},
        "metrics": {"val": {s["task"]: s.get("val", {}) for s in specs}, **_eval_metrics(workdir, method)},
    }
    prov.update(provenance or {})
    out = Path(out)
    export_bundle(out, tasks, feature_dim=int(first["feature_dim"]), input_spec=first["input"],
                  snr_train_db=first["snr_train_db"], provenance=prov)
    problems = verify_bundle(out)
    if problems:
        raise RuntimeError(f"exported bundle {out} does not verify:\n  " + "\n  ".join(problems))
    size = bundle_bytes(out)
    if max_bytes is not None and size > max_bytes:
        raise RuntimeError(f"bundle {out} is {size / 1e6:.2f} MB, over the limit of {max_bytes / 1e6:.2f} MB")
    return out


def add_metrics(bundle: str | Path, metrics: dict) -> None:
    """Merge ``metrics`` into the bundle's ``provenance.metrics`` (rewrites manifest.json; the
    component checksums are recomputed and must still match)."""
    from rkdsc.common.bundle.manifest import read_manifest, write_manifest

    manifest = read_manifest(bundle)
    manifest.setdefault("provenance", {}).setdefault("metrics", {}).update(metrics)
    write_manifest(bundle, manifest)


def bundle_bytes(path: str | Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rkdsc export",
        description="Export a trained method of a work directory to a bundle (ONNX edge/server parts per task + "
                    "manifest.json with sha256 checksums and provenance); the bundle is verified after writing.")
    p.add_argument("--workdir", required=True, metavar="DIR", help="work directory of rkdsc train / distill / baseline")
    p.add_argument("--method", required=True, choices=METHODS,
                   help="; ".join(f"{m.name}: {m.description}" for m in map(get_method, METHODS)))
    p.add_argument("--out", required=True, metavar="BUNDLE", help="bundle directory to write (created)")
    p.add_argument("--max-mb", type=float, metavar="MB", help="fail when the bundle is larger than this")
    return p


def cli(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = export_from_workdir(args.workdir, args.out, args.method,
                                  max_bytes=int(args.max_mb * 1e6) if args.max_mb else None)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"rkdsc export: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({bundle_bytes(out) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
