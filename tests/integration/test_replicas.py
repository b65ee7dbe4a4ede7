"""Several edge-server replicas behind a relay, and several relays in front of them, over real
localhost gRPC: edge streams spread over the replicas (round_robin per upstream stream), the
relay's health and its per-replica gauge follow the replicas, and a replica killed with SIGKILL
in the middle of an edge run loses no image: its frames in flight are resent to the other
replica, and the run goes on there (rkdsc.basestation.upstream)."""
from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import pytest

from rkdsc.common.metrics import parse_metrics
from rkdsc.common.service import HealthProbe
from rkdsc.v1 import emulator_pb2_grpc as pb_grpc
from tests.conftest import make_frame

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def _wait(cond, timeout_s: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(step)


def _decoded(registry) -> float:
    """Frames a server answered OK (its rkdsc_frames_total{outcome="ok"}), from its registry."""
    return sum(s.value for m in registry.collect() if m.name == "rkdsc_frames"
               for s in m.samples if s.name == "rkdsc_frames_total" and s.labels.get("outcome") == "ok")


def _decoded_http(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
        values = parse_metrics(resp.read().decode())
    return sum(v for (name, labels), v in values.items()
               if name == "rkdsc_frames_total" and dict(labels).get("outcome") == "ok")


def _replica_up(relay_handle, replica: str) -> float | None:
    return relay_handle.metrics.registry.get_sample_value("rkdsc_relay_upstream_replica_up", {"replica": replica})


def _relay(cfg, server_addr: str):
    from rkdsc.basestation import relay

    cfg.basestation.server_addr = server_addr
    handle, port = relay.create_server(cfg)
    handle.start()
    return handle, f"127.0.0.1:{port}"


def _stop_relay(handle) -> None:
    handle.stop(2.0)
    handle.upstream.close()


def _edge_run(cfg, tid: str, relay_addr: str, bundle, out, box: dict) -> threading.Thread:
    from rkdsc.edge.client import EdgeClient

    def run():
        try:
            box[tid] = EdgeClient(cfg, cfg.transmitter(tid), bundle=bundle, relay_addr=relay_addr).run(out_dir=out)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            box[tid] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_streams_spread_over_two_replicas_and_health_follows_them(make_config, bundle):
    from rkdsc.server.service import create_server

    cfg, _ = make_config(transmitters=[{"id": f"tx-{i}", "seed": i} for i in range(4)])
    servers = [create_server(cfg, bundle=bundle) for _ in range(2)]
    for handle, _ in servers:
        handle.start()
    ports = [p for _, p in servers]
    replicas = [f"127.0.0.1:{p}" for p in ports]
    handle, addr = _relay(cfg, ",".join(replicas))
    probe, chan = HealthProbe(addr), grpc.insecure_channel(addr)
    k = bundle.task("digits").symbols_per_image
    try:
        _wait(lambda: probe.status() == "SERVING", 20, "relay SERVING with two replicas")
        _wait(lambda: all(_replica_up(handle, r) == 1.0 for r in replicas), 10, "both replica gauges 1")
        stub = pb_grpc.RelayStub(chan)
        for i in range(4):  # one edge stream each: round_robin puts them on alternate replicas
            results = list(stub.Transmit(iter([make_frame(k, f"tx-{i}", frame_id=f, seed=f) for f in range(3)]),
                                         timeout=20))
            assert [r.frame_id for r in results] == [0, 1, 2] and all(r.error.code == 0 for r in results)
        counts = [_decoded(h.metrics.registry) for h, _ in servers]
        assert sum(counts) == 12 and all(c > 0 for c in counts), f"frames decoded per replica: {counts}"
        # one replica gone: still SERVING, its gauge 0, and new streams reach the other
        servers[0][0].stop(0.5)
        _wait(lambda: _replica_up(handle, replicas[0]) == 0.0, 10, "the stopped replica's gauge 0")
        assert probe.status() == "SERVING"
        before = _decoded(servers[1][0].metrics.registry)
        for i in range(2):
            results = list(stub.Transmit(iter([make_frame(k, f"tx-{i}", frame_id=10 + f, seed=f) for f in range(3)]),
                                         timeout=20))
            assert all(r.error.code == 0 for r in results) and len(results) == 3
        assert _decoded(servers[1][0].metrics.registry) == before + 6
        # none left: NOT_SERVING; one back on its port: SERVING again
        servers[1][0].stop(0.5)
        _wait(lambda: probe.status() == "NOT_SERVING", 10, "relay NOT_SERVING with no replica")
        cfg2, _ = make_config(server={"port": ports[1]}, name="again.toml")
        servers[1] = create_server(cfg2, bundle=bundle)
        servers[1][0].start()
        _wait(lambda: probe.status() == "SERVING", 15, "relay SERVING again with a replica back")
        assert _replica_up(handle, replicas[1]) == 1.0 and _replica_up(handle, replicas[0]) == 0.0
    finally:
        chan.close()
        probe.close()
        _stop_relay(handle)
        for h, _ in servers:
            h.stop(0.5)


def _server_process(make_config, tmp_path, name: str):
    _, path = make_config(name=f"{name}.toml")
    ready = tmp_path / f"{name}-ready.json"
    proc = subprocess.Popen([sys.executable, "-m", "rkdsc.server", "--config", str(path), "--ready-file", str(ready)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, ready


def test_killing_one_of_two_replicas_mid_run_loses_no_image(make_config, bundle, tmp_path):
    """Acceptance: SIGKILL of the replica that serves the edge's stream, mid-run; every image of the
    run is answered (its frames in flight were resent to the other replica), none is missing, the
    frames after the kill are decoded by the other replica, and the relay stays SERVING."""
    procs = [_server_process(make_config, tmp_path, f"replica{i}") for i in range(2)]
    handle = None
    try:
        info = []
        for proc, ready in procs:
            _wait(lambda: ready.exists() or proc.poll() is not None, 90, "a replica's ready file")
            assert proc.poll() is None, proc.communicate()[1]
            info.append(json.loads(ready.read_text()))
        replicas = [f"127.0.0.1:{i['port']}" for i in info]
        # airtime 50 ms per frame (K symbols at 20 K symbols/s): a 24-image run takes over a second
        k = bundle.task("digits").symbols_per_image
        cfg, _ = make_config(transmitters=[{"id": "edge-near", "seed": 11, "batch_size": 2, "max_in_flight": 8}],
                             basestation={"symbol_rate_hz": 20.0 * k})
        handle, addr = _relay(cfg, ",".join(replicas))
        with HealthProbe(addr) as probe:
            _wait(lambda: probe.status() == "SERVING", 30, "relay SERVING")
        box: dict = {}
        out = tmp_path / "edge-near"
        t = _edge_run(cfg, "edge-near", addr, bundle, out, box)
        counts = [0.0, 0.0]

        def one_has_frames() -> bool:
            counts[:] = [_decoded_http(i["metrics_port"]) for i in info]
            return any(c >= 4 for c in counts)

        _wait(one_has_frames, 60, "a replica decoding the edge's frames")
        victim = 0 if counts[0] > 0 else 1
        survivor = 1 - victim
        at_kill = counts[survivor]
        procs[victim][0].send_signal(signal.SIGKILL)
        procs[victim][0].wait(10)
        t.join(120)
        assert not t.is_alive(), "the edge run did not finish"
        summary = box["edge-near"]
        assert not isinstance(summary, Exception), summary
        records = _records(out)
        assert summary["images"] == 24 and len(records) == 24 and len({r["file"] for r in records}) == 24
        # each image answered or an explicit error; with a live replica left every one is answered
        assert all(r["error"] is None or r["error_code"] for r in records)
        assert summary["answered"] == 24 and summary["stream_error"] is None, summary["errors_by_code"]
        survivor_decoded = _decoded_http(info[survivor]["metrics_port"]) - at_kill
        assert survivor_decoded > 0, "the surviving replica decoded nothing after the kill"
        assert counts[victim] + survivor_decoded >= 24  # resent frames may have been decoded twice
        resent = handle.metrics.registry.get_sample_value("rkdsc_relay_upstream_resent_frames_total") or 0.0
        print(f"replica {victim} killed after {counts[victim]:.0f} frames; {resent:.0f} frame(s) resent; "
              f"the survivor decoded {survivor_decoded:.0f} after the kill")
        with HealthProbe(addr) as probe:
            assert probe.status() == "SERVING"
        _wait(lambda: _replica_up(handle, replicas[victim]) == 0.0, 10, "the killed replica's gauge 0")
    finally:
        if handle is not None:
            _stop_relay(handle)
        for proc, _ in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
            proc.communicate()


def test_two_relays_in_front_of_two_replicas(make_config, bundle, tmp_path):
    """Two cells: each relay its own process-like service and port, the same two replicas behind
    both; four edge devices split over the relays, every image answered, both replicas used."""
    from rkdsc.server.service import create_server

    txs = [{"id": f"edge-{i}", "seed": 20 + i, "batch_size": 4} for i in range(4)]
    cfg, _ = make_config(transmitters=txs)
    servers = [create_server(cfg, bundle=bundle)[0] for _ in range(2)]
    for s in servers:
        s.start()
    addr_list = ",".join(f"127.0.0.1:{s.port}" for s in servers)
    relays = []
    try:
        for cell in range(2):
            rcfg, _ = make_config(transmitters=txs, name=f"cell{cell}.toml")
            relays.append(_relay(rcfg, addr_list))
        for _, addr in relays:
            with HealthProbe(addr) as probe:
                _wait(lambda: probe.status() == "SERVING", 20, f"relay {addr} SERVING")
        box: dict = {}
        threads = [_edge_run(cfg, t["id"], relays[i % 2][1], bundle, tmp_path / t["id"], box)
                   for i, t in enumerate(txs)]
        for t in threads:
            t.join(120)
        for t in txs:
            summary = box[t["id"]]
            assert not isinstance(summary, Exception), summary
            assert summary["images"] == 24 and summary["answered"] == 24, (t["id"], summary["errors_by_code"])
        counts = [_decoded(s.metrics.registry) for s in servers]
        assert sum(counts) == 96 and all(c > 0 for c in counts), f"frames decoded per replica: {counts}"
        for (h, _), cell in zip(relays, range(2)):
            forwarded = sum(h.metrics.registry.get_sample_value("rkdsc_relay_frames_total",
                                                                {"transmitter": t["id"], "outcome": "ok"}) or 0
                            for t in txs)
            assert forwarded == 48, f"cell {cell} forwarded {forwarded} frames"
    finally:
        for h, _ in relays:
            _stop_relay(h)
        for s in servers:
            s.stop(0.5)


def test_server_addr_forms_are_validated_naming_the_field(make_config):
    from rkdsc.basestation.upstream import upstream_target
    from rkdsc.common.config import ConfigError, check_server_addr

    assert upstream_target(check_server_addr("127.0.0.1:1, 127.0.0.1:2")) == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert upstream_target(check_server_addr(["localhost:1", "127.0.0.1:2"])) == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert upstream_target(check_server_addr("[::1]:1,[::1]:2")) == "ipv6:[::1]:1,[::1]:2"
    assert upstream_target(check_server_addr("dns:///server:50051")) == "dns:///server:50051"
    assert upstream_target(check_server_addr("server:50051")) == "server:50051"
    for bad, phrase in (("server-a:1,server-b:2", "dns:///server:50051"), ("127.0.0.1:1,[::1]:2", "IP family"),
                        ("dns:///a:1,b:2", "one dns:///host:port"), ("127.0.0.1:1,127.0.0.1:x", "integer port")):
        with pytest.raises(ConfigError) as err:
            check_server_addr(bad)
        assert str(err.value).startswith("basestation.server_addr: ") and phrase in str(err.value), str(err.value)
        assert repr(bad) in str(err.value)
    with pytest.raises(ConfigError) as err:
        make_config(basestation={"server_addr": "a:1,b:2"})
    assert "basestation.server_addr" in str(err.value) and "'a:1,b:2'" in str(err.value)
    from rkdsc.common.config import parse_config

    doc = {"bundle": {"path": str(REPO / "deploy" / "bundle")},
           "basestation": {"server_addr": ["127.0.0.1:5", "127.0.0.1:6"]}}  # a TOML list
    assert parse_config(doc, env={}).basestation.server_addr == "127.0.0.1:5,127.0.0.1:6"
    cfg = parse_config(doc, env={"RKDSC_SERVER_ADDR": "127.0.0.1:7,127.0.0.1:8"})
    assert cfg.basestation.server_addr == "127.0.0.1:7,127.0.0.1:8"
    with pytest.raises(ConfigError) as err:
        make_config(env={"RKDSC_SERVER_ADDR": "x"})
    assert "RKDSC_SERVER_ADDR: expected host:port, got 'x'" in str(err.value)


def test_a_dns_name_is_resolved_and_each_address_probed(make_config, bundle):
    """``dns:///name:port``: the relay resolves the name itself (again every RESOLVE_S) and probes
    each address on its own channel; the gauge is labelled by address."""
    import socket

    from rkdsc.server.service import create_server

    name = socket.gethostname()
    try:
        ips = {ai[4][0] for ai in socket.getaddrinfo(name, 1, type=socket.SOCK_STREAM)}
    except OSError:
        pytest.skip(f"the host name {name!r} does not resolve here")
    cfg, _ = make_config(server={"host": "0.0.0.0" if all(":" not in ip for ip in ips) else "[::]"})
    server, port = create_server(cfg, bundle=bundle)
    server.start()
    handle, addr = _relay(cfg, f"dns:///{name}:{port}")
    try:
        with HealthProbe(addr) as probe:
            _wait(lambda: probe.status() == "SERVING", 20, f"relay SERVING through dns:///{name}:{port}")
        labels = {s.labels["replica"]: s.value for m in handle.metrics.registry.collect()
                  if m.name == "rkdsc_relay_upstream_replica_up" for s in m.samples}
        assert labels and all(v == 1.0 for v in labels.values()), labels
        assert {r.rpartition(":")[0].strip("[]") for r in labels} == ips
        k = bundle.task("digits").symbols_per_image
        with grpc.insecure_channel(addr) as chan:
            res = pb_grpc.RelayStub(chan).TransmitOne(make_frame(k, frame_id=1), timeout=10)
        assert res.error.code == 0
    finally:
        _stop_relay(handle)
        server.stop(0.5)


class _SlowModel:
    """The real ServerModel, each decode batch taking `delay_s` (frames stay in flight)."""

    def __init__(self, model, delay_s: float):
        self.model, self.spec, self.delay_s = model, model.spec, delay_s

    def decode(self, x, snr_db):
        time.sleep(self.delay_s)
        return self.model.decode(x, snr_db)


def _open_stream(stub, frames_q):
    """A Transmit stream fed from a queue (None ends it); results and the final error in a box."""
    box = {"results": [], "error": None}

    def requests():
        while (item := frames_q.get()) is not None:
            yield item

    def consume():
        try:
            for res in stub.Transmit(requests(), timeout=120):
                box["results"].append(res)
        except grpc.RpcError as exc:
            box["error"] = exc

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    return t, box


def _all_answered(q, t, box, n: int, timeout_s: float = 60.0) -> list:
    """Wait for the n results of frames 0..n-1, end the stream; each frame answered exactly once
    and the stream itself OK -> the results."""
    _wait(lambda: len(box["results"]) == n or box["error"] is not None, timeout_s, f"all {n} results")
    q.put(None)
    t.join(30)
    assert box["error"] is None, box["error"]
    ids = [r.frame_id for r in box["results"]]
    assert sorted(ids) == list(range(n)), ids  # each exactly once
    return box["results"]


@contextlib.contextmanager
def _slow_cell(make_config, bundle, delays_s, server=None):
    """Replicas whose decode batches take `delays_s[i]` each, a relay dialling them all, a client
    channel and a frame queue for `_open_stream`; everything stopped on exit."""
    from rkdsc.common.bundle import ServerModel
    from rkdsc.server.service import create_server

    cfg, _ = make_config(server={"max_batch": 4, "max_wait_ms": 20.0, **(server or {})})
    servers = [create_server(cfg, bundle=bundle, models={"digits": _SlowModel(ServerModel(bundle, "digits"), d)})[0]
               for d in delays_s]
    for srv in servers:
        srv.start()
    handle, addr = _relay(cfg, ",".join(f"127.0.0.1:{srv.port}" for srv in servers))
    chan = grpc.insecure_channel(addr)
    q: "queue.Queue" = queue.Queue()
    try:
        with HealthProbe(addr) as probe:
            _wait(lambda: probe.status() == "SERVING", 20, "relay SERVING")
        yield servers, handle, addr, pb_grpc.RelayStub(chan), q, bundle.task("digits").symbols_per_image
    finally:
        q.put(None)
        chan.close()
        _stop_relay(handle)
        for srv in servers:
            srv.stop(0.5)


def test_a_replica_stopped_without_grace_has_its_frames_resent_and_the_stream_goes_on(make_config, bundle):
    """Single-frame Transmit: the replica holding the stream's frames is stopped without grace
    (its RPCs cancelled); the frames in flight are resent to the other replica, frames sent after
    the stop go there too, and every frame is answered exactly once, OK."""
    with _slow_cell(make_config, bundle, (0.5, 0.5)) as (servers, handle, _, stub, q, k):
        t, box = _open_stream(stub, q)
        for i in range(8):
            q.put(make_frame(k, frame_id=i, seed=i))
        _wait(lambda: any(s.servicer.pending for s in servers), 20, "frames queued at a replica")
        victim = 0 if servers[0].servicer.pending else 1
        servers[victim].grpc_server.stop(None)  # no grace: its streams are cancelled
        for i in range(8, 12):
            q.put(make_frame(k, frame_id=i, seed=i))
        results = _all_answered(q, t, box, 12)
        assert all(r.error.code == 0 for r in results), [r.error.message for r in results]
        assert _decoded(servers[1 - victim].metrics.registry) >= 4 + 1  # the later frames and a resent one
        assert (handle.metrics.registry.get_sample_value("rkdsc_relay_upstream_resent_frames_total") or 0) >= 1


def test_with_no_replica_left_each_frame_in_flight_is_an_explicit_error(make_config, bundle, monkeypatch):
    """No replica to resend to: after RESEND_LIMIT tries each frame in flight gets an error Result
    (UNAVAILABLE, saying so), none is missing, and the edge's stream itself ends OK."""
    from rkdsc.basestation import relay

    monkeypatch.setattr(relay, "FAILOVER_WAIT_S", 0.3)
    with _slow_cell(make_config, bundle, (1.0,)) as ((server,), _, addr, stub, q, k), HealthProbe(addr) as probe:
        t, box = _open_stream(stub, q)
        for i in range(6):
            q.put(make_frame(k, frame_id=i, seed=i))
        _wait(lambda: server.servicer.pending >= 6, 20, "6 frames at the server")
        server.grpc_server.stop(None)
        for r in _all_answered(q, t, box, 6, timeout_s=30.0):
            assert r.error.code == grpc.StatusCode.UNAVAILABLE.value[0] and "resend" in r.error.message, r.error
        _wait(lambda: probe.status() == "NOT_SERVING", 10, "relay NOT_SERVING with no replica")


def test_a_draining_replica_hands_its_stream_over_to_the_other(make_config, bundle):
    """Graceful stop (SIGTERM's path) of the replica holding a stream: the frames it refuses while
    draining (UNAVAILABLE) go to the other replica with those in flight; every frame answered OK."""
    stopper = None
    with _slow_cell(make_config, bundle, (0.5, 0.5), server={"drain_timeout_s": 5.0}) as (servers, _, _, stub, q, k):
        try:
            t, box = _open_stream(stub, q)
            for i in range(6):
                q.put(make_frame(k, frame_id=i, seed=i))
            _wait(lambda: any(s.servicer.pending for s in servers), 20, "frames queued at a replica")
            victim = 0 if servers[0].servicer.pending else 1
            stopper = threading.Thread(target=servers[victim].stop, args=(5.0,), daemon=True)
            stopper.start()
            time.sleep(0.2)  # draining now: new frames are refused with UNAVAILABLE
            for i in range(6, 12):
                q.put(make_frame(k, frame_id=i, seed=i))
            results = _all_answered(q, t, box, 12)
            assert all(r.error.code == 0 for r in results), [r.error.message for r in results]
            assert _decoded(servers[1 - victim].metrics.registry) >= 6
        finally:
            if stopper is not None:
                stopper.join(10)


def test_a_dns_name_that_gains_a_replica_makes_the_relay_redial(make_config, bundle, monkeypatch):
    """``dns:///name:port`` resolving to one address, then to two: the relay's ReplicaSet reports the
    added address once (not at the first look-up, not again), and the relay then opens its new
    upstream streams on a fresh channel (gRPC's resolver would not look again while connected);
    every channel it opened is closed with it."""
    import socket

    from rkdsc.basestation import upstream
    from rkdsc.server.service import create_server

    server, port = create_server(make_config()[0], bundle=bundle)
    server.start()
    answers = [[("127.0.0.1", port)]]

    def fake_getaddrinfo(host, p, *args, **kwargs):
        assert host == "replicas.test"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", addr) for addr in answers[-1]]

    monkeypatch.setattr(upstream.socket, "getaddrinfo", fake_getaddrinfo)
    cfg, _ = make_config(name="dns.toml")
    handle, addr = _relay(cfg, f"dns:///replicas.test:{port}")
    servicer = handle.servicer
    added: list[list[str]] = []
    redial = servicer.replicas.on_new_replicas
    servicer.replicas.on_new_replicas = lambda new: (added.append(new), redial(new))
    try:
        servicer.replicas.resolve_s = 0.0
        servicer.replicas.check(1.0)
        first_stub = servicer.stub
        assert added == [] and len(handle.upstream.all) == 1
        answers.append([("127.0.0.1", port), ("127.0.0.2", port)])
        servicer.replicas.check(1.0)
        servicer.replicas.check(1.0)  # the same two again: nothing new
        assert added == [[f"127.0.0.2:{port}"]]
        assert servicer.stub is not first_stub and len(handle.upstream.all) == 2
        assert servicer.upstream_channel is handle.upstream.all[-1]
    finally:
        _stop_relay(handle)
        server.stop(0.5)
