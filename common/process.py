"""Child-process hygiene shared by the service entry points, and the CPU threads a process may use
(stdlib only).

``env_threads()`` reads ``RKDSC_THREADS`` (an int >= 1; unset: None, the library's default), the
one knob for torch's intra-op threads in training and onnxruntime's in offline evaluation.

A parent that starts services (``rkdsc demo``, ``rkdsc bench``) sets ``RKDSC_PARENT_PID`` in the
child's environment; the child then calls :func:`die_with_parent` first thing, so that on Linux it
gets SIGTERM when the parent dies, even by SIGKILL. This is done in the child rather than with
``subprocess.Popen(preexec_fn=...)``: a ``preexec_fn`` forces a plain ``fork()``, which runs
grpc's at-fork handlers in the parent and can deadlock it while grpc threads are active.
"""
from __future__ import annotations

import os
import signal

PARENT_PID_ENV = "RKDSC_PARENT_PID"
THREADS_ENV = "RKDSC_THREADS"
_PR_SET_PDEATHSIG = 1


def env_threads() -> int | None:
    """$RKDSC_THREADS as an int >= 1, or None when unset or empty (ValueError naming it otherwise)."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return None
    try:
        k = int(raw)
    except ValueError:
        k = 0
    if k < 1:
        raise ValueError(f"{THREADS_ENV}: expected an int >= 1, got {raw!r}")
    return k


def die_with_parent(env: dict[str, str] | None = None) -> bool:
    """Arm SIGTERM-on-parent-death when ``RKDSC_PARENT_PID`` is set; returns whether it was armed.
    If the parent named there is already gone, terminate now (as the signal would have)."""
    value = (os.environ if env is None else env).get(PARENT_PID_ENV)
    if not value:
        return False
    try:
        parent = int(value)
    except ValueError:
        return False
    try:
        import ctypes

        if ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM)) != 0:
            return False
    except (OSError, AttributeError):  # not Linux / no glibc: the parent's cleanup still stops us
        return False
    if os.getppid() != parent:  # the parent died before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)
    return True
