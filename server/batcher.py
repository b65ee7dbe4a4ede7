"""Dynamic batching for the edge server: frames from every transmitter share one decode batch.

One ``DynamicBatcher`` per task owns one worker thread and a bounded queue:

* ``submit(x, snr_db)`` queues one frame's demapped symbols and returns a Future of
  ``Decoded``; ``submit_many(x [N, D], snr_db [N])`` queues N frames (a batched message) as
  one item and returns a Future of a list in row order of ``Decoded`` or, for the rows whose
  decode failed, the exception. When the frames would make more than ``queue_size`` waiting,
  the caller waits up to ``queue_wait_s`` for room, in line behind the callers already waiting
  (first come, first served: no stream overtakes another; backpressure: the service's reader of
  that stream stops reading, so HTTP/2 flow control holds the relay and the edges back), then both
  raise ``QueueFull`` (the service answers RESOURCE_EXHAUSTED); at once for ``queue_wait_s = 0``
  or an item larger than the queue. ``Draining`` once ``close`` was called, waiting callers too.
* The worker takes the oldest item and waits at most ``max_wait_s`` *from that item's
  arrival* for more, up to ``max_batch`` frames (not at all when ``others_may_send()`` says
  that no other sender is connected: a lone stream's next frame comes after its result); items already queued are taken at once
  (no waiting under backlog), whole (an item is never split; one larger than ``max_batch``
  is decoded alone, in chunks of ``max_batch``). A model failure fails the rows of its chunk only.
* ``close(drain=True)`` stops accepting, decodes everything already queued (without
  waiting for batches to fill), then stops the worker; ``drain=False`` fails the queued
  frames with ``Draining`` instead.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["DynamicBatcher", "Decoded", "QueueFull", "Draining"]


class QueueFull(Exception):
    """The batching queue holds queue_size frames already (-> RESOURCE_EXHAUSTED)."""


class Draining(Exception):
    """The batcher is shutting down and takes no new frames (-> UNAVAILABLE)."""


@dataclass
class Decoded:
    logits: np.ndarray   # [C] float32
    queue_s: float       # arrival -> start of the decode batch
    compute_s: float     # decode time of the whole batch
    batch_size: int      # frames in that batch


@dataclass
class _Item:
    x: np.ndarray        # [N, D] float32 demapped symbols (N = 1 for submit)
    snr_db: np.ndarray   # [N] float32
    enqueued: float      # time.monotonic() at submit (a wait for room counts as queue time)
    future: Future
    many: bool           # submit_many: the future's result is list[Decoded]

    @property
    def rows(self) -> int:
        return self.x.shape[0]


DecodeFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # x [B, D], snr [B] -> logits [B, C]


class DynamicBatcher:
    def __init__(self, decode_fn: DecodeFn, max_batch: int = 32, max_wait_s: float = 0.002,
                 queue_size: int = 1024, name: str = "batcher",
                 on_batch: Callable[[int, float], None] | None = None,
                 others_may_send: Callable[[], bool] | None = None, queue_wait_s: float = 0.0):
        if max_batch < 1 or queue_size < 1 or max_wait_s < 0 or queue_wait_s < 0:
            raise ValueError(f"{name}: expected max_batch >= 1, queue_size >= 1, max_wait_s >= 0, "
                             f"queue_wait_s >= 0, got {max_batch}, {queue_size}, {max_wait_s}, {queue_wait_s}")
        self.decode_fn = decode_fn
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_s)
        self.queue_size = int(queue_size)
        self.queue_wait_s = float(queue_wait_s)  # longest a submit waits for room in a full queue
        self.name = name
        self.on_batch = on_batch            # (batch_size, compute_s) after every batch
        self.others_may_send = others_may_send  # False: nobody else can add to a batch, do not wait
        self._items: deque[_Item] = deque()
        lock = threading.RLock()
        self._cv = threading.Condition(lock)    # the worker waits here for items
        self._room = threading.Condition(lock)  # submitters wait here for room in a full queue
        self._line: deque[object] = deque()     # their tickets, oldest first (first come, first served)
        self._closing = False
        self._busy = 0                      # frames taken by the worker, not yet answered
        self._waiting = 0                   # frames queued (rows of the queued items)
        self._thread = threading.Thread(target=self._run, name=f"{name}-worker", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ API
    def submit(self, x: np.ndarray, snr_db: float) -> Future:
        """One frame: x [D] -> Future[Decoded]."""
        x = np.asarray(x, dtype=np.float32)[None, :]                      # [1, D]
        return self._put(_Item(x, np.asarray([snr_db], np.float32), time.monotonic(), Future(), many=False))

    def submit_many(self, x: np.ndarray, snr_db: np.ndarray | float) -> Future:
        """N frames of one message: x [N, D], snr_db [N] (or one value) -> Future[list[Decoded]]."""
        x = np.asarray(x, dtype=np.float32)                               # [N, D]
        snr = np.broadcast_to(np.asarray(snr_db, np.float32), (x.shape[0],)).copy()  # [N]
        return self._put(_Item(x, snr, time.monotonic(), Future(), many=True))

    def _put(self, item: _Item) -> Future:
        with self._cv:
            if self._closing:
                raise self._draining()
            if self._line or self._waiting + item.rows > self.queue_size:
                self._wait_for_room(item.rows)  # in line behind the submitters already waiting
            self._items.append(item)
            self._waiting += item.rows
            self._cv.notify()
        return item.future

    def _wait_for_room(self, rows: int) -> None:
        """(Lock held.) Wait in line, first come first served, until this submitter is at the head and
        its rows fit; QueueFull after ``queue_wait_s`` (at once when that is 0 or ``rows`` exceeds the
        whole queue), Draining when the batcher closes meanwhile."""
        def full(waited: str = "") -> QueueFull:
            return QueueFull(f"{self.name}: decode queue is full ({self._waiting} frames waiting, "
                             f"queue_size {self.queue_size}{waited})")

        if rows > self.queue_size or self.queue_wait_s <= 0:
            raise full()
        ticket = object()
        self._line.append(ticket)
        deadline = time.monotonic() + self.queue_wait_s
        try:
            while not (self._line[0] is ticket and self._waiting + rows <= self.queue_size):
                if self._closing:
                    raise self._draining()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise full(f"; waited {self.queue_wait_s:g} s for room")
                self._room.wait(remaining)
        finally:
            self._line.remove(ticket)
            self._room.notify_all()  # the next in line may fit now

    def _draining(self) -> Draining:
        return Draining(f"{self.name}: the server is draining and accepts no new frames")

    @property
    def pending(self) -> int:
        """Frames queued or being decoded."""
        with self._cv:
            return self._waiting + self._busy

    def close(self, drain: bool = True, timeout: float | None = None) -> bool:
        """Stop accepting; decode (drain) or fail what is queued; True when the worker ended."""
        with self._cv:
            self._closing = True
            dropped = [] if drain else list(self._items)
            if not drain:
                self._items.clear()
                self._waiting = 0
            self._cv.notify_all()
            self._room.notify_all()  # submitters waiting for room: Draining
        for item in dropped:
            item.future.set_exception(Draining(f"{self.name}: the server stopped before decoding this frame"))
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ------------------------------------------------------------------ worker
    def _others_may_send(self) -> bool:
        if self.others_may_send is None:
            return True
        try:
            return bool(self.others_may_send())
        except Exception:  # noqa: BLE001 - the worker must never die of it: wait as configured
            return True

    def _take_batch(self) -> list[_Item] | None:
        with self._cv:
            while not self._items and not self._closing:
                self._cv.wait()
            if not self._items:
                return None  # closing and nothing left
            batch = [self._items.popleft()]
            rows = batch[0].rows
            wait = self.max_wait_s if self._others_may_send() else 0.0
            deadline = batch[0].enqueued + wait
            while rows < self.max_batch:
                if self._items:
                    if rows + self._items[0].rows > self.max_batch:
                        break  # items are never split: the next one starts the next batch
                    batch.append(self._items.popleft())
                    rows += batch[-1].rows
                    continue
                remaining = deadline - time.monotonic()
                if self._closing or remaining <= 0:
                    break
                self._cv.wait(remaining)
            self._waiting -= rows
            self._busy = rows
            self._room.notify_all()  # room for submitters waiting on a full queue
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            try:
                self._decode_batch(batch)
            except Exception as exc:  # noqa: BLE001 - a bug fails this batch, not the worker
                for it in batch:
                    if not it.future.done():
                        it.future.set_exception(exc)
            finally:
                with self._cv:
                    self._busy = 0

    def _decode_batch(self, batch: list[_Item]) -> None:
        """Decode the batch in chunks of at most max_batch rows (one chunk unless a single item is
        larger); a model failure fails the rows of its chunk: their item's future (``submit``),
        or their entries of the result list (``submit_many``: the exception in place of a Decoded)."""
        start = time.monotonic()
        if len(batch) == 1:
            x, snr = batch[0].x, batch[0].snr_db                            # [B, D], [B]
        else:
            x = np.concatenate([it.x for it in batch])                      # [B, D]
            snr = np.concatenate([it.snr_db for it in batch])               # [B]
        n = x.shape[0]
        outs: list = [None] * n                                             # Decoded or the exception
        for c in range(0, n, self.max_batch):
            t0 = time.monotonic()
            try:
                logits = self.decode_fn(x[c:c + self.max_batch], snr[c:c + self.max_batch])  # [b, C]
            except Exception as exc:  # noqa: BLE001 - the model failed for these rows only
                outs[c:c + self.max_batch] = [exc] * min(self.max_batch, n - c)
                continue
            compute_s = time.monotonic() - t0
            b = logits.shape[0]
            if self.on_batch is not None:
                self.on_batch(b, compute_s)
            outs[c:c + b] = [(logits, i, compute_s, b) for i in range(b)]
        row = 0
        for it in batch:
            mine = []
            for o in outs[row:row + it.rows]:
                mine.append(o if isinstance(o, BaseException) else
                            Decoded(o[0][o[1]], start - it.enqueued, o[2], o[3]))
            row += it.rows
            if it.many:
                it.future.set_result(mine)
            elif isinstance(mine[0], BaseException):
                it.future.set_exception(mine[0])
            else:
                it.future.set_result(mine[0])
