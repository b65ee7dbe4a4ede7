"""The topology config: one TOML file drives the server, the relay and every edge device.

    cfg = load_config("deploy/topology.toml")     # validated dataclasses, or ConfigError
    cfg.server.port, cfg.basestation.server_addr, cfg.transmitter("edge-near").snr_db

Contract:

* Keys (all optional unless marked; the dataclasses below hold defaults and ranges)::

      root = ".."        # base of relative paths, relative to this file's folder (default: it)
      [bundle]           path (required)
      [server]           host port metrics_port max_batch max_wait_ms queue_size queue_wait_ms top_k drain_timeout_s
                         max_streams
      [basestation]      host port metrics_port server_addr symbol_rate_hz propagation_delay_ms
                         max_message_bytes max_streams
      [[transmitters]]   id (required) task snr_db fading path_gain_db seed images batch_size
                         initial_snr_estimate_db limit max_in_flight batch_messages read_ahead
                         result_timeout_s max_failed_fraction medium (table: [transmitters.medium], rkdsc.common.medium.settings)
      [[fleets]]         name id_pattern count (required) seed_base snr_db_range draw_seed distance_m_range
                         azimuth_deg_range + the [[transmitters]] keys less id and seed (docs/fleets.md)
      [medium]           the shared wireless medium (optional; rkdsc.common.medium.settings, docs/medium.md)
      [tls]              mode dir ca cert key server_name tokens_file   (docs/security.md)
      [metrics]          host web_config

* ``[[fleets]]`` expand, after the ``[[transmitters]]`` entries and in index order, into
  ``Config.transmitters`` (device i: id ``id_pattern.format(index=i)``, seed ``seed_base + i``,
  drawn ``snr_db`` / medium distance / azimuth when a range is given); ids are unique across the
  topology (``fleets[i].id_pattern`` names a clash). ``Config.transmitter(id)`` is a dict lookup;
  ``Config.fleet_transmitters(name, slice)`` the devices of one fleet.
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

import copy
import dataclasses
import os
import random
import string
import tomllib
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Mapping, Optional

from pydantic import AfterValidator, PlainValidator, ValidationInfo, field_validator, model_validator

from rkdsc.common.channel import DEFAULT_FADING, DEFAULT_K_FACTOR, FADINGS
from rkdsc.common.schema import (Field, Float, Int, NonEmptyStr, NonNegFloat, NonNegInt, Problems, Str,
                                 SchemaError, expected, one_of, schema, validate)
from rkdsc.common.medium.settings import DeviceMediumConfig, MediumConfig  # the shared medium (docs/medium.md)

__all__ = ["ConfigError", "FADINGS", "DEFAULT_SAMPLES_DIR", "BundleSection", "ServerConfig",
           "BaseStationConfig", "TransmitterConfig", "FleetConfig", "FLEET_MAX_DEVICES", "shown_ids", "TLSConfig", "MetricsConfig", "TLS_MODES", "MediumConfig", "DeviceMediumConfig", "Config",
           "load_config", "parse_config", "apply_tls_env",
           "split_hostport", "ENV_KEYS", "server_replicas", "check_server_addr", "DNS_SCHEME"]

FLEET_MAX_DEVICES = 100_000  # devices of one [[fleets]] entry at most
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


DNS_SCHEME = "dns:///"  # an explicit gRPC DNS target: every address the name resolves to is a replica


def server_replicas(value: str) -> list[str]:
    """The replicas named by a ``basestation.server_addr`` value (as validated): a
    ``host:port`` or ``dns:///host:port`` -> one entry (a DNS name may still resolve to several
    addresses: the relay resolves it), ``"a:1,b:2"`` -> each entry, ``dns:///`` dropped."""
    value = value[len(DNS_SCHEME):] if value.startswith(DNS_SCHEME) else value
    return [part.strip() for part in value.split(",") if part.strip()]


