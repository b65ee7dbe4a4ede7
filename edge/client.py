"""The edge device: student encoder + CAT encoder, streaming channel symbols to the relay.

    client = EdgeClient(cfg, cfg.transmitter("edge-near"))
    summary = client.run(out_dir="runs/edge-near")   # results.jsonl + summary.json

Per image: read (``rkdsc.common.data.images``), preprocess per its task's ``input`` in the bundle
manifest (tasks of one bundle may differ in size, mean and std), batch,
``EdgeModel.encode(images, snr_estimate)`` -> ``real_to_complex`` -> ``normalize_power``
-> one ``Frame`` (complex64 ``[K]``) per image on one bidirectional ``Relay.Transmit``
stream. The CAT encoder is conditioned on the link SNR the relay feeds back in every
Result (``link.effective_snr_db``); before the first feedback it uses
``initial_snr_estimate_db`` (default: the configured ``snr_db + path_gain_db``). At most
``max_in_flight`` frames are unanswered at a time (flow control). A frame without a result
``result_timeout_s`` after it was queued for sending is recorded as an error
(``DEADLINE_EXCEEDED: no result within N s``), the stream is cancelled and the run ends with
``stream_error`` set (exit status 1), so a lost result never makes the device wait forever.

Outputs in ``out_dir``: ``results.jsonl`` (one record per image: file, transmitter, predicted
class, score, label, correct, latency_ms, error, error_code, ...) and ``summary.json``.
Records are appended to ``results.jsonl`` as each image's outcome is known (flushed line by
line), so a crash leaves every answered image on disk; at the end the file is rewritten in
file order (atomically). An unreadable image is recorded with its error and the run goes on.

Failed images: every image without an OK answer has ``error`` and ``error_code``: a gRPC
status name (an error Result, e.g. ``UNAVAILABLE`` from a draining server, or
``DEADLINE_EXCEEDED``), ``UNREADABLE`` (the image cannot be decoded), ``SKIPPED`` (the listing
refused the file) or ``NO_RESULT`` (the stream ended first). The summary counts them by code
(``errors_by_code``); the run is ``ok`` when the stream completed and the failed fraction is at
most ``max_failed_fraction`` (topology field of the transmitter, ``--max-failed-fraction``;
default 0: every image must be answered). An image folder without images is a failed run
(``failure`` says so, naming the folder).

CPU: ``process_cpu_s`` in the summary is this process's CPU time (every thread) over the same
span as ``wall_s`` (listing, streaming, results; not the start-up before ``run``).

Latency: ``latency_ms`` runs from the start of encoding the image's batch to the arrival of
its result (edge compute + uplink + channel + server queue and decode + downlink);
``rtt_ms`` from handing the frame to gRPC to the result.

``cli(argv)`` (``rkdsc edge``) exits 0 when the run is ok, 1 when the stream failed or more
than ``max_failed_fraction`` of the images failed (counts by error code and the first failed
files on stderr), 2 for a bad config or bundle or an image folder without images. The uplink
runs on ``grpc.aio`` over the device's own channel (one Python thread reads, encodes, sends and
receives: no GIL hand-offs between threads per message; chosen by measurement, docs/decisions.md
"The edge on grpc.aio"), with the services' client options (``channel_options``: keepalive,
reconnect backoff of at most 2 s, retries of idempotent calls). ``run_async`` is the same run as
a coroutine of the caller's loop, optionally over a given ``grpc.aio`` channel (a fleet's shared
one, ``rkdsc.edge.fleet``: many devices on one loop and one connection, each sending its own
token as call metadata).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import grpc
import numpy as np

import rkdsc.common.bundle as bundle_lib
from rkdsc.common import channel
from rkdsc.common.bundle import BundleError
from rkdsc.common.config import Config, ConfigError, TransmitterConfig
from rkdsc.common.data.images import READ_ERRORS, list_images, load_rgb, preprocess
from rkdsc.common.medium.hooks import EdgeHook
from rkdsc.common.service import channel_options, run_cli, status_code_from_value
from rkdsc.common.service.security import Identity, call_metadata, check_client_credentials, open_aio_channel
from rkdsc.common.wire import encode_tensor
from rkdsc.v1 import emulator_pb2 as pb
from rkdsc.v1 import emulator_pb2_grpc as pb_grpc

log = logging.getLogger("rkdsc.edge")

CONNECT_TIMEOUT_S = 30.0
START_TIMEOUT_S = 300.0  # longest wait of `rkdsc edge --start-file` for its gate
START_POLL_S = 0.005     # the gate is polled this often (a file: no signal between processes needed)
SHOW_FAILED = 5  # failed files listed on stderr by the CLI (all of them are in results.jsonl)


@dataclass
class _Entry:
    index: int                  # position in file order
    path: Path
    label: int | None           # class index in the bundle task, None when unknown
    record: dict[str, Any] = field(default_factory=dict)
    t_encode: float = 0.0       # perf_counter at the start of its batch's encode
    t_sent: float = 0.0         # perf_counter when handed to gRPC
    done: bool = False          # its outcome is final (answered or failed) and was written out
    line: str = ""              # its record as written to results.jsonl (reused by the final rewrite)


class _ResultLog:
    """results.jsonl written as outcomes come: a line per record, flushed per record or, for the
    results of one received message, once per message, so a crash leaves every finished image
    on disk; ``finish`` rewrites it in file order (atomically)."""

    def __init__(self, out_dir: Path | None):
        self.path = None if out_dir is None else out_dir / "results.jsonl"
        self._fh = None
        if self.path is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "w", encoding="utf-8")

    def write(self, record: dict, flush: bool = True) -> str:
        """Append the record; returns its line (kept by the caller for ``finish``)."""
        if self._fh is None:
            return ""
        line = json.dumps(record) + "\n"
        self._fh.write(line)
        if flush:
            self._fh.flush()
        return line

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def finish(self, lines: Iterable[str]) -> None:
        """Rewrite the file as ``lines`` (the records' lines as ``write`` returned them, in file
        order: every record is serialized once)."""
        if self._fh is None:
            return
        self._fh.close()
        self._fh = None
        _write_atomic(self.path, "".join(lines))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class _InFlight:
    """The frames of one stream handed to gRPC and not answered yet, and the stream's first failure.

    Used from the stream's event-loop thread only (the read-ahead thread never touches it), so it
    holds no lock. ``overdue`` gives up on every open frame once the oldest has waited ``timeout_s``."""

    def __init__(self, timeout_s: float):
        self.timeout_s = float(timeout_s)
        self._by_id: dict[int, _Entry] = {}    # frame id -> entry
        self._since: dict[int, float] = {}     # frame id -> perf_counter when it was queued
        self.error: str | None = None          # why the stream failed (the first reason)

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, id_base: int, entries: list[_Entry], now: float) -> None:
        for e in entries:
            self._by_id[id_base + e.index] = e
            self._since[id_base + e.index] = now

    def pop(self, frame_id: int) -> _Entry | None:
        self._since.pop(frame_id, None)
        return self._by_id.pop(frame_id, None)

    def overdue(self, now: float) -> list[_Entry] | None:
        """Every open entry (removed) when the oldest has waited timeout_s or longer, else None."""
        if not self._since or now - min(self._since.values()) < self.timeout_s:
            return None
        lost = list(self._by_id.values())
        self._by_id.clear()
        self._since.clear()
        return lost

    def fail(self, message: str) -> None:
        """Record why the stream failed (the first reason is kept)."""
        if self.error is None:
            self.error = message

    @property
    def failed(self) -> bool:
        return self.error is not None


def run_coroutine(coro):
    """``asyncio.run(coro)``, on a thread of its own when this thread already runs an event loop
    (a notebook, an async application): the result, or the exception, comes back here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target, name="edge-stream", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)




