"""The topology config: one TOML file drives the server, the relay and every edge device.

    cfg = load_config("deploy/topology.toml")     # validated dataclasses, or ConfigError
    cfg.server.port, cfg.basestation.server_addr, cfg.transmitter("edge-near").snr_db

Sections (every key optional unless marked)::

    root = ".."                    # base of relative paths, relative to this file's folder
    [bundle]      path             # bundle directory (required)
    [server]      host port metrics_port max_batch max_wait_ms queue_size top_k drain_timeout_s
    [basestation] host port metrics_port server_addr symbol_rate_hz propagation_delay_ms
                  max_message_bytes
    [[transmitters]] id (required) task snr_db fading path_gain_db seed images batch_size
                  initial_snr_estimate_db limit max_in_flight result_timeout_s

**Relative paths** (``bundle.path``, ``transmitters[i].images``) resolve against ``root``;
``root`` itself resolves against the folder of the config file and defaults to that folder.
``deploy/topology.toml`` sets ``root = ".."`` so its paths read from the repository root.
A transmitter without ``images`` uses the generated samples folder ``runs/samples/<task>``
under ``root`` (``DEFAULT_SAMPLES_DIR``); ``rkdsc demo`` creates it when it is missing.

**Only endpoints come from the environment** (they override the file):

    RKDSC_SERVER_BIND          host:port the server listens on       (server.host/port)
    RKDSC_SERVER_METRICS_PORT  the server's Prometheus port           (server.metrics_port)
    RKDSC_SERVER_ADDR          where the relay finds the server      (basestation.server_addr)
    RKDSC_RELAY_BIND           host:port the relay listens on        (basestation.host/port)
    RKDSC_RELAY_METRICS_PORT   the relay's Prometheus port           (basestation.metrics_port)
    RKDSC_RELAY_ADDR           where the edge devices find the relay (Config.relay_addr)

Every validation error names the field and the offending value, e.g.
``transmitters[1].fading: expected one of awgn, rayleigh, rayleigh_fast, rician, got 'foo'``.
Stdlib only (no numpy, no grpc).
"""
from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

__all__ = ["ConfigError", "FADINGS", "DEFAULT_SAMPLES_DIR", "BundleSection", "ServerConfig",
           "BaseStationConfig", "TransmitterConfig", "Config", "load_config", "parse_config",
           "split_hostport", "ENV_KEYS"]

FADINGS = ("awgn", "rayleigh", "rayleigh_fast", "rician")  # = rkdsc.common.channel.FADINGS (a test checks)
DEFAULT_SAMPLES_DIR = "runs/samples"  # under root; per task: runs/samples/<task>
ENV_KEYS = ("RKDSC_SERVER_BIND", "RKDSC_SERVER_METRICS_PORT", "RKDSC_SERVER_ADDR",
            "RKDSC_RELAY_BIND", "RKDSC_RELAY_METRICS_PORT", "RKDSC_RELAY_ADDR")


class ConfigError(ValueError):
    """The config file is missing, not TOML, or a value is invalid (message names the field)."""


@dataclass
class BundleSection:
    path: Path  # bundle directory (absolute after loading)


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"      # bind address of the EdgeServer gRPC service
    port: int = 50051            # its port (0 = pick a free one)
    metrics_port: int = 9101     # Prometheus /metrics port (0 = pick a free one; -1 = off)
    max_batch: int = 32          # largest decode batch across transmitters
    max_wait_ms: float = 2.0     # longest a frame waits for more frames to fill a batch
    queue_size: int = 1024       # frames waiting per task; beyond it -> RESOURCE_EXHAUSTED
    top_k: int = 3               # classes returned per frame
    drain_timeout_s: float = 10.0  # on SIGTERM: longest wait for in-flight frames


