"""The shared medium inside the running services, over real localhost gRPC (server, relay, edges):
every answered result carries an emulated latency whose parts add up, the airtime follows the
cell's arithmetic, the virtual clock repeats exactly for a seed, and the shipped scenarios parse."""
from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest

from rkdsc.common.config import load_config
from rkdsc.common.medium.emulator import EMULATED_KEYS
from rkdsc.edge.client import EdgeClient
from tests.conftest import Services, metric

ROOT = Path(__file__).resolve().parents[2]
CAPACITY = 2000.0      # 2 symbols per 1 ms slot: two backlogged devices get one each per slot
IMAGES = 12


def medium_toml(tmp_path: Path, bundle_dir: Path, sample_dir: Path, name: str = "medium.toml") -> Path:
    text = f"""
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

[medium]
clock = "virtual"
scheduler = "round-robin"
capacity_symbols_per_s = {CAPACITY}
slot_ms = 1.0
pathloss = "umi"
los = true
tx_power_dbm = 0.0
fading = "doppler"
feedback_delay_ms = 5.0
downlink_delay_ms = 1.0
seed = 5

[[transmitters]]
id = "near"
task = "digits"
seed = 11
batch_size = 4
images = "{sample_dir}"
limit = {IMAGES}
medium = {{ distance_m = 30.0, speed_mps = 1.0 }}

[[transmitters]]
id = "far"
task = "digits"
seed = 12
batch_size = 4
batch_messages = false
images = "{sample_dir}"
limit = {IMAGES}
medium = {{ distance_m = 150.0, speed_mps = 1.0, direction_deg = 180.0 }}
"""
    path = tmp_path / name
    path.write_text(text)
    return path


def run_once(path: Path, bundle, tmp_path: Path, tag: str) -> tuple[dict, dict, dict]:
    cfg = load_config(path, env={})
    svc = Services(cfg, bundle)
    summaries, records, errors = {}, {}, []

    def run(tx):
        try:
            client = EdgeClient(cfg, tx, bundle=bundle, frame_id_base=0)
            summaries[tx.id] = client.run(out_dir=tmp_path / tag / tx.id)
            records[tx.id] = [__import__("json").loads(line) for line in
                              (tmp_path / tag / tx.id / "results.jsonl").read_text().splitlines()]
        except Exception as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=run, args=(tx,)) for tx in cfg.transmitters]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        metrics = svc.metrics("relay")
    finally:
        svc.close()
    assert not errors, errors
    return summaries, records, metrics


def test_medium_results_carry_emulated_latency_and_repeat_exactly(tmp_path, bundle_dir, bundle, sample_dir):
    K = bundle.task("digits").symbols_per_image
    path = medium_toml(tmp_path, bundle_dir, sample_dir)
    s1, r1, m1 = run_once(path, bundle, tmp_path, "first")
    for tx in ("near", "far"):
        assert s1[tx]["ok"] and s1[tx]["answered"] == IMAGES, s1[tx]
        for r in r1[tx]:
            e = r["emulated_ms"]
            assert set(e) == set(EMULATED_KEYS)
            parts = sum(v for k, v in e.items() if k != "total")
            assert math.isclose(parts, e["total"], rel_tol=1e-9, abs_tol=1e-6), e
            assert all(v >= -1e-9 for v in e.values()), e
            # both devices backlogged together all run long: round robin, one symbol each per slot,
            # so every image's K symbols span N K / C of airtime (within one 1 ms slot)
            assert abs(e["airtime"] - 2 * K / CAPACITY * 1e3) <= 1.0 + 1e-9, e
            assert math.isfinite(r["channel_snr_db"]) and r["distance_m"] > 0
        # airtime used = served symbols / capacity: M K / C per device
        assert s1[tx]["airtime_s"] == pytest.approx(IMAGES * K / CAPACITY, rel=1e-12)
        p = s1[tx]["emulated_latency_ms"]
        assert p["p50"] is not None and p["p99"] >= p["p50"] > 0
        assert metric(m1, "rkdsc_relay_emulated_latency_seconds_count", transmitter=tx, part="total") == IMAGES
        assert metric(m1, "rkdsc_relay_emulated_airtime_seconds_total", transmitter=tx) == \
            pytest.approx(IMAGES * K / CAPACITY)
    # the reference encode time (virtual clock): 4 images x 3.90 ms per batch, the same for both
    assert r1["far"][0]["emulated_ms"]["encode"] == pytest.approx(4 * 3.90, rel=1e-9)
    assert r1["near"][0]["emulated_ms"]["encode"] == pytest.approx(4 * 3.90, rel=1e-9)
    # all N M K symbols are on the air within N M K / C of the first frame being ready (+ one slot)
    last_sent = max(r["emulated_capture_s"] * 1e3 + sum(r["emulated_ms"][k] for k in
                    ("device_queue", "encode", "uplink_queue", "airtime")) for rs in r1.values() for r in rs)
    first_ready = min(r["emulated_capture_s"] * 1e3 + r["emulated_ms"]["device_queue"] + r["emulated_ms"]["encode"]
                      for rs in r1.values() for r in rs)
    assert last_sent - first_ready <= 2 * IMAGES * K / CAPACITY * 1e3 + 1.0 + 1e-6

    # the encoder's SNR is the base station's view feedback_delay_ms (5 ms) before its batch
    # started encoding, from the same seeded link model (records are in file order = run order)
    from rkdsc.common.medium.runtime import EdgeMedium
    view = EdgeMedium(load_config(path, env={}), "near", K, IMAGES)
    assert [r["encoder_snr_db"] for r in r1["near"]] == [view.encoder_snr_db(i) for i in range(IMAGES)]
    assert any(abs(r["encoder_snr_db"] - r["channel_snr_db"]) > 0.01 for r in r1["near"])  # stale knowledge

    # a second run with the same config and seeds: identical figures (the virtual clock)
    s2, r2, _ = run_once(path, bundle, tmp_path, "second")
    for tx in ("near", "far"):
        a = [(r["file"], r["emulated_ms"], r["channel_snr_db"], r["encoder_snr_db"], r["distance_m"],
              r["predicted_index"]) for r in r1[tx]]
        b = [(r["file"], r["emulated_ms"], r["channel_snr_db"], r["encoder_snr_db"], r["distance_m"],
              r["predicted_index"]) for r in r2[tx]]
        assert a == b
        assert s1[tx]["emulated_latency_ms"] == s2[tx]["emulated_latency_ms"]
        assert s1[tx]["accuracy"] == s2[tx]["accuracy"]


