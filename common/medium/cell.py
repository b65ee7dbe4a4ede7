"""The cell's uplink: one shared medium, divided into slots, shared by a scheduler.

Contract:

* Capacity ``capacity_symbols_per_s`` complex symbols per second (one symbol per resource
  element), slot duration ``slot_s``; a slot carries ``symbols_per_slot = capacity * slot_s``
  symbols, which must be a whole number >= 1. Slot ``k`` spans ``[k slot_s, (k + 1) slot_s)``.
* ``submit(tx, key, symbols, arrival_s)`` queues a frame (an image's K symbols) of transmitter
  ``tx``. A frame is eligible from the first slot that starts at or after its arrival; each
  transmitter's frames leave in FIFO order; a frame may span several slots, and several frames
  may share a slot.
* Each slot with a backlog, the scheduler (``rkdsc.common.medium.schedulers``) is asked for an
  allocation given the backlog and ``link_view(tx, slot_start_s)`` of each backlogged
  transmitter (the scheduler's view of its SNR in dB; 0 dB when no view is given).
* ``advance(until_s)`` runs every slot that starts before ``until_s``; ``run()`` runs until every
  queued frame is sent. Both return the frames finished, as ``UplinkRecord`` s:
  ``queue_s = first_slot_start - arrival`` (waiting for the medium, contention included) and
  ``airtime_s = done - first_slot_start`` (from the first to the end of the last slot that
  carried its symbols; at full capacity and alone ``ceil``-ed to slots of ``K / capacity``).
* Deterministic: the same submissions (whatever their call order, as long as no frame is
  submitted for a time already simulated: that is a ValueError) give the same records.
* ``served_symbols[tx]`` / ``served_bits[tx]`` (Shannon bits at the view's SNR) count use of the
  medium; ``airtime_used_s(tx) = served_symbols / capacity``.
"""
from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from typing import Callable, Hashable, Iterable

from rkdsc.common.medium.schedulers import Scheduler, Slot, make_scheduler, spectral_efficiency

__all__ = ["Cell", "UplinkRecord"]

_EPS = 1e-9


@dataclass
class UplinkRecord:
    tx: str
    key: Hashable
    symbols: int
    arrival_s: float
    first_slot_start_s: float = math.nan
    done_s: float = math.nan
    slots: int = 0           # slots that carried some of its symbols

    @property
    def queue_s(self) -> float:
        return self.first_slot_start_s - self.arrival_s

    @property
    def airtime_s(self) -> float:
        return self.done_s - self.first_slot_start_s


@dataclass
class _Queued:
    record: UplinkRecord
    left: int


