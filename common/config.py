"""The topology config: one TOML file drives the server, the relay and every edge device.

    cfg = load_config("deploy/topology.toml")     # validated dataclasses, or ConfigError
    cfg.server.port, cfg.basestation.server_addr, cfg.transmitter("edge-near").snr_db

Contract:

* Keys (all optional unless marked; the dataclasses below hold defaults and ranges)::

      root = ".."        # base of relative paths, relative to this file's folder (default: it)
      [bundle]           path (required)
      [server]           host port metrics_port max_batch max_wait_ms queue_size top_k drain_timeout_s
                         max_streams
      [basestation]      host port metrics_port server_addr symbol_rate_hz propagation_delay_ms
                         max_message_bytes max_streams
      [[transmitters]]   id (required) task snr_db fading path_gain_db seed images batch_size
                         initial_snr_estimate_db limit max_in_flight batch_messages
                         result_timeout_s max_failed_fraction medium (table: [transmitters.medium], rkdsc.common.medium.settings)
      [medium]           the shared wireless medium (optional; rkdsc.common.medium.settings, docs/medium.md)
      [tls]              mode dir ca cert key server_name tokens_file   (docs/security.md)
      [metrics]          host web_config

* Relative ``bundle.path`` / ``transmitters[i].images`` resolve against ``root``; a transmitter
  without ``images`` reads ``<root>/runs/samples/<task>`` (``DEFAULT_SAMPLES_DIR``).
* Only endpoints come from the environment (they override the file): ``RKDSC_SERVER_BIND``
  (server.host/port), ``RKDSC_SERVER_METRICS_PORT``, ``RKDSC_SERVER_ADDR`` (basestation.server_addr),
  ``RKDSC_RELAY_BIND`` (basestation.host/port), ``RKDSC_RELAY_METRICS_PORT``, ``RKDSC_RELAY_ADDR``
  (``Config.relay_addr``, where the edge devices find the relay). TLS paths and mode may come
  from the environment too: ``RKDSC_TLS`` (tls.mode), ``RKDSC_TLS_DIR``, ``RKDSC_TLS_CA``,
  ``RKDSC_TLS_CERT``, ``RKDSC_TLS_KEY``, ``RKDSC_TLS_SERVER_NAME``, ``RKDSC_TLS_TOKENS_FILE``;
  ``RKDSC_METRICS_HOST`` and ``RKDSC_METRICS_WEB_CONFIG`` (the [metrics] keys). Relative TLS
  paths resolve against ``root`` (from the environment: against the working directory).
* Validation is ``rkdsc.common.schema``; ``ConfigError`` names the field and the value, e.g.
  ``transmitters[1].fading: expected one of awgn, rayleigh, rayleigh_fast, rician, got 'foo'``.
  ``FADINGS`` is the channel's one definition (``rkdsc.common.channel``), re-exported here.
* No torch, no grpc.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Mapping, Optional

from pydantic import PlainValidator, ValidationInfo, field_validator, model_validator

from rkdsc.common.channel import DEFAULT_FADING, DEFAULT_K_FACTOR, FADINGS
from rkdsc.common.schema import (Field, Float, Int, NonEmptyStr, NonNegFloat, NonNegInt, Problems, Str,
                                 SchemaError, expected, one_of, schema, validate)
from rkdsc.common.medium.settings import DeviceMediumConfig, MediumConfig  # the shared medium (docs/medium.md)

__all__ = ["ConfigError", "FADINGS", "DEFAULT_SAMPLES_DIR", "BundleSection", "ServerConfig",
           "BaseStationConfig", "TransmitterConfig", "TLSConfig", "MetricsConfig", "TLS_MODES", "MediumConfig", "DeviceMediumConfig", "Config",
           "load_config", "parse_config", "apply_tls_env",
           "split_hostport", "ENV_KEYS"]

DEFAULT_SAMPLES_DIR = "runs/samples"  # under root; per task: runs/samples/<task>
ENV_KEYS = ("RKDSC_SERVER_BIND", "RKDSC_SERVER_METRICS_PORT", "RKDSC_SERVER_ADDR",
            "RKDSC_RELAY_BIND", "RKDSC_RELAY_METRICS_PORT", "RKDSC_RELAY_ADDR")
TLS_MODES = ("off", "tls", "mtls")
# environment variable -> [tls] key (paths resolve against the working directory)
TLS_ENV_KEYS = {"RKDSC_TLS_DIR": "dir", "RKDSC_TLS_CA": "ca", "RKDSC_TLS_CERT": "cert", "RKDSC_TLS_KEY": "key",
                "RKDSC_TLS_TOKENS_FILE": "tokens_file"}


class ConfigError(ValueError):
    """The config file is missing, not TOML, or a value is invalid (message names the field)."""


# ----------------------------------------------------------------------------- field types

def _hostport_problem(value: str) -> str | None:
    """What is wrong with a 'host:port' / '[v6]:port' string (the 'expected ...' phrase), or None."""
    if ":" not in value:
        return "host:port"
    host, _, port_s = value.rpartition(":")
    try:
        port = int(port_s)
    except ValueError:
        return "host:port with an integer port"
    if not host.strip("[]") or not 0 <= port <= 65535:
        return "host:port with port in 0..65535"
    return None


def _path(value: Any) -> Path:
    if isinstance(value, Path):
        return value
    if isinstance(value, str) and value.strip():
        return Path(value).expanduser()
    raise expected("a non-empty string")


def _hostport(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise expected("a non-empty string")
    problem = _hostport_problem(value)
    if problem:
        raise expected(problem)
    return value


def _transmitter_id(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise expected("a non-empty string")
    if any(c.isspace() for c in value) or len(value) > 128:
        raise expected("an id without spaces, at most 128 characters")
    return value


PathStr = Annotated[Path, PlainValidator(_path)]  # a path in the file; absolute after loading
HostPort = Annotated[str, PlainValidator(_hostport)]
Port = Annotated[Int, Field(ge=0, le=65535)]  # 0 = pick a free one
MetricsPort = Annotated[Int, Field(ge=-1, le=65535)]  # 0 = pick a free one; -1 = off
Fading = one_of(FADINGS)
SnrDb = Annotated[Float, Field(ge=-100.0, le=100.0)]


# ----------------------------------------------------------------------------- sections

@schema
class BundleSection:
    path: PathStr  # bundle directory (absolute after loading)


@schema
class ServerConfig:
    host: NonEmptyStr = "127.0.0.1"  # bind address of the EdgeServer gRPC service
    port: Port = 50051               # its port
    metrics_port: MetricsPort = 9101  # Prometheus /metrics port
    max_batch: Annotated[Int, Field(ge=1, le=4096)] = 32  # largest decode batch across transmitters
    max_wait_ms: Annotated[Float, Field(ge=0.0, le=60_000.0)] = 2.0  # longest a frame waits for a fuller batch
    queue_size: Annotated[Int, Field(ge=1, le=1_000_000)] = 1024  # frames waiting per task; beyond: RESOURCE_EXHAUSTED
    top_k: Annotated[Int, Field(ge=1, le=1000)] = 3  # classes returned per frame
    drain_timeout_s: Annotated[Float, Field(ge=0.0, le=3600.0)] = 10.0  # on SIGTERM: longest wait for in-flight frames
    max_streams: Annotated[Int, Field(ge=1, le=10_000)] = 256  # concurrent Decode streams; beyond: RESOURCE_EXHAUSTED


@schema
class BaseStationConfig:
    host: NonEmptyStr = "127.0.0.1"  # bind address of the Relay gRPC service
    port: Port = 50052               # its port
    metrics_port: MetricsPort = 9102  # Prometheus /metrics port
    server_addr: HostPort = "127.0.0.1:50051"  # host:port of the EdgeServer
    symbol_rate_hz: NonNegFloat = 0.0  # airtime emulation: K symbols take K / rate s (0 = off)
    propagation_delay_ms: Annotated[Float, Field(ge=0.0, le=60_000.0)] = 0.0  # one-way, uplink and downlink
    max_message_bytes: Annotated[Int, Field(ge=1024, le=1 << 30)] = 4 * 1024 * 1024  # gRPC receive limit
    max_streams: Annotated[Int, Field(ge=1, le=10_000)] = 256  # concurrent Transmit streams; beyond: RESOURCE_EXHAUSTED


@schema
class TransmitterConfig:
    id: Annotated[str, PlainValidator(_transmitter_id)]  # transmitter id (unique), e.g. "edge-near"
    task: NonEmptyStr = "digits"     # bundle task whose codec it uses
    snr_db: SnrDb = 10.0             # link SNR, Es/N0 per complex symbol in dB
    fading: Fading = DEFAULT_FADING  # one of FADINGS
    rician_k: Annotated[Float, Field(ge=0.0, le=1e6)] = DEFAULT_K_FACTOR  # Rician K factor (linear LOS / scatter power), used when fading = "rician"
    path_gain_db: Annotated[Float, Field(ge=-200.0, le=100.0)] = 0.0  # effective SNR = snr_db + path_gain_db
    seed: Annotated[Int, Field(ge=0, le=2**63 - 1)] = 0  # seed of the link's numpy Generator on the relay
    images: Optional[PathStr] = None  # image folder (absolute after loading)
    batch_size: Annotated[Int, Field(ge=1, le=4096)] = 16  # images encoded per edge batch
    initial_snr_estimate_db: Optional[SnrDb] = None  # encoder SNR before the first feedback
                                     # (None: the configured snr_db + path_gain_db)
    limit: NonNegInt = 0             # at most this many images (0 = all)
    max_in_flight: Annotated[Int, Field(ge=1, le=100_000)] = 32  # frames sent but not yet answered
    batch_messages: bool = True      # one TransmitBatch message per encoded batch (false: one Frame
                                     # per message on Transmit, the single-frame API)
    result_timeout_s: Annotated[Float, Field(ge=0.001, le=86_400.0)] = 60.0  # a frame without a result
                                     # this long after it was sent is an error (DEADLINE_EXCEEDED)
    max_failed_fraction: Annotated[Float, Field(ge=0.0, le=1.0)] = 0.0  # `rkdsc edge` exits 1 when more
                                     # than this fraction of its images got no answer (unreadable,
                                     # error result, no result); 0 = every image must be answered
    medium: Optional[DeviceMediumConfig] = None  # position, movement and compute profile in the shared
                                     # medium (used only with a [medium] table): see [transmitters.medium]

    @property
    def effective_snr_db(self) -> float:
        return self.snr_db + self.path_gain_db

    @property
    def initial_estimate_db(self) -> float:
        return self.effective_snr_db if self.initial_snr_estimate_db is None else self.initial_snr_estimate_db


@schema
class TLSConfig:
    mode: one_of(TLS_MODES) = "off"  # off: plaintext gRPC; tls: encrypted, server certificates checked; mtls: clients too
    dir: Optional[PathStr] = None    # certificate folder written by `rkdsc certs` (ca.pem, server.pem, ...)
    ca: Optional[PathStr] = None     # CA certificate (PEM); default <dir>/ca.pem
    cert: Optional[PathStr] = None   # this process's certificate; default by role in <dir> (server.pem, relay.pem,
                                     # admin.pem, transmitters/<id>.pem)
    key: Optional[PathStr] = None    # its private key; default next to the certificate (.key)
    server_name: Str = ""            # name checked in the server's certificate instead of the dialled host
    tokens_file: Optional[PathStr] = None  # bearer tokens (identity -> token) accepted when mode is not mtls;
                                     # default <dir>/tokens.toml when it exists


@schema
class MetricsConfig:
    host: Str = ""                   # bind address of /metrics ("" = the service's own host)
    web_config: Optional[PathStr] = None  # Prometheus exporter-toolkit web config (TLS, basic auth) for /metrics


@schema
class Config:
    bundle: BundleSection
    server: ServerConfig = field(default_factory=ServerConfig)
    basestation: BaseStationConfig = field(default_factory=BaseStationConfig)
    transmitters: list[TransmitterConfig] = field(default_factory=list)
    medium: Optional[MediumConfig] = None  # the base station as a shared wireless medium with emulated time
                                     # (unset: independent links, as before): see [medium]
    tls: TLSConfig = field(default_factory=TLSConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    root: PathStr = Path(".")        # base of relative paths (absolute after loading)
    source: Optional[Path] = field(default=None, init=False)  # the TOML file it came from
    relay_addr: str = field(default="", init=False)  # where edges connect (RKDSC_RELAY_ADDR or host:port)

    @field_validator("transmitters")
    @classmethod
    def _unique_ids(cls, transmitters: list[TransmitterConfig]) -> list[TransmitterConfig]:
        problems, seen = Problems(), set()
        for i, t in enumerate(transmitters):
            if t.id in seen:
                problems.note((i, "id"), f"duplicate transmitter id {t.id!r}")
            seen.add(t.id)
        problems.raise_if_any()
        return transmitters

    @model_validator(mode="after")
    def _resolve_paths(self, info: ValidationInfo) -> "Config":
        """root against the file's folder (context base_dir), the other paths against root."""
        self.root = _resolve(Path((info.context or {}).get("base_dir", ".")).resolve(), self.root)
        self.bundle.path = _resolve(self.root, self.bundle.path)
        for t in self.transmitters:
            t.images = self.default_images(t.task) if t.images is None else _resolve(self.root, t.images)
        if self.medium is not None and self.medium.snr_trace is not None:
            self.medium.snr_trace = _resolve(self.root, self.medium.snr_trace)
        for key in ("dir", "ca", "cert", "key", "tokens_file"):
            if getattr(self.tls, key) is not None:
                setattr(self.tls, key, _resolve(self.root, getattr(self.tls, key)))
        if self.metrics.web_config is not None:
            self.metrics.web_config = _resolve(self.root, self.metrics.web_config)
        return self

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


