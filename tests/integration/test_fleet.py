"""A fleet of devices in one process (rkdsc.edge.fleet) over localhost gRPC with a real server and
relay: every image answered, each device's results equal to that device run alone, one
onnxruntime session per (task, codec) in the process, and the `rkdsc fleet` command."""
from __future__ import annotations

import gc
import json
from pathlib import Path

import onnxruntime as ort
import pytest

from rkdsc.common.config import load_config
from rkdsc.edge.client import EdgeClient
import rkdsc.edge.fleet as fleet_mod
from rkdsc.edge.fleet import FleetRunner, cli as fleet_cli
from tests.conftest import Services

N_DEVICES = 8


@pytest.fixture
def fleet_config(tmp_path, bundle_dir, sample_dir):
    """A topology with one listed transmitter and a fleet of 8 (mixed SNRs, Rayleigh), ports 0."""
    path = tmp_path / "fleet.toml"
    path.write_text(f"""
[bundle]
path = "{bundle_dir}"
[server]
host = "127.0.0.1"
port = 0
metrics_port = 0
max_batch = 8
max_wait_ms = 2.0
[basestation]
host = "127.0.0.1"
port = 0
metrics_port = 0

[[transmitters]]
id = "edge-near"
images = "{sample_dir}"
seed = 1

[[fleets]]
name = "city"
id_pattern = "dev-{{index:03d}}"
count = {N_DEVICES}
seed_base = 40
snr_db_range = [-5.0, 20.0]
fading = "rayleigh"
images = "{sample_dir}"
limit = 12
batch_size = 4
max_in_flight = 8
""")
    return load_config(path, env={}), path


def _records(folder: Path) -> dict[str, dict]:
    return {r["file"]: r for r in map(json.loads, (folder / "results.jsonl").read_text().splitlines())}


def _sessions() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is ort.InferenceSession)  # type(): no __getattr__ of lazy modules


def test_a_fleet_in_one_process_equals_each_device_alone_and_shares_one_session(fleet_config, bundle, tmp_path,
                                                                             monkeypatch):
    cfg, _ = fleet_config
    listed = []  # the folder every device streams from is listed once for the whole fleet
    real_list = fleet_mod.list_images
    monkeypatch.setattr(fleet_mod, "list_images", lambda d, check=True: listed.append(d) or real_list(d, check=check))
    devices = cfg.fleet_transmitters("city")
    assert len(devices) == N_DEVICES and len({t.snr_db for t in devices}) == N_DEVICES
    svc = Services(cfg, bundle)
    try:
        before = _sessions()
        runner = FleetRunner(cfg, devices, bundle=bundle, concurrency=N_DEVICES, frame_id_base=0)
        # one EdgeModel (one onnxruntime session) per (task, codec), shared by every device
        codecs = bundle.task("digits").codec_names or [""]
        assert _sessions() - before == len(codecs)
        shared = {id(m) for m in runner.models["digits"].values()}
        assert {id(m) for c in runner.clients for m in c.codec_models.values()} == shared
        assert runner.shared_channel  # plaintext: one channel carries every device's stream
        summary = runner.run(tmp_path / "fleet")
    finally:
        svc.close()
    assert len(listed) == 1, listed
    written = json.loads((tmp_path / "fleet" / "fleet-summary.json").read_text())
    assert {k: written[k] for k in ("devices", "devices_ok", "images", "answered", "errors", "ok", "channels")} == \
        {"devices": N_DEVICES, "devices_ok": N_DEVICES, "images": 12 * N_DEVICES, "answered": 12 * N_DEVICES,
         "errors": 0, "ok": True, "channels": 1}
    assert written["latency_ms"]["p50"] > 0 and written["images_per_s"] > 0 and written["rss_peak_mb"] > 0
    for s, tx in zip(summary["summaries"], devices):
        assert (s["id"], s["snr_db"], s["answered"], s["errors"]) == (tx.id, tx.snr_db, 12, 0)

    # each device alone, on a fresh relay (fresh link generators), as `rkdsc edge --id` would run it
    svc = Services(cfg, bundle)
    try:
        for tx in devices:
            EdgeClient(cfg, tx, bundle=bundle, frame_id_base=0).run(out_dir=tmp_path / "alone" / tx.id)
    finally:
        svc.close()
    for tx in devices:
        fleet, alone = _records(tmp_path / "fleet" / tx.id), _records(tmp_path / "alone" / tx.id)
        assert len(fleet) == 12 and fleet.keys() == alone.keys()
        for f, r in fleet.items():
            a = alone[f]
            assert r["transmitter"] == tx.id and r["error"] is None
            assert (r["predicted_index"], r["top_k"], r["frame_id"], r["encoder_snr_db"], r["link_snr_db"]) == \
                (a["predicted_index"], a["top_k"], a["frame_id"], a["encoder_snr_db"], a["link_snr_db"]), (tx.id, f)
            assert r["encoder_snr_db"] == pytest.approx(tx.effective_snr_db)