class Cell:
    def __init__(self, capacity_symbols_per_s: float, slot_s: float, scheduler: Scheduler | str,
                 transmitters: Iterable[str], link_view: Callable[[str, float], float] | None = None):
        if not capacity_symbols_per_s > 0:
            raise ValueError(f"capacity_symbols_per_s: expected a value > 0, got {capacity_symbols_per_s!r}")
        if not slot_s > 0:
            raise ValueError(f"slot_s: expected a value > 0, got {slot_s!r}")
        per_slot = capacity_symbols_per_s * slot_s
        if per_slot < 1 - _EPS or abs(per_slot - round(per_slot)) > 1e-6 * max(1.0, per_slot):
            raise ValueError(f"slot: capacity_symbols_per_s * slot_s must be a whole number of symbols >= 1, "
                             f"got {capacity_symbols_per_s!r} * {slot_s!r} = {per_slot:g}")
        self.capacity = float(capacity_symbols_per_s)
        self.slot_s = float(slot_s)
        self.symbols_per_slot = int(round(per_slot))
        self.scheduler = make_scheduler(scheduler) if isinstance(scheduler, str) else scheduler
        self.order = list(dict.fromkeys(transmitters))
        self.link_view = link_view
        self.queues: dict[str, deque[_Queued]] = {tx: deque() for tx in self.order}
        self.backlog: dict[str, int] = {tx: 0 for tx in self.order}
        self.served_symbols: dict[str, int] = {tx: 0 for tx in self.order}
        self.served_bits: dict[str, float] = {tx: 0.0 for tx in self.order}
        self.next_slot = 0            # first slot not yet simulated
        self._pending: list = []      # heap (eligible slot, arrival, seq, record)
        self._seq = 0
        self.busy_slots = 0

    # ---------------------------------------------------------------- input
    def first_slot_at_or_after(self, t_s: float) -> int:
        return max(0, math.ceil(t_s / self.slot_s - _EPS))

    def submit(self, tx: str, key: Hashable, symbols: int, arrival_s: float) -> UplinkRecord:
        if tx not in self.queues:
            raise ValueError(f"tx: unknown transmitter {tx!r} (known: {', '.join(self.order)})")
        if not isinstance(symbols, int) or symbols < 1:
            raise ValueError(f"symbols: expected an integer >= 1, got {symbols!r}")
        if not math.isfinite(arrival_s) or arrival_s < 0:
            raise ValueError(f"arrival_s: expected a finite time >= 0, got {arrival_s!r}")
        slot = self.first_slot_at_or_after(arrival_s)
        if slot < self.next_slot:
            raise ValueError(f"arrival_s: {arrival_s!r} s is before the cell's simulated time "
                             f"({self.next_slot * self.slot_s:g} s); submit frames in time order")
        rec = UplinkRecord(tx, key, symbols, float(arrival_s))
        heapq.heappush(self._pending, (slot, rec.arrival_s, self._seq, rec))
        self._seq += 1
        return rec

    # ---------------------------------------------------------------- simulation
    def _admit(self, slot: int) -> None:
        while self._pending and self._pending[0][0] <= slot:
            _, _, _, rec = heapq.heappop(self._pending)
            self.queues[rec.tx].append(_Queued(rec, rec.symbols))
            self.backlog[rec.tx] += rec.symbols

    def _has_backlog(self) -> bool:
        return any(self.backlog.values())

    def _run_slot(self, k: int, done: list[UplinkRecord]) -> None:
        start = k * self.slot_s
        backlog = {tx: b for tx, b in self.backlog.items() if b > 0}
        view = {tx: (self.link_view(tx, start) if self.link_view else 0.0) for tx in backlog}
        alloc = self.scheduler.allocate(Slot(k, start, self.symbols_per_slot), backlog, view)
        total = 0
        for tx, n in alloc.items():
            if n < 0 or n > backlog.get(tx, 0) or int(n) != n:
                raise ValueError(f"scheduler {getattr(self.scheduler, 'name', self.scheduler)!r}: gave {tx!r} "
                                 f"{n!r} symbols in slot {k}, its backlog is {backlog.get(tx, 0)}")
            total += n
        if total > self.symbols_per_slot:
            raise ValueError(f"scheduler {getattr(self.scheduler, 'name', self.scheduler)!r}: gave {total} symbols "
                             f"in slot {k}, the slot holds {self.symbols_per_slot}")
        if total:
            self.busy_slots += 1
        end = start + self.slot_s
        for tx in self.order:
            n = int(alloc.get(tx, 0))
            if not n:
                continue
            self.backlog[tx] -= n
            self.served_symbols[tx] += n
            self.served_bits[tx] += n * spectral_efficiency(view[tx])
            q = self.queues[tx]
            while n > 0:
                head = q[0]
                if head.record.slots == 0:
                    head.record.first_slot_start_s = start
                head.record.slots += 1
                used = min(n, head.left)
                head.left -= used
                n -= used
                if head.left == 0:
                    head.record.done_s = end
                    done.append(head.record)
                    q.popleft()

    def advance(self, until_s: float) -> list[UplinkRecord]:
        """Run the slots starting before ``until_s``; the frames finished in them."""
        done: list[UplinkRecord] = []
        last = math.ceil(until_s / self.slot_s - _EPS)  # slots k < last start before until_s
        while self.next_slot < last:
            self._admit(self.next_slot)
            if not self._has_backlog():
                if not self._pending:
                    self.next_slot = last
                    break
                self.next_slot = min(last, self._pending[0][0])  # jump over idle slots
                continue
            self._run_slot(self.next_slot, done)
            self.next_slot += 1
        return done

    def run(self) -> list[UplinkRecord]:
        """Run until every submitted frame is sent."""
        done: list[UplinkRecord] = []
        while self._pending or self._has_backlog():
            self._admit(self.next_slot)
            if not self._has_backlog():
                self.next_slot = self._pending[0][0]
                continue
            self._run_slot(self.next_slot, done)
            self.next_slot += 1
        return done

    @property
    def now_s(self) -> float:
        return self.next_slot * self.slot_s

    def airtime_used_s(self, tx: str) -> float:
        return self.served_symbols[tx] / self.capacity
