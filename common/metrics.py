"""Prometheus metrics of the server and the relay (prometheus_client only; no grpc).

Each service instance owns a ``CollectorRegistry`` (never the global one), so several
instances can live in one process (tests) and ``/metrics`` shows exactly one service.

Server (``ServerMetrics``)::

    rkdsc_frames_total{transmitter,task,outcome}   outcome: ok | invalid | rejected | draining | failed
    rkdsc_decode_seconds{task}        histogram, decode compute time per batch
    rkdsc_queue_seconds{task}         histogram, time a frame waited in the batching queue
    rkdsc_batch_size{task}            histogram, frames per decode batch
    rkdsc_symbols_total{transmitter,task}    complex symbols received in decoded frames
    rkdsc_labelled_total{transmitter,task}   decoded frames that carried a label
    rkdsc_correct_total{transmitter,task}    ... whose top-1 class equals the label

Relay (``RelayMetrics``)::

    rkdsc_relay_frames_total{transmitter,outcome}  outcome: ok | error | invalid | failed
    rkdsc_link_snr_db{transmitter}        gauge, effective link SNR (snr_db + path_gain_db)
    rkdsc_relay_channel_seconds           histogram, channel simulation time per frame
    rkdsc_relay_roundtrip_seconds         histogram, relay -> server -> relay per frame

Labels of unknown transmitters are folded into ``transmitter="_unknown"`` so a client
cannot grow the label set without bound.

A metrics port that cannot be bound is a ``MetricsPortError`` (an OSError) whose message names
the address and the config field of the port (``server.metrics_port`` /
``basestation.metrics_port`` and its environment override), e.g.
``server.metrics_port: cannot serve /metrics on 127.0.0.1:9101: address already in use ...``;
nothing stays bound.

Protection (``[metrics]`` of the topology, docs/security.md): /metrics binds to ``metrics.host``,
by default the service's own host (127.0.0.1 in the default topology: only local scrapers).
``metrics.web_config`` names a Prometheus exporter-toolkit web config file (YAML) whose
``tls_server_config`` (``cert_file``, ``key_file``, ``client_ca_file``, ``client_auth_type``,
``min_version``) serves /metrics over HTTPS and whose ``basic_auth_users`` (user: bcrypt hash)
require HTTP basic auth (401 otherwise); relative paths resolve against the file's folder. A web
config that cannot be used is a ``MetricsConfigError`` (a MetricsPortError) naming the key.
"""
from __future__ import annotations

import base64
import errno
import hashlib
import os
import threading
from dataclasses import dataclass
from dataclasses import field as dc_field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["ServerMetrics", "RelayMetrics", "MetricsEndpoint", "MetricsPortError", "MetricsConfigError",
           "WebConfig", "load_web_config", "UNKNOWN_LABEL",
           "parse_metrics", "totals_by_name"]

UNKNOWN_LABEL = "_unknown"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_EMULATED_BUCKETS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
                     5.0, 10.0, 30.0, 100.0)


class MetricsPortError(OSError):
    """The /metrics port cannot be bound; the message names the address and the config field."""


class MetricsConfigError(MetricsPortError):
    """The /metrics web config cannot be used; the message names the file and the key."""


_CLIENT_AUTH = ("NoClientCert", "RequestClientCert", "RequireAnyClientCert", "VerifyClientCertIfGiven",
                "RequireAndVerifyClientCert")


@dataclass
class WebConfig:
    """The parts of an exporter-toolkit web config this endpoint honours."""
    ssl_context: Any = None                          # ssl.SSLContext when tls_server_config is set
    users: dict[str, bytes] = dc_field(default_factory=dict)  # basic auth: user -> bcrypt hash
    _ok: set = dc_field(default_factory=set)         # (user, sha256(password)) already checked
    _lock: threading.Lock = dc_field(default_factory=threading.Lock)

    def authorized(self, header: str | None) -> bool:
        if not self.users:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:].strip()).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if hashed is None:
            return False
        key = (user, hashlib.sha256(password.encode()).digest())
        with self._lock:
            if key in self._ok:
                return True
        import bcrypt

        try:
            ok = bcrypt.checkpw(password.encode(), hashed)
        except ValueError:
            return False
        if ok:
            with self._lock:
                self._ok.add(key)
        return ok


