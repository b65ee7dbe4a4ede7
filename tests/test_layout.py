"""The layout's rules (docs/architecture.md), checked on the source and on a built wheel.

- one import namespace: every module is imported as ``rkdsc.*``; the folders are mapped in
  pyproject.toml and every package folder is listed there; a built wheel has one top-level package;
- the runtime side (services, their library parts) never imports torch;
- no service imports another; the library (common/) never imports a service;
- under common/, only the service skeleton (common/service/) imports grpc.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"common": "rkdsc.common", "edge": "rkdsc.edge", "basestation": "rkdsc.basestation",
           "server": "rkdsc.server", "proto/rkdsc": "rkdsc"}
SERVICES = ("rkdsc.edge", "rkdsc.basestation", "rkdsc.server")
OLD_TOP_LEVEL = ("common", "edge", "basestation", "server", "bench")
# Modules the services load (directly or through the library) must import without torch.
RUNTIME_MODULES = ("rkdsc.server.service", "rkdsc.basestation.relay", "rkdsc.edge.client",
                   "rkdsc.common.bundle.runtime", "rkdsc.common.bundle.cli", "rkdsc.common.config",
                   "rkdsc.common.channel", "rkdsc.common.wire", "rkdsc.common.metrics",
                   "rkdsc.common.data.images", "rkdsc.common.cli")


def module_name(path: Path) -> str:
    """Dotted module name of a source file under one of the mapped folders."""
    rel = path.relative_to(REPO)
    for folder, package in sorted(FOLDERS.items(), key=lambda kv: -len(kv[0])):
        try:
            inner = rel.relative_to(folder)
        except ValueError:
            continue
        parts = [*package.split("."), *inner.with_suffix("").parts]
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise ValueError(f"{rel} is not under a mapped folder")


def sources() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (REPO / folder).rglob("*.py")
                  if "_pb2" not in p.name)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, module level or nested."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.append((node.lineno, mod))
            found += [(node.lineno, f"{mod}.{a.name}") for a in node.names]  # `from pkg import mod`
    return found


def owner(module: str) -> str | None:
    """The service a module belongs to, or None for the library."""
    return next((s for s in SERVICES if module == s or module.startswith(s + ".")), None)


def violations(rule) -> list[str]:
    out = []
    for path in sources():
        me = module_name(path)
        for line, target in imports_of(path):
            why = rule(me, target)
            if why:
                out.append(f"{path.relative_to(REPO)}:{line}: {me} imports {target} ({why})")
    return sorted(set(out))


def test_one_import_namespace():
    def rule(me, target):
        top = target.split(".")[0]
        return "import it as rkdsc.*" if top in OLD_TOP_LEVEL else None
    assert violations(rule) == []


def test_no_service_imports_another_and_the_library_imports_none():
    def rule(me, target):
        mine, theirs = owner(me), owner(target)
        if theirs is None or theirs == mine:
            return None
        return "a service imports another" if mine else "the library imports a service"
    assert violations(rule) == []


def test_only_the_service_skeleton_imports_grpc_in_the_library():
    def rule(me, target):
        if owner(me) or me.startswith("rkdsc.common.service") or me == "rkdsc.v1" or me.startswith("rkdsc.v1."):
            return None
        top = target.split(".")[0]
        return "grpc outside rkdsc.common.service" if top in ("grpc", "grpc_health", "grpc_reflection") else None
    assert violations(rule) == []


def test_model_code_never_imports_the_services_skeleton():
    def rule(me, target):
        if me.startswith("rkdsc.common.models") and target.startswith("rkdsc.common.service"):
            return "model code imports the service skeleton"
        return None
    assert violations(rule) == []


def test_the_runtime_side_never_imports_torch():
    """Import what the services load in a fresh interpreter and look for torch (and timm)."""
    code = ("import sys, importlib\n"
            f"for m in {RUNTIME_MODULES!r}: importlib.import_module(m)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm', 'torchvision'))\n"
            "print(' '.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"torch-side modules imported by the runtime side: {out.stdout}"


def test_every_package_folder_is_listed_in_pyproject():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert cfg["package-dir"] == {v: k for k, v in FOLDERS.items()}
    folders = {module_name(p) for p in sources() if p.name == "__init__.py"}
    folders |= {module_name(p.parent / "__init__.py") for p in (REPO / "proto/rkdsc").rglob("*_pb2.py")}
    assert sorted(folders) == sorted(cfg["packages"])


@pytest.mark.slow
def test_a_built_wheel_holds_one_top_level_package(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                          "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("rkdsc-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"rkdsc"}
    for must in ("rkdsc/common/channel/__init__.py", "rkdsc/server/service.py", "rkdsc/v1/emulator_pb2.py",
                 "rkdsc/common/train/presets/smoke.toml", "rkdsc/common/service/__init__.py"):
        assert must in names, f"{must} missing from the wheel"


@pytest.mark.parametrize("path,ignored", [("docs/runs/cifar10-cpu/results.json", False),
                                          ("runs/cifar10-cpu/results.json", True)])
def test_kept_report_inputs_are_not_git_ignored(path, ignored):
    """``rkdsc report --keep-inputs docs/runs`` writes inputs meant to be committed; only the top-level
    work folder ``runs/`` is ignored (a bare ``runs/`` pattern once hid docs/runs and they were lost)."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    rc = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode
    assert rc in (0, 1), f"git check-ignore failed with {rc}"
    assert (rc == 0) is ignored, f"{path}: git-ignored={rc == 0}, expected {ignored}"
