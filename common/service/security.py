"""Trust on the gRPC hops: TLS credentials from the topology's ``[tls]``, the caller's identity,
and who may call what.

    creds = server_credentials(cfg.tls, Identity.of("relay"))        # None when tls.mode = "off"
    guard = Guard(cfg.tls, RELAY_POLICY, "relay")                     # guard.interceptors -> build_grpc_server
    authorize_frame(context, frame.transmitter_id)                    # per frame (FrameRejected)
    chan = open_channel(addr, cfg.tls, Identity.transmitter("edge-near"), options=channel_options(n))

Contract:

* ``tls.mode``: ``off`` plaintext; ``tls`` encrypted, clients check the server's certificate
  against the CA; ``mtls`` the servers also require a client certificate from the CA (a
  plaintext client, one without a certificate or with one from another CA, or an expired one,
  fails the handshake: UNAVAILABLE on the client, the reason in the server's gRPC log). Files
  come from ``tls.ca`` / ``tls.cert`` / ``tls.key`` or the ``tls.dir`` layout of ``rkdsc certs``
  (``rkdsc.common.certs.cert_paths``). A missing file or an expired / not yet valid own
  certificate is a ``TLSError`` (a ConfigError) naming the field and the file, raised when the
  credentials are built, before anything listens or dials.
* Identity of a caller: under ``mtls`` the ``spiffe://rkdsc/...`` URI in the client certificate's
  subject alternative name; otherwise the bearer token in the ``authorization`` metadata
  (``Bearer <token>``), looked up in ``tls.tokens_file`` (default ``<dir>/tokens.toml``). A client
  sends its token from ``RKDSC_TOKEN``, ``RKDSC_TOKEN_FILE`` or its own entry of the tokens file.
  Tokens are compared by SHA-256 digest and never logged. Without mtls and without a tokens file
  nobody is identified and every call is allowed (the plaintext development default, bound to
  localhost).
* Authorization (``Guard``, a server interceptor; checked once per call, health and reflection
  always open): a rule per method lists the roles allowed (``RELAY_POLICY``, ``SERVER_POLICY``);
  a method without a rule is admin-only (any new state-changing call is closed by default).
  A caller with no identity gets UNAUTHENTICATED, one with the wrong role PERMISSION_DENIED
  naming the method, the roles allowed and who the caller is. Unary requests with a
  ``transmitter_id`` from a transmitter must name itself; ``ListLinks`` answers a transmitter
  with its own link only. ``authorize_frame(context, transmitter_id)`` is the per-frame check
  of a stream (a dictionary look-up of the identity recorded for the call, no TLS work):
  a transmitter may send only its own frames (FrameRejected PERMISSION_DENIED naming both ids);
  the admin may send any.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import grpc

from rkdsc.common.certs import CertificateError, Identity, ca_paths, cert_paths, check_valid, token_key, tokens_path
from rkdsc.common.config import ConfigError, TLSConfig
from rkdsc.common.service.frames import FrameRejected, shown

__all__ = ["TLSError", "Rule", "Guard", "RELAY_POLICY", "SERVER_POLICY", "OPEN_SERVICES", "server_credentials",
           "channel_credentials", "open_channel", "open_aio_channel", "call_metadata", "authorize_frame", "peer_of",
           "client_token", "load_tokens", "identity_from_context", "check_client_credentials", "describe",
           "wait_connected", "Identity", "ADMIN", "RELAY", "SERVER", "TOKEN_ENV", "TOKEN_FILE_ENV"]

log = logging.getLogger("rkdsc.security")

ADMIN, RELAY, SERVER = Identity.of("admin"), Identity.of("relay"), Identity.of("server")
TOKEN_ENV, TOKEN_FILE_ENV = "RKDSC_TOKEN", "RKDSC_TOKEN_FILE"
AUTH_HEADER = "authorization"
OPEN_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                 "grpc.reflection.v1.ServerReflection")


class TLSError(ConfigError):
    """TLS settings that cannot be used: the message names the [tls] field and the file."""


# ----------------------------------------------------------------------------- files

def _enabled(tls: TLSConfig | None) -> bool:
    return tls is not None and tls.mode != "off"


def _read(path: Path | None, field: str) -> bytes:
    if path is None:
        raise TLSError(f"tls.{field}: not set (set tls.dir to a folder written by `rkdsc certs`, or tls.{field})")
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise TLSError(f"tls.{field}: file not found: {path} (make the certificates with `rkdsc certs --out DIR`)") from None
    except OSError as exc:
        raise TLSError(f"tls.{field}: cannot read {path}: {exc.strerror or exc}") from None


def _ca_file(tls: TLSConfig) -> Path | None:
    return tls.ca or (ca_paths(tls.dir)[0] if tls.dir else None)


def _own_files(tls: TLSConfig, who: Identity) -> tuple[Path | None, Path | None]:
    default_cert, default_key = cert_paths(tls.dir, who) if tls.dir else (None, None)
    cert = tls.cert or default_cert
    key = tls.key or (cert.with_suffix(".key") if tls.cert else default_key)
    return cert, key


def _own_pair(tls: TLSConfig, who: Identity) -> tuple[bytes, bytes]:
    cert, key = _own_files(tls, who)
    data = _read(cert, "cert"), _read(key, "key")
    try:
        check_valid(cert, f"tls.cert ({who})")
    except CertificateError as exc:
        raise TLSError(str(exc)) from None
    return data


def server_credentials(tls: TLSConfig | None, who: Identity) -> grpc.ServerCredentials | None:
    """The credentials of a service's port (None: plaintext). Under mtls clients must present a
    certificate signed by the CA."""
    if not _enabled(tls):
        return None
    key_cert = _own_pair(tls, who)
    mtls = tls.mode == "mtls"
    ca = _read(_ca_file(tls), "ca") if mtls else None
    return grpc.ssl_server_credentials([(key_cert[1], key_cert[0])], root_certificates=ca, require_client_auth=mtls)


def channel_credentials(tls: TLSConfig, who: Identity) -> grpc.ChannelCredentials:
    """Client credentials: the CA (checks the server), and under mtls this process's certificate."""
    ca = _read(_ca_file(tls), "ca")
    if tls.mode == "mtls":
        cert, key = _own_pair(tls, who)
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    return grpc.ssl_channel_credentials(root_certificates=ca)


