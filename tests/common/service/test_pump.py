"""The stream pump over real localhost gRPC: a rejected frame ends the stream after the results
of the frames accepted before it (bounded wait; later frames are never submitted), results come in completion order, the stream
ends once the client half-closed and nothing is pending, the handler returns when the client
goes away; the relay's way (results pushed, ``finish`` / ``fail``); and ``RequestQueue``."""
from __future__ import annotations

import logging
import threading
import time
from concurrent import futures

import grpc
import pytest

from rkdsc.common.service import FrameRejected, RequestQueue, StreamPump, invalid, pump
from rkdsc.v1 import emulator_pb2 as pb
from rkdsc.v1 import emulator_pb2_grpc as pb_grpc

log = logging.getLogger("rkdsc.test.pump")
POLL_S = 0.1


def frame(i: int, task: str = "digits") -> pb.ChannelFrame:
    return pb.ChannelFrame(transmitter_id="tx", task=task, frame_id=i)


def result(cf: pb.ChannelFrame) -> pb.Result:
    return pb.Result(frame_id=cf.frame_id, transmitter_id=cf.transmitter_id, task=cf.task)


def done(value) -> futures.Future:
    f: futures.Future = futures.Future()
    f.set_result(value)
    return f


class PumpServicer(pb_grpc.EdgeServerServicer):
    """``Decode`` = ``pump`` over ``submit``; records what was submitted and when the handler ended."""

    def __init__(self, submit, on_error=None):
        self._submit, self.on_error = submit, on_error
        self.submitted: list[int] = []
        self.futures: dict[int, futures.Future] = {}
        self.ended = threading.Event()

    def submit(self, cf: pb.ChannelFrame):
        self.submitted.append(cf.frame_id)
        return self._submit(self, cf)

    def Decode(self, request_iterator, context):
        try:
            yield from pump(request_iterator, self.submit, context, log, name="test stream",
                            thread_name="test-reader", on_error=self.on_error, poll_s=POLL_S)
        finally:
            self.ended.set()


@pytest.fixture
def serve_servicer():
    """serve_servicer(servicer) -> EdgeServerStub of a real gRPC server on a free localhost port."""
    started = []

    def start(servicer):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_EdgeServerServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        chan = grpc.insecure_channel(f"127.0.0.1:{port}")
        started.append((server, chan))
        return pb_grpc.EdgeServerStub(chan)

    yield start
    for server, chan in started:
        chan.close()
        server.stop(0)


def collect(call) -> tuple[list[int], grpc.RpcError | None]:
    got = []
    try:
        for res in call:
            got.append(res.frame_id)
    except grpc.RpcError as exc:
        return got, exc
    return got, None


def test_a_rejected_frame_ends_the_stream_after_the_results_of_the_frames_accepted_before_it(serve_servicer):
    """Frames 0, 1 are answered at once, frame 2 is still pending, frame 3 is rejected: the
    client gets 0 and 1, then 2 once it completes, then the rejection's status; frames 4, 5 are
    never submitted. (Before: frame 2's result was dropped, the behaviour the data-plane issue
    names as a bug: "5 good frames, then a NaN frame: 0 results".)"""
    rejected = threading.Event()

    def submit(svc, cf):
        if cf.task == "nope":
            rejected.set()
            raise invalid("task: unknown task 'nope'")
        if cf.frame_id == 2:
            svc.futures[2] = futures.Future()  # completes only after the rejection
            return svc.futures[2]
        return done(result(cf))

    svc = PumpServicer(submit)
    stub = serve_servicer(svc)

    def complete_late():
        assert rejected.wait(10)
        time.sleep(0.3)
        svc.futures[2].set_result(result(frame(2)))

    threading.Thread(target=complete_late, daemon=True).start()
    frames = [frame(0), frame(1), frame(2), frame(3, task="nope"), frame(4), frame(5)]
    got, err = collect(stub.Decode(iter(frames), timeout=10))
    assert got == [0, 1, 2]
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith("task")
    assert svc.submitted == [0, 1, 2, 3]
    assert svc.ended.wait(5)


