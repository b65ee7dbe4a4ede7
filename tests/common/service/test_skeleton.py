"""The service skeleton over real localhost gRPC: binding (and the error naming the address),
health + reflection through a ServiceHandle's life, signal-driven serve() logging through the
service's logger, the shared cli() shape, handler pool sizing, status-code lookup."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rkdsc.common.service import (ServiceHandle, build_grpc_server, handler_threads, run_cli, set_health,
                                  status_code_from_value)
from rkdsc.common.service.skeleton import SWITCH_INTERVAL_S
from rkdsc.v1 import emulator_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[3]
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def build(bind: str = "127.0.0.1:0", **kw):
    return build_grpc_server(pb_grpc.add_RelayServicer_to_server, pb_grpc.RelayServicer(), bind=bind,
                             service_name="rkdsc.v1.Relay", max_workers=4, max_message_bytes=1 << 20,
                             thread_prefix=kw.pop("thread_prefix", "relay"), **kw)


def statuses(port: int) -> list[int]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
        stub = health_pb2_grpc.HealthStub(chan)
        return [stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
                for name in ("", "rkdsc.v1.Relay")]


def test_build_grpc_server_on_a_taken_port_names_the_address():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"skeleton-test: cannot bind 127.0.0.1:{port}"):
            build(f"127.0.0.1:{port}", thread_prefix="skeleton-test")


def test_health_follows_the_handle_and_reflection_lists_the_service():
    server, health, port = build()
    drained = []
    handle = ServiceHandle(server, port, "rkdsc.v1.Relay", health, None, servicer=None,
                           drain=drained.append, drain_timeout_s=3.0)
    assert port > 0 and handle.metrics_port is None
    handle.start()
    try:
        assert statuses(port) == [SERVING, SERVING]
        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

        with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
            assert {"rkdsc.v1.Relay", "grpc.health.v1.Health"} <= set(
                ProtoReflectionDescriptorDatabase(chan).get_services())
    finally:
        handle.stop()
    handle.stop()  # a second stop returns at once
    assert drained == [3.0] and handle.wait_for_termination(0)


def test_with_on_start_health_stays_not_serving_until_the_service_says_so():
    server, health, port = build()
    started = []
    handle = ServiceHandle(server, port, "rkdsc.v1.Relay", health, None, servicer=None,
                           on_start=lambda: started.append(True))
    handle.start()
    try:
        assert started == [True] and statuses(port) == [NOT_SERVING, NOT_SERVING]
        set_health(health, "rkdsc.v1.Relay", True)
        assert statuses(port) == [SERVING, SERVING]
    finally:
        handle.stop(1.0)


SERVE_SCRIPT = textwrap.dedent("""
    import logging, sys
    from rkdsc.common.service import ServiceHandle, build_grpc_server, serve, setup_logging
    setup_logging("INFO")
    server, health, port = build_grpc_server(lambda servicer, server: None, None, bind="127.0.0.1:0",
                                             service_name="rkdsc.v1.Relay", max_workers=2,
                                             max_message_bytes=1 << 20, thread_prefix="relay")
    handle = ServiceHandle(server, port, "rkdsc.v1.Relay", health, None, None)
    logger = logging.getLogger(sys.argv[2]) if len(sys.argv) > 2 else None
    sys.exit(serve(handle, sys.argv[1], name="relay", logger=logger))
""")


@pytest.mark.parametrize("logger", [None, "rkdsc.custom"])
def test_serve_writes_the_ready_file_stops_on_sigterm_and_logs_through_the_services_logger(tmp_path, logger):
    ready = tmp_path / "ready.json"
    args = [sys.executable, "-c", SERVE_SCRIPT, str(ready)] + ([logger] if logger else [])
    proc = subprocess.Popen(args, cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no ready file"
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        assert info["pid"] == proc.pid and info["port"] > 0 and info["metrics_port"] is None
        assert statuses(info["port"]) == [SERVING, SERVING]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    name = logger or "rkdsc.relay"  # default: rkdsc.<name>
    assert f"{name}: relay: serving on port {info['port']}" in err
    assert f"{name}: relay: received SIGTERM, shutting down" in err and f"{name}: relay: stopped" in err
    assert "rkdsc.server" not in err


def test_run_cli_loads_the_config_and_turns_errors_into_exit_status_2(make_config, tmp_path, capsys):
    import argparse

    _, path = make_config()

    def parser():
        p = argparse.ArgumentParser(prog="rkdsc thing")
        p.add_argument("--config", required=True)
        return p

    seen = {}

    def build(args, cfg):
        seen.update(level=args.log_level, transmitters=[t.id for t in cfg.transmitters])
        return "built"

    before = sys.getswitchinterval()
    sys.setswitchinterval(0.001)  # whatever the process had, run_cli sets the services' interval
    try:
        assert run_cli(parser(), ["--config", str(path)], build, lambda args, built: 7 if built == "built" else 0,
                       log_level="WARNING") == 7
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)  # the services' GIL hand-over
    finally:
        sys.setswitchinterval(before)
    assert SWITCH_INTERVAL_S == 0.005  # Python's default, chosen by measurement (decisions.md)
    assert seen == {"level": "WARNING", "transmitters": ["edge-near", "edge-mid", "edge-far"]}
    # a config that cannot be loaded, or an error of `errors` from build -> 2 with the message
    assert run_cli(parser(), ["--config", str(tmp_path / "missing.toml")], build, lambda a, b: 0) == 2
    assert capsys.readouterr().err.startswith("rkdsc thing: error: ")

    def failing(args, cfg):
        raise OSError("cannot bind 127.0.0.1:1")

    assert run_cli(parser(), ["--config", str(path)], failing, lambda a, b: 0, errors=(OSError,)) == 2
    assert capsys.readouterr().err == "rkdsc thing: error: cannot bind 127.0.0.1:1\n"
    with pytest.raises(OSError):  # not one of `errors`: not swallowed
        run_cli(parser(), ["--config", str(path)], failing, lambda a, b: 0)


def test_handler_pools_grow_with_the_topology(make_config):
    cfg, _ = make_config(transmitters=[{"id": f"tx-{i}"} for i in range(40)])
    assert handler_threads(cfg, 32) >= 32 + 40 and handler_threads(cfg, 64) >= 64 + 40


def test_status_code_from_value():
    assert status_code_from_value(3) is grpc.StatusCode.INVALID_ARGUMENT
    assert status_code_from_value(0) is grpc.StatusCode.OK
    assert status_code_from_value(12345) is grpc.StatusCode.UNKNOWN
    assert status_code_from_value(12345, None) is None


def test_client_channels_spread_calls_over_every_resolved_server_round_robin():
    """channel_options' service config balances round_robin: with two servers behind one target
    (an address list here, a headless Service's DNS name in a cluster) calls alternate."""
    from rkdsc.common.service.skeleton import channel_options

    handles = []
    for name in ("only-on-a", "only-on-b"):
        server, health, port = build()
        server.start()
        health.set(name, SERVING)
        handles.append((server, port))
    try:
        target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for _, port in handles)
        with grpc.insecure_channel(target, options=channel_options(1 << 20)) as chan:
            grpc.channel_ready_future(chan).result(timeout=10)
            stub = health_pb2_grpc.HealthStub(chan)
            seen = set()
            for _ in range(20):
                try:
                    seen.add(stub.Check(health_pb2.HealthCheckRequest(service="only-on-a"), timeout=5).status)
                except grpc.RpcError as exc:
                    seen.add(exc.code())
        assert seen == {SERVING, grpc.StatusCode.NOT_FOUND}
    finally:
        for server, _ in handles:
            server.stop(None)
