"""Trust on every hop, over real localhost TLS handshakes: the edge server and the relay with
mutual TLS (and with TLS + bearer tokens), clients with the identities of `rkdsc certs`."""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest

from rkdsc.common import channel
from rkdsc.common.certs import Identity, _load_ca, cert_paths, issue, write_certs, write_pair
from rkdsc.common.config import TLSConfig
from rkdsc.common.service.security import ADMIN, RELAY, TLSError, check_client_credentials, open_channel
from rkdsc.common.wire import encode_tensor
from rkdsc.edge.client import EdgeClient
from rkdsc.v1 import emulator_pb2 as pb
from rkdsc.v1 import emulator_pb2_grpc as pb_grpc
from tests.conftest import DEFAULT_TRANSMITTERS, write_toml
from tests.integration.test_networked import in_process_reference

IDS = [t["id"] for t in DEFAULT_TRANSMITTERS]
NEAR, FAR = Identity.transmitter("edge-near"), Identity.transmitter("edge-far")


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    return Path(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def certs_dir(certs) -> Path:
    write_certs(certs / "ca1", IDS)
    return certs / "ca1"


class TLSServices:
    """Edge server + relay in this process, with the [tls] of ``tls``."""

    def __init__(self, cfg, bundle):
        from rkdsc.basestation import relay
        from rkdsc.common.experiments.demo import wait_serving
        from rkdsc.server.service import create_server

        self.cfg = cfg
        self.server, port = create_server(cfg, bundle=bundle)
        self.server.start()
        self.server_addr = cfg.basestation.server_addr = f"127.0.0.1:{port}"
        self.relay, rport = relay.create_server(cfg)
        self.relay.start()
        self.relay_addr = f"127.0.0.1:{rport}"
        self._channels: list[grpc.Channel] = []
        wait_serving(self.relay_addr, timeout_s=30, tls=cfg.tls)

    def channel(self, who: Identity, addr: str | None = None, tls: TLSConfig | None = None, token=None):
        ch = open_channel(addr or self.relay_addr, tls or self.cfg.tls, who, token=token)
        self._channels.append(ch)
        return ch

    def relay_stub(self, who: Identity, **kw) -> pb_grpc.RelayStub:
        return pb_grpc.RelayStub(self.channel(who, **kw))

    def close(self):
        for ch in self._channels:
            ch.close()
        self.relay.stop(2.0)
        self.relay.upstream.close()
        self.server.stop(2.0)


@pytest.fixture
def mtls(make_config, bundle, certs_dir):
    cfg, _ = make_config()
    cfg.tls = TLSConfig(mode="mtls", dir=certs_dir)
    svc = TLSServices(cfg, bundle)
    yield svc
    svc.close()


def frame(bundle, tid: str, frame_id: int) -> pb.Frame:
    k = bundle.task("digits").symbols_per_image
    rng = np.random.default_rng(frame_id)
    z = channel.normalize_power(rng.standard_normal((1, k)) + 1j * rng.standard_normal((1, k))).astype(np.complex64)[0]
    data, dtype, shape = encode_tensor(z)
    return pb.Frame(transmitter_id=tid, task="digits", frame_id=frame_id, encoder_snr_db=10.0,
                    symbols=pb.Tensor(data=data, dtype=dtype, shape=shape), has_label=False, label=-1)


def rpc_error(fn, *args, **kw) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, timeout=10, **kw)
    return info.value


# ----------------------------------------------------------------------------- transport

def test_plaintext_client_is_refused_by_a_tls_relay(mtls):
    with grpc.insecure_channel(mtls.relay_addr) as ch:
        err = rpc_error(pb_grpc.RelayStub(ch).ListLinks, pb.ListLinksRequest())
    assert err.code() == grpc.StatusCode.UNAVAILABLE


def test_a_client_without_certificate_is_refused_under_mtls(mtls, certs_dir):
    ca = (certs_dir / "ca.pem").read_bytes()
    with grpc.secure_channel(mtls.relay_addr, grpc.ssl_channel_credentials(ca)) as ch:
        err = rpc_error(pb_grpc.RelayStub(ch).ListLinks, pb.ListLinksRequest())
    assert err.code() == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_from_another_ca_is_refused(mtls, certs, certs_dir):
    write_certs(certs / "other", ["edge-near"])
    cert, key = cert_paths(certs / "other", NEAR)
    creds = grpc.ssl_channel_credentials((certs_dir / "ca.pem").read_bytes(), key.read_bytes(), cert.read_bytes())
    with grpc.secure_channel(mtls.relay_addr, creds) as ch:
        err = rpc_error(pb_grpc.RelayStub(ch).GetLink, pb.LinkRequest(transmitter_id="edge-near"))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    # ... and a client trusting only another CA refuses our relay (the server certificate check)
    ch = mtls.channel(NEAR, tls=TLSConfig(mode="mtls", dir=certs_dir, ca=certs / "other" / "ca.pem"))
    err = rpc_error(pb_grpc.RelayStub(ch).GetLink, pb.LinkRequest(transmitter_id="edge-near"))
    assert err.code() == grpc.StatusCode.UNAVAILABLE