def test_rkdsc_fleet_runs_a_slice_of_the_fleet_and_ids(fleet_config, bundle, tmp_path, capsys):
    cfg, path = fleet_config
    svc = Services(cfg, bundle)
    try:
        out = tmp_path / "out"
        status = fleet_cli(["--config", str(path), "--fleet", "city", "--devices", "2:5", "--id", "edge-near",
                            "--relay", svc.relay_addr, "--out", str(out), "--limit", "3", "--concurrency", "2"])
        assert status == 0, capsys.readouterr().err
        s = json.loads((out / "fleet-summary.json").read_text())
        assert (s["devices"], s["answered"], s["errors"], s["concurrency"]) == (4, 12, 0, 2)
        assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["dev-002", "dev-003", "dev-004", "edge-near"]
        assert json.loads((out / "dev-003" / "summary.json").read_text())["answered"] == 3
        assert "4/4 devices ok" in capsys.readouterr().out
        # a bad selection is a config error (exit status 2) naming the flag
        assert fleet_cli(["--config", str(path), "--fleet", "city", "--devices", "9:", "--out", str(out)]) == 2
        assert "--devices: '9:' selects no device of the fleet's 8" in capsys.readouterr().err
        assert fleet_cli(["--config", str(path), "--fleet", "nope", "--out", str(out)]) == 2
        assert "no fleet named 'nope'; known: city" in capsys.readouterr().err
    finally:
        svc.close()


def test_under_mutual_tls_each_device_streams_on_its_own_channel_with_its_own_certificate(fleet_config, bundle,
                                                                                         tmp_path):
    from rkdsc.common.certs import write_certs
    from rkdsc.common.config import TLSConfig
    from tests.integration.test_tls import TLSServices

    cfg, _ = fleet_config
    devices = cfg.fleet_transmitters("city", slice(0, 4))
    write_certs(tmp_path / "certs", [t.id for t in cfg.transmitters])  # `rkdsc certs --config`: fleets too
    cfg.tls = TLSConfig(mode="mtls", dir=tmp_path / "certs")
    svc = TLSServices(cfg, bundle)
    try:
        runner = FleetRunner(cfg, devices, bundle=bundle, relay_addr=svc.relay_addr, frame_id_base=0)
        assert not runner.shared_channel
        s = runner.run(tmp_path / "out", limit=4)
    finally:
        svc.close()
    # the relay accepts a device's frames only from that device's certificate
    assert (s["ok"], s["answered"], s["errors"], s["channels"]) == (True, 16, 0, 4), s["failed"]


def test_with_tokens_every_device_streams_on_one_shared_channel_under_its_own_token(fleet_config, bundle, tmp_path):
    from rkdsc.common.certs import write_certs
    from rkdsc.common.config import TLSConfig
    from tests.integration.test_tls import TLSServices

    cfg, _ = fleet_config
    devices = cfg.fleet_transmitters("city", slice(0, 4))
    write_certs(tmp_path / "certs", [t.id for t in cfg.transmitters])  # tokens.toml: one token per device
    cfg.tls = TLSConfig(mode="tls", dir=tmp_path / "certs")
    svc = TLSServices(cfg, bundle)
    try:
        runner = FleetRunner(cfg, devices, bundle=bundle, relay_addr=svc.relay_addr, frame_id_base=0)
        assert runner.shared_channel  # server-side TLS: one connection; the token per call is the identity
        s = runner.run(tmp_path / "out", limit=4)
    finally:
        svc.close()
    # the relay refuses a call without a token (UNAUTHENTICATED) and frames of another transmitter
    # than the token's (PERMISSION_DENIED): every image answered means each call carried its own
    assert (s["ok"], s["answered"], s["errors"], s["channels"]) == (True, 16, 0, 1), s["failed"]
    assert all(d["answered"] == 4 for d in s["summaries"])


def test_a_task_with_two_codecs_has_two_sessions_in_the_process_whatever_the_device_count(fleet_config,
                                                                                          codecs_bundle_dir):
    from rkdsc.common.bundle import load_bundle

    cfg, _ = fleet_config
    codecs = load_bundle(codecs_bundle_dir, verify=True)
    before = _sessions()
    runner = FleetRunner(cfg, cfg.fleet_transmitters("city"), bundle=codecs)
    assert sorted(runner.models["digits"]) == ["cr-0.5", "cr-0.8"] and _sessions() - before == 2
    assert all(c.codec_models == runner.models["digits"] for c in runner.clients)