def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else None


class EdgeClient:
    """One edge device of the topology (dependencies come in through __init__)."""

    def __init__(self, cfg: Config, transmitter: TransmitterConfig, bundle=None, relay_addr: str | None = None,
                 progress: bool = False, intra_op_threads: int | None = 1,
                 frame_id_base: int | None = None, connect_timeout_s: float = CONNECT_TIMEOUT_S,
                 models: dict[str, Any] | None = None):
        self.cfg = cfg
        self.connect_timeout_s = connect_timeout_s
        self.tx = transmitter
        self.bundle = bundle if bundle is not None else bundle_lib.load_bundle(cfg.bundle.path, verify=True)
        self.spec = self.bundle.task(transmitter.task)
        # models: codec name -> EdgeModel of this task, shared by the devices of one process
        # (rkdsc.edge.fleet: one onnxruntime session per (task, codec)); None: made here
        self.model = (models[self.spec.default_codec.name] if models else
                      bundle_lib.EdgeModel(self.bundle, self.spec.name, intra_op_threads=intra_op_threads))
        # SNR-adaptive rate: one edge model per codec of the task, picked per batch by the rate
        # policy of the manifest from the SNR the relay feeds back (rkdsc.common.bundle.manifest)
        self.codec_models = dict(models) if models else {self.model.codec.name: self.model}
        for c in self.spec.codecs:
            if c.name not in self.codec_models:
                self.codec_models[c.name] = bundle_lib.EdgeModel(self.bundle, self.spec.name, codec=c.name,
                                                                 intra_op_threads=intra_op_threads)
        self.relay_addr = relay_addr or cfg.relay_addr
        # a missing or expired certificate is a config error now, not a stream error later
        check_client_credentials(cfg.tls, Identity.transmitter(transmitter.id))
        self.progress = progress
        self.snr_estimate_db = float(transmitter.initial_estimate_db)  # the CAT encoder's SNR input
        self.last_link: pb.LinkState | None = None
        # frame ids must be unique per transmitter for the relay's lifetime: start from the
        # clock (microseconds) so a rerun against the same relay never repeats one
        self.frame_id_base = time.time_ns() // 1000 if frame_id_base is None else int(frame_id_base)
        self._done_lock = threading.Lock()
        self._log: _ResultLog | None = None
        self.medium: EdgeHook | None = None  # [medium] (issue 13), made per run; None: nothing new per frame

    # ------------------------------------------------------------------ inputs
    def list_images(self, images_dir: Path):
        """The folder's ImageList (regular files, not opened); a fleet lists a folder once for all."""
        return list_images(images_dir, check=False)

    def list_entries(self, images_dir: Path) -> tuple[list[_Entry], list[tuple[Path, str]]]:
        """Image files in order (+ labels mapped onto the bundle's class names), and the
        files the listing refused (e.g. not inside a class sub-folder)."""
        listing = self.list_images(images_dir)
        mapping: dict[int, int | None] = {}
        for i, folder in enumerate(listing.class_names):
            mapping[i] = self.spec.label_index(folder)
        unmatched = [f for i, f in enumerate(listing.class_names) if mapping[i] is None]
        if unmatched:
            log.warning("edge %s: class folders %s are not class names of task %r; their images have no label",
                        self.tx.id, unmatched[:5], self.spec.name)
        entries = []
        for i, path in enumerate(listing.paths):
            label = mapping[listing.labels[i]] if listing.labels is not None else None
            entries.append(_Entry(i, path, label))
        return entries, list(listing.errors)

    def _record(self, e: _Entry, root: Path) -> dict[str, Any]:
        try:
            rel = str(e.path.relative_to(root))
        except ValueError:
            rel = str(e.path)
        names = self.spec.class_names
        return {"file": rel, "transmitter": self.tx.id, "task": self.spec.name, "frame_id": None,
                "predicted_class": None, "predicted_index": None, "score": None, "top_k": None,
                "label": None if e.label is None else str(names[e.label]), "label_index": e.label,
                "correct": None, "latency_ms": None, "rtt_ms": None, "encode_ms": None, "encoder_snr_db": None,
                "link_snr_db": None, "queue_ms": None, "compute_ms": None, "error": None, "error_code": None,
                "codec": None, "symbols": None}

    def _complete(self, e: _Entry, flush: bool = True, **fields: Any) -> bool:
        """Make an entry's outcome final (once: later calls are ignored) and write its record
        (``flush=False``: the caller flushes the log after a group of records, ``_flush_log``)."""
        with self._done_lock:
            if e.done:
                return False
            e.record.update(fields)
            e.done = True
            if self._log is not None:
                e.line = self._log.write(e.record, flush=flush)  # final: the record no longer changes
            return True

    def _flush_log(self) -> None:
        with self._done_lock:
            if self._log is not None:
                self._log.flush()

    def _load(self, e: _Entry) -> np.ndarray | None:
        try:
            return preprocess(load_rgb(e.path), self.spec.input)  # [3, H, W], this task's preprocessing
        except READ_ERRORS as exc:
            self._complete(e, error=f"unreadable image: {type(exc).__name__}: {exc}", error_code="UNREADABLE")
            return None

    def encode(self, images: np.ndarray, snr_db: float) -> np.ndarray:
        """Encode a batch [B, 3, H, W] -> complex64 [B, K] channel symbols, each row unit average power."""
        snr = np.full((images.shape[0],), snr_db, dtype=np.float32)
        x = self.codec_models[self.codec_for(snr_db)].encode(images, snr)   # [B, compact_dim] of the codec
        return channel.normalize_power(channel.real_to_complex(x)).astype(np.complex64)  # [B, K]

    def codec_for(self, snr_db: float) -> str:
        """The codec the task's rate policy picks at this SNR estimate ("" = no codecs: the default)."""
        return self.spec.choose_codec(snr_db).name

    def _meta(self, e: _Entry) -> pb.FrameMeta:
        m = pb.FrameMeta(frame_id=self.frame_id_base + e.index, has_label=e.label is not None,
                         label=-1 if e.label is None else int(e.label), file=e.record["file"])
        if self.medium is not None:
            m.image_index = self.medium.position(e)
        return m

    def encode_frames(self, entries: list[_Entry], images: np.ndarray, snr_db: float) -> list[pb.Frame]:
        """Encode a batch -> one Frame per image (complex64 [K], unit average power)."""
        return self.encode_frames_from(entries, self.encode(images, snr_db), snr_db)

    def encode_frames_from(self, entries: list[_Entry], z: np.ndarray, snr_db: float) -> list[pb.Frame]:
        """One Frame per row of the symbols z [N, K] (row i = entries[i])."""
        frames = []
        for e, zi in zip(entries, z):
            data, dtype, shape = encode_tensor(zi)                          # [K]
            m = self._meta(e)
            frames.append(pb.Frame(
                transmitter_id=self.tx.id, task=self.spec.name, frame_id=m.frame_id,
                symbols=pb.Tensor(data=data, dtype=dtype, shape=shape), encoder_snr_db=float(snr_db),
                has_label=m.has_label, label=m.label, file=m.file, codec=self.codec_for(snr_db)))
            if self.medium is not None:
                self.medium.stamp(frames[-1], e)
        return frames

    def frame_batch(self, entries: list[_Entry], z: np.ndarray, snr_db: float) -> pb.FrameBatch:
        """One FrameBatch of the entries' symbols z [N, K] (row i = entries[i])."""
        data, dtype, shape = encode_tensor(np.ascontiguousarray(z))         # [N, K]
        return pb.FrameBatch(transmitter_id=self.tx.id, task=self.spec.name,
                             symbols=pb.Tensor(data=data, dtype=dtype, shape=shape),
                             frames=[self._meta(e) for e in entries], encoder_snr_db=float(snr_db),
                             codec=self.codec_for(snr_db),
                             images_total=0 if self.medium is None else self.medium.images_total)

    # ------------------------------------------------------------------ run
    def run(self, images_dir: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
            limit: int | None = None) -> dict[str, Any]:
        """Send every image of the folder, collect the results, write the outputs (if
        out_dir) and return the summary dict (``stream_error`` set when the stream failed).
        ``run_async`` on an event loop of its own (on a thread of its own when the caller's thread
        already runs one, e.g. a notebook)."""
        return run_coroutine(self.run_async(images_dir, out_dir, limit))

    async def run_async(self, images_dir: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
                        limit: int | None = None, channel: "grpc.aio.Channel | None" = None) -> dict[str, Any]:
        """``run`` as a coroutine of the caller's event loop. ``channel``: a ``grpc.aio`` channel of
        this loop to stream on (a fleet's shared one; it stays open; the device's token, if any, goes
        as call metadata), None: the device opens its own (TLS, certificate and token of this
        transmitter) and closes it at the end."""
        images_dir = Path(images_dir or self.tx.images)
        limit = self.tx.limit if limit is None else limit
        t_start = time.perf_counter()
        cpu_start = time.process_time()
        entries, refused = self.list_entries(images_dir)
        if limit and limit < len(entries):  # evenly spaced over the (class-sorted) files
            keep = np.unique(np.linspace(0, len(entries) - 1, limit).round().astype(int))
            entries = [entries[i] for i in keep]
        for e in entries:
            e.record = self._record(e, images_dir)
        skipped = [_Entry(-1, p, None) for p, _ in refused]
        for e, (_, why) in zip(skipped, refused):
            e.record = self._record(e, images_dir)

        self.medium = EdgeHook.create(self.cfg, self.tx, self.spec.symbols_per_image, entries)
        out = None if out_dir is None else Path(out_dir)
        self._log = _ResultLog(out)
        stream_error: str | None = None
        stats = {"up_bytes": 0, "down_bytes": 0, "frames": 0, "up_messages": 0, "down_messages": 0, "results": 0}
        try:
            for e, (_, why) in zip(skipped, refused):
                self._complete(e, error=why, error_code="SKIPPED")
            if entries:
                stream_error = await self._stream_aio(entries, stats, channel)
            wall_s = time.perf_counter() - t_start
            stats["process_cpu_s"] = time.process_time() - cpu_start
            why = f"no result: {stream_error or 'stream ended early'}"
            for e in entries:
                self._complete(e, error=why, error_code="NO_RESULT")  # only those still open
            done = entries + skipped
            records = [e.record for e in done]
            self._log.finish(e.line or json.dumps(e.record) + "\n" for e in done)  # consumed only with a file
        finally:
            self._log.close()
            self._log = None
        summary = self.summarize(records, wall_s, stats, stream_error, images_dir=images_dir)
        if out is not None:
            _write_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary

    # ------------------------------------------------------------------ the stream, shared parts
    def _batches(self, entries: list[_Entry]):
        """``(chunks, stop_and_wait, reader, ahead)``: the encode batches; whether the window holds at
        most one batch (stop-and-wait: each batch waits for the previous one's answers); the read-ahead
        thread and the future of batch 0's read, or None. Read ahead: the next batch's images are read
        on a thread while this one encodes (onnxruntime releases the GIL); never in stop-and-wait,
        where nothing may compete with the frame in flight."""
        chunks = [entries[i:i + self.tx.batch_size] for i in range(0, len(entries), self.tx.batch_size)]
        stop_and_wait = self.tx.max_in_flight <= self.tx.batch_size
        reader = ThreadPoolExecutor(1, thread_name_prefix=f"edge-{self.tx.id}-read") \
            if self.tx.read_ahead and not stop_and_wait and len(chunks) > 1 else None
        return chunks, stop_and_wait, reader, (reader.submit(self._load_chunk, chunks[0]) if reader else None)

    def _load_chunk(self, chunk: list[_Entry]) -> list[tuple[_Entry, np.ndarray | None]]:
        return [(e, self._load(e)) for e in chunk]

    def _read_and_encode(self, chunks: list[list[_Entry]], k: int, reader: ThreadPoolExecutor | None, ahead, bar):
        """Batch k read (from the read-ahead future when there is one, then batch k + 1's read is
        started) and encoded: ``(_encode_chunk's result, the next future)``. The read was started
        during the previous encode, so waiting for it here (also on the aio loop) is short."""
        t_enc = time.perf_counter()
        if ahead is not None:
            arrays = ahead.result()
            ahead = reader.submit(self._load_chunk, chunks[k + 1]) if k + 1 < len(chunks) else None
        else:
            arrays = self._load_chunk(chunks[k])
        return self._encode_chunk(arrays, t_enc, bar), ahead

    def _encode_chunk(self, arrays: list[tuple[_Entry, np.ndarray | None]], t_enc: float, bar):
        """The readable images of a batch encoded: ``(entries, z [N, K], snr)``, each entry stamped
        with its frame id, encoder SNR and encode time; None when no image was readable."""
        good = [(e, a) for e, a in arrays if a is not None]
        bar.update(len(arrays) - len(good))
        if not good:
            return None
        snr = self.snr_estimate_db
        if self.medium is not None:  # the scheduler's view, delayed by the feedback path
            snr = self.medium.encoder_snr_db(good[0][0])
        z = self.encode(np.stack([a for _, a in good]), snr)         # [N, K]
        encode_ms = (time.perf_counter() - t_enc) * 1e3
        for e, _ in good:
            e.t_encode = t_enc
            e.record.update(frame_id=self.frame_id_base + e.index, encoder_snr_db=snr, encode_ms=encode_ms)
        return [e for e, _ in good], z, snr

    def _message(self, es: list[_Entry], z: np.ndarray, snr: float, batched: bool) -> "pb.Frame | pb.FrameBatch":
        """One uplink message of the entries' symbols z [N, K]: a FrameBatch, or one Frame (N = 1)."""
        if batched:
            return self.frame_batch(es, z, snr)
        (msg,) = self.encode_frames_from(es, z, snr)
        return msg

    @staticmethod
    def _hand_over(es: list[_Entry], msg: "pb.Frame | pb.FrameBatch", stats: dict) -> "pb.Frame | pb.FrameBatch":
        """Stamp a message as it goes to gRPC: the entries' send time, the wall clock, the counts."""
        now = time.perf_counter()
        for entry in es:
            entry.t_sent = now
        msg.sent_unix_ns = time.time_ns()
        stats["up_bytes"] += msg.ByteSize()
        stats["frames"] += len(es)
        stats["up_messages"] += 1
        return msg

    @staticmethod
    def _received(msg: "pb.Result | pb.ResultBatch", batched: bool, stats: dict):
        """A downlink message's Results (a ResultBatch's in row order), counted in stats."""
        results = msg.results if batched else (msg,)
        stats["down_bytes"] += msg.ByteSize()
        stats["down_messages"] += 1
        stats["results"] += len(results)
        return results

    def _answer(self, res: pb.Result, flight: _InFlight, bar) -> bool:
        """A received Result: the link feedback first, then the entry's outcome. False when the
        frame is unknown or was given up on (nothing to free in the window)."""
        now = time.perf_counter()
        if res.HasField("link") and res.link.transmitter_id:
            self.last_link = res.link
            self.snr_estimate_db = float(res.link.effective_snr_db)
        e = flight.pop(res.frame_id)
        if e is None:
            log.warning("edge %s: result for unknown or timed-out frame %d", self.tx.id, res.frame_id)
            return False
        self._fill(e, res, now)
        bar.update(1)
        return True

    def _give_up(self, flight: _InFlight, bar, call) -> bool:
        """The frames waiting longer than result_timeout_s become errors (DEADLINE_EXCEEDED), the
        stream fails and the call is cancelled; True when that happened."""
        lost = flight.overdue(time.perf_counter())
        if lost is None:
            return False
        message = f"DEADLINE_EXCEEDED: no result within {flight.timeout_s:g} s"
        for e in lost:
            self._complete(e, error=message, error_code="DEADLINE_EXCEEDED")
        bar.update(len(lost))
        log.error("edge %s: %d frame(s) without a result after %g s; giving up", self.tx.id, len(lost),
                  flight.timeout_s)
        flight.fail(f"{message} for {len(lost)} frame(s) (result_timeout_s)")
        call.cancel()
        return True

    @staticmethod
    def _stream_end(flight: _InFlight, sent_all: bool) -> None:
        """The response stream ended with OK: a failure when frames are unanswered or unsent."""
        if len(flight):
            flight.fail(f"stream ended with {len(flight)} frame(s) unanswered")
        elif not sent_all:
            flight.fail("stream ended before every frame was sent")

    @staticmethod
    def _stream_status(flight: _InFlight, exc: grpc.RpcError) -> None:
        """The response stream ended with an error status, with the frames it left unanswered (with
        grpc.aio a write racing the end of a call turns an early OK into INTERNAL "Internal error
        from Core": the count says what was lost either way)."""
        open_ = len(flight)
        flight.fail(f"{exc.code().name}: {exc.details()}"
                    + (f" (stream ended with {open_} frame(s) unanswered)" if open_ else ""))

    # ------------------------------------------------------------------ the stream on grpc.aio
    async def _stream_aio(self, entries: list[_Entry], stats: dict, channel: "grpc.aio.Channel | None" = None
                          ) -> str | None:
        """The device's stream on ``grpc.aio``: one Python thread reads, encodes, sends and receives
        (the receiver is a task of the same loop), so no GIL is handed between threads per message
        (docs/decisions.md, "The edge on grpc.aio"). Over ``channel`` when given (left open), else
        over a channel of its own."""
        if channel is None:
            chan, metadata = open_aio_channel(  # TLS / mTLS / token per [tls]; identity = this transmitter
                self.relay_addr, self.cfg.tls, Identity.transmitter(self.tx.id),
                options=channel_options(self.cfg.basestation.max_message_bytes))
        else:  # a shared channel: this device's identity goes with the call (its token, if any)
            chan, metadata = channel, call_metadata(self.cfg.tls, Identity.transmitter(self.tx.id))
        try:
            try:
                await asyncio.wait_for(chan.channel_ready(), self.connect_timeout_s)
            except asyncio.TimeoutError:
                return f"relay at {self.relay_addr} not reachable within {self.connect_timeout_s:g} s"
            batched = bool(self.tx.batch_messages)
            stub = pb_grpc.RelayStub(chan)
            call = (stub.TransmitBatch if batched else stub.Transmit)(metadata=metadata, wait_for_ready=True)
            flight = _InFlight(self.tx.result_timeout_s)
            free = [int(self.tx.max_in_flight)]  # free slots of the in-flight window
            freed = asyncio.Event()              # set when slots were freed or the stream stopped
            ended, sent_all = asyncio.Event(), [False]
            bar = _progress(len(entries), self.tx.id, self.progress)

            async def receive() -> None:
                try:
                    async for msg in call:
                        free[0] += sum(self._answer(res, flight, bar) for res in self._received(msg, batched, stats))
                        freed.set()
                        self._flush_log()  # one write per received message, not per record
                    self._stream_end(flight, sent_all[0])
                except grpc.RpcError as exc:
                    self._stream_status(flight, exc)
                except asyncio.CancelledError:  # the call was cancelled (a result timed out)
                    flight.fail("CANCELLED: the stream was cancelled")
                except Exception as exc:  # noqa: BLE001 - never leave the sender waiting on the window
                    log.exception("edge %s: receiving results failed", self.tx.id)
                    flight.fail(f"INTERNAL: receiving results failed: {type(exc).__name__}: {exc}")
                finally:
                    ended.set()
                    freed.set()

            def stop_sending() -> bool:
                return flight.failed or ended.is_set() or self._give_up(flight, bar, call)

            async def slot_freed() -> None:
                """Wait until results free slots (or the stream stops), at most 0.25 s (result timeouts)."""
                freed.clear()
                try:
                    await asyncio.wait_for(freed.wait(), 0.25)
                except asyncio.TimeoutError:
                    pass

            async def send(es: list[_Entry], z: np.ndarray, snr: float) -> None:
                flight.add(self.frame_id_base, es, time.perf_counter())
                await call.write(self._hand_over(es, self._message(es, z, snr, batched), stats))

            receiver = asyncio.ensure_future(receive())
            chunks, stop_and_wait, reader, ahead = self._batches(entries)
            try:
                for k in range(len(chunks)):
                    if stop_and_wait:  # the window holds at most one batch: wait for its answers first
                        while free[0] < 1 and not stop_sending():
                            await slot_freed()
                    if stop_sending():
                        break
                    batch, ahead = self._read_and_encode(chunks, k, reader, ahead, bar)
                    if batch is None:
                        continue
                    es, z, snr = batch
                    # one window slot per frame; a message holds at most max_in_flight frames (so a full
                    # window never waits on frames of its own message), collected as slots free up
                    cap = int(self.tx.max_in_flight) if batched else 1
                    start = i = 0
                    while i < len(es) and not stop_sending():
                        if free[0] < 1:
                            await slot_freed()
                            continue
                        n = min(free[0], len(es) - i, cap - (i - start))
                        free[0] -= n
                        i += n
                        if i - start >= cap:
                            await send(es[start:i], z[start:i], snr)
                            start = i
                    if i < len(es):
                        break
                    if i > start:
                        await send(es[start:i], z[start:i], snr)
                sent_all[0] = True
            except (grpc.RpcError, asyncio.InvalidStateError):  # the call ended: the receiver has the status
                pass
            finally:
                if reader is not None:
                    reader.shutdown(wait=True, cancel_futures=True)
                if not ended.is_set():
                    try:
                        await call.done_writing()
                    except (grpc.RpcError, asyncio.InvalidStateError):
                        pass
                # wait for the results still due, but never longer than result_timeout_s per frame
                while not ended.is_set():
                    await slot_freed()
                    if not ended.is_set() and self._give_up(flight, bar, call):
                        break
                try:
                    await asyncio.wait_for(receiver, 5.0)  # the cancelled call ends the receiver promptly
                except (asyncio.TimeoutError, asyncio.CancelledError):
                    receiver.cancel()
                bar.close()
            return flight.error
        finally:
            if channel is None:
                await chan.close()

    def _fill(self, e: _Entry, res: pb.Result, now: float) -> None:
        """Make a received Result an entry's outcome; its record is written unflushed (the
        receiver flushes the log once per message)."""
        r: dict[str, Any] = {"link_snr_db": res.link.effective_snr_db if res.HasField("link") else None,
                             "latency_ms": (now - e.t_encode) * 1e3, "rtt_ms": (now - e.t_sent) * 1e3}
        if res.error.code != 0:
            code = status_code_from_value(res.error.code, None)
            name = code.name if code is not None else str(res.error.code)
            self._complete(e, flush=False, **r, error=f"{name}: {res.error.message}", error_code=name)
            return
        r.update(predicted_class=res.predicted_name, predicted_index=res.predicted_class,
                 score=float(res.score), top_k=[[c.name, float(c.score)] for c in res.top_k],
                 queue_ms=res.queue_ms, compute_ms=res.compute_ms,
                 correct=None if e.label is None else bool(res.predicted_class == e.label),
                 codec=res.codec, symbols=int(res.symbols_per_image) or None)  # what the server decoded
        if self.medium is not None:
            r.update(self.medium.record(res))  # emulated_ms, emulated_capture_s, distance_m, channel_snr_db
        self._complete(e, flush=False, **r)

    def summarize(self, records: list[dict], wall_s: float, stats: dict, stream_error: str | None,
                  images_dir: Path | None = None) -> dict:
        answered = [r for r in records if r["error"] is None]
        by_code: dict[str, int] = {}
        for r in records:
            if r["error"] is not None:
                code = r.get("error_code") or "ERROR"
                by_code[code] = by_code.get(code, 0) + 1
        failed = len(records) - len(answered)
        fraction = failed / len(records) if records else None
        limit = float(self.tx.max_failed_fraction)
        if not records:
            failure = f"no images in {images_dir}: nothing was sent (expected image files, in class " \
                      f"sub-folders <class>/<file> or directly in the folder)"
        elif stream_error:
            failure = f"stream failed: {stream_error}"
        elif fraction > limit:
            failure = (f"{failed} of {len(records)} images failed ({fraction:.1%}, more than max_failed_fraction "
                       f"{limit:g}): " + ", ".join(f"{c} {n}" for c, n in sorted(by_code.items(), key=lambda i: -i[1])))
        else:
            failure = None
        labelled = [r for r in answered if r["correct"] is not None]
        lat = [r["latency_ms"] for r in answered]
        rtt = [r["rtt_ms"] for r in answered]
        h, w = self.spec.input.size
        n_frames = max(stats["frames"], 1)
        return {
            "id": self.tx.id, "task": self.spec.name, "snr_db": self.tx.snr_db, "fading": self.tx.fading,
            "path_gain_db": self.tx.path_gain_db, "effective_snr_db": self.tx.effective_snr_db,
            "link_snr_db": None if self.last_link is None else self.last_link.effective_snr_db,
            "images": len(records), "answered": len(answered), "errors": len(records) - len(answered),
            "labelled": len(labelled), "correct": sum(1 for r in labelled if r["correct"]),
            "accuracy": (sum(1 for r in labelled if r["correct"]) / len(labelled)) if labelled else None,
            "latency_ms": {"p50": percentile(lat, 50), "p99": percentile(lat, 99),
                           "mean": float(np.mean(lat)) if lat else None},
            "rtt_ms": {"p50": percentile(rtt, 50), "p99": percentile(rtt, 99)},
            # symbols per answered image (their codecs may differ under an adaptive rate policy)
            "symbols_per_image": (float(np.mean(syms)) if (syms := [r["symbols"] for r in answered if r.get("symbols")])
                                  else self.spec.symbols_per_image),
            "codecs": _count(r.get("codec") for r in answered if r.get("codec")),
            "compact_dim": self.spec.compact_dim,
            "wall_s": wall_s, "images_per_s": len(answered) / wall_s if wall_s > 0 else None,
            # CPU seconds of this process (every thread) over the run, as wall_s; in a fleet the whole
            # fleet process's, since its devices share it
            "process_cpu_s": stats.get("process_cpu_s"),
            "frames_sent": stats["frames"],
            "uplink_bytes_per_image": stats["up_bytes"] / n_frames if stats["frames"] else None,
            "downlink_bytes_per_image": stats["down_bytes"] / n_frames if stats["frames"] else None,
            # frames per message each way (uplink: per FrameBatch; downlink: results per ResultBatch)
            "frames_per_uplink_message": stats["frames"] / stats["up_messages"] if stats["up_messages"] else None,
            "results_per_downlink_message": (stats["results"] / stats["down_messages"]
                                             if stats["down_messages"] else None),
            "raw_image_bytes": 3 * h * w, "relay": self.relay_addr, "stream_error": stream_error,
            "images_dir": None if images_dir is None else str(images_dir),
            "errors_by_code": by_code, "failed_fraction": fraction, "max_failed_fraction": limit,
            "ok": failure is None, "failure": failure,
            **({} if self.medium is None else self.medium.summary(answered)),
        }