def test_an_expired_certificate_is_refused_with_a_clear_message(mtls, certs_dir, tmp_path):
    ca_cert, ca_key = _load_ca(certs_dir)
    now = dt.datetime.now(dt.timezone.utc)
    cert, key = issue(ca_cert, ca_key, NEAR, not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1))
    write_pair(cert, key, tmp_path / "old.pem", tmp_path / "old.key")
    # the server side refuses it in the handshake ...
    creds = grpc.ssl_channel_credentials((certs_dir / "ca.pem").read_bytes(), (tmp_path / "old.key").read_bytes(),
                                         (tmp_path / "old.pem").read_bytes())
    with grpc.secure_channel(mtls.relay_addr, creds) as ch:
        err = rpc_error(pb_grpc.RelayStub(ch).GetLink, pb.LinkRequest(transmitter_id="edge-near"))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    # ... and our client says why before dialling: the field, the file and the date
    tls = TLSConfig(mode="mtls", dir=certs_dir, cert=tmp_path / "old.pem", key=tmp_path / "old.key")
    with pytest.raises(TLSError) as info:
        check_client_credentials(tls, NEAR)
    msg = str(info.value)
    assert "tls.cert" in msg and str(tmp_path / "old.pem") in msg and "expired on" in msg
    assert (now - dt.timedelta(days=1)).strftime("%Y-%m-%d") in msg
    # the edge client refuses to start with it (a config error, exit status 2 in the CLI)
    cfg = mtls.cfg
    saved = cfg.tls
    cfg.tls = tls
    try:
        with pytest.raises(TLSError, match="expired on"):
            EdgeClient(cfg, cfg.transmitter("edge-near"))
    finally:
        cfg.tls = saved


def test_a_service_refuses_to_start_with_an_expired_certificate(make_config, bundle, certs_dir, tmp_path):
    from rkdsc.server.service import create_server

    ca_cert, ca_key = _load_ca(certs_dir)
    now = dt.datetime.now(dt.timezone.utc)
    cert, key = issue(ca_cert, ca_key, Identity.of("server"), not_before=now - dt.timedelta(days=3),
                      not_after=now - dt.timedelta(hours=1))
    write_pair(cert, key, tmp_path / "server.pem", tmp_path / "server.key")
    cfg, _ = make_config()
    cfg.tls = TLSConfig(mode="mtls", dir=certs_dir, cert=tmp_path / "server.pem")
    with pytest.raises(TLSError, match=r"tls.cert \(server\): the certificate .*server.pem expired on"):
        create_server(cfg, bundle=bundle)


# ----------------------------------------------------------------------------- identities and roles

def test_a_device_streams_its_own_frames_and_cannot_send_as_another(mtls, bundle):
    stub = mtls.relay_stub(NEAR)
    ok = stub.TransmitOne(frame(bundle, "edge-near", 1), timeout=30)
    assert ok.error.code == 0 and ok.link.transmitter_id == "edge-near"
    err = rpc_error(stub.TransmitOne, frame(bundle, "edge-far", 2))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'edge-near'" in err.details() and "'edge-far'" in err.details()
    # on a stream: the own frames before are answered, the foreign one ends the stream
    frames = [frame(bundle, "edge-near", 10), frame(bundle, "edge-near", 11), frame(bundle, "edge-far", 12)]
    results, status = [], None
    try:
        for res in stub.Transmit(iter(frames), timeout=30):
            results.append(res)
    except grpc.RpcError as exc:
        status = exc
    assert status is not None and status.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "this client is 'edge-near'" in status.details() and "claims 'edge-far'" in status.details()
    assert sorted(r.frame_id for r in results) == [10, 11]
    # nothing went through edge-far's link
    assert mtls.relay_stub(ADMIN).GetLink(pb.LinkRequest(transmitter_id="edge-far"), timeout=10).frames == 0