def test_the_wait_for_accepted_results_after_a_rejection_is_bounded(serve_servicer):
    """A pending result that never comes: the stream still ends with the rejection, ``drain_s``
    after it, with the results that were done."""
    class Bounded(PumpServicer):
        def Decode(self, request_iterator, context):
            try:
                yield from pump(request_iterator, self.submit, context, log, name="test stream",
                                thread_name="test-reader", poll_s=POLL_S, drain_s=0.5)
            finally:
                self.ended.set()

    def submit(svc, cf):
        if cf.task == "nope":
            raise invalid("task: unknown task 'nope'")
        return futures.Future() if cf.frame_id == 1 else done(result(cf))  # frame 1: never answered

    svc = Bounded(submit)
    t0 = time.monotonic()
    got, err = collect(serve_servicer(svc).Decode(iter([frame(0), frame(1), frame(2, task="nope")]), timeout=10))
    assert got == [0]
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 0.4 < time.monotonic() - t0 < 5


def test_results_come_in_completion_order_and_the_stream_ends_when_nothing_is_pending(serve_servicer):
    """The client half-closes with three results pending; they are yielded as they complete
    (2, 0, 1) and the stream ends OK after the last one."""
    all_in = threading.Event()

    def submit(svc, cf):
        svc.futures[cf.frame_id] = futures.Future()
        if len(svc.futures) == 3:
            all_in.set()
        return svc.futures[cf.frame_id]

    svc = PumpServicer(submit)
    stub = serve_servicer(svc)

    def complete():
        assert all_in.wait(10)
        for i in (2, 0, 1):
            time.sleep(0.05)
            svc.futures[i].set_result(result(frame(i)))

    threading.Thread(target=complete, daemon=True).start()
    got, err = collect(stub.Decode(iter([frame(0), frame(1), frame(2)]), timeout=10))
    assert err is None
    assert got == [2, 0, 1]


def test_an_empty_stream_ends_ok(serve_servicer):
    svc = PumpServicer(lambda svc, cf: done(result(cf)))
    got, err = collect(serve_servicer(svc).Decode(iter([]), timeout=10))
    assert (got, err) == ([], None)


def test_a_failing_submit_ends_the_stream_with_on_errors_status(serve_servicer):
    def submit(svc, cf):
        if cf.frame_id == 1:
            raise RuntimeError("boom")
        return done(result(cf))

    def on_error(cf, exc):
        return FrameRejected(grpc.StatusCode.INTERNAL, f"test: frame {cf.frame_id} failed: {exc}")

    svc = PumpServicer(submit, on_error=on_error)
    got, err = collect(serve_servicer(svc).Decode(iter([frame(0), frame(1), frame(2)]), timeout=10))
    assert got == [0]
    assert err.code() == grpc.StatusCode.INTERNAL and err.details() == "test: frame 1 failed: boom"
    assert svc.submitted == [0, 1]
    # without on_error: INTERNAL, naming the stream and the exception
    svc = PumpServicer(submit)
    got, err = collect(serve_servicer(svc).Decode(iter([frame(0), frame(1)]), timeout=10))
    assert err.code() == grpc.StatusCode.INTERNAL and "RuntimeError: boom" in err.details()


def test_a_future_failing_with_frame_rejected_ends_the_stream_with_its_status(serve_servicer):
    def submit(svc, cf):
        f: futures.Future = futures.Future()
        f.set_exception(FrameRejected(grpc.StatusCode.UNAVAILABLE, "server: gone"))
        return f

    got, err = collect(serve_servicer(PumpServicer(submit)).Decode(iter([frame(0)]), timeout=10))
    assert got == [] and err.code() == grpc.StatusCode.UNAVAILABLE and err.details() == "server: gone"


def test_the_handler_returns_when_the_client_goes_away(serve_servicer):
    svc = PumpServicer(lambda svc, cf: futures.Future())  # never answered
    stub = serve_servicer(svc)
    hold = threading.Event()

    def requests():
        yield frame(0)
        hold.wait(10)

    call = stub.Decode(requests(), timeout=10)
    deadline = time.monotonic() + 10
    while svc.submitted != [0]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    call.cancel()
    assert svc.ended.wait(20 * POLL_S + 5), "the handler still runs after the client went away"
    hold.set()


class PushServicer(pb_grpc.EdgeServerServicer):
    """The relay's way: submit returns None and results are pushed (here from the reader thread);
    the stream ends on ``finish`` (not when idle) or on ``fail``."""

    def __init__(self, finish_after: int | None = None, fail_after: int | None = None):
        self.finish_after, self.fail_after = finish_after, fail_after
        self.aborted = threading.Event()

    def Decode(self, request_iterator, context):
        stream = StreamPump(context, log, name="push", thread_name="push-reader", end_when_idle=False,
                            poll_s=POLL_S, on_abort=self.aborted.set)
        seen = []

        def submit(cf):
            seen.append(cf.frame_id)
            stream.deliver(result(cf))
            if len(seen) == self.finish_after:
                stream.finish()
            if len(seen) == self.fail_after:
                stream.fail(grpc.StatusCode.UNAVAILABLE, "server: lost")
            return None

        yield from stream.run(request_iterator, submit)


