"""Bundle runtime: onnxruntime sessions for the edge and server parts (numpy + onnxruntime
+ PIL only; no torch, so the service images stay small).

    bundle = load_bundle("deploy/bundle")            # verifies sha256 + schema, or raises
    edge = EdgeModel(bundle, "digits")               # image, snr_db -> symbols (codec="cr-0.5": another codec)
    server = ServerModel(bundle, "digits")           # symbols, snr_db -> logits
    x = edge.encode(images, snr_db)                  # float32 [B, compact_dim]
    logits = server.decode(x_hat, snr_db)            # float32 [B, C]

``InProcessPipeline`` chains encode -> symbol mapping -> power normalization -> channel
-> equalization -> demapping -> decode in one process: the reference that the networked
path (edge -> relay -> server) is compared with.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from rkdsc.common.bundle.manifest import (MANIFEST_NAME, BundleError, InputSpec, TaskSpec, model_problems,
                                    read_manifest, task_specs, validate_manifest, verify_bundle)
from rkdsc.common.data.images import preprocess, preprocess_batch  # noqa: F401  (re-exported)


class UnknownTaskError(KeyError, BundleError):
    """A task name the bundle does not have; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


@dataclass
class Bundle:
    """A loaded (and by default verified) bundle directory."""
    path: Path                 # the bundle directory
    manifest: dict             # the parsed manifest.json
    tasks: dict[str, TaskSpec]  # task name -> spec, in manifest order
    input: InputSpec           # the first task's preprocessing (each task's own: tasks[name].input)

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    @property
    def feature_dim(self) -> int:
        return int(self.manifest["feature_dim"])

    @property
    def snr_train_db(self) -> tuple[float, float]:
        lo, hi = self.manifest["snr_train_db"]
        return float(lo), float(hi)

    def task(self, name: str | None = None) -> TaskSpec:
        """The spec of task ``name`` (the first task when None)."""
        if name is None:
            return next(iter(self.tasks.values()))
        try:
            return self.tasks[name]
        except KeyError:
            raise UnknownTaskError(f"unknown task {name!r} in bundle {self.path}; "
                                   f"known tasks: {', '.join(self.tasks)}") from None

    def component(self, name: str) -> dict:
        """The manifest entry of component ``name``."""
        try:
            return self.manifest["components"][name]
        except KeyError:
            raise BundleError(f"{self.path / MANIFEST_NAME}: no component {name!r}; "
                              f"have {sorted(self.manifest['components'])}") from None

    def component_path(self, name: str) -> Path:
        return self.path / self.component(name)["file"]


def load_bundle(path: str | os.PathLike, verify: bool = True) -> Bundle:
    """Load a bundle directory.

    With ``verify`` (the default) every component's sha256 and presence is checked as
    well as the schema, and the manifest's input.size / compact_dim / num_classes against the
    ONNX graphs' own tensor shapes (``verify_bundle``); otherwise only the schema (EdgeModel and
    ServerModel still compare the manifest with the session they create). Raises BundleError whose message names
    the manifest or the offending file, so a service can refuse to start with a clear
    reason.
    """
    path = Path(path)
    if verify:
        problems = verify_bundle(path)
        if problems:
            raise BundleError(f"bundle {path} failed verification:\n  " + "\n  ".join(problems))
        manifest = read_manifest(path)
    else:
        manifest = read_manifest(path)
        problems = validate_manifest(manifest)
        if problems:
            raise BundleError(f"{path / MANIFEST_NAME}: invalid manifest:\n  " + "\n  ".join(problems))
    tasks = {spec.name: spec for spec in task_specs(manifest)}
    return Bundle(path=path, manifest=manifest, tasks=tasks,
                  input=InputSpec.from_dict(manifest["input"]))


def topology_task_problems(cfg: Any, bundle: Bundle) -> list[str]:
    """One line per ``[[transmitters]]`` of a topology (``rkdsc.common.config.Config``) whose
    ``task`` is not a task of ``bundle`` (``transmitters[1].task: unknown task 'x' in bundle B;
    known tasks: digits, shapes``); the services refuse such a topology at start."""
    return [f"transmitters[{i}].task: unknown task {t.task!r} (transmitter {t.id!r}) in bundle {bundle.path}; "
            f"known tasks: {', '.join(bundle.tasks)}"
            for i, t in enumerate(getattr(cfg, "transmitters", []) or []) if t.task not in bundle.tasks]


# ----------------------------------------------------------------------------- sessions

def providers_for(use_cuda: bool = False) -> list[str]:
    """onnxruntime execution providers: CPU, with CUDA first only when asked for and present."""
    if use_cuda:
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        warnings.warn("CUDAExecutionProvider requested but not available in this onnxruntime "
                      "build; using CPUExecutionProvider", RuntimeWarning, stacklevel=3)
    return ["CPUExecutionProvider"]


