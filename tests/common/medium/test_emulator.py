"""The virtual-clock emulation: exact repeats for a seed (whatever the host load), the latency
breakdown, the compute model, links from geometry, the config sections."""
from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rkdsc.common.channel.pathloss import snr_db_from_budget, umi_los_db
from rkdsc.common.config import ConfigError, load_config, parse_config
from rkdsc.common.medium import ComputeModel, Trajectory, VirtualClock, WallClock, propagation_delay_s
from rkdsc.common.medium.emulator import EMULATED_KEYS, MediumEmulator, build_links, summarize

REPO = Path(__file__).resolve().parents[3]


def topology(seed=0, scheduler="round-robin", **medium):
    txs = [{"id": f"e{i}", "seed": i + 1, "batch_size": 8,
            "medium": {"distance_m": 30.0 + 60.0 * i, "speed_mps": 1.5 if i == 0 else 0.0,
                       "device": "raspberry-pi-4b" if i % 2 else "host"}} for i in range(6)]
    m = {"scheduler": scheduler, "seed": seed, "capacity_symbols_per_s": 200_000.0, "slot_ms": 0.5,
         "reference_cpu_ms": 0.5, **medium}
    return parse_config({"bundle": {"path": "b"}, "medium": m, "transmitters": txs})


def run(cfg, images=40):
    em = MediumEmulator.from_config(cfg, {"digits": 51}, {t.id: images for t in cfg.transmitters})
    return em, em.run()


def figures(frames):
    return [(f.tx, f.index, tuple(f.emulated_ms().values()), f.snr_db, f.encoder_snr_db) for f in frames]


@pytest.mark.parametrize("scheduler", ["round-robin", "proportional-fair", "max-snr"])
def test_virtual_clock_runs_repeat_exactly_for_a_seed(scheduler):
    _, a = run(topology(seed=5, scheduler=scheduler))
    # the second run competes with a busy thread: the emulated figures must not move
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            sum(i * i for i in range(10_000))
    busy = threading.Thread(target=spin, daemon=True)
    busy.start()
    try:
        _, b = run(topology(seed=5, scheduler=scheduler))
    finally:
        stop.set()
        busy.join()
    assert figures(a) == figures(b)
    _, c = run(topology(seed=6, scheduler=scheduler))
    assert [f.snr_db for f in a] != [f.snr_db for f in c]  # the seed matters


def test_breakdown_keys_add_up_and_are_causal():
    em, frames = run(topology())
    assert len(frames) == 6 * 40
    for f in frames:
        ms = f.emulated_ms()
        assert tuple(ms) == EMULATED_KEYS
        assert sum(v for k, v in ms.items() if k != "total") == pytest.approx(ms["total"], abs=1e-9)
        assert all(v >= -1e-12 for v in ms.values()), ms
        assert ms["downlink"] == pytest.approx(1.0)  # default downlink_delay_ms
    summary = summarize(frames, em.airtime_used_s())
    for tx, s in summary.items():
        assert s["frames"] == 40
        assert s["emulated_latency_ms"]["p50"] <= s["emulated_latency_ms"]["p99"]
        assert s["airtime_s"] == pytest.approx(40 * 51 / 200_000.0)


def test_encode_time_is_the_reference_scaled_by_the_device_profile():
    # the paper's Table II: RKD-SC CIFAR10 3.90 ms on its CPU -> 106.21 ms on a Raspberry Pi 4 B
    pi = ComputeModel("raspberry-pi-4b")
    assert pi.encode_s(1) * 1e3 == pytest.approx(106.21, abs=0.01)
    assert pi.encode_s(2, measured_s=0.010) == pytest.approx(0.010 * 871.49 / 32)
    assert ComputeModel().encode_s(4) == pytest.approx(4 * 3.90e-3)
    assert ComputeModel("x", device_gflops=871.49 / 2).factor == pytest.approx(2.0)
    with pytest.raises(ValueError, match=r"device: expected one of host, raspberry-pi-4b"):
        ComputeModel("toaster")
    _, frames = run(topology())
    enc = {f.tx: f.emulated_ms()["encode"] for f in frames if f.index == 0}
    assert enc["e1"] == pytest.approx(enc["e0"] * 871.49 / 32)  # e1 is a Pi, e0 the host


def test_contention_turns_into_queueing():
    light = topology(capacity_symbols_per_s=2_000_000.0, slot_ms=0.5)
    heavy = topology(capacity_symbols_per_s=20_000.0, slot_ms=0.5)
    q = {}
    for name, cfg in (("light", light), ("heavy", heavy)):
        _, frames = run(cfg)
        q[name] = np.mean([f.emulated_ms()["uplink_queue"] + f.emulated_ms()["airtime"] for f in frames])
    assert q["heavy"] > 20 * q["light"]


