"""SNR trace files: measured or generated SNR over time, per transmitter (numpy + stdlib csv).

File format (CSV, UTF-8, ``#`` comment lines and blank lines ignored), one of:

* long: header ``time_s,transmitter,snr_db``; one row per sample;
* wide: header ``time_s,ID1,ID2,...``; one row per time, one column per transmitter (an empty
  cell = no sample for that transmitter at that time).

Times are seconds of emulated time from the start of the run, ``snr_db`` is Es/N0 per complex
symbol in dB (the channel conventions). Samples of one transmitter are sorted by time; two
samples at the same time are an error.

Interpolation rule (``interpolation``): ``"linear"`` (default) interpolates linearly **in dB**
between neighbouring samples; ``"previous"`` holds the last sample (zero-order hold). Before the
first sample the first value holds, after the last the last value holds (no extrapolation).
Errors name the file, the line and the column.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np

__all__ = ["INTERPOLATIONS", "SnrTrace", "TraceError", "load_trace"]

INTERPOLATIONS = ("linear", "previous")


class TraceError(ValueError):
    """A trace file is unreadable or malformed (the message names the file and line)."""


class SnrTrace:
    """Per-transmitter SNR samples and the interpolation rule."""

    def __init__(self, samples: dict[str, tuple[np.ndarray, np.ndarray]], interpolation: str = "linear",
                 source: str = "<memory>"):
        if interpolation not in INTERPOLATIONS:
            raise TraceError(f"interpolation: expected one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
        self.samples = {k: (np.asarray(t, float), np.asarray(v, float)) for k, (t, v) in samples.items()}
        self.interpolation = interpolation
        self.source = source

    @property
    def transmitters(self) -> list[str]:
        return sorted(self.samples)

    def snr_db(self, transmitter: str, t_s):
        """The SNR (dB) of ``transmitter`` at emulated time(s) ``t_s`` by the interpolation rule."""
        if transmitter not in self.samples:
            known = ", ".join(self.transmitters) or "(none)"
            raise TraceError(f"{self.source}: no samples for transmitter {transmitter!r} (has: {known})")
        times, values = self.samples[transmitter]
        t = np.asarray(t_s, float)
        if self.interpolation == "linear":
            out = np.interp(t, times, values)
        else:
            idx = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 1)
            out = values[idx]
        return float(out) if out.ndim == 0 else out


def load_trace(path: str | os.PathLike, interpolation: str = "linear") -> SnrTrace:
    """Read a trace file (see the module doc); TraceError naming the file and line otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise TraceError(f"{path}: cannot read the SNR trace: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path}: not UTF-8 text: {exc.reason}") from None
    rows = [(n, r) for n, r in enumerate(csv.reader(text.splitlines()), start=1)
            if r and any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
    if not rows:
        raise TraceError(f"{path}: empty SNR trace (expected a header time_s,...)")
    head_line, header = rows[0]
    header = [h.strip() for h in header]
    if header[0] != "time_s" or len(header) < 2:
        raise TraceError(f"{path}:{head_line}: expected a header starting with time_s and at least one more "
                         f"column, got {','.join(header)!r}")
    long = header == ["time_s", "transmitter", "snr_db"]
    points: dict[str, list[tuple[float, float]]] = {}
    if not long and len(set(header)) != len(header):
        raise TraceError(f"{path}:{head_line}: duplicate column names in {','.join(header)!r}")

    def number(cell: str, line: int, col: str) -> float:
        try:
            v = float(cell)
        except ValueError:
            raise TraceError(f"{path}:{line}: column {col}: expected a number, got {cell!r}") from None
        if not math.isfinite(v):
            raise TraceError(f"{path}:{line}: column {col}: expected a finite number, got {cell!r}")
        return v

    for line, row in rows[1:]:
        row = [c.strip() for c in row]
        if len(row) != len(header):
            raise TraceError(f"{path}:{line}: expected {len(header)} columns, got {len(row)}")
        t = number(row[0], line, "time_s")
        if t < 0:
            raise TraceError(f"{path}:{line}: column time_s: expected a time >= 0, got {row[0]!r}")
        if long:
            if not row[1]:
                raise TraceError(f"{path}:{line}: column transmitter: expected a transmitter id, got ''")
            points.setdefault(row[1], []).append((t, number(row[2], line, "snr_db")))
        else:
            for col, cell in zip(header[1:], row[1:]):
                if cell:
                    points.setdefault(col, []).append((t, number(cell, line, col)))
    samples = {}
    for tx, pts in points.items():
        pts.sort()
        times = np.array([p[0] for p in pts])
        if np.any(np.diff(times) == 0):
            dup = times[np.nonzero(np.diff(times) == 0)[0][0]]
            raise TraceError(f"{path}: transmitter {tx!r} has two samples at time_s = {dup:g}")
        samples[tx] = (times, np.array([p[1] for p in pts]))
    if not samples:
        raise TraceError(f"{path}: no samples after the header")
    return SnrTrace(samples, interpolation, source=str(path))
