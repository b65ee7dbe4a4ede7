"""Start a new compose run: a run id shared by every edge device and the report of one
`docker compose up`, and its results folder.

    python deploy/compose_run.py [--out runs/compose]

The compose `run` service runs this once per `docker compose up` (a one-shot container;
`up` starts it again every time, and the edge devices wait for it with
`condition: service_completed_successfully`). It

1. makes a new run id (UTC time + random suffix, e.g. ``20250101T120000Z-1a2b3c``; or
   ``RKDSC_RUN_ID`` when set) and creates ``OUT/<run id>/``;
2. hands that folder to the user the edge devices and the report run as (``RKDSC_UID`` /
   ``RKDSC_GID``, default 10001 = the images' ``rkdsc`` user) when it runs as root: the
   results folder is a bind mount that Docker creates root-owned on first use, so the only
   root step of the stack is this chown of a folder it just made (the folder above it is left
   as it is);
3. replaces ``OUT/summary.json`` with a placeholder for this run (``"state": "running"``, no
   transmitters; owned by that user, so the report can overwrite it) — a summary never
   describes an earlier run;
4. writes the run id to ``OUT/current-run`` (read by deploy/edge_entrypoint.py and
   deploy/compose_report.py) and points the ``OUT/latest`` symlink at the run folder.

Standard library only.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from edge_entrypoint import CURRENT_RUN, new_run_id, valid_run_id  # noqa: E402


def _owner(env) -> tuple[int, int] | None:
    try:
        return int(env.get("RKDSC_UID") or 10001), int(env.get("RKDSC_GID") or 10001)
    except ValueError:
        return None


def _write(path: str, text: str, owner: tuple[int, int] | None) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    if owner is not None:
        os.chown(tmp, *owner)
    os.replace(tmp, path)


def prepare(out: str, env=os.environ) -> str:
    """Create the run folder and files; returns the run id."""
    run_id = env.get("RKDSC_RUN_ID") or new_run_id()
    if not valid_run_id(run_id):
        raise ValueError(f"RKDSC_RUN_ID={run_id!r}: expected letters, digits, '.', '_', '-' (at most 64)")
    owner = _owner(env) if os.geteuid() == 0 else None
    os.makedirs(out, exist_ok=True)
    run_dir = os.path.join(out, run_id)
    os.makedirs(run_dir, exist_ok=True)
    if owner is not None:
        os.chown(run_dir, *owner)
    placeholder = {"run_id": run_id, "state": "running", "started": time.time(), "transmitters": [],
                   "wall_s": None, "source": "docker compose",
                   "note": "written by the `run` service; deploy/compose_report.py replaces it when every "
                           "edge device of this run has finished"}
    _write(os.path.join(out, "summary.json"), json.dumps(placeholder, indent=2) + "\n", owner)
    _write(os.path.join(out, CURRENT_RUN), run_id + "\n", None)
    link = os.path.join(out, "latest")
    try:
        tmp = f"{link}.tmp{os.getpid()}"
        os.symlink(run_id, tmp)
        os.replace(tmp, link)
    except OSError:
        pass  # a convenience only (e.g. no symlinks on this file system)
    return run_id


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="compose_run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("RKDSC_OUT", "runs/compose"),
                   help="results root (default: $RKDSC_OUT or runs/compose)")
    args = p.parse_args(argv)
    try:
        run_id = prepare(args.out)
    except (OSError, ValueError) as exc:
        print(f"compose_run: cannot prepare a run under {args.out}: {exc}", file=sys.stderr)
        return 1
    print(f"compose_run: run {run_id}: results in {os.path.join(args.out, run_id)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
