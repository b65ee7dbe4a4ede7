"""Uplink schedulers: who sends how many complex symbols in one slot of the shared medium.

Interface (``Scheduler``)::

    allocate(slot: Slot, backlog: Mapping[str, int], link_state: Mapping[str, float]) -> dict[str, int]

``slot`` has ``index``, ``start_s`` and ``symbols`` (the slot's capacity); ``backlog`` maps each
transmitter with data waiting to its queued symbols (> 0), in the cell's fixed transmitter
order (ties are broken by that order); ``link_state`` maps each of them to the
scheduler's view of its SNR in dB (Es/N0 per symbol). The answer gives each transmitter at most
its backlog, all together at most ``slot.symbols`` (the cell checks both). ``allocate`` is
called only for slots with a backlog, in increasing slot index. Add a scheduler by writing a
class with this method and registering it in ``SCHEDULERS`` (or passing an instance to the cell).

Shipped:

* ``round-robin``: symbol-level round robin, i.e. equal shares of the slot among the
  backlogged transmitters, water-filled (a share a transmitter cannot use goes to the others);
  the indivisible remainder goes one symbol each to transmitters in an order that rotates
  every slot, so long-run shares differ by at most one symbol per slot.
* ``proportional-fair``: the classic PF metric ``r_i / R_i`` with ``r_i = log2(1 + snr_i)``
  (bits per symbol) and ``R_i`` the exponentially averaged served rate (bits per slot, time
  constant ``time_constant_slots``, updated every slot, idle slots included); the slot goes to
  the highest metric first, what it cannot use to the next (work conserving). Never-served
  transmitters (``R_i = 0``) come first.
* ``max-snr``: highest SNR first, greedy fill (maximum throughput, no fairness).

``jain_index(x) = (sum x)^2 / (n sum x^2)`` is the fairness measure the tests use.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Protocol

__all__ = ["Slot", "Scheduler", "RoundRobin", "ProportionalFair", "MaxSnr", "SCHEDULERS", "make_scheduler",
           "spectral_efficiency", "jain_index"]


@dataclass(frozen=True)
class Slot:
    index: int        # slot number k; the slot spans [k * slot_s, (k + 1) * slot_s)
    start_s: float    # k * slot_s, emulated seconds
    symbols: int      # capacity of the slot in complex symbols


class Scheduler(Protocol):
    name: str

    def allocate(self, slot: Slot, backlog: Mapping[str, int], link_state: Mapping[str, float]) -> dict[str, int]:
        ...


def spectral_efficiency(snr_db: float) -> float:
    """Shannon ``log2(1 + 10^(snr_db / 10))`` bits per complex symbol."""
    return math.log2(1.0 + 10.0 ** (snr_db / 10.0))


def jain_index(values) -> float:
    vals = [float(v) for v in values]
    s2 = sum(v * v for v in vals)
    return (sum(vals) ** 2) / (len(vals) * s2) if vals and s2 > 0 else 1.0


def _greedy(order: list[str], backlog: Mapping[str, int], symbols: int) -> dict[str, int]:
    out, left = {}, symbols
    for tx in order:
        if left <= 0:
            break
        give = min(backlog[tx], left)
        out[tx] = give
        left -= give
    return out


class RoundRobin:
    name = "round-robin"

    def __init__(self) -> None:
        self._turn = 0

    def allocate(self, slot: Slot, backlog: Mapping[str, int], link_state: Mapping[str, float]) -> dict[str, int]:
        active = [tx for tx, b in backlog.items() if b > 0]
        alloc = {tx: 0 for tx in active}
        left = slot.symbols
        while left > 0 and active:
            share = left // len(active)
            if share == 0:  # fewer symbols than transmitters: one each, rotating start
                start = self._turn % len(active)
                for tx in (active[start:] + active[:start])[:left]:
                    alloc[tx] += 1
                left = 0
                break
            for tx in active:
                give = min(share, backlog[tx] - alloc[tx])
                alloc[tx] += give
                left -= give
            active = [tx for tx in active if alloc[tx] < backlog[tx]]
        self._turn += 1
        return alloc


class ProportionalFair:
    name = "proportional-fair"

    def __init__(self, time_constant_slots: float = 100.0) -> None:
        if not time_constant_slots >= 1:
            raise ValueError(f"time_constant_slots: expected a value >= 1, got {time_constant_slots!r}")
        self.tc = float(time_constant_slots)
        self.average: dict[str, float] = {}   # R_i, bits per slot
        self._last_slot: int | None = None

    def allocate(self, slot: Slot, backlog: Mapping[str, int], link_state: Mapping[str, float]) -> dict[str, int]:
        beta = 1.0 / self.tc
        if self._last_slot is not None and slot.index - self._last_slot > 1:  # idle slots: decay only
            decay = (1.0 - beta) ** (slot.index - self._last_slot - 1)
            self.average = {tx: r * decay for tx, r in self.average.items()}
        rates = {tx: spectral_efficiency(link_state[tx]) for tx in backlog}
        order = list(backlog)

        def key(item):
            pos, tx = item
            avg = self.average.get(tx, 0.0)
            metric = math.inf if avg <= 0 else rates[tx] / avg
            return (-metric, -rates[tx], pos)

        ranked = [tx for _, tx in sorted(enumerate(order), key=key)]
        alloc = _greedy(ranked, backlog, slot.symbols)
        for tx in set(self.average) | set(alloc):
            served = alloc.get(tx, 0) * rates.get(tx, 0.0)
            self.average[tx] = (1.0 - beta) * self.average.get(tx, 0.0) + beta * served
        self._last_slot = slot.index
        return alloc


class MaxSnr:
    name = "max-snr"

    def allocate(self, slot: Slot, backlog: Mapping[str, int], link_state: Mapping[str, float]) -> dict[str, int]:
        order = list(backlog)
        ranked = [tx for _, tx in sorted(enumerate(order), key=lambda it: (-link_state[it[1]], it[0]))]
        return _greedy(ranked, backlog, slot.symbols)


SCHEDULERS = {"round-robin": RoundRobin, "proportional-fair": ProportionalFair, "max-snr": MaxSnr}


def make_scheduler(name: str, **kw) -> Scheduler:
    try:
        cls = SCHEDULERS[name]
    except KeyError:
        raise ValueError(f"scheduler: expected one of {', '.join(SCHEDULERS)}, got {name!r}") from None
    return cls(**kw)
