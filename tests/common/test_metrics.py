"""rkdsc.common.metrics: a /metrics port that cannot be bound is named with its config field, the
services exit 2 on it, and nothing stays bound."""
from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from rkdsc.common.metrics import MetricsEndpoint, MetricsPortError, RelayMetrics, ServerMetrics
from tests.conftest import free_port, write_toml


@pytest.fixture
def taken_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _can_bind(port: int) -> bool:
    """True when nothing listens on the port (SO_REUSEADDR: closed connections in TIME_WAIT are fine)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.parametrize("metrics,field,env", [(ServerMetrics, "server.metrics_port", "RKDSC_SERVER_METRICS_PORT"),
                                               (RelayMetrics, "basestation.metrics_port", "RKDSC_RELAY_METRICS_PORT")])
def test_a_taken_metrics_port_names_the_address_and_the_config_field(taken_port, metrics, field, env):
    with pytest.raises(MetricsPortError) as err:
        MetricsEndpoint(metrics().registry, taken_port, "127.0.0.1")
    message = str(err.value)
    assert message.startswith(f"{field}: cannot serve /metrics on 127.0.0.1:{taken_port}: address already in use")
    assert env in message and "[Errno" not in message
    assert isinstance(err.value, OSError) and err.value.errno is not None


def test_an_endpoint_serves_and_closes():
    endpoint = MetricsEndpoint(ServerMetrics().registry, 0)
    with urllib.request.urlopen(endpoint.url, timeout=10) as resp:
        assert b"rkdsc_frames_total" in resp.read()
    endpoint.close()
    assert _can_bind(endpoint.port)


def test_create_server_on_a_taken_metrics_port_leaves_nothing_bound(make_config, bundle, taken_port):
    from rkdsc.server.service import create_server

    grpc_port = free_port()
    cfg, _ = make_config(server={"port": grpc_port, "metrics_port": taken_port})
    with pytest.raises(MetricsPortError, match=f"server.metrics_port: cannot serve /metrics on 127.0.0.1:{taken_port}"):
        create_server(cfg, bundle=bundle)
    assert _can_bind(grpc_port)  # the gRPC port was not left bound


def test_the_relay_on_a_taken_metrics_port_leaves_nothing_bound(make_config, taken_port):
    from rkdsc.basestation.relay import create_server

    grpc_port = free_port()
    cfg, _ = make_config(basestation={"port": grpc_port, "metrics_port": taken_port})
    with pytest.raises(MetricsPortError, match=f"basestation.metrics_port: cannot serve /metrics on 127.0.0.1:{taken_port}"):
        create_server(cfg)
    assert _can_bind(grpc_port)


@pytest.mark.parametrize("service,field", [("server", "server.metrics_port"),
                                           ("basestation", "basestation.metrics_port")])
def test_the_services_exit_2_naming_the_metrics_port_and_its_field(bundle_dir, tmp_path, taken_port, service, field):
    config = write_toml(tmp_path / "t.toml", {}, {
        "bundle": {"path": str(bundle_dir)},
        "server": {"port": 0, "metrics_port": taken_port},
        "basestation": {"port": 0, "metrics_port": taken_port}}, [{"id": "a"}])
    rkdsc = str(Path(sys.executable).with_name("rkdsc"))
    proc = subprocess.run([rkdsc, service, "--config", str(config)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"rkdsc {service}: error: {field}: cannot serve /metrics on 127.0.0.1:{taken_port}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_totals_by_name_folds_labels_and_keeps_per_outcome_sums():
    from rkdsc.common.metrics import totals_by_name

    m = ServerMetrics()
    m.frames.labels("a", "digits", "ok").inc(3)
    m.frames.labels("b", "digits", "ok").inc(2)
    m.frames.labels("b", "digits", "invalid").inc()
    m.decode_seconds.labels("digits").observe(0.01)
    from prometheus_client import generate_latest

    text = generate_latest(m.registry).decode()
    every = totals_by_name(text)
    assert every["rkdsc_frames_total"] == 6.0
    assert every["rkdsc_frames_total{outcome=ok}"] == 5.0 and every["rkdsc_frames_total{outcome=invalid}"] == 1.0
    assert every["rkdsc_decode_seconds_count"] == 1.0
    counters = totals_by_name(text, lambda name: name.endswith("_total"))
    assert "rkdsc_decode_seconds_count" not in counters and counters["rkdsc_frames_total"] == 6.0
