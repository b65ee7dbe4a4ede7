"""Bundle I/O: manifest schema and verification, onnxruntime runtime, torch -> ONNX export.

Importing this package never imports torch (the services have none): the manifest names
are imported eagerly (stdlib only); runtime names (onnxruntime) and export names (torch)
load on first use.
"""
from __future__ import annotations

import importlib

from rkdsc.common.bundle.manifest import (FORMAT_VERSION, MANIFEST_NAME, BundleError, InputSpec,
                                    TaskSpec, compact_dim_for, read_manifest, sha256_file,
                                    symbols_for, validate_manifest, verify_bundle,
                                    write_manifest)

_LAZY = {
    "Bundle": "runtime", "EdgeModel": "runtime", "ServerModel": "runtime",
    "InProcessPipeline": "runtime", "UnknownTaskError": "runtime", "load_bundle": "runtime",
    "make_session": "runtime", "softmax": "runtime", "topk": "runtime", "preprocess": "runtime",
    "topology_task_problems": "runtime",
    "export_bundle": "export", "build_random_bundle": "export", "build_random_parts": "export",
    "random_model_spec": "export",
}

__all__ = ["FORMAT_VERSION", "MANIFEST_NAME", "BundleError", "InputSpec", "TaskSpec",
           "compact_dim_for", "read_manifest", "sha256_file", "symbols_for",
           "validate_manifest", "verify_bundle", "write_manifest", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f"rkdsc.common.bundle.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'rkdsc.common.bundle' has no attribute {name!r}")
