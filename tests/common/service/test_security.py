"""rkdsc.common.certs and rkdsc.common.service.security: identities, the certificate folder,
the [tls] config, credentials, the policy, and real TLS handshakes on a small gRPC server."""
from __future__ import annotations

import datetime as dt
import stat
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rkdsc.common.certs import (CertificateError, Identity, _load_ca, ca_paths, cert_paths, check_valid, issue,
                                token_key, write_certs, write_pair)
from rkdsc.common.config import ConfigError, TLSConfig, apply_tls_env, parse_config
from rkdsc.common.service.security import (ADMIN, RELAY, RELAY_POLICY, SERVER_POLICY, Guard, TLSError,
                                           authorize_frame, client_token, open_channel, server_credentials)
from rkdsc.common.service.frames import FrameRejected

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    out = Path(tmp_path_factory.mktemp("certs"))
    write_certs(out, ["edge-near", "edge-far"], names=["relay.example.org"])
    return out


def _cert(path: Path):
    from cryptography import x509

    return x509.load_pem_x509_certificate(path.read_bytes())


# ----------------------------------------------------------------------------- identities and files

def test_identity_uri_round_trips_and_rejects_foreign_uris():
    for ident in (Identity.transmitter("edge-near"), Identity.transmitter("a:b%c"), ADMIN, RELAY):
        assert Identity.from_uri(ident.uri) == ident
    assert Identity.transmitter("edge-near").uri == "spiffe://rkdsc/transmitter/edge-near"
    assert ADMIN.uri == "spiffe://rkdsc/admin"
    for uri in ("spiffe://other/admin", "spiffe://rkdsc/root", "spiffe://rkdsc/transmitter/", "https://x/admin",
                "spiffe://rkdsc/transmitter"):
        assert Identity.from_uri(uri) is None
    with pytest.raises(ValueError, match="identity role"):
        Identity("root", "root")
    assert token_key(Identity.transmitter("x")) == "transmitter/x" and token_key(ADMIN) == "admin"


def test_write_certs_layout_sans_usage_and_modes(certs):
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    for ident in (Identity.of("server"), RELAY, ADMIN, Identity.transmitter("edge-near"), Identity.transmitter("edge-far")):
        cert_p, key_p = cert_paths(certs, ident)
        assert cert_p.is_file() and key_p.is_file()
        assert stat.S_IMODE(key_p.stat().st_mode) == 0o600
        cert = _cert(cert_p)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [ident.uri]
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        assert cert.issuer == _cert(ca_paths(certs)[0]).subject
    relay_san = _cert(cert_paths(certs, RELAY)[0]).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "basestation", "relay.example.org"} <= set(relay_san.get_values_for_type(x509.DNSName))
    device_san = _cert(cert_paths(certs, Identity.transmitter("edge-near"))[0]).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert device_san.get_values_for_type(x509.DNSName) == []  # a device is no server
    assert stat.S_IMODE((certs / "tokens.toml").stat().st_mode) == 0o600
    assert stat.S_IMODE(ca_paths(certs)[1].stat().st_mode) == 0o600


def test_renewal_reuses_the_ca_and_new_ca_replaces_it(tmp_path):
    write_certs(tmp_path, ["a"])
    ca1 = _cert(tmp_path / "ca.pem").serial_number
    leaf1 = _cert(tmp_path / "transmitters" / "a.pem").serial_number
    write_certs(tmp_path, ["a", "b"])
    assert _cert(tmp_path / "ca.pem").serial_number == ca1
    assert _cert(tmp_path / "transmitters" / "a.pem").serial_number != leaf1
    assert (tmp_path / "transmitters" / "b.pem").is_file()
    write_certs(tmp_path, ["a"], reuse_ca=False)
    assert _cert(tmp_path / "ca.pem").serial_number != ca1


def test_transmitter_ids_that_cannot_name_a_file_are_refused(tmp_path):
    for bad in ("../x", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="cannot name a certificate file"):
            write_certs(tmp_path, [bad])


def test_check_valid_names_the_file_and_the_dates(certs, tmp_path):
    ca_cert, ca_key = _load_ca(certs)
    now = dt.datetime.now(dt.timezone.utc)
    old = issue(ca_cert, ca_key, ADMIN, not_before=now - dt.timedelta(days=9), not_after=now - dt.timedelta(days=2))
    future = issue(ca_cert, ca_key, ADMIN, not_before=now + dt.timedelta(days=2), days=5)
    write_pair(*old, tmp_path / "old.pem", tmp_path / "old.key")
    write_pair(*future, tmp_path / "future.pem", tmp_path / "future.key")
    check_valid(cert_paths(certs, ADMIN)[0], "tls.cert")
    with pytest.raises(CertificateError, match=r"tls.cert: the certificate .*old.pem expired on \d{4}-\d\d-\d\d"):
        check_valid(tmp_path / "old.pem", "tls.cert")
    with pytest.raises(CertificateError, match="not valid before"):
        check_valid(tmp_path / "future.pem", "tls.cert")


