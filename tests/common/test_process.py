"""rkdsc.common.process.die_with_parent: a service started by a parent that dies (even by SIGKILL) goes too."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rkdsc.common.process import PARENT_PID_ENV, die_with_parent

REPO = Path(__file__).resolve().parents[2]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
CHILD = "from rkdsc.common.process import die_with_parent; import time; print(die_with_parent(), flush=True); time.sleep(60)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")  # a zombie is gone


def test_without_the_variable_nothing_is_armed():
    assert die_with_parent({}) is False
    assert die_with_parent({PARENT_PID_ENV: "not-a-pid"}) is False


@linux_only
def test_child_goes_when_its_parent_is_killed(tmp_path):
    # middle process: starts the child with RKDSC_PARENT_PID = its own pid, prints the child's pid, waits
    middle_src = (
        "import os, subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', {CHILD!r}], env={{**os.environ, {PARENT_PID_ENV!r}: str(os.getpid())}},"
        " stdout=subprocess.PIPE, text=True)\n"
        "print(p.pid, p.stdout.readline().strip(), flush=True)\n"
        "time.sleep(60)\n")
    middle = subprocess.Popen([sys.executable, "-c", middle_src], stdout=subprocess.PIPE, text=True, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        pid_text, armed = middle.stdout.readline().split()
        child = int(pid_text)
        assert armed == "True"
        assert _alive(child)
        middle.kill()  # SIGKILL: no cleanup code of the parent runs
        middle.wait()
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the child outlived its SIGKILLed parent"
    finally:
        middle.kill()


@linux_only
def test_child_of_an_already_dead_parent_terminates_at_once():
    # the variable names a pid that is not our parent: as if the parent died before the signal was armed
    proc = subprocess.run([sys.executable, "-c", CHILD], env={**os.environ, PARENT_PID_ENV: "1",
                                                               "PYTHONPATH": str(REPO)},
                          cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == -15  # SIGTERM