def test_snr_from_geometry_and_stale_feedback():
    cfg = topology(shadowing=False, fading="none")
    links = build_links(cfg.medium, cfg.transmitters)
    e2 = links["e2"]  # static, 150 m
    expected = float(snr_db_from_budget(23.0, umi_los_db(150.0, 3.5), 1e6, 5.0))
    assert e2.snr_db(3.0) == pytest.approx(expected)
    walker = links["e0"]  # 30 m, walking away at 1.5 m/s
    assert walker.distance_2d_m(10.0) == pytest.approx(45.0)
    assert walker.snr_db(10.0) < walker.snr_db(0.0)
    assert walker.device_view(10.0) == pytest.approx(walker.snr_db(10.0 - 0.005))  # 5 ms feedback delay
    assert walker.propagation_s(0.0) == pytest.approx(math.hypot(30.0, 8.5) / 299_792_458.0)


def test_doppler_fading_follows_the_distance_moved():
    cfg = topology(shadowing=False)
    links = build_links(cfg.medium, cfg.transmitters)
    walker, static = links["e0"], links["e2"]
    # static: the same draw all along; walking: varies on the scale of a wavelength (8.6 cm)
    assert static.gain(0.0) == static.gain(50.0)
    g = [abs(walker.gain(t)) for t in np.arange(0.0, 1.0, 0.01)]
    assert np.std(20 * np.log10(g)) > 1.0


def test_trajectory_and_clocks():
    tr = Trajectory(((0.0, 0.0, 100.0), (10.0, 0.0, 200.0)), velocity_after=(3.0, 4.0))
    assert tr.distance_2d_m(5.0) == pytest.approx(150.0)
    assert tr.speed_m_per_s(5.0) == pytest.approx(10.0)
    assert tr.distance_moved_m(12.0) == pytest.approx(100.0 + 10.0)
    assert Trajectory.radial(50.0, 90.0, 2.0, 180.0).distance_2d_m(5.0) == pytest.approx(40.0)
    assert propagation_delay_s(299_792.458) == pytest.approx(1e-3)
    vc = VirtualClock()
    assert vc.advance_to(2.5) == 2.5 and vc.now_s() == 2.5
    with pytest.raises(ValueError, match="cannot go back"):
        vc.advance_to(1.0)
    ticks = iter([10.0, 10.5])
    assert WallClock(monotonic=lambda: next(ticks)).now_s() == pytest.approx(0.5)


def test_medium_is_optional_and_off_by_default():
    cfg = load_config(REPO / "deploy" / "topology.toml")
    assert cfg.medium is None and all(t.medium is None for t in cfg.transmitters)
    with pytest.raises(ValueError, match="no \\[medium\\] table"):
        MediumEmulator.from_config(cfg, {"digits": 51}, {})


@pytest.mark.parametrize("medium,match", [
    ({"scheduler": "fifo"}, r"medium.scheduler: expected one of round-robin, proportional-fair, max-snr, got 'fifo'"),
    ({"capacity_symbols_per_s": 1500.0, "slot_ms": 1.0}, r"medium.slot_ms: .*whole number of symbols"),
    ({"pathloss": "rma"}, r"medium.pathloss: expected one of umi, uma, log_distance"),
    ({"clock": "fast"}, r"medium.clock: expected one of virtual, wall"),
    ({"bogus": 1}, r"medium.bogus: unknown key 'bogus' \(known keys: clock, "),
])
def test_config_errors_name_the_field(medium, match):
    with pytest.raises(ConfigError, match=match):
        parse_config({"bundle": {"path": "b"}, "medium": medium})


def test_transmitter_medium_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"transmitters\[0\].medium.waypoints: expected times >= 0 and strictly"):
        parse_config({"bundle": {"path": "b"}, "transmitters": [
            {"id": "a", "medium": {"waypoints": [[1.0, 0.0, 0.0], [0.5, 1.0, 1.0]]}}]})
    with pytest.raises(ConfigError, match=r"transmitters\[0\].medium.speed_mps: expected a value >= 0"):
        parse_config({"bundle": {"path": "b"}, "transmitters": [{"id": "a", "medium": {"speed_mps": -1.0}}]})


def test_snr_trace_replaces_geometry(tmp_path):
    (tmp_path / "t.csv").write_text("time_s,e0\n0,20\n1,0\n")
    cfg = parse_config({"bundle": {"path": "b"}, "root": str(tmp_path),
                        "medium": {"snr_trace": "t.csv", "fading": "none"},
                        "transmitters": [{"id": "e0", "medium": {"distance_m": 10.0}}, {"id": "e1", "snr_db": 7.0}]})
    assert cfg.medium.snr_trace == tmp_path / "t.csv"
    links = build_links(cfg.medium, cfg.transmitters)
    assert links["e0"].snr_db(0.5) == pytest.approx(10.0)
    assert links["e1"].snr_db(0.5) == pytest.approx(7.0)  # no trace column, no geometry: its snr_db