def load_web_config(path: str | os.PathLike) -> WebConfig:
    """Read an exporter-toolkit web config (YAML; JSON is YAML too); MetricsConfigError naming the key."""
    import ssl

    import yaml

    path = Path(path)
    where = f"metrics.web_config {path}"
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise MetricsConfigError(f"{where}: file not found") from None
    except (OSError, yaml.YAMLError) as exc:
        raise MetricsConfigError(f"{where}: cannot read it: {exc}") from None
    if not isinstance(doc, dict):
        raise MetricsConfigError(f"{where}: expected a mapping, got {type(doc).__name__}")
    unknown = set(doc) - {"tls_server_config", "basic_auth_users", "http_server_config"}
    if unknown:
        raise MetricsConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: tls_server_config, "
                                 f"basic_auth_users, http_server_config)")
    out = WebConfig()

    def rel(value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise MetricsConfigError(f"{where}: {key}: expected a file name, got {value!r}")
        p = Path(value)
        return str(p if p.is_absolute() else path.parent / p)

    tls = doc.get("tls_server_config")
    if tls:
        if not isinstance(tls, dict):
            raise MetricsConfigError(f"{where}: tls_server_config: expected a mapping")
        auth = tls.get("client_auth_type", "NoClientCert")
        if auth not in _CLIENT_AUTH:
            raise MetricsConfigError(f"{where}: tls_server_config.client_auth_type: expected one of "
                                     f"{', '.join(_CLIENT_AUTH)}, got {auth!r}")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        versions = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
        minimum = tls.get("min_version", "TLS12")
        if minimum not in versions:
            raise MetricsConfigError(f"{where}: tls_server_config.min_version: expected TLS12 or TLS13, got {minimum!r}")
        ctx.minimum_version = versions[minimum]
        try:
            ctx.load_cert_chain(rel(tls.get("cert_file"), "tls_server_config.cert_file"),
                                rel(tls.get("key_file"), "tls_server_config.key_file"))
            if tls.get("client_ca_file"):
                ctx.load_verify_locations(rel(tls["client_ca_file"], "tls_server_config.client_ca_file"))
        except (OSError, ssl.SSLError) as exc:
            raise MetricsConfigError(f"{where}: tls_server_config: cannot load the certificate, key or CA: {exc}") from None
        if auth in ("RequireAndVerifyClientCert", "RequireAnyClientCert"):
            ctx.verify_mode = ssl.CERT_REQUIRED
        elif auth in ("VerifyClientCertIfGiven", "RequestClientCert"):
            ctx.verify_mode = ssl.CERT_OPTIONAL
        if ctx.verify_mode != ssl.CERT_NONE and not tls.get("client_ca_file"):
            raise MetricsConfigError(f"{where}: tls_server_config.client_ca_file: needed with client_auth_type {auth}")
        out.ssl_context = ctx
    users = doc.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        raise MetricsConfigError(f"{where}: basic_auth_users: expected a mapping user: bcrypt hash")
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith("$2"):
            raise MetricsConfigError(f"{where}: basic_auth_users.{user}: expected a bcrypt hash ($2y$...), not a "
                                     f"plain password (make one with: python -c \"import bcrypt; "
                                     f"print(bcrypt.hashpw(b'PASSWORD', bcrypt.gensalt()).decode())\")")
        out.users[str(user)] = hashed.encode()
    if out.users:
        try:
            import bcrypt  # noqa: F401
        except ImportError:  # pragma: no cover - a dependency of the package
            raise MetricsConfigError(f"{where}: basic_auth_users needs the bcrypt package") from None
    return out


class _ServiceRegistry(CollectorRegistry):
    """A service's registry; knows which config field (and environment override) sets its port,
    so that a port that cannot be bound is reported in the user's terms."""

    def __init__(self, port_field: str, port_env: str):
        super().__init__(auto_describe=True)
        self.port_field = port_field
        self.port_env = port_env


class ServerMetrics:
    """The edge server's metrics in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or _ServiceRegistry("server.metrics_port", "RKDSC_SERVER_METRICS_PORT")
        r = self.registry
        self.frames = Counter("rkdsc_frames_total", "Frames handled by the edge server, by outcome",
                              ["transmitter", "task", "outcome"], registry=r)
        self.decode_seconds = Histogram("rkdsc_decode_seconds", "Decode compute time per batch (s)",
                                        ["task"], buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_seconds = Histogram("rkdsc_queue_seconds", "Time a frame waited in the batching queue (s)",
                                       ["task"], buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("rkdsc_batch_size", "Frames per decode batch", ["task"],
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.symbols = Counter("rkdsc_symbols_total", "Complex channel symbols received in decoded frames",
                               ["transmitter", "task"], registry=r)
        self.correct = Counter("rkdsc_correct_total", "Decoded labelled frames whose top-1 class is the label",
                               ["transmitter", "task"], registry=r)
        self.labelled = Counter("rkdsc_labelled_total", "Decoded frames that carried a label",
                                ["transmitter", "task"], registry=r)


class RelayMetrics:
    """The base-station relay's metrics in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or _ServiceRegistry("basestation.metrics_port", "RKDSC_RELAY_METRICS_PORT")
        r = self.registry
        self.frames = Counter("rkdsc_relay_frames_total", "Frames handled by the relay, by outcome",
                              ["transmitter", "outcome"], registry=r)
        self.link_snr_db = Gauge("rkdsc_link_snr_db", "Effective link SNR (snr_db + path_gain_db) in dB",
                                 ["transmitter"], registry=r)
        self.channel_seconds = Histogram("rkdsc_relay_channel_seconds", "Channel simulation time per frame (s)",
                                         buckets=_LATENCY_BUCKETS, registry=r)
        self.roundtrip_seconds = Histogram("rkdsc_relay_roundtrip_seconds",
                                           "Relay -> server -> relay time per frame (s)",
                                           buckets=_LATENCY_BUCKETS, registry=r)
        # [medium] only (docs/medium.md): the emulated system's latency, not the host's
        self.emulated_seconds = Histogram("rkdsc_relay_emulated_latency_seconds",
                                          "Emulated latency per frame by part (encode, uplink_queue, airtime, "
                                          "propagation, server, downlink, total; s)",
                                          ["transmitter", "part"], buckets=_EMULATED_BUCKETS, registry=r)
        self.airtime_seconds = Counter("rkdsc_relay_emulated_airtime_seconds",
                                       "Uplink airtime used (served symbols / capacity), emulated seconds",
                                       ["transmitter"], registry=r)


class MetricsEndpoint:
    """Serves one registry as Prometheus text at http://host:port/metrics (port 0 = free port).

    A small ThreadingHTTPServer (prometheus_client's ``start_http_server`` polls for shutdown
    every 0.5 s; this one stops in ~10 ms, which keeps service shutdown and tests quick).

    A port that cannot be bound raises ``MetricsPortError`` naming ``host:port`` and ``field``
    (default: the config field of the service registry, e.g. ``server.metrics_port``)."""

    def __init__(self, registry: CollectorRegistry, port: int, host: str = "127.0.0.1",
                 field: str | None = None, web_config: str | os.PathLike | None = None):
        self.registry = registry
        self.web = load_web_config(web_config) if web_config is not None else WebConfig()
        try:
            self._server, self._thread = _serve(registry, host, port, self.web)
        except OSError as exc:
            raise _port_error(exc, registry, host, port, field) from None
        self.host = host
        self.port = int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        scheme = "https" if self.web.ssl_context is not None else "http"
        return f"{scheme}://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _port_error(exc: OSError, registry: CollectorRegistry, host: str, port: int,
                field: str | None) -> MetricsPortError:
    field = field or getattr(registry, "port_field", None) or "metrics_port"
    env = getattr(registry, "port_env", None)
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        why = "address already in use (another process listens there)"
    elif exc.errno == errno.EACCES:
        why = "permission denied (ports below 1024 need privileges)"
    else:
        why = exc.strerror or str(exc)
    hint = f"choose another port in {field}" + (f" or {env}" if env else "") + " (0 = a free port, -1 = no /metrics)"
    error = MetricsPortError(f"{field}: cannot serve /metrics on {where}: {why}; {hint}")
    error.errno = exc.errno  # str(error) stays the message alone (no "[Errno N]" prefix)
    return error


