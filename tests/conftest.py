"""Shared fixtures: a small bundle, sample images, topology configs, running services.

The bundle is a small randomly initialised one (``rkdsc.common.bundle.build_random_bundle``,
built once per session), or a real one when ``RKDSC_TEST_BUNDLE`` points to a bundle
directory. Services run in-process on ephemeral ports (port 0) with real gRPC and real
onnxruntime sessions.
"""
from __future__ import annotations

import os
import random
import socket
from pathlib import Path
from typing import Any, Callable

import pytest


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A TCP port that was free a moment ago, outside the kernel's ephemeral range (prefer
    port 0 where the service supports it). For tests that bind a known port again after a
    restart: a client reconnecting to a port of the ephemeral range can be given that very
    port as its own source port (TCP self-connect) or another client can, and the rebind
    then fails with "address in use" (CI, 2026-12-03). No client is ever given a port
    below the range as its source."""
    low, _ = _ephemeral_range()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10_000, max(10_001, low))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # nothing free below the range
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (str, Path)):
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"cannot write {v!r} as TOML")


def write_toml(path: Path, top: dict, sections: dict[str, dict], transmitters: list[dict]) -> Path:
    """Write a topology TOML file (flat tables only)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in top.items()]
    for name, table in sections.items():
        lines.append(f"\n[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    for t in transmitters:
        lines.append("\n[[transmitters]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in t.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _bundle_source_key() -> str:
    """Hash of the code that builds the random bundle (so a cached one is rebuilt when it changes)."""
    import hashlib
    from importlib.metadata import version

    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(f"torch {version('torch')} onnx {version('onnx')}".encode())
    for path in sorted([root / "common/bundle/export.py", root / "common/bundle/manifest.py",
                        *(root / "common/models").glob("*.py")]):
        if path.exists():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def bundle_dir(request, tmp_path_factory) -> Path:
    """RKDSC_TEST_BUNDLE, else a small random bundle built with the real export code.

    Exporting takes 10-40 s on a busy 2-core machine, so the built bundle is kept in pytest's
    cache (.pytest_cache), keyed by the export/model sources and the torch version, and
    reused while it still verifies."""
    env = os.environ.get("RKDSC_TEST_BUNDLE")
    if env:
        return Path(env).resolve()
    import shutil

    from rkdsc.common.bundle import build_random_bundle, verify_bundle

    built_here = lambda: Path(build_random_bundle(tmp_path_factory.mktemp("bundle") / "bundle", seed=0))  # noqa: E731
    cache = getattr(request.config, "cache", None)  # None with -p no:cacheprovider
    if cache is None:
        return built_here().resolve()
    cached = cache.mkdir("rkdsc-random-bundle") / _bundle_source_key()
    if cached.is_dir() and not verify_bundle(cached):
        return cached.resolve()
    built = built_here()
    try:
        if cached.exists():
            shutil.rmtree(cached)
        tmp = cached.with_name(cached.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(built, tmp)
        os.replace(tmp, cached)
    except OSError:
        return built.resolve()
    return cached.resolve()


@pytest.fixture(scope="session")
def multitask_bundle_dir(request, tmp_path_factory, bundle_dir) -> Path:
    """Two tasks of different input sizes in one bundle: ``digits`` (the ``bundle_dir`` one, 32 px)
    and ``shapes`` (a second random system: 48 px, 8 classes, compression ratio 0.5), combined by
    ``rkdsc.common.bundle.merge.merge_bundles``; cached like ``bundle_dir``."""
    import shutil

    from rkdsc.common.bundle import build_random_bundle, verify_bundle
    from rkdsc.common.bundle.merge import merge_bundles

    def build() -> Path:
        tmp = tmp_path_factory.mktemp("multitask")
        from rkdsc.common.data.shapes import SHAPES_CLASS_NAMES

        shapes = build_random_bundle(tmp / "shapes", input_size=48, num_classes=8, compression_ratio=0.5,
                                     seed=1, task="shapes", class_names=SHAPES_CLASS_NAMES)
        merge_bundles([bundle_dir, shapes], tmp / "merged", command="test fixture")
        return (tmp / "merged").resolve()

    cache = getattr(request.config, "cache", None)
    if cache is None:
        return build()
    cached = cache.mkdir("rkdsc-multitask-bundle") / _bundle_source_key()
    if cached.is_dir() and not verify_bundle(cached):
        return cached.resolve()
    built = build()
    try:
        shutil.rmtree(cached, ignore_errors=True)
        shutil.copytree(built, cached)
    except OSError:
        return built
    return cached.resolve()


@pytest.fixture(scope="session")
def codecs_bundle_dir(request, tmp_path_factory, bundle_dir) -> Path:
    """One task ``digits`` with two codecs: ``cr-0.8`` (the ``bundle_dir`` parts, 6 symbols, the
    default) and ``cr-0.5`` (a second random system, 16 symbols), and the rate policy "below
    10 dB cr-0.5, from 10 dB cr-0.8" (``rkdsc.common.bundle.codecs.combine_codecs``); cached."""
    import shutil

    from rkdsc.common.bundle import build_random_bundle, verify_bundle
    from rkdsc.common.bundle.codecs import combine_codecs

    policy = {"kind": "fewest-symbols-within-margin", "margin": 0.02, "channel": "awgn", "split": "test",
              "table": [{"snr_db": -10.0, "codec": "cr-0.5"}, {"snr_db": 10.0, "codec": "cr-0.8"}]}

    def build() -> Path:
        tmp = tmp_path_factory.mktemp("codecs")
        half = build_random_bundle(tmp / "half", compression_ratio=0.5, seed=2, task="digits")
        combine_codecs({"cr-0.8": bundle_dir, "cr-0.5": half}, tmp / "codecs", "digits", "cr-0.8", policy=policy)
        return (tmp / "codecs").resolve()

    cache = getattr(request.config, "cache", None)
    if cache is None:
        return build()
    cached = cache.mkdir("rkdsc-codecs-bundle") / _bundle_source_key()
    if cached.is_dir() and not verify_bundle(cached):
        return cached.resolve()
    built = build()
    try:
        shutil.rmtree(cached, ignore_errors=True)
        shutil.copytree(built, cached)
    except OSError:
        return built
    return cached.resolve()


@pytest.fixture(scope="session")
def bundle(bundle_dir):
    from rkdsc.common.bundle import load_bundle

    return load_bundle(bundle_dir, verify=True)


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory, bundle) -> Path:
    """24 held-back digits (class sub-folders) at the bundle's input size."""
    from rkdsc.common.data.samples import write_samples

    h, _ = bundle.input.size
    out = tmp_path_factory.mktemp("samples") / "digits"
    write_samples(out, count=24, size=h)
    return out


DEFAULT_TRANSMITTERS = [
    {"id": "edge-near", "task": "digits", "snr_db": 20.0, "fading": "awgn", "seed": 11, "batch_size": 4},
    {"id": "edge-mid", "task": "digits", "snr_db": 5.0, "fading": "rayleigh", "seed": 12, "batch_size": 4},
    {"id": "edge-far", "task": "digits", "snr_db": -5.0, "fading": "awgn", "seed": 13, "batch_size": 4,
     "path_gain_db": -1.0},
]


@pytest.fixture
def make_config(tmp_path, bundle_dir, sample_dir) -> Callable[..., Any]:
    """make_config(transmitters=None, server={}, basestation={}, env={}) -> (Config, toml path).

    Ports default to 0 (ephemeral) and metrics ports to 0; images default to sample_dir."""
    from rkdsc.common.config import load_config

    def make(transmitters: list[dict] | None = None, server: dict | None = None,
             basestation: dict | None = None, env: dict | None = None, name: str = "topology.toml"):
        txs = [dict(t) for t in (transmitters if transmitters is not None else DEFAULT_TRANSMITTERS)]
        for t in txs:
            t.setdefault("images", str(sample_dir))
        srv = {"host": "127.0.0.1", "port": 0, "metrics_port": 0, "max_batch": 8, "max_wait_ms": 2.0,
               **(server or {})}
        bs = {"host": "127.0.0.1", "port": 0, "metrics_port": 0, **(basestation or {})}
        path = write_toml(tmp_path / name, {}, {"bundle": {"path": str(bundle_dir)}, "server": srv,
                                                "basestation": bs}, txs)
        return load_config(path, env=env or {}), path

    return make


class Services:
    """Server + relay running in this process on ephemeral ports."""

    def __init__(self, cfg, bundle):
        import grpc

        from rkdsc.basestation import relay
        from rkdsc.v1 import emulator_pb2_grpc as pb_grpc
        from rkdsc.server.service import create_server

        self.cfg = cfg
        self.server, self.server_port = create_server(cfg, bundle=bundle)
        self.server.start()
        cfg.basestation.server_addr = f"127.0.0.1:{self.server_port}"
        self.relay, self.relay_port = relay.create_server(cfg)
        self.relay.start()
        self.relay_addr = cfg.relay_addr = f"127.0.0.1:{self.relay_port}"
        self.server_addr = cfg.basestation.server_addr
        self.relay_channel = grpc.insecure_channel(self.relay_addr)
        self.server_channel = grpc.insecure_channel(self.server_addr)
        self.relay_stub = pb_grpc.RelayStub(self.relay_channel)
        self.server_stub = pb_grpc.EdgeServerStub(self.server_channel)
        self.wait_relay_serving()

    def wait_relay_serving(self, timeout_s: float = 30.0) -> None:
        from rkdsc.common.experiments.demo import wait_serving

        wait_serving(self.relay_addr, timeout_s=timeout_s)

    def metrics(self, which: str) -> dict:
        """Parsed /metrics of 'server' or 'relay'."""
        import urllib.request

        from rkdsc.common.metrics import parse_metrics

        port = (self.server if which == "server" else self.relay).metrics_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            return parse_metrics(resp.read().decode())

    def close(self) -> None:
        self.relay_channel.close()
        self.server_channel.close()
        self.relay.stop(2.0)
        self.relay.upstream.close()
        self.server.stop(2.0)


@pytest.fixture
def services(make_config, bundle):
    cfg, _ = make_config()
    svc = Services(cfg, bundle)
    yield svc
    svc.close()


def metric(values: dict, name: str, **labels) -> float:
    """A sample value from parse_metrics output (0 when absent)."""
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def make_frame(k: int, transmitter_id: str = "edge-near", frame_id: int = 0, task: str = "digits",
               seed: int = 0, label: int | None = 3, symbols=None, **overrides):
    """A valid Frame with K unit-power complex64 symbols (shape [K]); overrides set fields."""
    import numpy as np

    from rkdsc.common.channel import normalize_power
    from rkdsc.common.wire import encode_tensor
    from rkdsc.v1 import emulator_pb2 as pb

    if symbols is None:
        rng = np.random.default_rng(seed)
        symbols = normalize_power((rng.standard_normal((1, k)) + 1j * rng.standard_normal((1, k))
                                   ).astype(np.complex64))[0]
    data, dtype, shape = encode_tensor(symbols)
    frame = pb.Frame(transmitter_id=transmitter_id, task=task, frame_id=frame_id,
                     symbols=pb.Tensor(data=data, dtype=dtype, shape=shape), encoder_snr_db=10.0,
                     has_label=label is not None, label=-1 if label is None else label, file="x.png")
    for key, value in overrides.items():
        setattr(frame, key, value)
    return frame
