"""The medium inside the services: the relay's layout whatever the arrival order, the edge's
encoder SNR = the scheduler's view delayed, the channel with a given gain."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest

import rkdsc.common.channel as ch
from rkdsc.common.config import parse_config
from rkdsc.common.medium.emulator import MediumEmulator
from rkdsc.common.medium.runtime import EdgeMedium, MediumNotReady, RelayMedium, apply_link


def cfg():
    txs = [{"id": f"e{i}", "seed": i, "batch_size": 4, "medium": {"distance_m": 40.0 + 80 * i, "speed_mps": 3.0}}
           for i in range(3)]
    return parse_config({"bundle": {"path": "b"}, "medium": {"capacity_symbols_per_s": 100_000.0, "slot_ms": 1.0},
                         "transmitters": txs})


def test_relay_layout_does_not_depend_on_the_arrival_order():
    totals = {"e0": 9, "e1": 5, "e2": 7}
    outs = []
    for order in (["e0", "e1", "e2"], ["e2", "e0", "e1"]):
        rm = RelayMedium(cfg(), {"digits": 51})
        threads = [threading.Thread(target=rm.announce, args=(tx, totals[tx])) for tx in order]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        outs.append({(tx, i): rm.timing(tx, i).emulated_ms() for tx in totals for i in range(totals[tx])})
    assert outs[0] == outs[1]
    ref = MediumEmulator.from_config(cfg(), {"digits": 51}, totals).run()
    assert {(f.tx, f.index): f.emulated_ms() for f in ref} == outs[0]


def test_relay_waits_for_every_device_then_times_out_on_the_missing():
    clock = [0.0]
    rm = RelayMedium(cfg(), {"digits": 51}, announce_timeout_s=10.0, monotonic=lambda: clock[0])
    rm.announce("e0", 3)
    assert not rm.wait_ready(timeout_s=0.0)
    clock[0] = 11.0  # the other two never came
    f = rm.timing("e0", 2)
    assert f.tx == "e0" and rm.ready
    with pytest.raises(MediumNotReady, match=r"image_index: 3 is beyond the 3 image\(s\) 'e0' announced"):
        rm.timing("e0", 3)
    with pytest.raises(MediumNotReady, match="announced itself after the run was laid out"):
        rm.announce("e1", 4)
    with pytest.raises(MediumNotReady, match=r"transmitter_id: 'x' is not in the topology"):
        rm.announce("x", 4)
    assert rm.summary()["e0"]["frames"] == 3


def test_edge_encoder_snr_is_the_relays_view_delayed_by_the_feedback_path():
    c = cfg()
    rm = RelayMedium(c, {"digits": 51})
    for tx, n in (("e0", 10), ("e1", 10), ("e2", 10)):
        rm.announce(tx, n)
    edge = EdgeMedium(c, "e1", 51, 10)
    for i in range(10):
        f = rm.timing("e1", i)
        assert edge.encoder_snr_db(i) == pytest.approx(f.encoder_snr_db)
        assert f.encoder_snr_db == pytest.approx(rm.links["e1"].snr_db(max(0.0, f.encode_start_s - 0.005)))
    with pytest.raises(IndexError, match="image_index: 10 outside 0..9"):
        edge.encoder_snr_db(10)


def test_apply_link_conventions():
    # 64 x 1024 symbols: the noise power estimate has relative SE 0.4%; tolerance 3%
    rng = np.random.default_rng(0)
    z = ch.normalize_power((rng.standard_normal((64, 1024)) + 1j * rng.standard_normal((64, 1024))).astype(np.complex64))
    h = 0.6 * np.exp(1j * 0.7)
    y, hh, nv = apply_link(z, h, 10.0, np.random.default_rng(1))
    assert y.dtype == np.complex64 and hh.shape == (64, 1) and nv.shape == (64,)
    assert nv[0] == pytest.approx(0.1)
    # undo the MMSE scaling to get the raw noise back
    g = abs(h) ** 2
    raw = y * (g + nv[0]) / np.conj(h) - h * z
    assert abs(np.mean(np.abs(raw) ** 2) / 0.1 - 1) < 0.03
    # same rng seed, same noise: repeatable
    y2, _, _ = apply_link(z, h, 10.0, np.random.default_rng(1))
    np.testing.assert_array_equal(y, y2)
