#!/usr/bin/env python
"""Generate the Python gRPC code from proto/rkdsc/v1/*.proto (the one place it is made).

    python scripts/gen_proto.py          # regenerate proto/rkdsc/v1/*_pb2*.py(i) in place
    python scripts/gen_proto.py --check  # regenerate into a temp dir; exit 1 on any diff

protoc runs with ``-Iproto`` so the generated imports read ``from rkdsc.v1 import
emulator_pb2``: the ``rkdsc`` package is installed from ``proto/rkdsc``.

``--check`` ignores only the lines that stamp the generator's version (protobuf gencode
version, ``GRPC_GENERATED_VERSION``), so a newer grpcio-tools that produces the same code
does not fail CI; every other difference does.
"""
from __future__ import annotations

import argparse
import difflib
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = PROTO_ROOT / "rkdsc" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
# lines whose content depends only on the generator's version
_VERSION_LINE = re.compile(
    r"(Protobuf Python Version:|_runtime_version\.ValidateProtobufRuntimeVersion|"
    r"^\s*\d+,\s*$|^\s*'',\s*$|GRPC_GENERATED_VERSION\s*=|^\s*_protobuf_runtime_version\.Domain)")


def proto_files() -> list[Path]:
    files = sorted(PACKAGE_DIR.glob("*.proto"))
    if not files:
        raise SystemExit(f"no .proto files in {PACKAGE_DIR}")
    return files


def generate(out_dir: Path) -> list[Path]:
    """Run protoc (grpc_tools) on every proto into out_dir; return the generated files."""
    try:
        from grpc_tools import protoc
        import grpc_tools
    except ImportError:
        raise SystemExit("grpcio-tools is not installed: pip install -e '.[dev]'") from None
    include = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
    out_dir.mkdir(parents=True, exist_ok=True)
    for proto in proto_files():
        rel = proto.relative_to(PROTO_ROOT)
        args = ["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{include}",
                f"--python_out={out_dir}", f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}",
                str(rel)]
        # protoc resolves the file argument against -I paths; run from the proto root
        rc = protoc.main(args)
        if rc != 0:
            raise SystemExit(f"protoc failed on {rel} (exit {rc})")
    rel_pkg = PACKAGE_DIR.relative_to(PROTO_ROOT)
    return sorted(p for p in (out_dir / rel_pkg).iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def _normalized(text: str) -> list[str]:
    return [line for line in text.splitlines() if not _VERSION_LINE.search(line)]


def check() -> int:
    with tempfile.TemporaryDirectory(prefix="rkdsc-proto-") as tmp:
        fresh = generate(Path(tmp))
        problems: list[str] = []
        fresh_names = {p.name for p in fresh}
        for path in fresh:
            committed = PACKAGE_DIR / path.name
            if not committed.exists():
                problems.append(f"{committed.relative_to(ROOT)}: missing (run python scripts/gen_proto.py)")
                continue
            a = _normalized(committed.read_text())
            b = _normalized(path.read_text())
            if a != b:
                diff = list(difflib.unified_diff(a, b, f"committed/{path.name}", f"generated/{path.name}",
                                                 lineterm="", n=1))
                clip = [d if len(d) <= 160 else d[:157] + "..." for d in diff[:40]]
                shown = "\n".join(clip) + ("\n..." if len(diff) > 40 else "")
                problems.append(f"{committed.relative_to(ROOT)}: differs from the .proto\n{shown}")
        for stale in PACKAGE_DIR.iterdir():
            if stale.name.endswith(GENERATED_SUFFIXES) and stale.name not in fresh_names:
                problems.append(f"{stale.relative_to(ROOT)}: generated file with no .proto source")
    if problems:
        print("generated gRPC code is out of date; run `python scripts/gen_proto.py` and commit:",
              file=sys.stderr)
        for p in problems:
            print("  " + p, file=sys.stderr)
        return 1
    print(f"generated gRPC code in {PACKAGE_DIR.relative_to(ROOT)} is up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gen_proto.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="regenerate into a temporary folder and exit 1 if the committed "
                             "files differ (used by `make proto-check` and CI)")
    args = parser.parse_args(argv)
    if args.check:
        return check()
    with tempfile.TemporaryDirectory(prefix="rkdsc-proto-") as tmp:
        for path in generate(Path(tmp)):
            shutil.copyfile(path, PACKAGE_DIR / path.name)
            print(f"wrote {(PACKAGE_DIR / path.name).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