@dataclass
class BaseStationConfig:
    host: str = "127.0.0.1"      # bind address of the Relay gRPC service
    port: int = 50052            # its port (0 = pick a free one)
    metrics_port: int = 9102     # Prometheus /metrics port (0 = pick a free one; -1 = off)
    server_addr: str = "127.0.0.1:50051"  # host:port of the EdgeServer
    symbol_rate_hz: float = 0.0  # airtime emulation: K symbols take K / rate s (0 = off)
    propagation_delay_ms: float = 0.0  # one-way delay added on the uplink and on the downlink
    max_message_bytes: int = 4 * 1024 * 1024  # gRPC receive limit (larger -> RESOURCE_EXHAUSTED)


@dataclass
class TransmitterConfig:
    id: str                          # transmitter id (unique), e.g. "edge-near"
    task: str = "digits"             # bundle task whose codec it uses
    snr_db: float = 10.0             # link SNR, Es/N0 per complex symbol in dB
    fading: str = "awgn"             # one of FADINGS
    path_gain_db: float = 0.0        # added to snr_db: effective SNR = snr_db + path_gain_db
    seed: int = 0                    # seed of the link's numpy Generator on the relay
    images: Path | None = None       # image folder (absolute after loading)
    batch_size: int = 16             # images encoded per edge batch
    initial_snr_estimate_db: float | None = None  # encoder SNR before the first feedback
                                     # (None: the configured snr_db + path_gain_db)
    limit: int = 0                   # at most this many images (0 = all)
    max_in_flight: int = 32          # frames sent but not yet answered (flow control)
    result_timeout_s: float = 60.0   # a frame without a result this long after it was sent is
                                     # an error (DEADLINE_EXCEEDED) and the edge stops waiting

    @property
    def effective_snr_db(self) -> float:
        return self.snr_db + self.path_gain_db

    @property
    def initial_estimate_db(self) -> float:
        return self.effective_snr_db if self.initial_snr_estimate_db is None else self.initial_snr_estimate_db


@dataclass
class Config:
    bundle: BundleSection
    server: ServerConfig = field(default_factory=ServerConfig)
    basestation: BaseStationConfig = field(default_factory=BaseStationConfig)
    transmitters: list[TransmitterConfig] = field(default_factory=list)
    root: Path = Path(".")           # base of relative paths (absolute)
    source: Path | None = None       # the TOML file it came from
    relay_addr: str = ""             # where edges connect (RKDSC_RELAY_ADDR or basestation host:port)

    def transmitter(self, transmitter_id: str) -> TransmitterConfig:
        for t in self.transmitters:
            if t.id == transmitter_id:
                return t
        known = ", ".join(t.id for t in self.transmitters) or "(none)"
        raise ConfigError(f"transmitters: no transmitter with id {transmitter_id!r}; known: {known}")

    def default_images(self, task: str) -> Path:
        """The generated samples folder for a task: <root>/runs/samples/<task>."""
        return (self.root / DEFAULT_SAMPLES_DIR / task).resolve()

    @property
    def server_bind(self) -> str:
        return f"{self.server.host}:{self.server.port}"

    @property
    def relay_bind(self) -> str:
        return f"{self.basestation.host}:{self.basestation.port}"


# ----------------------------------------------------------------------------- validation

def _show(value: Any) -> str:
    return repr(value)