def test_certs_cli_writes_every_transmitter_of_the_topology(tmp_path):
    out = tmp_path / "c"
    r = subprocess.run([sys.executable, "-m", "rkdsc.common.cli", "certs", "--out", str(out), "--config",
                        str(ROOT / "deploy" / "topology.toml"), "--id", "extra-1"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    for tid in ("edge-near", "edge-mid", "edge-far", "extra-1"):
        assert (out / "transmitters" / f"{tid}.pem").is_file()
    bad = subprocess.run([sys.executable, "-m", "rkdsc.common.cli", "certs", "--out", str(out), "--days", "0"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--days" in bad.stderr


# ----------------------------------------------------------------------------- config

def test_tls_section_validates_and_resolves_against_root(tmp_path):
    cfg = parse_config({"bundle": {"path": "b"}, "root": "r", "tls": {"mode": "mtls", "dir": "certs"}},
                       base_dir=tmp_path, env={})
    assert cfg.tls.mode == "mtls" and cfg.tls.dir == (tmp_path / "r" / "certs").resolve()
    with pytest.raises(ConfigError, match=r"tls.mode: expected one of off, tls, mtls, got 'on'"):
        parse_config({"bundle": {"path": "b"}, "tls": {"mode": "on"}}, base_dir=tmp_path, env={})
    with pytest.raises(ConfigError, match=r"unknown key 'certfile'"):
        parse_config({"bundle": {"path": "b"}, "tls": {"certfile": "x"}}, base_dir=tmp_path, env={})


def test_tls_settings_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = parse_config({"bundle": {"path": "b"}}, base_dir=tmp_path,
                       env={"RKDSC_TLS": "tls", "RKDSC_TLS_DIR": "certs", "RKDSC_TLS_CERT": "/x/me.pem",
                            "RKDSC_TLS_SERVER_NAME": "relay.example.org", "RKDSC_METRICS_HOST": "0.0.0.0"})
    assert (cfg.tls.mode, cfg.tls.dir, cfg.tls.cert) == ("tls", tmp_path / "certs", Path("/x/me.pem"))
    assert cfg.tls.server_name == "relay.example.org" and cfg.metrics.host == "0.0.0.0"
    with pytest.raises(ConfigError, match="RKDSC_TLS: expected one of off, tls, mtls, got 'yes'"):
        apply_tls_env(TLSConfig(), {"RKDSC_TLS": "yes"})


def test_missing_files_are_named_with_their_field(tmp_path, certs):
    with pytest.raises(TLSError, match=r"tls.cert: file not found: .*nowhere/relay.pem"):
        server_credentials(TLSConfig(mode="tls", dir=tmp_path / "nowhere"), RELAY)
    with pytest.raises(TLSError, match=r"tls.ca: not set"):
        open_channel("127.0.0.1:1", TLSConfig(mode="mtls", cert=cert_paths(certs, ADMIN)[0]), ADMIN)
    assert server_credentials(TLSConfig(mode="off"), RELAY) is None
    assert server_credentials(None, RELAY) is None


def test_client_token_sources(certs, tmp_path):
    import tomllib

    tokens = tomllib.loads((certs / "tokens.toml").read_text())["tokens"]
    tls = TLSConfig(mode="tls", dir=certs)
    assert client_token(tls, ADMIN, env={}) == tokens["admin"]
    assert client_token(tls, Identity.transmitter("edge-far"), env={}) == tokens["transmitter/edge-far"]
    assert client_token(tls, ADMIN, env={"RKDSC_TOKEN": " abc "}) == "abc"
    (tmp_path / "tok").write_text("from-file\n")
    assert client_token(tls, ADMIN, env={"RKDSC_TOKEN_FILE": str(tmp_path / "tok")}) == "from-file"
    assert client_token(TLSConfig(mode="mtls", dir=certs), ADMIN, env={"RKDSC_TOKEN": "x"}) is None
    assert client_token(TLSConfig(mode="tls"), ADMIN, env={}) is None


# ----------------------------------------------------------------------------- policy

def test_policy_rules():
    relay = Guard(None, RELAY_POLICY, "relay")
    assert not relay.enabled and relay.interceptors == []
    assert relay.rule_for("/grpc.health.v1.Health/Check") is None
    assert relay.rule_for("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") is None
    assert relay.rule_for("/rkdsc.v1.Relay/SetLink").roles == {"admin"}
    assert relay.rule_for("/rkdsc.v1.Relay/Transmit").roles == {"transmitter", "admin"}
    assert relay.rule_for("/rkdsc.v1.Relay/TransmitBatch").roles == {"transmitter", "admin"}
    assert relay.rule_for("/rkdsc.v1.Relay/SomeNewCall").roles == {"admin"}   # closed by default
    server = Guard(TLSConfig(mode="mtls"), SERVER_POLICY, "server")
    assert server.enabled
    assert server.rule_for("/rkdsc.v1.EdgeServer/Decode").roles == {"relay"}
    assert server.rule_for("/rkdsc.v1.EdgeServer/DecodeBatch").roles == {"relay"}


def test_authorize_frame_uses_the_identity_recorded_for_the_call():
    from rkdsc.common.service import security

    ctx = object()
    authorize_frame(ctx, "anyone")  # nobody identified: no-op
    security._register(ctx, Identity.transmitter("edge-near"))
    try:
        authorize_frame(ctx, "edge-near")
        with pytest.raises(FrameRejected) as info:
            authorize_frame(ctx, "edge-far")
        assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert "'edge-near'" in info.value.message and "'edge-far'" in info.value.message
        security._register(ctx, ADMIN)
        authorize_frame(ctx, "edge-far")  # the admin may send any
    finally:
        security._unregister(ctx)
    assert security.peer_of(ctx) is None


# ----------------------------------------------------------------------------- handshakes

@pytest.fixture
def health_server(certs):
    """A health-only gRPC server from build_grpc_server with mTLS and the relay's Guard."""
    from rkdsc.common.service import build_grpc_server, set_health

    tls = TLSConfig(mode="mtls", dir=certs)
    guard = Guard(tls, RELAY_POLICY, "relay")
    server, health, port = build_grpc_server(lambda s, srv: None, None, bind="127.0.0.1:0", service_name="x.Y",
                                             max_workers=4, max_message_bytes=1 << 20, thread_prefix="t",
                                             credentials=server_credentials(tls, RELAY),
                                             interceptors=guard.interceptors)
    server.start()
    set_health(health, "x.Y", True)
    yield tls, f"127.0.0.1:{port}"
    server.stop(None)


def _check(channel) -> str:
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    except grpc.RpcError as exc:
        return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def test_mtls_handshakes(health_server, certs, tmp_path):
    tls, addr = health_server
    for who in (ADMIN, Identity.transmitter("edge-far"), Identity.of("server")):
        with open_channel(addr, tls, who) as ch:
            assert _check(ch) == "SERVING"
    with open_channel(f"localhost:{addr.rsplit(':', 1)[1]}", tls, ADMIN) as ch:  # the DNS name checks too
        assert _check(ch) == "SERVING"
    with grpc.insecure_channel(addr) as ch:
        assert _check(ch) == "UNAVAILABLE"
    # a name the server certificate does not carry fails the client's check
    odd = TLSConfig(mode="mtls", dir=certs, server_name="elsewhere.example")
    with open_channel(addr, odd, ADMIN) as ch:
        assert _check(ch) == "UNAVAILABLE"
    write_certs(tmp_path / "other", ["edge-near"])
    foreign = TLSConfig(mode="mtls", dir=tmp_path / "other", ca=certs / "ca.pem")
    with open_channel(addr, foreign, Identity.transmitter("edge-near")) as ch:
        assert _check(ch) == "UNAVAILABLE"


def test_container_healthcheck_probes_over_mtls(health_server, certs):
    import os

    tls, addr = health_server
    script = str(ROOT / "deploy" / "healthcheck.py")
    env = {**os.environ, "RKDSC_TLS": "mtls", "RKDSC_TLS_DIR": str(certs)}
    ok = subprocess.run([sys.executable, script, addr, "--identity", "server"], env=env, capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    plain = subprocess.run([sys.executable, script, addr], env={**env, "RKDSC_TLS": "off"}, capture_output=True,
                           text=True, timeout=60)
    assert plain.returncode == 1 and "UNAVAILABLE" in plain.stderr
    missing = subprocess.run([sys.executable, script, addr, "--identity", "nobody"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 1 and "cannot read the TLS files" in missing.stderr


def test_write_certs_keep_leaves_valid_certificates_and_tokens(tmp_path):
    import tomllib

    write_certs(tmp_path / "c", ["a"], ca_dir=tmp_path / "ca")
    assert not (tmp_path / "c" / "ca.key").exists() and (tmp_path / "ca" / "ca.key").is_file()
    assert (tmp_path / "c" / "ca.pem").read_bytes() == (tmp_path / "ca" / "ca.pem").read_bytes()
    serial = _cert(tmp_path / "c" / "transmitters" / "a.pem").serial_number
    tokens = tomllib.loads((tmp_path / "c" / "tokens.toml").read_text())["tokens"]
    write_certs(tmp_path / "c", ["a", "b"], ca_dir=tmp_path / "ca", keep_valid_days=7)
    assert _cert(tmp_path / "c" / "transmitters" / "a.pem").serial_number == serial
    assert (tmp_path / "c" / "transmitters" / "b.pem").is_file()
    again = tomllib.loads((tmp_path / "c" / "tokens.toml").read_text())["tokens"]
    assert again["transmitter/a"] == tokens["transmitter/a"] and "transmitter/b" in again
    write_certs(tmp_path / "c", ["a"], ca_dir=tmp_path / "ca", keep_valid_days=400)  # expires sooner: renewed
    assert _cert(tmp_path / "c" / "transmitters" / "a.pem").serial_number != serial