def _count(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, name: str, enabled: bool):
    if not enabled or not sys.stderr.isatty():
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=name, unit="img", dynamic_ncols=True)


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rkdsc edge", description=(
        "Run one edge device of the topology: encode every image of its folder with the "
        "bundle's edge part (student + CAT encoder), stream the channel symbols to the "
        "base-station relay, and write results.jsonl (a line per image as its outcome is known) "
        "+ summary.json. The relay address comes from RKDSC_RELAY_ADDR or the [basestation] "
        "section; TLS from [tls] or RKDSC_TLS / RKDSC_TLS_DIR (its certificate: transmitters/<id>.pem, "
        "docs/security.md). Exit status: 0 when the stream completed and at most --max-failed-fraction of "
        "the images failed (default 0: every image answered); 1 when the stream failed, a result "
        "did not come within the result timeout, or more images failed (counts by error code and "
        "the first failed files on stderr); 2 for a bad config or bundle, or an image folder "
        "without images."))
    p.add_argument("--config", required=True, help="topology TOML file")
    p.add_argument("--id", required=True, help="transmitter id ([[transmitters]] id) to run as")
    p.add_argument("--out", required=True, help="output folder for results.jsonl and summary.json")
    p.add_argument("--relay", default=None, help="relay host:port (overrides RKDSC_RELAY_ADDR and the config)")
    p.add_argument("--images", default=None, help="image folder (overrides the transmitter's images)")
    p.add_argument("--bundle", default=None, help="bundle directory (overrides [bundle] path)")
    p.add_argument("--limit", type=int, default=None, help="at most N images (overrides the transmitter's limit; 0 = all)")
    p.add_argument("--threads", type=int, default=1,
                   help="onnxruntime intra-op threads of the edge model (default 1: one small edge CPU)")
    p.add_argument("--frame-id-base", type=int, default=None,
                   help="first frame id (default: derived from the clock, unique across runs)")
    p.add_argument("--result-timeout", type=float, default=None, metavar="SECONDS",
                   help="give up on a frame without a result after this many seconds: it is recorded as "
                        "an error (DEADLINE_EXCEEDED) and the run exits with status 1 (overrides the "
                        "transmitter's result_timeout_s, default 60)")
    p.add_argument("--max-failed-fraction", type=float, default=None, metavar="F",
                   help="largest fraction (0..1) of images that may fail (unreadable, error result, no "
                        "result) with exit status 0 (overrides the transmitter's max_failed_fraction, "
                        "default 0: any failed image makes the exit status 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (also off when stderr is not a tty)")
    p.add_argument("--ready-file", default=None, metavar="PATH",
                   help="write this file (JSON: id, pid) once the models are loaded, before streaming")
    p.add_argument("--start-file", default=None, metavar="PATH",
                   help="start gate: after loading (and --ready-file), wait until this file exists before "
                        "streaming, so that several edges started one after another stream together "
                        "(rkdsc bench uses it); exit status 2 when it does not appear within --start-timeout")
    p.add_argument("--start-timeout", type=float, default=START_TIMEOUT_S, metavar="SECONDS",
                   help=f"longest wait for --start-file (default {START_TIMEOUT_S:g})")

    def build(args: argparse.Namespace, cfg: Config) -> tuple[EdgeClient, Path]:
        if args.bundle:
            cfg.bundle.path = Path(args.bundle).resolve()
        tx = cfg.transmitter(args.id)
        if args.result_timeout is not None:
            if not args.result_timeout > 0:
                raise ValueError(f"--result-timeout: expected a number of seconds > 0, got {args.result_timeout}")
            tx.result_timeout_s = float(args.result_timeout)
        if args.max_failed_fraction is not None:
            if not 0.0 <= args.max_failed_fraction <= 1.0:
                raise ValueError(f"--max-failed-fraction: expected a fraction in [0, 1], got {args.max_failed_fraction}")
            tx.max_failed_fraction = float(args.max_failed_fraction)
        client = EdgeClient(cfg, tx, relay_addr=args.relay, progress=not args.no_progress,
                            intra_op_threads=args.threads, frame_id_base=args.frame_id_base)
        images = Path(args.images) if args.images else tx.images
        if not images.is_dir():
            raise ConfigError(f"transmitters[{args.id}].images: image folder not found: {images}")
        return client, images

    return run_cli(p, argv, build, _run, errors=(BundleError, ValueError), log_level="WARNING")


