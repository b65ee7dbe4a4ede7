"""Dynamic batching for the edge server: frames from every transmitter share one decode batch.

One ``DynamicBatcher`` per task owns one worker thread and a bounded queue:

* ``submit(x, snr_db)`` queues one frame's demapped symbols and returns a Future of
  ``Decoded``; it raises ``QueueFull`` when ``queue_size`` frames are already waiting
  (the service answers RESOURCE_EXHAUSTED) and ``Draining`` once ``close`` was called.
* The worker takes the oldest frame and waits at most ``max_wait_s`` *from that frame's
  arrival* for more, up to ``max_batch`` frames; frames already queued are taken at once
  (no waiting under backlog). The batch is decoded in one call.
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
    x: np.ndarray        # [D] float32 demapped symbols
    snr_db: float
    enqueued: float      # time.monotonic() at submit
    future: Future


DecodeFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # x [B, D], snr [B] -> logits [B, C]


class DynamicBatcher:
    def __init__(self, decode_fn: DecodeFn, max_batch: int = 32, max_wait_s: float = 0.002,
                 queue_size: int = 1024, name: str = "batcher",
                 on_batch: Callable[[int, float], None] | None = None):
        if max_batch < 1 or queue_size < 1 or max_wait_s < 0:
            raise ValueError(f"{name}: expected max_batch >= 1, queue_size >= 1, max_wait_s >= 0, "
                             f"got {max_batch}, {queue_size}, {max_wait_s}")
        self.decode_fn = decode_fn
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_s)
        self.queue_size = int(queue_size)
        self.name = name
        self.on_batch = on_batch            # (batch_size, compute_s) after every batch
        self._items: deque[_Item] = deque()
        self._cv = threading.Condition()
        self._closing = False
        self._busy = 0                      # frames taken by the worker, not yet answered
        self._thread = threading.Thread(target=self._run, name=f"{name}-worker", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ API
    def submit(self, x: np.ndarray, snr_db: float) -> Future:
        fut: Future = Future()
        item = _Item(np.asarray(x, dtype=np.float32), float(snr_db), time.monotonic(), fut)
        with self._cv:
            if self._closing:
                raise Draining(f"{self.name}: the server is draining and accepts no new frames")
            if len(self._items) >= self.queue_size:
                raise QueueFull(f"{self.name}: decode queue is full ({self.queue_size} frames waiting)")
            self._items.append(item)
            self._cv.notify()
        return fut

    @property
    def pending(self) -> int:
        """Frames queued or being decoded."""
        with self._cv:
            return len(self._items) + self._busy

    def close(self, drain: bool = True, timeout: float | None = None) -> bool:
        """Stop accepting; decode (drain) or fail what is queued; True when the worker ended."""
        with self._cv:
            self._closing = True
            dropped = [] if drain else list(self._items)
            if not drain:
                self._items.clear()
            self._cv.notify_all()
        for item in dropped:
            item.future.set_exception(Draining(f"{self.name}: the server stopped before decoding this frame"))
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ------------------------------------------------------------------ worker
    def _take_batch(self) -> list[_Item] | None:
        with self._cv:
            while not self._items and not self._closing:
                self._cv.wait()
            if not self._items:
                return None  # closing and nothing left
            batch = [self._items.popleft()]
            deadline = batch[0].enqueued + self.max_wait_s
            while len(batch) < self.max_batch:
                if self._items:
                    batch.append(self._items.popleft())
                    continue
                remaining = deadline - time.monotonic()
                if self._closing or remaining <= 0:
                    break
                self._cv.wait(remaining)
            self._busy = len(batch)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            start = time.monotonic()
            try:
                x = np.stack([it.x for it in batch])                        # [B, D]
                snr = np.asarray([it.snr_db for it in batch], np.float32)  # [B]
                logits = self.decode_fn(x, snr)                             # [B, C]
                compute_s = time.monotonic() - start
                if self.on_batch is not None:
                    self.on_batch(len(batch), compute_s)
                for i, it in enumerate(batch):
                    it.future.set_result(Decoded(logits[i], start - it.enqueued, compute_s, len(batch)))
            except Exception as exc:  # a model failure fails this batch, not the worker
                for it in batch:
                    if not it.future.done():
                        it.future.set_exception(exc)
            finally:
                with self._cv:
                    self._busy = 0