def _is_ip_literal(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _server_addr_problem(value: str) -> str | None:
    """What is wrong with a server_addr string (the 'expected ...' phrase), or None."""
    if value.startswith(DNS_SCHEME):
        if "," in value:
            return "one dns:///host:port name (a list is a list of IP addresses, without dns:///)"
        return _hostport_problem(value[len(DNS_SCHEME):])
    parts = server_replicas(value)
    if not parts:
        return "host:port"
    for part in parts:
        problem = _hostport_problem(part)
        if problem:
            return f"{problem} (in {part!r})" if len(parts) > 1 else problem
    if len(parts) > 1:
        hosts = [p.rpartition(":")[0] for p in parts]
        if not all(_is_ip_literal(h) or h == "localhost" for h in hosts):
            bad = next(p for p, h in zip(parts, hosts) if not (_is_ip_literal(h) or h == "localhost"))
            return (f"IP addresses (or localhost) in a list of several replicas, not the name in {bad!r}; "
                    f"a DNS name that resolves to several replicas is given alone, e.g. 'dns:///server:50051'")
        v6 = [":" in h.strip("[]") for h in hosts]
        if any(v6) and not all(v6):
            return "replicas of one IP family (all IPv4 or all IPv6)"
    return None


def _server_addr(value: Any) -> str:
    """One 'host:port', 'dns:///host:port', 'a:1,b:2' or a TOML list of 'host:port' (joined)."""
    if isinstance(value, (list, tuple)):
        if not value or not all(isinstance(v, str) and v.strip() for v in value):
            raise expected("a non-empty list of 'host:port' strings")
        value = ",".join(v.strip() for v in value)
    if not isinstance(value, str) or not value.strip():
        raise expected("a non-empty string")
    value = value.strip()
    problem = _server_addr_problem(value)
    if problem:
        raise expected(problem)
    return value if value.startswith(DNS_SCHEME) else ",".join(server_replicas(value))


PathStr = Annotated[Path, PlainValidator(_path)]  # a path in the file; absolute after loading
HostPort = Annotated[str, PlainValidator(_hostport)]
ServerAddr = Annotated[str, PlainValidator(_server_addr)]  # host:port, dns:///host:port, or a list of replicas
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
    queue_size: Annotated[Int, Field(ge=1, le=1_000_000)] = 1024  # frames waiting per task; beyond: wait, then
                                     # RESOURCE_EXHAUSTED
    queue_wait_ms: Annotated[Float, Field(ge=0.0, le=600_000.0)] = 30_000.0  # longest a message waits for room in a
                                     # full queue, in line (first come, first served; its stream is held
                                     # meanwhile: backpressure to the relay and edges), then
                                     # RESOURCE_EXHAUSTED; 0: at once (load shedding)
    top_k: Annotated[Int, Field(ge=1, le=1000)] = 3  # classes returned per frame
    drain_timeout_s: Annotated[Float, Field(ge=0.0, le=3600.0)] = 10.0  # on SIGTERM: longest wait for in-flight frames
    max_streams: Annotated[Int, Field(ge=1, le=10_000)] = 256  # concurrent Decode streams; beyond: RESOURCE_EXHAUSTED
    onnx_spin_wait: bool = False     # onnxruntime's intra-op threads spin for work after each decode (lower
                                     # latency alone on its cores; false: they sleep, leaving the CPU to
                                     # the relay and edges sharing it: docs/decisions.md "Batch-1 latency")


@schema
class BaseStationConfig:
    host: NonEmptyStr = "127.0.0.1"  # bind address of the Relay gRPC service
    port: Port = 50052               # its port
    metrics_port: MetricsPort = 9102  # Prometheus /metrics port
    server_addr: ServerAddr = "127.0.0.1:50051"  # host:port of the EdgeServer; replicas: "a:1,b:2" / a list of IP addresses, or "dns:///name:port" (every address of the name); round_robin per stream (docs/deployment.md)
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
    read_ahead: bool = False         # read the next batch's images on a thread while this one encodes
                                     # (never in stop-and-wait; pays with a spare core: 1 edge on 2 cores
                                     # 1.08-1.43x, 32 edges 0.81-0.91x; off by default)
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


def _range_pair(lo: float, hi: float, unit: str):
    def check(value: list) -> list:
        if len(value) != 2:
            raise expected(f"[lo, hi] in {unit}")
        if not lo <= value[0] <= value[1] <= hi:
            raise expected(f"[lo, hi] with {lo:g} <= lo <= hi <= {hi:g}")
        return value
    return Annotated[list[Float], AfterValidator(check)]


@schema
class FleetConfig:
    """Many devices from one entry: a TransmitterConfig template (the keys of [[transmitters]] less
    ``id`` and ``seed``) + ``count`` + ``id_pattern`` + a seed rule + optional distributions."""
    name: Annotated[str, PlainValidator(_transmitter_id)]  # fleet name (unique), `rkdsc fleet --fleet NAME`
    id_pattern: NonEmptyStr          # transmitter id of device i, a Python format string with {index}
                                     # (e.g. "dev-{index:04d}"); the ids must be unique across the topology
    count: Annotated[Int, Field(ge=1, le=FLEET_MAX_DEVICES)]  # number of devices (index 0 .. count-1)
    seed_base: Annotated[Int, Field(ge=0, le=2**62)] = 0  # seed rule: device i's link seed is seed_base + i
    task: NonEmptyStr = "digits"     # bundle task of every device
    snr_db: SnrDb = 10.0             # link SNR of every device (unless snr_db_range), Es/N0 in dB
    snr_db_range: Optional[_range_pair(-100.0, 100.0, "dB")] = None  # [lo, hi]: device i's snr_db drawn
                                     # uniformly in [lo, hi] (rounded to 0.001 dB) from a generator seeded
                                     # by draw_seed; device i gets the i-th draw, whatever the count
    draw_seed: Optional[Annotated[Int, Field(ge=0, le=2**63 - 1)]] = None  # seed of the fleet's draws
                                     # (default: seed_base); same seed, same values on every machine
    fading: Fading = DEFAULT_FADING  # one of FADINGS
    rician_k: Annotated[Float, Field(ge=0.0, le=1e6)] = DEFAULT_K_FACTOR  # Rician K factor (linear), fading = "rician"
    path_gain_db: Annotated[Float, Field(ge=-200.0, le=100.0)] = 0.0  # effective SNR = snr_db + path_gain_db
    images: Optional[PathStr] = None  # image folder of every device (default: the task's samples folder)
    batch_size: Annotated[Int, Field(ge=1, le=4096)] = 16  # images encoded per edge batch
    initial_snr_estimate_db: Optional[SnrDb] = None  # encoder SNR before the first feedback
                                     # (None: each device's own snr_db + path_gain_db)
    limit: NonNegInt = 0             # at most this many images per device (0 = all)
    max_in_flight: Annotated[Int, Field(ge=1, le=100_000)] = 32  # frames sent but not yet answered, per device
    batch_messages: bool = True      # one TransmitBatch message per encoded batch (false: Transmit, one Frame each)
    read_ahead: bool = False         # read the next batch's images on a thread while this one encodes
                                     # (off for fleets: their devices share one process and its cores)
    result_timeout_s: Annotated[Float, Field(ge=0.001, le=86_400.0)] = 60.0  # a frame without a result
                                     # this long after it was sent is an error (DEADLINE_EXCEEDED)
    max_failed_fraction: Annotated[Float, Field(ge=0.0, le=1.0)] = 0.0  # a device's run fails when more
                                     # than this fraction of its images got no answer
    medium: Optional[DeviceMediumConfig] = None  # every device's place in the shared medium (with [medium]);
                                     # distance_m_range / azimuth_deg_range vary it per device
    distance_m_range: Optional[_range_pair(0.0, 100_000.0, "m")] = None  # [lo, hi]: device i's
                                     # medium.distance_m drawn uniformly (0.01 m) with draw_seed; needs [medium]
    azimuth_deg_range: Optional[_range_pair(-360.0, 360.0, "deg")] = None  # [lo, hi]: device i's
                                     # medium.azimuth_deg drawn uniformly (0.01 deg) with draw_seed; needs [medium]
    ids: list[str] = field(default_factory=list, init=False, repr=False)  # the expanded ids, in index order

    def device_id(self, index: int) -> str:
        return self.id_pattern.format(index=index)

    def draws(self, what: str, lo: float, hi: float, digits: int) -> list[float]:
        """``count`` values uniform in [lo, hi] (rounded), the i-th for device i: one stdlib
        Mersenne Twister per fleet and quantity, seeded by (draw_seed or seed_base, what)."""
        seed = self.seed_base if self.draw_seed is None else self.draw_seed
        rng = random.Random(f"rkdsc-fleet:{seed}:{what}")  # str seeds hash with sha512: stable across runs
        return [round(lo + (hi - lo) * rng.random(), digits) for _ in range(self.count)]


FLEET_KEYS = tuple(f.name for f in dataclasses.fields(TransmitterConfig) if f.name not in ("id", "seed"))


def _pattern_problem(pattern: str) -> str | None:
    """What is wrong with an id pattern (the 'expected ...' phrase), or None."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    except ValueError as exc:
        return f"a format string with {{index}} ({exc})"
    if "index" not in fields or any(f != "index" for f in fields):
        return "a format string whose only field is {index}, e.g. 'dev-{index:04d}'"
    try:
        pattern.format(index=0)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        return f"a format string with {{index}} formatting an integer ({exc})"
    return None


def _expand_fleet(fleet: FleetConfig, loc: tuple, problems: Problems, taken: dict[str, str]) -> list[TransmitterConfig]:
    """The fleet's devices as TransmitterConfig objects (one validated template, shallow copies:
    about 3 us a device), noting bad or duplicate ids in ``problems``; ``taken``: id -> owner."""
    if (why := _pattern_problem(fleet.id_pattern)) is not None:
        problems.expected(loc + ("id_pattern",), why, fleet.id_pattern)
        return []
    template = TransmitterConfig(id="template", **{k: getattr(fleet, k) for k in FLEET_KEYS})  # id set per device
    snrs = (fleet.draws("snr_db", *fleet.snr_db_range, 3) if fleet.snr_db_range is not None else None)
    dists = (fleet.draws("distance_m", *fleet.distance_m_range, 2) if fleet.distance_m_range is not None else None)
    azims = (fleet.draws("azimuth_deg", *fleet.azimuth_deg_range, 2) if fleet.azimuth_deg_range is not None else None)
    vary_medium = dists is not None or azims is not None
    base_medium = template.medium if template.medium is not None else (DeviceMediumConfig() if vary_medium else None)
    out, ids = [], []
    for i in range(fleet.count):
        tid = fleet.device_id(i)
        if any(c.isspace() for c in tid) or len(tid) > 128:
            problems.expected(loc + ("id_pattern",), f"ids without spaces, at most 128 characters "
                              f"(device {i} is {tid!r})", fleet.id_pattern)
            return []
        owner = taken.get(tid)
        if owner is not None:
            problems.note(loc + ("id_pattern",), f"{fleet.id_pattern!r} makes device {i} id {tid!r}, "
                          f"which {owner} already has")
            return []
        taken[tid] = f"fleets[{loc[1]}] ({fleet.name!r}) device {i}"
        t = copy.copy(template)
        t.id, t.seed = tid, fleet.seed_base + i
        if snrs is not None:
            t.snr_db = snrs[i]
        if base_medium is not None:  # each device its own (positions may differ, or be changed)
            t.medium = copy.copy(base_medium)
            if dists is not None:
                t.medium.distance_m = dists[i]
            if azims is not None:
                t.medium.azimuth_deg = azims[i]
        out.append(t)
        ids.append(tid)
    fleet.ids = ids
    return out


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
    fleets: list[FleetConfig] = field(default_factory=list)  # groups of devices by template, expanded
                                     # into transmitters after the [[transmitters]] entries: see [[fleets]]
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

    @model_validator(mode="after")
    def _expand_fleets(self) -> "Config":
        """[[fleets]] -> TransmitterConfig objects appended to ``transmitters`` (so the relay, the
        server, certs and demo see every device); ids unique across the topology."""
        problems, names = Problems(), set()
        taken = {t.id: f"transmitters[{i}]" for i, t in enumerate(self.transmitters)}
        for i, fleet in enumerate(self.fleets):
            if fleet.name in names:
                problems.note(("fleets", i, "name"), f"duplicate fleet name {fleet.name!r}")
            names.add(fleet.name)
            for key in ("distance_m_range", "azimuth_deg_range"):
                if getattr(fleet, key) is not None and self.medium is None:
                    problems.note(("fleets", i, key), f"{key} = {getattr(fleet, key)} needs a [medium] table "
                                                      f"(device positions exist only in the shared medium)")
            fleet.images = self.default_images(fleet.task) if fleet.images is None else _resolve(self.root, fleet.images)
            self.transmitters.extend(_expand_fleet(fleet, ("fleets", i), problems, taken))
        problems.raise_if_any()
        self._reindex()
        return self

    def _reindex(self) -> None:
        object.__setattr__(self, "_tx_index", {t.id: i for i, t in enumerate(self.transmitters)})

    def transmitter(self, transmitter_id: str) -> TransmitterConfig:
        """The transmitter with this id, fleets' devices included: O(1) (an index by id, rebuilt
        when ``transmitters`` was changed since); ConfigError naming a few known ids otherwise."""
        def at(pos: int | None) -> TransmitterConfig | None:
            if pos is not None and pos < len(self.transmitters) and self.transmitters[pos].id == transmitter_id:
                return self.transmitters[pos]
            return None

        found = at(getattr(self, "_tx_index", {}).get(transmitter_id))
        if found is None:  # unknown, or the list changed since it was indexed: index it again
            self._reindex()
            found = at(self._tx_index.get(transmitter_id))
        if found is not None:
            return found
        known = shown_ids(t.id for t in self.transmitters)
        raise ConfigError(f"transmitters: no transmitter with id {transmitter_id!r}; known: {known}")

    def fleet(self, name: str) -> FleetConfig:
        for f in self.fleets:
            if f.name == name:
                return f
        known = ", ".join(f.name for f in self.fleets) or "(none)"
        raise ConfigError(f"fleets: no fleet named {name!r}; known: {known}")

    def fleet_transmitters(self, name: str, devices: slice | None = None) -> list[TransmitterConfig]:
        """The devices of fleet ``name`` (``devices``: a slice of its indices), in index order."""
        ids = self.fleet(name).ids
        return [self.transmitter(tid) for tid in (ids if devices is None else ids[devices])]

    def default_images(self, task: str) -> Path:
        """The generated samples folder for a task: <root>/runs/samples/<task>."""
        return (self.root / DEFAULT_SAMPLES_DIR / task).resolve()

    @property
    def server_bind(self) -> str:
        return f"{self.server.host}:{self.server.port}"

    @property
    def relay_bind(self) -> str:
        return f"{self.basestation.host}:{self.basestation.port}"


def shown_ids(ids, limit: int = 12) -> str:
    """Ids for an error message: the first ``limit``, then how many in all (a fleet has thousands)."""
    head, n = [], 0
    for n, tid in enumerate(ids, 1):
        if n <= limit:
            head.append(tid)
    return (", ".join(head) + (f", ... ({n} in all)" if n > limit else "")) or "(none)"


def _resolve(root: Path, value: Path) -> Path:
    p = Path(value).expanduser()
    return (p if p.is_absolute() else root / p).resolve()


# ----------------------------------------------------------------------------- loading

def check_server_addr(value: Any, key: str = "basestation.server_addr") -> str:
    """A server_addr value (see ``ServerAddr``) as the relay uses it; ConfigError naming `key` otherwise."""
    try:
        return _server_addr(value)
    except (ValueError, SchemaError) as exc:
        raise ConfigError(f"{key}: {exc}, got {value!r}") from None


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
        cfg.basestation.server_addr = check_server_addr(v, "RKDSC_SERVER_ADDR")
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