def wait_for_start(ready_file: str | None, start_file: str | None, tid: str, timeout_s: float) -> bool:
    """The start gate of ``rkdsc edge``: write ``ready_file`` (atomically), then wait until
    ``start_file`` exists; False when it did not appear within ``timeout_s``."""
    if ready_file:
        _write_atomic(Path(ready_file), json.dumps({"id": tid, "pid": os.getpid()}))
    if not start_file:
        return True
    deadline = time.monotonic() + timeout_s
    gate = Path(start_file)
    while not gate.exists():
        if time.monotonic() >= deadline:
            return False
        time.sleep(START_POLL_S)
    return True


def _run(args: argparse.Namespace, built: tuple[EdgeClient, Path]) -> int:
    client, images = built
    tx = client.tx
    if not wait_for_start(args.ready_file, args.start_file, tx.id, args.start_timeout):
        print(f"rkdsc edge: error: {tx.id}: --start-file {args.start_file} did not appear within "
              f"{args.start_timeout:g} s", file=sys.stderr)
        return 2
    summary = client.run(images, args.out, limit=args.limit)
    acc = summary["accuracy"]
    print(f"{tx.id}: {summary['answered']}/{summary['images']} answered, {summary['errors']} errors, "
          f"accuracy {'n/a' if acc is None else f'{acc:.4f}'}, p50 latency "
          f"{summary['latency_ms']['p50'] or float('nan'):.2f} ms -> {args.out}")
    if summary["images"] == 0:
        print(f"rkdsc edge: error: {tx.id}: {summary['failure']}", file=sys.stderr)
        return 2
    if summary["errors"]:
        _report_failed(summary, Path(args.out) / "results.jsonl")
    if not summary["ok"]:
        print(f"rkdsc edge: error: {tx.id}: {summary['failure']}", file=sys.stderr)
        return 1
    return 0


def _report_failed(summary: dict, results: Path) -> None:
    """Failed images on stderr: counts by error code, the first few files and why."""
    codes = ", ".join(f"{c} {n}" for c, n in sorted(summary["errors_by_code"].items(), key=lambda i: -i[1]))
    status = "failed" if not summary["ok"] else \
        f"failed (within max_failed_fraction {summary['max_failed_fraction']:g})"
    print(f"rkdsc edge: {summary['id']}: {summary['errors']} of {summary['images']} images {status}: {codes}",
          file=sys.stderr)
    shown = 0
    try:
        with open(results, encoding="utf-8") as fh:
            for line in fh:
                r = json.loads(line)
                if r.get("error") is not None:
                    print(f"  {r['file']}: {r['error']}", file=sys.stderr)
                    shown += 1
                    if shown == SHOW_FAILED:
                        break
    except (OSError, ValueError):
        return
    if summary["errors"] > shown:
        print(f"  ... {summary['errors'] - shown} more; every record: {results}", file=sys.stderr)


def main() -> None:
    sys.exit(cli())
