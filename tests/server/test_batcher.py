"""DynamicBatcher: batching across submitters, bounded queue, drain on close."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from rkdsc.server.batcher import Draining, DynamicBatcher, QueueFull


class Recorder:
    """decode_fn that records batch sizes and can be held back with an event."""

    def __init__(self, hold: threading.Event | None = None):
        self.sizes: list[int] = []
        self.hold = hold
        self.started = threading.Event()

    def __call__(self, x: np.ndarray, snr: np.ndarray) -> np.ndarray:
        self.started.set()
        if self.hold is not None:
            self.hold.wait(10)
        self.sizes.append(len(x))
        # logits: [x.sum(), snr] so results can be traced back to their inputs
        return np.stack([x.sum(axis=1), snr], axis=1).astype(np.float32)


def test_results_go_back_to_their_submitters_and_batches_are_bounded():
    rec = Recorder(hold=threading.Event())
    b = DynamicBatcher(rec, max_batch=4, max_wait_s=0.05, queue_size=100)
    first = b.submit(np.full(3, 100.0), 1.0)
    assert rec.started.wait(5)  # worker is busy with the first frame: the rest queue up
    futs = [b.submit(np.full(3, float(i)), float(i)) for i in range(10)]
    rec.hold.set()
    out = [f.result(5) for f in futs]
    assert first.result(5).logits[0] == pytest.approx(300.0)
    for i, d in enumerate(out):
        assert d.logits[0] == pytest.approx(3.0 * i) and d.logits[1] == pytest.approx(float(i))
        assert 1 <= d.batch_size <= 4
    assert rec.sizes[0] == 1 and rec.sizes[1:] == [4, 4, 2]  # backlog is taken without waiting
    b.close()


def test_full_queue_raises_queue_full_and_keeps_serving():
    hold = threading.Event()
    rec = Recorder(hold=hold)
    b = DynamicBatcher(rec, max_batch=1, max_wait_s=0.0, queue_size=2)
    busy = b.submit(np.zeros(2), 0.0)
    assert rec.started.wait(5)
    queued = [b.submit(np.zeros(2), 0.0) for _ in range(2)]
    with pytest.raises(QueueFull, match="queue is full"):
        b.submit(np.zeros(2), 0.0)
    hold.set()
    for f in [busy, *queued]:
        f.result(5)
    assert b.submit(np.ones(2), 0.0).result(5).logits[0] == pytest.approx(2.0)
    b.close()


def test_a_full_queue_holds_the_submitter_until_there_is_room():
    """queue_wait_s > 0: a message that does not fit waits (backpressure) and is queued as soon as the
    worker takes frames; nothing is refused, and every result goes back to its submitter."""
    hold = threading.Event()
    rec = Recorder(hold=hold)
    b = DynamicBatcher(rec, max_batch=4, max_wait_s=0.0, queue_size=4, queue_wait_s=10.0)
    busy = b.submit(np.zeros(2), 0.0)
    assert rec.started.wait(5)
    first = b.submit_many(np.ones((4, 2), np.float32), 1.0)      # fills the queue
    got: dict = {}
    t = threading.Thread(target=lambda: got.update(f=b.submit_many(np.full((3, 2), 2.0, np.float32), 2.0)))
    t.start()
    t.join(0.3)
    assert t.is_alive() and "f" not in got  # held: 4 waiting + 3 > queue_size
    hold.set()                               # the worker takes the 4 queued frames: room for 3
    t.join(5)
    assert not t.is_alive()
    assert [d.logits[0] for d in first.result(5)] == pytest.approx([2.0] * 4)
    assert [d.logits[0] for d in got["f"].result(5)] == pytest.approx([4.0] * 3)
    # the wait for room counts as queue time
    assert min(d.queue_s for d in got["f"].result(5)) >= 0.25
    busy.result(5)
    b.close()


def test_submitters_waiting_for_room_enter_first_come_first_served():
    """A small message that would fit does not overtake a larger one already waiting: it waits behind
    it, and both enter, in their order, as the worker frees room (the decode batches show the order:
    the held frame, the 2 queued, then the large message before the small one)."""
    hold = threading.Event()
    rec = Recorder(hold=hold)
    b = DynamicBatcher(rec, max_batch=4, max_wait_s=0.0, queue_size=4, queue_wait_s=10.0)
    busy = b.submit(np.zeros(2), 0.0)
    assert rec.started.wait(5)
    b.submit_many(np.zeros((2, 2), np.float32), 0.0)            # 2 of 4 waiting
    big = threading.Thread(target=lambda: b.submit_many(np.ones((3, 2), np.float32), 0.0))
    big.start()
    big.join(0.2)
    assert big.is_alive()                                        # 2 + 3 > 4: waits
    small = threading.Thread(target=lambda: b.submit(np.ones(2), 0.0))
    small.start()
    small.join(0.3)
    assert small.is_alive()                                      # 2 + 1 fits, but it is second in line
    hold.set()
    big.join(5)
    small.join(5)
    assert not big.is_alive() and not small.is_alive()
    busy.result(5)
    assert b.close(drain=True, timeout=5)
    # overtaking would have queued [2, small] together: batches [1, 3, 3]
    assert rec.sizes in ([1, 2, 4], [1, 2, 3, 1]), rec.sizes


def _full_batcher(queue_wait_s: float) -> tuple[DynamicBatcher, threading.Event]:
    """A batcher with queue_size 1: one frame being decoded (held until the event is set), one queued."""
    hold = threading.Event()
    rec = Recorder(hold=hold)
    b = DynamicBatcher(rec, max_batch=1, max_wait_s=0.0, queue_size=1, queue_wait_s=queue_wait_s)
    b.submit(np.zeros(2), 0.0)
    assert rec.started.wait(5)
    b.submit(np.zeros(2), 0.0)  # the queue is full
    return b, hold


def test_a_submitter_waits_at_most_queue_wait_s_then_gets_queue_full():
    import time

    b, hold = _full_batcher(0.3)
    t0 = time.monotonic()
    with pytest.raises(QueueFull, match=r"queue is full \(1 frames waiting, queue_size 1; waited 0.3 s for room\)"):
        b.submit(np.zeros(2), 0.0)
    assert 0.25 <= time.monotonic() - t0 < 3.0
    with pytest.raises(QueueFull):  # larger than the whole queue: refused at once, no wait
        t0 = time.monotonic()
        b.submit_many(np.zeros((2, 2), np.float32), 0.0)
    assert time.monotonic() - t0 < 0.2
    hold.set()
    b.close()


def test_close_wakes_submitters_waiting_for_room_with_draining():
    b, hold = _full_batcher(30.0)
    errors: list = []

    def wait_for_room() -> None:
        try:
            b.submit(np.zeros(2), 0.0)
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    t = threading.Thread(target=wait_for_room)
    t.start()
    t.join(0.2)
    assert t.is_alive()
    closer = threading.Thread(target=lambda: b.close(drain=True, timeout=10))
    closer.start()
    t.join(5)
    assert not t.is_alive() and len(errors) == 1 and isinstance(errors[0], Draining)
    hold.set()
    closer.join(10)


def test_close_drains_queued_frames_without_waiting_for_a_full_batch():
    rec = Recorder()
    b = DynamicBatcher(rec, max_batch=64, max_wait_s=30.0, queue_size=100)  # would wait 30 s
    futs = [b.submit(np.full(2, float(i)), 0.0) for i in range(5)]
    assert b.close(drain=True, timeout=10)
    assert [f.result(0).logits[0] for f in futs] == pytest.approx([2.0 * i for i in range(5)])
    with pytest.raises(Draining):
        b.submit(np.zeros(2), 0.0)


def test_close_without_drain_fails_queued_frames():
    hold = threading.Event()
    rec = Recorder(hold=hold)
    b = DynamicBatcher(rec, max_batch=1, max_wait_s=0.0, queue_size=10)
    busy = b.submit(np.zeros(2), 0.0)
    assert rec.started.wait(5)
    queued = b.submit(np.zeros(2), 0.0)
    threading.Timer(0.2, hold.set).start()
    b.close(drain=False, timeout=10)
    busy.result(5)  # the frame being decoded still finishes
    with pytest.raises(Draining):
        queued.result(5)


def test_a_failing_decode_fails_its_batch_only():
    calls = []

    def decode(x, snr):
        calls.append(len(x))
        if len(calls) == 1:
            raise RuntimeError("model exploded")
        return np.zeros((len(x), 2), np.float32)

    b = DynamicBatcher(decode, max_batch=1, max_wait_s=0.0)
    with pytest.raises(RuntimeError, match="exploded"):
        b.submit(np.zeros(2), 0.0).result(5)
    assert b.submit(np.zeros(2), 0.0).result(5).logits.shape == (2,)
    b.close()


def test_submit_many_keeps_a_message_whole_and_in_row_order():
    rec = Recorder(hold=threading.Event())
    b = DynamicBatcher(rec, max_batch=8, max_wait_s=0.05, queue_size=100)
    blocker = b.submit(np.zeros(2), 0.0)
    assert rec.started.wait(5)
    msgs = [b.submit_many(np.arange(10 * m, 10 * m + 10, dtype=np.float32).reshape(5, 2), float(m)) for m in range(3)]
    single = b.submit(np.full(2, 1000.0), 9.0)
    rec.hold.set()
    blocker.result(5)
    for m, f in enumerate(msgs):
        rows = f.result(5)
        assert [d.logits[0] for d in rows] == pytest.approx([float(4 * i + 1 + 20 * m) for i in range(5)])
        assert all(d.logits[1] == pytest.approx(m) for d in rows)
    assert single.result(5).logits[0] == pytest.approx(2000.0)
    b.close()
    # messages of 5 rows are never split: at most one 5-row message (+ the 1-row frame) per 8-row batch
    assert rec.sizes[0] == 1 and all(s in (5, 6) for s in rec.sizes[1:]), rec.sizes
    assert sum(rec.sizes) == 1 + 15 + 1


def test_a_message_larger_than_max_batch_is_decoded_in_chunks_and_a_failure_fails_its_chunk_only():
    calls = []

    def decode(x, snr):
        calls.append(len(x))
        if len(calls) == 2:
            raise RuntimeError("model exploded")
        return np.stack([x.sum(axis=1), snr], axis=1).astype(np.float32)

    b = DynamicBatcher(decode, max_batch=4, max_wait_s=0.0, queue_size=100)
    rows = b.submit_many(np.ones((10, 3), np.float32), 1.0).result(5)
    b.close()
    assert calls == [4, 4, 2]
    assert [isinstance(r, RuntimeError) for r in rows] == [False] * 4 + [True] * 4 + [False] * 2
    assert rows[0].logits[0] == pytest.approx(3.0) and rows[0].batch_size == 4 and rows[9].batch_size == 2


def test_queue_size_counts_the_rows_of_messages():
    hold = threading.Event()
    rec = Recorder(hold=hold)
    b = DynamicBatcher(rec, max_batch=4, max_wait_s=0.0, queue_size=6)
    b.submit(np.zeros(2), 0.0)
    assert rec.started.wait(5)
    b.submit_many(np.zeros((4, 2), np.float32), 0.0)
    with pytest.raises(QueueFull, match="4 frames waiting"):
        b.submit_many(np.zeros((3, 2), np.float32), 0.0)
    b.submit_many(np.zeros((2, 2), np.float32), 0.0)  # 6 waiting: exactly full
    assert b.pending == 7
    hold.set()
    assert b.close(drain=True, timeout=5)


def test_a_lone_sender_is_not_kept_waiting_for_a_fuller_batch():
    """max_wait_s only applies while others_may_send() says another sender could fill the batch."""
    import time

    others = {"value": False}
    b = DynamicBatcher(lambda x, s: np.zeros((len(x), 2), np.float32), max_batch=32, max_wait_s=0.5,
                       queue_size=10, others_may_send=lambda: others["value"])
    t0 = time.monotonic()
    b.submit(np.zeros(2), 0.0).result(5)
    alone = time.monotonic() - t0
    others["value"] = True
    t0 = time.monotonic()
    b.submit(np.zeros(2), 0.0).result(5)
    waited = time.monotonic() - t0
    b.close()
    assert alone < 0.25 <= 0.45 <= waited, (alone, waited)


def test_a_failing_others_may_send_does_not_stop_the_worker():
    def broken():
        raise TypeError("not callable")

    b = DynamicBatcher(lambda x, s: np.zeros((len(x), 2), np.float32), max_batch=4, max_wait_s=0.0,
                       queue_size=10, others_may_send=broken)
    assert b.submit(np.zeros(2), 0.0).result(5).batch_size == 1
    assert b.close(timeout=5)
