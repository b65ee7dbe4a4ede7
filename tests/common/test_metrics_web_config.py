"""/metrics behind an exporter-toolkit web config: HTTPS with the topology's certificates,
basic auth against bcrypt hashes, and web configs that cannot be used named by key."""
from __future__ import annotations

import base64
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest

from rkdsc.common.certs import Identity, cert_paths, write_certs
from rkdsc.common.metrics import MetricsConfigError, MetricsEndpoint, ServerMetrics, load_web_config


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    out = Path(tmp_path_factory.mktemp("certs"))
    write_certs(out, [])
    return out


def _web_config(tmp_path: Path, certs: Path, users: dict[str, str] | None = None, client_ca: bool = False) -> Path:
    cert, key = cert_paths(certs, Identity.of("server"))
    lines = ["tls_server_config:", f"  cert_file: {cert}", f"  key_file: {key}"]
    if client_ca:
        lines += [f"  client_ca_file: {certs / 'ca.pem'}", "  client_auth_type: RequireAndVerifyClientCert"]
    if users:
        lines.append("basic_auth_users:")
        lines += [f"  {u}: '{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=4)).decode()}'" for u, p in users.items()]
    path = tmp_path / "web.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _get(url: str, ctx: ssl.SSLContext | None, user: str | None = None, password: str | None = None):
    req = urllib.request.Request(url)
    if user is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def _client_ctx(certs: Path, identity: Identity | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if identity is not None:
        cert, key = cert_paths(certs, identity)
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def test_https_and_basic_auth(tmp_path, certs):
    metrics = ServerMetrics()
    metrics.frames.labels("t", "digits", "ok").inc()
    endpoint = MetricsEndpoint(metrics.registry, 0, "127.0.0.1",
                               web_config=_web_config(tmp_path, certs, {"prometheus": "s3cret"}))
    try:
        assert endpoint.url.startswith("https://127.0.0.1:")
        url = f"https://localhost:{endpoint.port}/metrics"
        ctx = _client_ctx(certs)
        status, body = _get(url, ctx, "prometheus", "s3cret")
        assert status == 200 and "rkdsc_frames_total" in body
        assert _get(url, ctx, "prometheus", "s3cret")[0] == 200  # the cached check
        assert _get(url, ctx)[0] == 401
        assert _get(url, ctx, "prometheus", "wrong")[0] == 401
        assert _get(url, ctx, "someone", "s3cret")[0] == 401
        with pytest.raises(OSError):  # plain HTTP to the HTTPS port gets no answer (reset or URLError)
            urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=5).read()
    finally:
        endpoint.close()


def test_client_certificates_can_be_required(tmp_path, certs):
    endpoint = MetricsEndpoint(ServerMetrics().registry, 0, "127.0.0.1",
                               web_config=_web_config(tmp_path, certs, client_ca=True))
    try:
        url = f"https://localhost:{endpoint.port}/metrics"
        assert _get(url, _client_ctx(certs, Identity.of("admin")))[0] == 200
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            _get(url, _client_ctx(certs))
    finally:
        endpoint.close()


@pytest.mark.parametrize("text, match", [
    ("tls_server_config:\n  cert_file: nothere.pem\n  key_file: nothere.key\n", "cannot load the certificate"),
    ("basic_auth_users:\n  alice: plain\n", r"basic_auth_users.alice: expected a bcrypt hash"),
    ("tls_config: {}\n", r"unknown key\(s\) tls_config"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Always\n",
     r"client_auth_type: expected one of"),
])
def test_bad_web_configs_are_named(tmp_path, text, match):
    path = tmp_path / "web.yml"
    path.write_text(text)
    with pytest.raises(MetricsConfigError, match=match):
        load_web_config(path)
    with pytest.raises(MetricsConfigError, match=r"metrics.web_config .*file not found"):
        load_web_config(tmp_path / "missing.yml")
