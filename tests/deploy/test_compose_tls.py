"""The compose stack runs mutual TLS by default: a one-shot `certs` service first, every gRPC
service and edge device on the certificate volume (read-only), the CA key in a volume of its own."""
from __future__ import annotations

from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_tls_is_on_by_default_with_a_one_shot_certs_service():
    c = _compose()
    services = c["services"]
    certs = services["certs"]
    assert certs["entrypoint"][:2] == ["python", "deploy/compose_certs.py"]
    assert certs["network_mode"] == "none" and certs["restart"] == "no" and certs["cap_drop"] == ["ALL"]
    assert "ca:/ca" in certs["volumes"] and "certs:/certs" in certs["volumes"]
    assert set(c["volumes"]) >= {"certs", "ca"}
    for name in ("server", "basestation", "edge-near", "edge-mid", "edge-far", "edge"):
        svc = services[name]
        env = svc["environment"]
        assert env["RKDSC_TLS"] == "${RKDSC_TLS:-mtls}", name       # plaintext only when asked
        assert env["RKDSC_TLS_DIR"] == "/certs", name
        assert "certs:/certs:ro" in svc["volumes"], name
        assert not any(str(v).startswith("ca:") for v in svc["volumes"]), f"{name} must not see the CA key"
        assert svc["depends_on"]["certs"]["condition"] == "service_completed_successfully", name
    for name, identity in (("server", "server"), ("basestation", "relay")):
        test = services[name]["healthcheck"]["test"]
        assert test[test.index("--identity") + 1] == identity


def test_the_dockerfile_ships_the_certs_script():
    text = (DEPLOY / "Dockerfile").read_text()
    assert "deploy/compose_certs.py" in text


def test_compose_certs_writes_keys_for_their_users(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    import pytest

    if os.geteuid() != 0:
        pytest.skip("hands keys to other users: needs root, as in the compose one-shot")
    env = {**os.environ, "RKDSC_UID": "12345", "RKDSC_GID": "12346"}
    cmd = [sys.executable, str(DEPLOY / "compose_certs.py"), "--out", str(tmp_path / "certs"), "--ca-dir",
           str(tmp_path / "ca"), "--config", str(DEPLOY / "topology.toml")]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "certs"
    assert not (out / "ca.key").exists() and (tmp_path / "ca" / "ca.key").is_file()
    for name in ("server.key", "relay.key"):
        st = (out / name).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (10001, 10001, 0o600), name
    for path in [out / "admin.key", *(out / "transmitters").glob("*.key")]:
        st = path.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (12345, 12346, 0o600), path
    assert {p.stem for p in (out / "transmitters").glob("*.pem")} == {"edge-near", "edge-mid", "edge-far"}
    before = (out / "transmitters" / "edge-near.pem").read_bytes()
    assert subprocess.run(cmd, env=env, capture_output=True, timeout=120).returncode == 0
    assert (out / "transmitters" / "edge-near.pem").read_bytes() == before  # idempotent