def test_pushed_results_then_finish_end_the_stream_while_the_client_still_sends(serve_servicer):
    stub = serve_servicer(PushServicer(finish_after=2))
    hold = threading.Event()

    def requests():
        yield frame(0)
        yield frame(1)
        hold.wait(10)  # the uplink stays open: only finish() ends the stream

    t0 = time.monotonic()
    got, err = collect(stub.Decode(requests(), timeout=10))
    hold.set()
    assert err is None and got == [0, 1]
    assert time.monotonic() - t0 < 5


def test_fail_ends_the_stream_after_the_pushed_results(serve_servicer):
    svc = PushServicer(fail_after=3)
    got, err = collect(serve_servicer(svc).Decode(iter([frame(0), frame(1), frame(2)]), timeout=10))
    assert got == [0, 1, 2]
    assert err.code() == grpc.StatusCode.UNAVAILABLE and err.details() == "server: lost"
    assert svc.aborted.is_set()  # on_abort ran before the status went out


class EchoServicer(pb_grpc.EdgeServerServicer):
    def Decode(self, request_iterator, context):
        for cf in request_iterator:
            yield result(cf)


def test_request_queue_feeds_a_client_stream_and_close_half_closes_it(serve_servicer):
    stub = serve_servicer(EchoServicer())
    prepared = []

    def prepare(item):
        prepared.append(item)
        return frame(item)

    send = RequestQueue(prepare)
    call = stub.Decode(send, timeout=10)
    for i in range(4):
        send.put(i)
    send.close()
    send.close()  # harmless
    assert [r.frame_id for r in call] == [0, 1, 2, 3]
    assert prepared == [0, 1, 2, 3]
    with pytest.raises(StopIteration):
        next(send)  # ended stays ended


def test_request_queue_without_prepare_yields_the_items():
    q = RequestQueue()
    q.put("a")
    q.put("b")
    q.close()
    q.put("after close")
    assert list(q) == ["a", "b"]


class HeldPushServicer(pb_grpc.EdgeServerServicer):
    """The relay's way with a bad frame: frames are answered later from another thread (like the
    server's results on the upstream stream); the frame with task "nope" is rejected; ``finish``
    comes once every accepted frame was answered."""

    def __init__(self):
        self.outstanding: list[pb.ChannelFrame] = []

    def Decode(self, request_iterator, context):
        stream = StreamPump(context, log, name="push", thread_name="push-reader", end_when_idle=False,
                            poll_s=POLL_S, drain_s=5.0)

        def submit(cf):
            if cf.task == "nope":
                raise invalid("task: unknown task 'nope'")
            self.outstanding.append(cf)
            return None

        def answer_later():  # on_requests_done: the "upstream" answers what it has, then ends
            def run():
                time.sleep(0.2)
                for cf in self.outstanding:
                    stream.deliver(result(cf))
                stream.finish()
            threading.Thread(target=run, daemon=True).start()

        stream.start(request_iterator, submit, on_requests_done=answer_later)
        yield from stream.results()


def test_pushed_results_of_accepted_frames_come_before_the_rejection(serve_servicer):
    stub = serve_servicer(HeldPushServicer())
    got, err = collect(stub.Decode(iter([frame(i) for i in range(5)] + [frame(5, task="nope"), frame(6)]),
                                   timeout=10))
    assert got == [0, 1, 2, 3, 4]
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith("task")


def test_stop_from_outside_ends_an_idle_stream_with_its_status(serve_servicer):
    """A draining service: ``stop`` ends a stream that sends nothing (its reader blocked)."""
    pumps: list[StreamPump] = []

    class Idle(pb_grpc.EdgeServerServicer):
        def Decode(self, request_iterator, context):
            stream = StreamPump(context, log, name="idle", poll_s=POLL_S, drain_s=5.0)
            pumps.append(stream)
            yield from stream.run(request_iterator, lambda cf: done(result(cf)))

    stub = serve_servicer(Idle())
    hold = threading.Event()

    def requests():
        yield frame(0)
        hold.wait(10)

    call = stub.Decode(requests(), timeout=10)
    assert next(call).frame_id == 0
    pumps[0].stop(grpc.StatusCode.UNAVAILABLE, "test: shutting down")
    with pytest.raises(grpc.RpcError) as err:
        next(call)
    hold.set()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and err.value.details() == "test: shutting down"