# ----------------------------------------------------------------------------- tokens

def _tokens_file(tls: TLSConfig) -> Path | None:
    if tls.tokens_file is not None:
        return tls.tokens_file
    if tls.dir is not None and tokens_path(tls.dir).is_file():
        return tokens_path(tls.dir)
    return None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def load_tokens(path: Path) -> dict[str, str]:
    """identity key (``admin``, ``relay``, ``transmitter/<id>``) -> token, from a tokens TOML file."""
    try:
        doc = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TLSError(f"tls.tokens_file: file not found: {path}") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TLSError(f"tls.tokens_file: cannot read {path}: {exc}") from None
    table = doc.get("tokens", doc)
    out = {}
    for k, v in table.items():
        if not isinstance(v, str) or len(v) < 16:
            raise TLSError(f"tls.tokens_file: {path}: token of {k!r} must be a string of at least 16 characters")
        out[str(k)] = v
    return out


def _identity_of_key(key: str) -> Identity | None:
    if key.startswith("transmitter/") and len(key) > len("transmitter/"):
        return Identity.transmitter(key[len("transmitter/"):])
    try:
        return Identity.of(key) if key != "transmitter" else None
    except ValueError:
        return None


def client_token(tls: TLSConfig | None, who: Identity, env: Mapping[str, str] | None = None) -> str | None:
    """This process's bearer token (not under mtls): RKDSC_TOKEN, else the file RKDSC_TOKEN_FILE,
    else its own entry of the tokens file; None when there is none."""
    if tls is None or tls.mode == "mtls":
        return None
    env = os.environ if env is None else env
    if env.get(TOKEN_ENV):
        return env[TOKEN_ENV].strip()
    if env.get(TOKEN_FILE_ENV):
        try:
            return Path(env[TOKEN_FILE_ENV]).read_text().strip() or None
        except OSError as exc:
            raise TLSError(f"{TOKEN_FILE_ENV}: cannot read {env[TOKEN_FILE_ENV]}: {exc.strerror or exc}") from None
    path = _tokens_file(tls)
    if path is None:
        return None
    return load_tokens(path).get(token_key(who))