class _Section:
    """Reads one table, checking types and rejecting unknown keys (typos)."""

    def __init__(self, table: Any, where: str, known: list[str]):
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table, got {_show(table)}")
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: unknown key (known keys: {', '.join(known)})")
        self.table, self.where = table, where

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def has(self, name: str) -> bool:
        return name in self.table

    def string(self, name: str, default: str | None = None, *, nonempty: bool = True) -> str:
        if name not in self.table:
            if default is None:
                raise ConfigError(f"{self.key(name)}: required key is missing")
            return default
        v = self.table[name]
        if not isinstance(v, str) or (nonempty and not v.strip()):
            raise ConfigError(f"{self.key(name)}: expected a non-empty string, got {_show(v)}")
        return v

    def integer(self, name: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
        v = self.table.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{self.key(name)}: expected an integer, got {_show(v)}")
        _range(self.key(name), v, lo, hi)
        return v

    def number(self, name: str, default: float | None, lo: float | None = None,
               hi: float | None = None) -> float | None:
        if name not in self.table:
            return default
        v = self.table[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"{self.key(name)}: expected a finite number, got {_show(v)}")
        _range(self.key(name), v, lo, hi)
        return float(v)


def _range(key: str, v: float, lo, hi) -> None:
    if lo is not None and v < lo:
        raise ConfigError(f"{key}: expected a value >= {lo}, got {_show(v)}")
    if hi is not None and v > hi:
        raise ConfigError(f"{key}: expected a value <= {hi}, got {_show(v)}")


def _field_names(cls) -> list[str]:
    return [f.name for f in fields(cls)]


def split_hostport(value: str, key: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); ConfigError naming `key` otherwise."""
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"{key}: expected host:port, got {_show(value)}")
    host, _, port_s = value.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_s)
    except ValueError:
        raise ConfigError(f"{key}: expected host:port with an integer port, got {_show(value)}") from None
    if not host or not 0 <= port <= 65535:
        raise ConfigError(f"{key}: expected host:port with port in 0..65535, got {_show(value)}")
    return host, port


def _resolve(root: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return (p if p.is_absolute() else root / p).resolve()


def parse_config(data: Mapping[str, Any], base_dir: str | os.PathLike = ".",
                 env: Mapping[str, str] | None = None, source: Path | None = None) -> Config:
    """Validate a parsed TOML document. `base_dir` is the folder relative `root` resolves
    against (the config file's folder); `env` defaults to os.environ (endpoints only)."""
    env = os.environ if env is None else env
    top = _Section(dict(data), "", ["root", "bundle", "server", "basestation", "transmitters"])
    root = _resolve(Path(base_dir).resolve(), top.string("root", ".")) if top.has("root") \
        else Path(base_dir).resolve()

    b = _Section(data.get("bundle", None) if "bundle" in data else _missing("bundle"), "bundle", ["path"])
    bundle = BundleSection(path=_resolve(root, b.string("path")))

    s = _Section(data.get("server", {}), "server", _field_names(ServerConfig))
    d = ServerConfig()
    server = ServerConfig(
        host=s.string("host", d.host), port=s.integer("port", d.port, 0, 65535),
        metrics_port=s.integer("metrics_port", d.metrics_port, -1, 65535),
        max_batch=s.integer("max_batch", d.max_batch, 1, 4096),
        max_wait_ms=s.number("max_wait_ms", d.max_wait_ms, 0.0, 60_000.0),
        queue_size=s.integer("queue_size", d.queue_size, 1, 1_000_000),
        top_k=s.integer("top_k", d.top_k, 1, 1000),
        drain_timeout_s=s.number("drain_timeout_s", d.drain_timeout_s, 0.0, 3600.0))

    r = _Section(data.get("basestation", {}), "basestation", _field_names(BaseStationConfig))
    d2 = BaseStationConfig()
    bs = BaseStationConfig(
        host=r.string("host", d2.host), port=r.integer("port", d2.port, 0, 65535),
        metrics_port=r.integer("metrics_port", d2.metrics_port, -1, 65535),
        server_addr=r.string("server_addr", d2.server_addr),
        symbol_rate_hz=r.number("symbol_rate_hz", d2.symbol_rate_hz, 0.0),
        propagation_delay_ms=r.number("propagation_delay_ms", d2.propagation_delay_ms, 0.0, 60_000.0),
        max_message_bytes=r.integer("max_message_bytes", d2.max_message_bytes, 1024, 1 << 30))
    split_hostport(bs.server_addr, "basestation.server_addr")

    raw_tx = data.get("transmitters", [])
    if not isinstance(raw_tx, list):
        raise ConfigError(f"transmitters: expected an array of tables ([[transmitters]]), got {_show(raw_tx)}")
    cfg = Config(bundle=bundle, server=server, basestation=bs, root=root, source=source)
    seen: set[str] = set()
    for i, t in enumerate(raw_tx):
        tx = _parse_transmitter(_Section(t, f"transmitters[{i}]", _field_names(TransmitterConfig)), root)
        if tx.id in seen:
            raise ConfigError(f"transmitters[{i}].id: duplicate transmitter id {tx.id!r}")
        seen.add(tx.id)
        if tx.images is None:
            tx.images = cfg.default_images(tx.task)
        cfg.transmitters.append(tx)
    _apply_env(cfg, env)
    return cfg


def _missing(name: str):
    raise ConfigError(f"{name}: required section [{name}] is missing")


def _parse_transmitter(t: _Section, root: Path) -> TransmitterConfig:
    tid = t.string("id")
    if any(c.isspace() for c in tid) or len(tid) > 128:
        raise ConfigError(f"{t.key('id')}: expected an id without spaces, at most 128 characters, got {tid!r}")
    fading = t.string("fading", "awgn")
    if fading not in FADINGS:
        raise ConfigError(f"{t.key('fading')}: expected one of {', '.join(FADINGS)}, got {fading!r}")
    d = TransmitterConfig(id=tid)
    images = _resolve(root, t.string("images")) if t.has("images") else None
    return TransmitterConfig(
        id=tid, task=t.string("task", d.task), snr_db=t.number("snr_db", d.snr_db, -100.0, 100.0),
        fading=fading, path_gain_db=t.number("path_gain_db", d.path_gain_db, -200.0, 100.0),
        seed=t.integer("seed", d.seed, 0, 2**63 - 1), images=images,
        batch_size=t.integer("batch_size", d.batch_size, 1, 4096),
        initial_snr_estimate_db=t.number("initial_snr_estimate_db", None, -100.0, 100.0),
        limit=t.integer("limit", d.limit, 0), max_in_flight=t.integer("max_in_flight", d.max_in_flight, 1, 100_000),
        result_timeout_s=t.number("result_timeout_s", d.result_timeout_s, 0.001, 86_400.0))


def _apply_env(cfg: Config, env: Mapping[str, str]) -> None:
    def get(name: str) -> str | None:
        v = env.get(name)
        return v if v not in (None, "") else None

    if (v := get("RKDSC_SERVER_BIND")) is not None:
        cfg.server.host, cfg.server.port = split_hostport(v, "RKDSC_SERVER_BIND")
    if (v := get("RKDSC_SERVER_METRICS_PORT")) is not None:
        cfg.server.metrics_port = _env_port(v, "RKDSC_SERVER_METRICS_PORT")
    if (v := get("RKDSC_SERVER_ADDR")) is not None:
        split_hostport(v, "RKDSC_SERVER_ADDR")
        cfg.basestation.server_addr = v
    if (v := get("RKDSC_RELAY_BIND")) is not None:
        cfg.basestation.host, cfg.basestation.port = split_hostport(v, "RKDSC_RELAY_BIND")
    if (v := get("RKDSC_RELAY_METRICS_PORT")) is not None:
        cfg.basestation.metrics_port = _env_port(v, "RKDSC_RELAY_METRICS_PORT")
    if (v := get("RKDSC_RELAY_ADDR")) is not None:
        split_hostport(v, "RKDSC_RELAY_ADDR")
        cfg.relay_addr = v
    else:
        host = cfg.basestation.host
        host = "127.0.0.1" if host in ("0.0.0.0", "", "::", "[::]") else host
        cfg.relay_addr = f"{host}:{cfg.basestation.port}"


def _env_port(value: str, key: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ConfigError(f"{key}: expected an integer port, got {value!r}") from None
    if not -1 <= port <= 65535:
        raise ConfigError(f"{key}: expected a port in -1..65535, got {value!r}")
    return port


def load_config(path: str | os.PathLike, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a topology TOML file (see the module doc)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return parse_config(data, base_dir=path.resolve().parent, env=env, source=path.resolve())
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
