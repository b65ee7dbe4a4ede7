"""argparse value types shared by the command-line tools (stdlib only: no torch, no grpc).

    p.add_argument("--batches", type=int_list(min_value=1), default=(1, 64))
    p.add_argument("--ratios", type=float_list(lo=0.0, hi=1.0, hi_open=True))

Each type raises argparse.ArgumentTypeError, so argparse reports the option name and the bad value.
"""
from __future__ import annotations

import argparse
import math
from typing import Callable


def int_list(min_value: int | None = None, example: str = "1,32") -> Callable[[str], tuple[int, ...]]:
    """Type for a non-empty comma-separated list of integers, each >= min_value."""
    def parse(text: str) -> tuple[int, ...]:
        try:
            vals = tuple(int(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated integers like {example}, got {text!r}") from None
        if not vals:
            raise argparse.ArgumentTypeError(f"expected at least one integer, got {text!r}")
        if min_value is not None and any(v < min_value for v in vals):
            raise argparse.ArgumentTypeError(f"expected integers >= {min_value}, got {text!r}")
        return vals
    parse.__name__ = "integer list"  # argparse names the type in its messages
    return parse


def float_list(lo: float | None = None, hi: float | None = None, *, hi_open: bool = False,
               example: str = "0.1,0.5") -> Callable[[str], tuple[float, ...]]:
    """Type for a non-empty comma-separated list of finite floats in [lo, hi] (or [lo, hi) with hi_open)."""
    def parse(text: str) -> tuple[float, ...]:
        try:
            vals = tuple(float(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated numbers like {example}, got {text!r}") from None
        if not vals or not all(math.isfinite(v) for v in vals):
            raise argparse.ArgumentTypeError(f"expected at least one finite number, got {text!r}")
        low_ok = lo is None or all(v >= lo for v in vals)
        high_ok = hi is None or all((v < hi) if hi_open else (v <= hi) for v in vals)
        if not (low_ok and high_ok):
            span = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{')' if hi_open else ']'}"
            raise argparse.ArgumentTypeError(f"expected numbers in {span}, got {text!r}")
        return vals
    parse.__name__ = "number list"
    return parse


def str_list(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']."""
    return [s.strip() for s in text.split(",") if s.strip()]
