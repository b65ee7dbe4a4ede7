"""The scenario plot and its table, on records made by the emulator (no services)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rkdsc.common.config import parse_config
from rkdsc.common.experiments.scenario_plot import plot_scenario, read_records, scenario_table
from rkdsc.common.medium.emulator import MediumEmulator


def records():
    txs = [{"id": f"e{i}", "seed": i, "batch_size": 1,
            "medium": {"distance_m": 30.0 + 100 * i, "speed_mps": 1.0, "frame_interval_ms": 100.0}} for i in range(3)]
    cfg = parse_config({"bundle": {"path": "b"}, "medium": {"los": False}, "transmitters": txs})
    frames = MediumEmulator.from_config(cfg, {"digits": 26}, {t.id: 30 for t in cfg.transmitters}).run()
    rng = np.random.default_rng(0)
    return [{"transmitter": f.tx, "correct": bool(rng.random() < 1 / (1 + np.exp(-f.snr_db / 4))),
             "channel_snr_db": f.snr_db, "distance_m": f.distance_m, "emulated_capture_s": f.captured_s,
             "emulated_ms": f.emulated_ms()} for f in frames]


def test_table_and_plot(tmp_path):
    recs = records()
    table = scenario_table(recs)
    assert [r["transmitter"] for r in table] == ["e0", "e1", "e2"]  # sorted by distance
    assert table[0]["snr_db"] > table[2]["snr_db"]
    for r in table:
        assert r["images"] == 30 and r["emulated_p50_ms"] <= r["emulated_p99_ms"]
    pytest.importorskip("matplotlib")
    png = plot_scenario(recs, tmp_path / "s.png", title="test")
    assert png is not None and png.stat().st_size > 10_000


def test_read_records_skips_rows_without_the_medium_fields(tmp_path):
    d = tmp_path / "edges" / "e0"
    d.mkdir(parents=True)
    good = records()[0]
    (d / "results.jsonl").write_text(json.dumps(good) + "\n" + json.dumps({"transmitter": "e0", "correct": True}) + "\n")
    assert read_records(tmp_path) == [good]
