"""The stream pump: the server side of a bidirectional gRPC stream, written once.

    yield from pump(request_iterator, submit, context, log, name="Decode stream", thread_name="decode-reader")

    p = StreamPump(context, log, name=..., thread_name=..., end_when_idle=False, on_abort=..., drain_s=10.0)
    p.start(request_iterator, submit, on_error=..., on_requests_done=...)
    ... p.deliver(result) / p.fail(code, message) / p.finish() / p.stop(code, message)   # from any thread
    yield from p.results()

    RequestQueue(prepare=None)   # a request iterator for a client call, fed by put(item) / close()

``submit(item)`` is called for each request, in order, on a reader thread, and returns a
``concurrent.futures.Future`` of the item's result, or None when the service hands results to
``deliver`` itself. Guarantees:
- results are yielded in the order they complete (``deliver``: in the order it is called);
- ``submit`` raising FrameRejected ends the stream with that status and message; any other
  exception from ``submit`` ends it with ``on_error(item, exc)``'s FrameRejected (default:
  INTERNAL), never silently. A bad request ends only what it must: no request after it is
  submitted, the results of the requests accepted before it are still delivered, then the
  stream is aborted with the status. With futures that is once every submitted future's
  result was yielded; with pushed results (``end_when_idle=False``) once the service calls
  ``finish()`` or ``fail()`` (its upstream answered what it had). The wait is bounded by
  ``drain_s``: results not in by then are dropped (logged) and the stream ends with the status.
  ``stop(code, message)`` does the same from outside (a draining service);
- a submitted future that fails, or ``fail()``, ends the stream after what was queued before it
  (a held status from a rejection or ``stop`` wins: it was the first cause);
- with ``end_when_idle`` (default) the stream ends OK once the request iterator is exhausted
  (the client half-closed) and every submitted future's result was yielded; without it, only
  ``finish()`` ends it OK;
- it returns when the client goes away (``context.is_active()`` polled every ``poll_s``);
- status messages are cut to ``frames.MAX_STATUS_CHARS``.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent import futures
from typing import Any, Callable, Iterable, Iterator

import grpc

from rkdsc.common.service.frames import FrameRejected, bounded

__all__ = ["StreamPump", "pump", "RequestQueue"]

_END = object()       # the reader is done (request iterator exhausted, rejected or failed)
_FINISH = object()    # finish(): end the stream OK now
_CLOSED = object()    # RequestQueue.close()

Submit = Callable[[Any], "futures.Future | None"]
OnError = Callable[[Any, Exception], FrameRejected]


class _Abort:
    def __init__(self, code: grpc.StatusCode, message: str, held: bool = False):
        self.code, self.message, self.held = code, bounded(message), held


class _Result:
    __slots__ = ("value", "counted")

    def __init__(self, value: Any, counted: bool):
        self.value, self.counted = value, counted


class StreamPump:
    """One bidirectional stream handler: reader thread -> submit -> results -> yield (see module)."""

    def __init__(self, context: grpc.ServicerContext, log: logging.Logger, *, name: str = "stream",
                 thread_name: str = "stream-reader", end_when_idle: bool = True, poll_s: float = 1.0,
                 on_abort: Callable[[], None] | None = None, drain_s: float = 10.0):
        self.context = context
        self.log = log
        self.name = name
        self.thread_name = thread_name
        self.end_when_idle = end_when_idle
        self.poll_s = poll_s
        self.on_abort = on_abort
        self.drain_s = float(drain_s)
        self._stopping = threading.Event()  # a status is held: submit nothing more
        self._out: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._pending = 0        # futures submitted whose result was not yielded yet

    # ------------------------------------------------------------------ from any thread
    def deliver(self, result: Any) -> None:
        """Yield `result` (not a submitted future's; it does not count as pending)."""
        self._out.put(_Result(result, counted=False))

    def fail(self, code: grpc.StatusCode, message: str) -> None:
        """End the stream with this status once what was queued before it has been yielded."""
        self._out.put(_Abort(code, message))

    def finish(self) -> None:
        """End the stream OK once what was queued before it has been yielded (with the held
        status instead when ``stop`` or a rejection holds one)."""
        self._out.put(_FINISH)

    def stop(self, code: grpc.StatusCode, message: str) -> None:
        """Stop submitting requests; end the stream with this status once the results of the
        requests already accepted are delivered (at most ``drain_s``; the first held status wins)."""
        self._stopping.set()
        self._out.put(_Abort(code, message, held=True))

    # ------------------------------------------------------------------ the reader
    def start(self, requests: Iterable, submit: Submit, *, on_error: OnError | None = None,
              on_requests_done: Callable[[], None] | None = None) -> "StreamPump":
        """Start the reader thread; ``on_requests_done`` runs when it stops reading."""
        threading.Thread(target=self._read, args=(requests, submit, on_error, on_requests_done),
                         name=self.thread_name, daemon=True).start()
        return self

    def _read(self, requests: Iterable, submit: Submit, on_error: OnError | None,
              on_requests_done: Callable[[], None] | None) -> None:
        try:
            for item in requests:
                if self._stopping.is_set():
                    return
                try:
                    fut = submit(item)
                except FrameRejected as exc:
                    self.stop(exc.code, exc.message)
                    return
                except Exception as exc:  # noqa: BLE001 - end the stream with an error, never silently
                    rejected = on_error(item, exc) if on_error is not None else self._internal(exc)
                    self.stop(rejected.code, rejected.message)
                    return
                if fut is not None:
                    with self._lock:
                        self._pending += 1
                    fut.add_done_callback(self._done)
        except Exception as exc:  # the client went away / cancelled
            self.log.debug("%s reader ended: %r", self.name, exc)
        finally:
            try:
                if on_requests_done is not None:
                    on_requests_done()
            finally:
                self._out.put(_END)

    def _internal(self, exc: Exception) -> FrameRejected:
        self.log.exception("%s: a request failed", self.name)
        return FrameRejected(grpc.StatusCode.INTERNAL, f"{self.name}: {type(exc).__name__}: {exc}")

    def _done(self, f: futures.Future) -> None:
        try:
            value = f.result()
        except FrameRejected as exc:
            self.fail(exc.code, exc.message)
            return
        except Exception as exc:  # noqa: BLE001 - a failed future ends the stream, never silently
            self.log.error("%s: a result failed: %s: %s", self.name, type(exc).__name__, exc)
            self.fail(grpc.StatusCode.INTERNAL, f"{self.name}: {type(exc).__name__}: {exc}")
            return
        self._out.put(_Result(value, counted=True))

    # ------------------------------------------------------------------ the handler's side
    def results(self) -> Iterator[Any]:
        """Yield results until the stream ends (see the module's guarantees)."""
        reader_done = False
        held: _Abort | None = None      # the status to end with once the accepted results are out
        deadline = 0.0
        while True:
            if held is not None and time.monotonic() >= deadline:
                with self._lock:
                    missing = self._pending
                self.log.warning("%s: results of accepted requests not all in %.1f s after %s (%s); "
                                 "ending the stream (%s still pending)", self.name, self.drain_s,
                                 held.code.name, held.message[:200], missing or "some")
                self._abort(held)
            timeout = self.poll_s if held is None else max(0.0, min(self.poll_s, deadline - time.monotonic()))
            try:
                item = self._out.get(timeout=timeout)
            except queue.Empty:
                if not self.context.is_active():
                    return
                continue
            if item is _END:
                reader_done = True
            elif item is _FINISH:
                if held is not None:
                    self._abort(held)
                return
            elif isinstance(item, _Abort):
                if not item.held:
                    self._abort(held or item)
                if held is None:
                    held, deadline = item, time.monotonic() + self.drain_s
            else:
                if item.counted:
                    with self._lock:
                        self._pending -= 1
                yield item.value
            if self.end_when_idle:
                with self._lock:
                    idle = self._pending == 0
                if idle and held is not None:
                    self._abort(held)
                if idle and reader_done:
                    return

    def _abort(self, item: _Abort) -> None:
        if self.on_abort is not None:
            self.on_abort()
        self.context.abort(item.code, item.message)

    def run(self, requests: Iterable, submit: Submit, **start_kw) -> Iterator[Any]:
        """``start`` then ``results``."""
        self.start(requests, submit, **start_kw)
        return self.results()


def pump(requests: Iterable, submit: Submit, context: grpc.ServicerContext, log: logging.Logger, *,
         name: str = "stream", thread_name: str = "stream-reader", on_error: OnError | None = None,
         poll_s: float = 1.0, drain_s: float = 10.0) -> Iterator[Any]:
    """The common case: every request's result comes from its future; ends when idle."""
    p = StreamPump(context, log, name=name, thread_name=thread_name, poll_s=poll_s, drain_s=drain_s)
    return p.run(requests, submit, on_error=on_error)


class RequestQueue:
    """The request iterator of a client-side streaming call, fed from other threads.

    ``put(item)`` queues an item; the iterator yields ``prepare(item)`` (the item itself
    without ``prepare``), called on gRPC's sending thread just before the item is sent;
    ``close()`` ends the iterator after what was queued before it (more calls are harmless).
    """

    def __init__(self, prepare: Callable[[Any], Any] | None = None):
        self._q: queue.Queue = queue.Queue()
        self._prepare = prepare
        self._closed = False

    def put(self, item: Any) -> None:
        self._q.put(item)

    def close(self) -> None:
        self._q.put(_CLOSED)

    def __iter__(self) -> "RequestQueue":
        return self

    def __next__(self) -> Any:
        if self._closed:
            raise StopIteration
        item = self._q.get()
        if item is _CLOSED:
            self._closed = True
            raise StopIteration
        return item if self._prepare is None else self._prepare(item)
