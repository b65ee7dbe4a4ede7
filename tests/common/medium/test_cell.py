"""The shared uplink: airtime arithmetic, slots, FIFO, scheduler interface and the schedulers'
fairness / throughput orderings on a constructed case (deterministic, seeded)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from rkdsc.common.medium import Cell, MaxSnr, ProportionalFair, RoundRobin, jain_index, spectral_efficiency


def backlogged_run(n_tx, m_images, k, capacity, slot_s, scheduler=None):
    txs = [f"tx{i}" for i in range(n_tx)]
    cell = Cell(capacity, slot_s, scheduler or RoundRobin(), txs)
    for i in range(m_images):
        for tx in txs:
            cell.submit(tx, (tx, i), k, 0.0)
    return cell, cell.run()


@pytest.mark.parametrize("n_tx,m_images,k,capacity,slot_s", [
    (4, 5, 51, 100_000.0, 1e-4),    # 10 symbols per slot: K spans ~5 slots per device share
    (3, 7, 51, 70_000.0, 1e-4),     # 7 symbols per slot: N*M*K not a multiple of the slot
    (20, 3, 205, 1e6, 1e-3),        # 1000 symbols per slot, many devices share each slot
    (1, 4, 230, 1e6, 1e-4),         # one device: no contention
])
def test_round_robin_airtime_is_n_m_k_over_c_within_one_slot(n_tx, m_images, k, capacity, slot_s):
    cell, recs = backlogged_run(n_tx, m_images, k, capacity, slot_s)
    assert len(recs) == n_tx * m_images
    makespan = max(r.done_s for r in recs)
    ideal = n_tx * m_images * k / capacity
    # work conserving: only the last slot may be partly empty
    assert ideal - 1e-12 <= makespan <= ideal + slot_s + 1e-12, (makespan, ideal)
    # every image: queue + airtime = its finish time; its airtime under RR ~ N*K/C (its share of
    # each slot is 1/N), within one slot at each end
    share = n_tx * k / capacity
    for r in recs:
        assert r.queue_s >= 0 and r.airtime_s > 0
        assert abs(r.airtime_s - share) <= 2 * slot_s + 1e-12, (r, share)
    # the medium's use is exactly the symbols sent
    assert sum(cell.served_symbols.values()) == n_tx * m_images * k
    for tx in cell.order:
        assert cell.airtime_used_s(tx) == pytest.approx(m_images * k / capacity)


def test_frame_alone_takes_ceil_k_over_slot_symbols_slots():
    cell = Cell(1e6, 1e-4, "round-robin", ["a"])  # 100 symbols per slot
    cell.submit("a", 0, 251, 0.000_05)          # arrives mid-slot: waits for slot 1
    (r,) = cell.run()
    assert r.first_slot_start_s == pytest.approx(1e-4)
    assert r.queue_s == pytest.approx(0.5e-4)
    assert r.slots == 3 and r.airtime_s == pytest.approx(3e-4)


def test_fifo_per_transmitter_and_idle_gaps_are_skipped():
    cell = Cell(1e6, 1e-3, "round-robin", ["a", "b"])  # 1000 symbols per slot
    cell.submit("a", "a0", 1500, 0.0)
    cell.submit("a", "a1", 10, 0.0)
    cell.submit("b", "b0", 10, 5.0)                     # arrives after a long idle time
    recs = {r.key: r for r in cell.run()}
    assert recs["a0"].done_s == pytest.approx(2e-3) and recs["a1"].done_s == pytest.approx(2e-3)
    assert recs["a1"].first_slot_start_s == pytest.approx(1e-3)  # behind a0 in a's queue
    assert recs["b0"].first_slot_start_s == pytest.approx(5.0) and recs["b0"].queue_s == pytest.approx(0.0)


def test_advance_is_incremental_and_refuses_the_past():
    cell = Cell(1e6, 1e-3, "round-robin", ["a"])
    cell.submit("a", 0, 1000, 0.0)
    assert [r.key for r in cell.advance(0.0005)] == [0]  # slot 0 starts before 0.5 ms
    assert cell.now_s == pytest.approx(1e-3)
    with pytest.raises(ValueError, match=r"arrival_s: .* before the cell's simulated time"):
        cell.submit("a", 1, 10, 0.0)
    with pytest.raises(ValueError, match=r"tx: unknown transmitter 'z'"):
        cell.submit("z", 1, 10, 2.0)


def test_slot_must_hold_a_whole_number_of_symbols():
    with pytest.raises(ValueError, match=r"whole number of symbols >= 1.*0\.5"):
        Cell(1000.0, 0.0005, "round-robin", ["a"])
    with pytest.raises(ValueError, match=r"scheduler: expected one of round-robin"):
        Cell(1e6, 1e-3, "fifo", ["a"])


def test_a_user_scheduler_plugs_in_and_a_bad_one_is_named():
    class LowestIdFirst:
        name = "lowest-id"

        def allocate(self, slot, backlog, link_state):
            first = min(backlog)
            return {first: min(backlog[first], slot.symbols)}

    cell = Cell(1e6, 1e-3, LowestIdFirst(), ["b", "a"])
    cell.submit("b", "b", 1000, 0.0)
    cell.submit("a", "a", 1000, 0.0)
    recs = {r.key: r for r in cell.run()}
    assert recs["a"].done_s < recs["b"].done_s

    class Greedy:
        name = "greedy"

        def allocate(self, slot, backlog, link_state):
            return {tx: b for tx, b in backlog.items()}

    cell = Cell(1e6, 1e-3, Greedy(), ["a", "b"])
    cell.submit("a", 0, 800, 0.0)
    cell.submit("b", 0, 800, 0.0)
    with pytest.raises(ValueError, match=r"scheduler 'greedy': gave 1600 symbols in slot 0, the slot holds 1000"):
        cell.run()


# --------------------------------------------------------------------------- orderings

MEAN_SNR_DB = {"a": 0.0, "b": 5.0, "c": 10.0, "d": 20.0}
SLOTS = 3000
SYMBOLS_PER_SLOT = 100


def fading_views(seed=7):
    """Per (transmitter, slot) SNR: the mean plus i.i.d. Rayleigh block fading (|h|^2 ~ Exp(1))."""
    rng = np.random.default_rng(seed)
    g = rng.exponential(1.0, size=(len(MEAN_SNR_DB), SLOTS))
    return {tx: MEAN_SNR_DB[tx] + 10 * np.log10(g[i]) for i, tx in enumerate(MEAN_SNR_DB)}


def served(scheduler):
    views = fading_views()
    slot_s = 1e-3
    cell = Cell(SYMBOLS_PER_SLOT / slot_s, slot_s, scheduler, list(MEAN_SNR_DB),
                link_view=lambda tx, t: float(views[tx][int(round(t / slot_s))]))
    for tx in MEAN_SNR_DB:  # every transmitter always backlogged over the whole run
        cell.submit(tx, tx, SLOTS * SYMBOLS_PER_SLOT, 0.0)
    cell.advance(SLOTS * slot_s)
    assert sum(cell.served_symbols.values()) == SLOTS * SYMBOLS_PER_SLOT  # all work conserving
    return cell.served_symbols, sum(cell.served_bits.values())


def test_fairness_and_throughput_orderings_rr_pf_maxsnr():
    """Jain's index of the symbols each transmitter got: RR >= PF >= max-SNR; throughput (Shannon
    bits at the scheduler's SNR): max-SNR >= PF >= RR. With 4 always-backlogged transmitters at
    0/5/10/20 dB mean and i.i.d. Rayleigh fading per slot over 3000 slots the orderings are
    strict by wide margins (measured for this seed: Jain 1.000 / 0.990 / 0.305; bits 0.853 M /
    1.237 M / 1.797 M: PF gains 45% over RR by riding fading peaks), so the deterministic seeded
    case would catch a swapped metric."""
    rr_sym, rr_bits = served(RoundRobin())
    pf_sym, pf_bits = served(ProportionalFair(time_constant_slots=100))
    mx_sym, mx_bits = served(MaxSnr())
    j_rr, j_pf, j_mx = (jain_index(s.values()) for s in (rr_sym, pf_sym, mx_sym))
    assert j_rr >= 0.9999               # symbol-level round robin: equal shares
    assert j_rr >= j_pf >= j_mx
    assert j_pf > 0.85 and j_mx < 0.6
    assert mx_bits >= pf_bits >= rr_bits
    assert pf_bits > 1.05 * rr_bits and mx_bits > 1.05 * pf_bits


def test_jain_index_and_spectral_efficiency():
    assert jain_index([1, 1, 1, 1]) == pytest.approx(1.0)
    assert jain_index([1, 0, 0, 0]) == pytest.approx(0.25)
    assert spectral_efficiency(0.0) == pytest.approx(1.0)
    assert spectral_efficiency(10 * math.log10(3)) == pytest.approx(2.0)