def test_a_device_cannot_set_links_and_reads_only_its_own(mtls):
    stub = mtls.relay_stub(NEAR)
    err = rpc_error(stub.SetLink, pb.SetLinkRequest(transmitter_id="edge-near", snr_db=-100.0))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "SetLink" in err.details() and "admin" in err.details() and "'edge-near'" in err.details()
    assert stub.GetLink(pb.LinkRequest(transmitter_id="edge-near"), timeout=10).snr_db == 20.0
    err = rpc_error(stub.GetLink, pb.LinkRequest(transmitter_id="edge-far"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    links = stub.ListLinks(pb.ListLinksRequest(), timeout=10).links
    assert [link.transmitter_id for link in links] == ["edge-near"]


def test_the_admin_certificate_can_set_links(mtls):
    from rkdsc.basestation.admin import RelayAdmin

    with RelayAdmin(mtls.relay_addr, tls=mtls.cfg.tls) as admin:
        state = admin.set("edge-near", snr_db=-30.0)
        assert state["snr_db"] == -30.0
        assert {s["transmitter_id"] for s in admin.list()} == set(IDS)
    assert mtls.relay_stub(NEAR).GetLink(pb.LinkRequest(transmitter_id="edge-near"), timeout=10).snr_db == -30.0


def test_only_the_relay_may_call_the_edge_server(mtls, bundle):
    for who in (NEAR, ADMIN):
        stub = pb_grpc.EdgeServerStub(mtls.channel(who, addr=mtls.server_addr))
        err = rpc_error(stub.GetInfo, pb.InfoRequest())
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "relay" in err.details() and str(who) in err.details()
    stub = pb_grpc.EdgeServerStub(mtls.channel(RELAY, addr=mtls.server_addr))
    assert [t.name for t in stub.GetInfo(pb.InfoRequest(), timeout=10).tasks] == ["digits"]
    # health stays open to any certificate of the CA (probes)
    from rkdsc.common.service.probe import health_status

    assert health_status(mtls.server_addr, tls=mtls.cfg.tls, who=NEAR) == "SERVING"


def test_mtls_run_answers_every_image_like_the_in_process_pipeline(mtls, bundle, sample_dir, tmp_path):
    cfg = mtls.cfg
    summaries, errors = {}, []

    def run(tx):
        try:
            summaries[tx.id] = EdgeClient(cfg, tx, bundle=bundle, relay_addr=mtls.relay_addr,
                                          frame_id_base=0).run(sample_dir, tmp_path / tx.id)
        except Exception as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(tx,)) for tx in cfg.transmitters]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and set(summaries) == set(IDS)
    for tx in cfg.transmitters:
        assert summaries[tx.id]["answered"] == summaries[tx.id]["images"] > 0
        ref = in_process_reference(bundle, tx, sample_dir)
        records = [json.loads(line) for line in (tmp_path / tx.id / "results.jsonl").read_text().splitlines()]
        assert all(r["error"] is None and r["predicted_index"] == int(np.argmax(ref[r["file"]])) for r in records)


# ----------------------------------------------------------------------------- tokens (TLS without mTLS)

def test_tokens_identify_callers_without_mtls_and_are_never_logged(make_config, bundle, certs_dir, caplog):
    import tomllib

    tokens = tomllib.loads((certs_dir / "tokens.toml").read_text())["tokens"]
    cfg, _ = make_config()
    cfg.tls = TLSConfig(mode="tls", dir=certs_dir)
    caplog.set_level(logging.DEBUG)
    svc = TLSServices(cfg, bundle)
    try:
        device = svc.relay_stub(NEAR, token=tokens["transmitter/edge-near"])
        err = rpc_error(device.SetLink, pb.SetLinkRequest(transmitter_id="edge-near", snr_db=0.0))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert device.GetLink(pb.LinkRequest(transmitter_id="edge-near"), timeout=10).transmitter_id == "edge-near"
        err = rpc_error(device.TransmitOne, frame(bundle, "edge-far", 5))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "'edge-far'" in err.details()
        nobody = svc.relay_stub(NEAR, token=None, tls=TLSConfig(mode="tls", ca=certs_dir / "ca.pem"))
        err = rpc_error(nobody.ListLinks, pb.ListLinksRequest())
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "no bearer token" in err.details()
        wrong = svc.relay_stub(ADMIN, token="x" * 40, tls=TLSConfig(mode="tls", ca=certs_dir / "ca.pem"))
        err = rpc_error(wrong.ListLinks, pb.ListLinksRequest())
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        admin = svc.relay_stub(ADMIN)  # its own entry of the tokens file
        assert admin.SetLink(pb.SetLinkRequest(transmitter_id="edge-far", snr_db=3.0), timeout=10).snr_db == 3.0
        # the relay itself reached the server with the relay token (the relay is SERVING)
        direct = pb_grpc.EdgeServerStub(svc.channel(NEAR, addr=svc.server_addr, token=tokens["transmitter/edge-near"]))
        assert rpc_error(direct.GetInfo, pb.InfoRequest()).code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        svc.close()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert logged and not any(tok in logged for tok in tokens.values())


