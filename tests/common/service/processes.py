"""Test helper: run a service as its own process until it is ready, stop it with SIGTERM."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def run_service_until_ready(module: str, config: Path, ready: Path, *args: str, timeout_s: float = 60.0) -> str:
    """``python -m MODULE --config CONFIG --ready-file READY ARGS``: wait for the ready file, SIGTERM,
    expect exit status 0; returns its stderr (the log)."""
    proc = subprocess.Popen([sys.executable, "-m", module, "--config", str(config), "--ready-file", str(ready),
                             *args], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not ready.exists():
            assert proc.poll() is None, f"{module} exited: {proc.communicate()[1]}"
            assert time.monotonic() < deadline, f"{module}: no ready file after {timeout_s} s"
            time.sleep(0.05)
        assert json.loads(ready.read_text())["pid"] == proc.pid
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    return err