def test_without_medium_results_have_no_emulated_fields(services, bundle, sample_dir, tmp_path):
    tx = services.cfg.transmitters[0]
    summary = EdgeClient(services.cfg, tx, bundle=bundle, frame_id_base=0).run(sample_dir, tmp_path / "plain", limit=4)
    assert summary["ok"] and "emulated_latency_ms" not in summary
    assert services.relay.servicer.medium is None
    line = (tmp_path / "plain" / "results.jsonl").read_text().splitlines()[0]
    assert "emulated_ms" not in line


@pytest.mark.parametrize("scenario", sorted(p.name for p in (ROOT / "deploy" / "scenarios").glob("*.toml")))
def test_every_shipped_scenario_parses_and_lays_out(scenario):
    import json

    from rkdsc.common.bundle.manifest import task_specs
    from rkdsc.common.medium.emulator import MediumEmulator

    cfg = load_config(ROOT / "deploy" / "scenarios" / scenario, env={})
    assert cfg.medium is not None and cfg.medium.clock == "virtual"
    manifest = json.loads((Path(cfg.bundle.path) / "manifest.json").read_text())
    symbols = {t.name: t.symbols_per_image for t in task_specs(manifest)}
    images = {t.id: t.limit for t in cfg.transmitters}
    frames = MediumEmulator.from_config(cfg, symbols, images).run()
    assert len(frames) == sum(images.values())
    assert all(math.isfinite(f.emulated_ms()["total"]) for f in frames)


def test_a_shipped_scenario_runs_reduced_with_its_plot(tmp_path):
    # `rkdsc demo --config deploy/scenarios/walk-away.toml` with 6 images per device: separate
    # processes, the embedded bundle, every image answered, the plot and its table written
    from rkdsc.common.experiments.demo import run_demo

    out = tmp_path / "walk-away"
    summary = run_demo(ROOT / "deploy" / "scenarios" / "walk-away.toml", out, limit=6, quiet=True, timeout_s=300)
    assert summary["ok"]
    for row in summary["transmitters"]:
        assert row["answered"] == row["images"] == 6, row
        assert row["emulated_latency_ms"]["p99"] >= row["emulated_latency_ms"]["p50"] > 0
        assert row["airtime_s"] == pytest.approx(6 * row["symbols_per_image"] / 100_000.0)
    table = summary["scenario"]["table"]
    assert {r["transmitter"] for r in table} == {t["id"] for t in summary["transmitters"]}
    assert summary["scenario"]["images"] == 24 and (out / "scenario.json").exists()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (out / "scenario.png").stat().st_size > 10_000


def test_medium_relay_refuses_a_frame_without_its_run_size(tmp_path, bundle_dir, bundle, sample_dir):
    import grpc

    from tests.conftest import make_frame

    cfg = load_config(medium_toml(tmp_path, bundle_dir, sample_dir), env={})
    svc = Services(cfg, bundle)
    try:
        k = bundle.task("digits").symbols_per_image
        with pytest.raises(grpc.RpcError) as err:
            svc.relay_stub.TransmitOne(make_frame(k, "near", frame_id=1), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("images_total:"), err.value.details()
        # nothing changed: the frame id was not claimed (claiming it now raises if it had been),
        # no device was announced
        svc.relay.servicer.frame_ids.claim("near", 1)
        medium = svc.relay.servicer.medium.medium
        assert medium is None or medium.totals == {}
    finally:
        svc.close()