def _serve(registry: CollectorRegistry, host: str, port: int, web: WebConfig | None = None):
    from http.server import BaseHTTPRequestHandler

    web = web or WebConfig()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server API)
            if not web.authorized(self.headers.get("Authorization")):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="rkdsc metrics"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self.send_error(404, "only /metrics is served here")
                return
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # no access log on stderr
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True

        def finish_request(self, request, client_address):
            if web.ssl_context is None:
                super().finish_request(request, client_address)
                return
            request.settimeout(10.0)  # the handshake runs on the request's own thread
            tls = web.ssl_context.wrap_socket(request, server_side=True)
            try:
                super().finish_request(tls, client_address)
            finally:
                tls.close()

        def handle_error(self, request, client_address):  # a failed handshake or a closed peer: no traceback
            pass

    server = Server((host, port), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                              name=f"metrics-{server.server_address[1]}", daemon=True)
    thread.start()
    return server, thread


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text -> {(sample name, sorted label pairs): value} (for tests and the demo)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def totals_by_name(text: str, keep: Callable[[str], bool] | None = None) -> dict[str, float]:
    """Prometheus text -> {sample name: value summed over its labels} for the names ``keep``
    accepts (all by default), plus ``name{outcome=X}`` sums per outcome label."""
    out: dict[str, float] = {}
    for (name, labels), value in parse_metrics(text).items():
        if keep is not None and not keep(name):
            continue
        out[name] = out.get(name, 0.0) + value
        outcome = dict(labels).get("outcome")
        if outcome is not None:
            key = f"{name}{{outcome={outcome}}}"
            out[key] = out.get(key, 0.0) + value
    return out