# ----------------------------------------------------------------------------- demo --tls

def test_demo_tls_gives_the_same_answers_as_plaintext(bundle_dir, sample_dir, tmp_path, monkeypatch):
    from rkdsc.common.experiments.demo import run_demo

    monkeypatch.chdir(tmp_path)
    config = write_toml(tmp_path / "tiny.toml", {}, {"bundle": {"path": str(bundle_dir)},
                                                     "server": {"max_wait_ms": 1.0}}, [
        {"id": "near", "snr_db": 20.0, "fading": "awgn", "seed": 1, "limit": 10, "batch_size": 4,
         "images": str(sample_dir)},
        {"id": "far", "snr_db": -5.0, "fading": "rayleigh", "seed": 2, "limit": 10, "batch_size": 4,
         "images": str(sample_dir)}])
    plain = run_demo(config, tmp_path / "plain", quiet=True)
    tls = run_demo(config, tmp_path / "tls", quiet=True, tls=True)
    assert plain["ok"] and tls["ok"] and (plain["tls"], tls["tls"]) == ("off", "mtls")
    assert (tmp_path / "tls" / "certs" / "transmitters" / "far.pem").is_file()
    for a, b in zip(plain["transmitters"], tls["transmitters"]):
        assert (a["id"], a["answered"], a["errors"]) == (b["id"], b["answered"], b["errors"])
        assert a["answered"] == a["images"] == 10 and a["accuracy"] == b["accuracy"]
        per_file = [{r["file"]: r["predicted_index"] for r in map(json.loads, Path(x["results"]).read_text().splitlines())}
                    for x in (a, b)]
        assert per_file[0] == per_file[1]
    assert "mutual TLS" in (tmp_path / "tls" / "logs" / "relay.log").read_text()


def test_batched_messages_follow_the_same_identity_rule(mtls, bundle):
    k = bundle.task("digits").symbols_per_image
    rng = np.random.default_rng(3)
    z = channel.normalize_power(rng.standard_normal((2, k)) + 1j * rng.standard_normal((2, k))).astype(np.complex64)
    data, dtype, shape = encode_tensor(z)

    def batch(tid: str, first: int) -> pb.FrameBatch:
        return pb.FrameBatch(transmitter_id=tid, task="digits", symbols=pb.Tensor(data=data, dtype=dtype, shape=shape),
                             frames=[pb.FrameMeta(frame_id=first + i, label=-1) for i in range(2)],
                             encoder_snr_db=10.0)

    stub = mtls.relay_stub(NEAR)
    answered, status = [], None
    try:
        for rb in stub.TransmitBatch(iter([batch("edge-near", 100), batch("edge-far", 200)]), timeout=30):
            answered += [r.frame_id for r in rb.results]
    except grpc.RpcError as exc:
        status = exc
    assert sorted(answered) == [100, 101]
    assert status is not None and status.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'edge-near'" in status.details() and "'edge-far'" in status.details()


def test_rkdsc_link_as_admin_and_as_a_device(mtls, certs_dir, tmp_path, monkeypatch, capsys):
    from rkdsc.basestation import admin

    monkeypatch.chdir(tmp_path)  # no deploy/topology.toml here: the [tls] comes from the environment alone
    monkeypatch.setenv("RKDSC_TLS", "mtls")
    monkeypatch.setenv("RKDSC_TLS_DIR", str(certs_dir))
    assert admin.cli(["set", "edge-mid", "--snr", "7", "--relay", mtls.relay_addr, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["snr_db"] == 7.0
    cert, key = cert_paths(certs_dir, Identity.transmitter("edge-mid"))
    monkeypatch.setenv("RKDSC_TLS_CERT", str(cert))
    monkeypatch.setenv("RKDSC_TLS_KEY", str(key))
    assert admin.cli(["set", "edge-mid", "--snr", "-100", "--relay", mtls.relay_addr]) == 2
    err = capsys.readouterr().err
    assert "PERMISSION_DENIED" in err and "SetLink" in err and "'edge-mid'" in err
    monkeypatch.setenv("RKDSC_TLS_CERT", str(tmp_path / "missing.pem"))
    assert admin.cli(["list", "--relay", mtls.relay_addr]) == 2
    assert "tls.cert: file not found" in capsys.readouterr().err