class _TokenInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                        grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call (once per call, not per message)."""

    def __init__(self, token: str):
        self._header = (AUTH_HEADER, f"Bearer {token}")

    def _details(self, details):
        metadata = list(details.metadata or ()) + [self._header]
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            getattr(details, "wait_for_ready", None), getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


@dataclass
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


def check_client_credentials(tls: TLSConfig | None, who: Identity) -> None:
    """TLSError now (naming the field, the file, the dates) for what ``open_channel`` would need."""
    if _enabled(tls):
        channel_credentials(tls, who)
    client_token(tls, who)


def open_channel(addr: str, tls: TLSConfig | None, who: Identity, options: Sequence[tuple[str, Any]] = (),
                 token: str | None = None) -> grpc.Channel:
    """A client channel to ``addr`` as ``who``: plaintext when TLS is off, else TLS (and the
    client certificate under mtls); a bearer token, when there is one and mode is not mtls, goes
    with every call. ``tls.server_name`` replaces the dialled host in the certificate check."""
    options, creds, token = _client_setup(tls, who, options, token)
    channel = grpc.insecure_channel(addr, options=options) if creds is None else \
        grpc.secure_channel(addr, creds, options=options)
    return grpc.intercept_channel(channel, _TokenInterceptor(token)) if token else channel


def _client_setup(tls: TLSConfig | None, who: Identity, options: Sequence[tuple[str, Any]],
                  token: str | None) -> tuple[list[tuple[str, Any]], grpc.ChannelCredentials | None, str | None]:
    """What a client channel to a service needs, sync or aio: its options (the certificate's name
    override with ``tls.server_name``), its credentials (None: plaintext) and the bearer token to
    send with every call (None: none, or mtls, where the certificate is the identity)."""
    options = list(options)
    creds = None
    if _enabled(tls):
        if tls.server_name:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        creds = channel_credentials(tls, who)
    return options, creds, _call_token(tls, who, token)


def _call_token(tls: TLSConfig | None, who: Identity, token: str | None) -> str | None:
    """The bearer token a client sends with each call: the given one or its own, none under mtls."""
    token = token or client_token(tls, who)
    return token if token and (tls is None or tls.mode != "mtls") else None


def open_aio_channel(addr: str, tls: TLSConfig | None, who: Identity, options: Sequence[tuple[str, Any]] = (),
                     token: str | None = None) -> tuple[grpc.aio.Channel, tuple[tuple[str, str], ...]]:
    """``open_channel`` for ``grpc.aio`` (call it inside the event loop that will use the channel):
    the channel and the call metadata to send with each call, ``authorization: Bearer <token>``
    when there is a token and mode is not mtls, else ``()`` (per call, as the sync interceptor)."""
    options, creds, token = _client_setup(tls, who, options, token)
    channel = grpc.aio.insecure_channel(addr, options=options) if creds is None else \
        grpc.aio.secure_channel(addr, creds, options=options)
    return channel, _bearer(token)


def _bearer(token: str | None) -> tuple[tuple[str, str], ...]:
    return ((AUTH_HEADER, f"Bearer {token}"),) if token else ()


def call_metadata(tls: TLSConfig | None, who: Identity, token: str | None = None) -> tuple[tuple[str, str], ...]:
    """The call metadata that identifies ``who`` on a channel it shares with others (a fleet's):
    its bearer token when there is one and mode is not mtls (there, the channel's certificate is
    the identity: such a channel cannot be shared), else ``()``."""
    return _bearer(_call_token(tls, who, token))


def wait_connected(channel: grpc.Channel, timeout_s: float) -> None:
    """Block until the channel is READY (TCP and, with TLS, the handshake done); TimeoutError otherwise."""
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError:
        raise TimeoutError(f"channel not ready within {timeout_s:g} s") from None


# ----------------------------------------------------------------------------- identities

def identity_from_context(context: grpc.ServicerContext) -> Identity | None:
    """The rkdsc identity in the peer's certificate (URI SAN), None without one."""
    try:
        sans = context.auth_context().get("x509_subject_alternative_name", ())
    except Exception:  # noqa: BLE001 - a context without auth data (plaintext)
        return None
    for raw in sans:
        ident = Identity.from_uri(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw))
        if ident is not None:
            return ident
    return None


