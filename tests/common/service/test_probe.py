"""rkdsc.common.service.probe: the health client the demo waits with, against a real server."""
from __future__ import annotations

from rkdsc.common.service import HealthProbe, ServiceHandle, health_status, set_health
from tests.common.service.test_skeleton import build
from tests.conftest import free_port


def test_the_probe_reads_serving_status_and_names_a_failed_call():
    server, health, port = build()
    handle = ServiceHandle(server, port, "rkdsc.v1.Relay", health, None, servicer=None)
    server.start()  # started, health still NOT_SERVING
    try:
        addr = f"127.0.0.1:{port}"
        with HealthProbe(addr) as probe:
            assert probe.status() == "NOT_SERVING"
            set_health(health, "rkdsc.v1.Relay", True)
            assert probe.status() == "SERVING" and probe.status("rkdsc.v1.Relay") == "SERVING"
            assert probe.status("rkdsc.v1.NoSuchService") == "NOT_FOUND"
    finally:
        handle.stop()
    closed = free_port()  # a port nobody listens on, outside the ephemeral range
    assert health_status(f"127.0.0.1:{closed}", timeout_s=1.0) == "UNAVAILABLE"
