"""``rkdsc bundle info DIR``, ``rkdsc bundle verify DIR`` and ``rkdsc bundle merge A B ... --out C``
(no torch; also ``python -m rkdsc.common.bundle.cli ...``)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rkdsc.common.bundle.manifest import (MANIFEST_NAME, BundleError, read_manifest, task_specs,
                                    validate_manifest, verify_bundle)


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _shape(desc: dict) -> str:
    parts = []
    for name, d in desc.items():
        if isinstance(d, dict):
            parts.append(f"{name} {d.get('dtype', '?')} [{', '.join(str(v) for v in d.get('shape', []))}]")
        else:
            parts.append(str(name))
    return ", ".join(parts)


def info_text(bundle_dir: Path) -> str:
    """A readable summary of a bundle (raises BundleError when it cannot be parsed)."""
    manifest = read_manifest(bundle_dir)
    problems = validate_manifest(manifest)
    if problems:
        raise BundleError(f"{bundle_dir / MANIFEST_NAME}: invalid manifest:\n  " + "\n  ".join(problems))
    inp = manifest["input"]
    size = inp["size"]
    lines = [
        f"bundle      {bundle_dir}",
        f"format      {manifest['format_version']}",
        f"input       {size}x{size} RGB" if isinstance(size, int) else f"input       {size[0]}x{size[1]} RGB",
        f"            mean {inp['mean']}  std {inp['std']}",
        f"dims        feature_dim {manifest['feature_dim']}, compression_ratio {manifest['compression_ratio']}, "
        f"compact_dim {manifest['compact_dim']}, symbols_per_image {manifest['symbols_per_image']}",
        f"snr_train   {manifest['snr_train_db'][0]} .. {manifest['snr_train_db'][1]} dB",
        "tasks:",
    ]
    for spec in task_specs(manifest):
        names = ", ".join(spec.class_names[:10]) + (", ..." if spec.num_classes > 10 else "")
        th, tw = spec.input.size
        lines.append(f"  {spec.name}: {spec.num_classes} classes ({names})")
        lines.append(f"    input {th}x{tw} RGB, mean {list(spec.input.mean)}  std {list(spec.input.std)}; "
                     f"feature_dim {spec.feature_dim}; snr_train {spec.snr_train_db[0]:g} .. {spec.snr_train_db[1]:g} dB")
        lines.append(f"    compression_ratio {spec.compression_ratio}, compact_dim {spec.compact_dim}, "
                     f"symbols_per_image {spec.symbols_per_image}; edge {spec.edge}, server {spec.server}")
        for c in spec.codecs:
            lines.append(f"    codec {c.name}: compression_ratio {c.compression_ratio}, compact_dim {c.compact_dim}, "
                         f"symbols_per_image {c.symbols_per_image}; edge {c.edge}, server {c.server}"
                         + (" (default)" if c == spec.default_codec else ""))
        if spec.rate_policy:
            rows = ", ".join(f">= {r['snr_db']:g} dB {r['codec']}" for r in spec.rate_policy["table"])
            lines.append(f"    rate policy {spec.rate_policy['kind']} (margin {spec.rate_policy['margin']:g}, "
                         f"{spec.rate_policy['channel']}): {rows}")
    lines.append("components:")
    for name, comp in manifest["components"].items():
        path = bundle_dir / comp["file"]
        size_b = path.stat().st_size if path.is_file() else None
        lines.append(f"  {name}: {comp['file']}  {comp['params']:,} params  {_human_bytes(size_b)}"
                     + ("" if size_b is not None else "  (MISSING)"))
        if isinstance(comp.get("inputs"), dict) and isinstance(comp.get("outputs"), dict):
            lines.append(f"    {_shape(comp['inputs'])} -> {_shape(comp['outputs'])}")
        lines.append(f"    sha256 {comp['sha256']}")
    lines.append("provenance:")
    for key, value in manifest["provenance"].items():
        text = value if isinstance(value, str) else json.dumps(value)
        lines.append(f"  {key}: {text}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rkdsc bundle",
        description="Inspect and verify a model bundle (a directory with manifest.json and ONNX files).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{info,verify,merge}")
    p_info = sub.add_parser("info", help="print a readable summary: tasks, dimensions, components "
                                         "(params, file sizes), provenance",
                            description="Print a readable summary of a bundle.")
    p_info.add_argument("bundle_dir", metavar="DIR", type=Path, help="bundle directory (holds manifest.json)")
    p_info.add_argument("--json", action="store_true", help="print the raw manifest as JSON instead")
    p_verify = sub.add_parser("verify", help="check the manifest schema, every file's sha256 and the "
                                             "manifest against the models' own shapes; exit 1 naming "
                                             "each problem, print OK otherwise",
                              description="Check the manifest schema, the dimension rules, the sha256 "
                                          "of every component file, and that input.size, compact_dim and "
                                          "num_classes agree with the ONNX models' own input and output "
                                          "shapes (what the services check at start). Exit status 0 and "
                                          "'OK' when sound; 1 with one line per problem (naming the file "
                                          "or key) otherwise.")
    p_verify.add_argument("bundle_dir", metavar="DIR", type=Path, help="bundle directory (holds manifest.json)")
    p_merge = sub.add_parser("merge", help="combine bundles into one multi-task bundle (refuses clashing task "
                                           "or component names)",
                             description="Combine two or more bundles into one multi-task bundle: every task keeps "
                                         "its own input preprocessing, feature width, codec parts and class names. "
                                         "Each bundle must verify; a task, component or file name present in two "
                                         "of them is refused naming both. OUT may be one of the bundles (it is "
                                         "replaced only when the merge succeeded).")
    p_merge.add_argument("sources", metavar="BUNDLE", type=Path, nargs="+", help="bundle directories, in task order")
    p_merge.add_argument("--out", required=True, type=Path, metavar="DIR", help="merged bundle directory to write")
    p_merge.add_argument("--force", action="store_true", help="replace OUT when it exists and is not one of the bundles")
    return parser


def cli(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "merge":
        from rkdsc.common.bundle.merge import merge_bundles

        try:
            merged = merge_bundles(args.sources, args.out, overwrite=args.force,
                                   command="rkdsc bundle merge " + " ".join(map(str, args.sources)) + f" --out {args.out}")
        except BundleError as exc:
            print(f"rkdsc bundle merge: error: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {args.out}: tasks {', '.join(t['name'] for t in merged['tasks'])}")
        return 0
    if args.command == "verify":
        problems = verify_bundle(args.bundle_dir)
        if problems:
            for p in problems:
                print(f"FAIL {p}", file=sys.stderr)
            print(f"{args.bundle_dir}: {len(problems)} problem(s)", file=sys.stderr)
            return 1
        print(f"OK {args.bundle_dir}")
        return 0
    try:
        if args.json:
            print(json.dumps(read_manifest(args.bundle_dir), indent=2))
        else:
            print(info_text(args.bundle_dir))
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    sys.exit(cli())


if __name__ == "__main__":
    main()