_PEERS: dict[Any, Identity] = {}      # ServicerContext of an open call -> its caller's identity
_PEERS_LOCK = threading.Lock()


def peer_of(context: Any) -> Identity | None:
    """The identity ``Guard`` recorded for this call (None when no guard identifies callers)."""
    return _PEERS.get(context)


def authorize_frame(context: Any, transmitter_id: str) -> None:
    """A frame of this call may carry ``transmitter_id``: a transmitter only its own id (the
    identity checked once when the call was admitted), the admin any; FrameRejected
    PERMISSION_DENIED naming both ids otherwise. A no-op when callers are not identified."""
    ident = _PEERS.get(context)
    if ident is None or ident.role != "transmitter" or ident.name == transmitter_id:
        return
    raise FrameRejected(grpc.StatusCode.PERMISSION_DENIED,
                        f"transmitter_id: this client is {shown(ident.name)} (its credentials), the frame claims "
                        f"{shown(transmitter_id)}; a device may send only its own frames")


# ----------------------------------------------------------------------------- policy

@dataclass(frozen=True)
class Rule:
    roles: frozenset[str]                       # roles allowed to call the method
    own: bool = False                           # a transmitter's request.transmitter_id must be its own
    own_links: bool = False                     # a transmitter sees only its own link in the response


def _rule(*roles: str, own: bool = False, own_links: bool = False) -> Rule:
    return Rule(frozenset(roles), own, own_links)


RELAY_POLICY: dict[str, Rule] = {
    "/rkdsc.v1.Relay/Transmit": _rule("transmitter", "admin"),            # + authorize_frame per frame
    "/rkdsc.v1.Relay/TransmitBatch": _rule("transmitter", "admin"),       # + authorize_frame per message
    "/rkdsc.v1.Relay/TransmitOne": _rule("transmitter", "admin", own=True),
    "/rkdsc.v1.Relay/GetLink": _rule("transmitter", "admin", own=True),
    "/rkdsc.v1.Relay/ListLinks": _rule("transmitter", "admin", own_links=True),
    "/rkdsc.v1.Relay/SetLink": _rule("admin"),
}
SERVER_POLICY: dict[str, Rule] = {"/rkdsc.v1.EdgeServer/*": _rule("relay")}  # every EdgeServer method
ADMIN_ONLY = _rule("admin")


class Guard(grpc.ServerInterceptor):
    """Identifies the caller of every call (mtls certificate or bearer token) and applies a
    policy (see the module doc). ``enabled`` is False when nobody can be identified (TLS off or
    ``tls`` without tokens): then every call passes untouched."""

    def __init__(self, tls: TLSConfig | None, policy: Mapping[str, Rule], service: str = "service"):
        self.policy = dict(policy)
        self.service = service
        self.mtls = tls is not None and tls.mode == "mtls"
        self._tokens: dict[bytes, Identity] = {}
        path = None if tls is None or self.mtls else _tokens_file(tls)
        if path is not None:
            for key, token in load_tokens(path).items():
                ident = _identity_of_key(key)
                if ident is not None:
                    self._tokens[_digest(token)] = ident
        self.enabled = self.mtls or bool(self._tokens)
        if tls is not None and tls.mode == "off" and self._tokens:
            log.warning("%s: bearer tokens over plaintext gRPC (tls.mode = off) can be read on the network", service)

    @property
    def interceptors(self) -> list[grpc.ServerInterceptor]:
        return [self] if self.enabled else []

    def rule_for(self, method: str) -> Rule | None:
        """None = open (health, reflection)."""
        service = method.lstrip("/").split("/", 1)[0]
        if service in OPEN_SERVICES:
            return None
        rule = self.policy.get(method) or self.policy.get(f"/{service}/*")
        return rule or ADMIN_ONLY

    def _token_identity(self, metadata) -> tuple[Identity | None, str]:
        for key, value in metadata or ():
            if key == AUTH_HEADER:
                token = value[7:] if value.startswith("Bearer ") else value
                ident = self._tokens.get(_digest(token.strip()))
                return (ident, "token") if ident else (None, "an unknown bearer token")
        return None, "no bearer token"

    def _admit(self, method: str, rule: Rule, context, request, token_ident) -> Identity:
        if self.mtls:
            ident, why = identity_from_context(context), "a client certificate without an rkdsc identity (URI SAN)"
        else:
            ident, why = token_ident
        if ident is None:
            log.info("%s: %s refused: %s", self.service, method, why)
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          f"{method}: no client identity ({why}); present a certificate of the topology's CA "
                          f"(tls.mode = mtls) or your token (RKDSC_TOKEN)")
        if ident.role not in rule.roles:
            log.info("%s: %s refused for %s", self.service, method, ident)
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{method}: needs the {' or '.join(sorted(rule.roles))} identity; this client is {ident}")
        if rule.own and ident.role == "transmitter" and request is not None:
            claimed = getattr(request, "transmitter_id", None)
            if claimed is not None and claimed != ident.name:
                context.abort(grpc.StatusCode.PERMISSION_DENIED,
                              f"transmitter_id: this client is {shown(ident.name)} (its credentials), the request "
                              f"names {shown(claimed)}; a device may act only on its own link")
        return ident

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        rule = self.rule_for(method)
        if rule is None:
            return handler
        token_ident = (None, "") if self.mtls else self._token_identity(handler_call_details.invocation_metadata)
        return _wrap(handler, lambda context, request: self._admit(method, rule, context, request, token_ident),
                     _own_links if rule.own_links else None)