def make_session(model_path: str | os.PathLike, intra_op_threads: int | None = None,
                 use_cuda: bool = False, spin_wait: bool = True) -> ort.InferenceSession:
    """An InferenceSession with graph optimizations on and a configurable thread count.

    ``intra_op_threads=None`` leaves onnxruntime's default (one thread per physical core).
    ``spin_wait=False`` lets the intra-op threads sleep as soon as a run ends instead of
    spinning for work (onnxruntime's ``session.intra_op.allow_spinning``; what a service
    sharing its cores with others wants: docs/decisions.md "Batch-1 latency").
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    if intra_op_threads is not None:
        if int(intra_op_threads) < 1:
            raise ValueError(f"intra_op_threads: expected int >= 1 or None, got {intra_op_threads!r}")
        opts.intra_op_num_threads = int(intra_op_threads)
    opts.log_severity_level = 3
    if not spin_wait:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(model_path), sess_options=opts,
                                    providers=providers_for(use_cuda))
    except Exception as exc:  # onnxruntime raises its own exception types
        raise BundleError(f"{model_path}: onnxruntime cannot load the model: {exc}") from exc


def _as_snr(snr_db: Any, batch: int, name: str = "snr_db") -> np.ndarray:
    """float scalar or [B] -> float32 [B]."""
    snr = np.asarray(snr_db, dtype=np.float32)
    if snr.ndim == 0:
        snr = np.full((batch,), float(snr), dtype=np.float32)
    if snr.shape != (batch,):
        raise ValueError(f"{name}: expected a scalar or shape [{batch}], got shape {list(snr.shape)}")
    if not np.all(np.isfinite(snr)):
        raise ValueError(f"{name}: expected finite values, got {snr.tolist()}")
    return np.ascontiguousarray(snr)


class _PartModel:
    role = ""
    in_names: tuple[str, str] = ("", "")
    out_name = ""

    def __init__(self, bundle: Bundle, task: str | None = None,
                 intra_op_threads: int | None = None, use_cuda: bool = False, codec: str | None = None,
                 spin_wait: bool = True) -> None:
        self.bundle = bundle
        self.spec = bundle.task(task)
        try:
            self.codec = self.spec.codec(codec)  # CodecSpec; None / "" = the task's default codec
        except KeyError as exc:
            raise BundleError(str(exc.args[0])) from None
        self.component_name = getattr(self.codec, self.role)
        self.model_path = bundle.component_path(self.component_name)
        self.session = make_session(self.model_path, intra_op_threads, use_cuda, spin_wait)
        have_in = [i.name for i in self.session.get_inputs()]
        have_out = [o.name for o in self.session.get_outputs()]
        if sorted(have_in) != sorted(self.in_names) or self.out_name not in have_out:
            raise BundleError(f"{self.model_path}: expected inputs {list(self.in_names)} and output "
                              f"{self.out_name!r}, the model has inputs {have_in}, outputs {have_out}")
        # the manifest against the graph the session really runs (load_bundle(verify=True) did
        # the same from the file; this also covers bundles loaded with verify=False)
        problems = model_problems(bundle.manifest, self.component_name,
                                  {i.name: list(i.shape) for i in self.session.get_inputs()},
                                  {o.name: list(o.shape) for o in self.session.get_outputs()},
                                  file=str(self.model_path))
        if problems:
            raise BundleError(f"{bundle.path / MANIFEST_NAME}: does not match the model "
                              f"{self.model_path}:\n  " + "\n  ".join(problems))

    def _run(self, a: np.ndarray, snr: np.ndarray) -> np.ndarray:
        feeds = {self.in_names[0]: a, self.in_names[1]: snr}
        return self.session.run([self.out_name], feeds)[0]


class EdgeModel(_PartModel):
    """Edge part of a task: student encoder + CAT encoder.

    ``encode(images float32 [B,3,H,W], snr_db [B]) -> float32 [B, compact_dim]``
    """
    role = "edge"
    in_names = ("image", "snr_db")
    out_name = "symbols"

    def encode(self, images: np.ndarray, snr_db: Any) -> np.ndarray:
        images = np.ascontiguousarray(images, dtype=np.float32)
        h, w = self.spec.input.size  # this task's preprocessing (tasks may differ)
        if images.ndim != 4 or images.shape[1:] != (3, h, w):
            raise ValueError(f"images: expected float32 [B, 3, {h}, {w}], got shape {list(images.shape)}")
        k = self.codec.compact_dim
        if images.shape[0] == 0:
            return np.zeros((0, k), dtype=np.float32)
        x = self._run(images, _as_snr(snr_db, images.shape[0]))
        if x.shape != (images.shape[0], k):
            raise BundleError(f"{self.model_path}: output 'symbols' has shape {list(x.shape)}, "
                              f"manifest says [B, {k}]")
        return x.astype(np.float32, copy=False)


class ServerModel(_PartModel):
    """Server part of a task: CAT decoder + semantic (classifier) head.

    ``decode(symbols float32 [B, compact_dim], snr_db [B]) -> logits float32 [B, C]``
    """
    role = "server"
    in_names = ("symbols", "snr_db")
    out_name = "logits"

    def decode(self, symbols: np.ndarray, snr_db: Any) -> np.ndarray:
        symbols = np.ascontiguousarray(symbols, dtype=np.float32)
        k = self.codec.compact_dim
        if symbols.ndim != 2 or symbols.shape[1] != k:
            raise ValueError(f"symbols: expected float32 [B, {k}], got shape {list(symbols.shape)}")
        if symbols.shape[0] == 0:
            return np.zeros((0, self.spec.num_classes), dtype=np.float32)
        logits = self._run(symbols, _as_snr(snr_db, symbols.shape[0]))
        if logits.shape != (symbols.shape[0], self.spec.num_classes):
            raise BundleError(f"{self.model_path}: output 'logits' has shape {list(logits.shape)}, "
                              f"manifest says [B, {self.spec.num_classes}]")
        return logits.astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- scores

def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax (float32 in, float32 out)."""
    z = np.asarray(logits, dtype=np.float32)
    z = z - np.max(z, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


def topk(logits: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Top-k classes by softmax probability: (indices int64, probabilities float32).

    ``logits`` [C] gives [k] arrays, [B, C] gives [B, k]; k is clipped to C; ties keep
    the lower index first.
    """
    probs = softmax(logits, axis=-1)
    if k < 1:
        raise ValueError(f"k: expected int >= 1, got {k!r}")
    k = min(int(k), probs.shape[-1])
    order = np.argsort(-probs, axis=-1, kind="stable")[..., :k]
    return order.astype(np.int64), np.take_along_axis(probs, order, axis=-1)


# ----------------------------------------------------------------------------- pipeline

class InProcessPipeline:
    """encode -> real_to_complex -> normalize_power -> channel (+ MMSE equalization)
    -> complex_to_real -> decode, all in this process; the reference for the networked path.

    ``seed`` seeds the numpy Generator that draws the noise and fading, so two pipelines
    with the same seed and inputs give the same outputs.
    """

    def __init__(self, bundle: Bundle, task: str | None = None, seed: int = 0,
                 intra_op_threads: int | None = None, use_cuda: bool = False, codec: str | None = None) -> None:
        from rkdsc.common import channel  # numpy twin of the channel (no torch)

        self._channel = channel
        self.bundle = bundle
        self.spec = bundle.task(task)
        self.edge = EdgeModel(bundle, self.spec.name, intra_op_threads, use_cuda, codec=codec)
        self.server = ServerModel(bundle, self.spec.name, intra_op_threads, use_cuda, codec=codec)
        self.codec = self.edge.codec  # the CodecSpec both parts use
        self.rng = np.random.default_rng(seed)

    def run(self, images: np.ndarray, snr_db: Any, fading: str = "awgn",
            labels: np.ndarray | None = None) -> dict[str, Any]:
        """Run a batch through the whole chain.

        Returns a dict with ``x`` (encoder output [B, compact_dim]), ``z`` (unit-power
        complex symbols [B, K]), ``y`` (equalized received symbols [B, K]), ``h``,
        ``noise_var``, ``x_hat`` (demapped [B, compact_dim]), ``logits`` [B, C], ``pred``
        [B], ``probs`` [B, C], and, with ``labels``, ``correct`` [B] bool and ``accuracy``.
        """
        ch = self._channel
        batch = np.asarray(images).shape[0]
        snr = _as_snr(snr_db, batch)
        x = self.edge.encode(images, snr)
        z = ch.normalize_power(ch.real_to_complex(x))
        y, h, noise_var = ch.simulate(z, snr.astype(np.float64), fading, self.rng, equalize=True)
        x_hat = np.ascontiguousarray(ch.complex_to_real(y, self.codec.compact_dim), dtype=np.float32)
        logits = self.server.decode(x_hat, snr)
        out: dict[str, Any] = {"x": x, "z": z, "y": y, "h": h, "noise_var": noise_var,
                               "x_hat": x_hat, "logits": logits, "pred": logits.argmax(axis=-1),
                               "probs": softmax(logits)}
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (batch,):
                raise ValueError(f"labels: expected shape [{batch}], got {list(labels.shape)}")
            out["correct"] = out["pred"] == labels
            out["accuracy"] = float(out["correct"].mean()) if batch else float("nan")
        return out