def _resolve(root: Path, value: Path) -> Path:
    p = Path(value).expanduser()
    return (p if p.is_absolute() else root / p).resolve()


# ----------------------------------------------------------------------------- loading

def split_hostport(value: str, key: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); ConfigError naming `key` otherwise."""
    problem = "host:port" if not isinstance(value, str) else _hostport_problem(value)
    if problem:
        raise ConfigError(f"{key}: expected {problem}, got {value!r}")
    host, _, port_s = value.rpartition(":")
    return host.strip("[]"), int(port_s)


def parse_config(data: Mapping[str, Any], base_dir: str | os.PathLike = ".",
                 env: Mapping[str, str] | None = None, source: Path | None = None) -> Config:
    """Validate a parsed TOML document. `base_dir` is the folder relative `root` resolves
    against (the config file's folder); `env` defaults to os.environ (endpoints only)."""
    env = os.environ if env is None else env
    try:
        cfg = validate(Config, dict(data), context={"base_dir": Path(base_dir)})
    except SchemaError as exc:
        raise ConfigError(str(exc)) from None
    cfg.source = source
    _apply_env(cfg, env)
    return cfg


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
    apply_tls_env(cfg.tls, env)
    if (v := get("RKDSC_METRICS_HOST")) is not None:
        cfg.metrics.host = v
    if (v := get("RKDSC_METRICS_WEB_CONFIG")) is not None:
        cfg.metrics.web_config = Path(v).expanduser().resolve()


def apply_tls_env(tls: TLSConfig, env: Mapping[str, str] | None = None) -> TLSConfig:
    """Apply RKDSC_TLS, RKDSC_TLS_DIR, ... (see the module doc) to ``tls``; returns it. Also the
    whole [tls] of a client without a topology file: ``apply_tls_env(TLSConfig())``."""
    env = os.environ if env is None else env
    if v := env.get("RKDSC_TLS"):
        if v not in TLS_MODES:
            raise ConfigError(f"RKDSC_TLS: expected one of {', '.join(TLS_MODES)}, got {v!r}")
        tls.mode = v
    for name, key in TLS_ENV_KEYS.items():
        if v := env.get(name):
            setattr(tls, key, Path(v).expanduser().resolve())
    if v := env.get("RKDSC_TLS_SERVER_NAME"):
        tls.server_name = v
    return tls


def _env_port(value: str, key: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ConfigError(f"{key}: expected an integer port, got {value!r}") from None
    if not -1 <= port <= 65535:
        raise ConfigError(f"{key}: expected a port in -1..65535, got {value!r}")
    return port


def _decode_text(raw: bytes, path: Path) -> str:
    """The file's bytes as text: TOML is UTF-8 (a leading BOM is allowed); ConfigError naming the
    file, the byte offset, line and column of the first byte that is not UTF-8 otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = raw[exc.start:exc.end].hex(" ")
        raise ConfigError(f"{path}: not UTF-8 text (TOML files are UTF-8): byte 0x{bad} at byte offset "
                          f"{exc.start} (line {line}, column {column}): {exc.reason}") from None
    return text[1:] if text.startswith("\ufeff") else text


def load_config(path: str | os.PathLike, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a topology TOML file (see the module doc). Every failure is a
    ConfigError naming the file: missing, unreadable, not UTF-8 (byte offset), not TOML, or
    a bad value (the field)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(_decode_text(raw, path))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return parse_config(data, base_dir=path.resolve().parent, env=env, source=path.resolve())
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