def _own_links(response, ident: Identity):
    if ident.role != "transmitter" or not hasattr(response, "links"):
        return response
    mine = [link for link in response.links if link.transmitter_id == ident.name]
    del response.links[:]
    response.links.extend(mine)
    return response


def _register(context, ident: Identity) -> None:
    with _PEERS_LOCK:
        _PEERS[context] = ident


def _unregister(context) -> None:
    with _PEERS_LOCK:
        _PEERS.pop(context, None)


def _wrap(handler: grpc.RpcMethodHandler, admit: Callable[[Any, Any], Identity],
          post: Callable[[Any, Identity], Any] | None) -> grpc.RpcMethodHandler:
    """The same handler, the caller admitted (and recorded for ``authorize_frame``) first."""
    kw = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    if handler.unary_unary:
        inner = handler.unary_unary

        def unary_unary(request, context):
            ident = admit(context, request)
            _register(context, ident)
            try:
                response = inner(request, context)
            finally:
                _unregister(context)
            return post(response, ident) if post is not None else response
        return grpc.unary_unary_rpc_method_handler(unary_unary, **kw)
    if handler.unary_stream:
        inner = handler.unary_stream

        def unary_stream(request, context):
            ident = admit(context, request)
            _register(context, ident)
            try:
                yield from inner(request, context)
            finally:
                _unregister(context)
        return grpc.unary_stream_rpc_method_handler(unary_stream, **kw)
    if handler.stream_unary:
        inner = handler.stream_unary

        def stream_unary(request_iterator, context):
            ident = admit(context, None)
            _register(context, ident)
            try:
                return inner(request_iterator, context)
            finally:
                _unregister(context)
        return grpc.stream_unary_rpc_method_handler(stream_unary, **kw)
    inner = handler.stream_stream

    def stream_stream(request_iterator, context):
        ident = admit(context, None)
        _register(context, ident)
        try:
            yield from inner(request_iterator, context)
        finally:
            _unregister(context)
    return grpc.stream_stream_rpc_method_handler(stream_stream, **kw)


def describe(tls: TLSConfig | None, guard: Guard | None = None) -> str:
    """One line for a service's start log: the mode and how callers are identified (no secrets)."""
    if not _enabled(tls):
        how = "bearer tokens" if guard is not None and guard.enabled else "nobody identified, every call allowed"
        return f"plaintext gRPC ({how})"
    if tls.mode == "mtls":
        return "mutual TLS (callers identified by their client certificates)"
    how = "bearer tokens" if guard is not None and guard.enabled else "no client identity, every call allowed"
    return f"TLS ({how})"
