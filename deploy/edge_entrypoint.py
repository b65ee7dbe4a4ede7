"""Entry point of the edge image: choose the transmitter id and the run, then run and watch
`python -m rkdsc.edge`.

    python deploy/edge_entrypoint.py [extra `rkdsc edge` flags ...]

The transmitter id is, in this order:
1. ``RKDSC_EDGE_ID`` when set (the fixed devices of deploy/compose.yaml: edge-near, ...);
2. with ``JOB_COMPLETION_INDEX`` = i (set by Kubernetes in every pod of an Indexed Job,
   deploy/k8s/base/edge-job.yaml): ``RKDSC_EDGE_ID_PATTERN`` with ``{index}`` replaced by i
   when that is set (e.g. ``edge-{index}``), else the i-th ``[[transmitters]]`` id of the
   topology ``$RKDSC_CONFIG`` (0 = the first; the devices of ``[[fleets]]`` follow, in
   order). An index that is not an integer, beyond the topology's list, or a pattern id the
   topology does not list is an error naming the topology (exit status 2), never a guess;
3. ``edge-<n>`` where ``n`` is the compose replica number of this container
   (``docker compose up --scale edge=N`` names the containers ``<project>-edge-1..N``; the
   number is read from the compose network's DNS: a PTR query for the container's own
   address to Docker's embedded resolver 127.0.0.11);
4. the container hostname.

The relay only accepts transmitter ids of its topology, so the images' compose topology
(deploy/topology.compose.toml, made by deploy/Dockerfile) adds a pool of ``edge-1`` ..
``edge-<SCALE_POOL>`` transmitters with default link settings.

The run: every ``docker compose up`` first runs the one-shot ``run`` service
(deploy/compose_run.py), which writes a new run id to ``$RKDSC_OUT/current-run``; results go
to ``$RKDSC_OUT/<run id>/<transmitter id>/`` (``RKDSC_RUN_ID`` overrides, e.g. the Job name
and uid on Kubernetes; without either a fresh id is made here). So results of an earlier run
never mix with this one.

Then it runs ``python -m rkdsc.edge --config $RKDSC_CONFIG --id ID --out OUT`` (plus
``--limit $RKDSC_EDGE_LIMIT`` when that is set, plus the arguments given) as a child and
supervises it:
- ``OUT/status.json``: ``{"id", "run_id", "state": "running" | "exited", "pid", "started",
  "heartbeat", "exit_code", "ended", "stderr_tail"}``, rewritten (atomically) every
  ``HEARTBEAT_S`` seconds while the edge runs and once when it ended. deploy/compose_report.py
  waits for every device's final status and names the failed ones with their exit status and
  last stderr lines;
- ``/tmp/rkdsc-edge.heartbeat`` (``{"time", "pid"}``, same rhythm): the container health
  check (``deploy/healthcheck.py --heartbeat``) reads it;
- SIGTERM / SIGINT are passed on to the edge; the exit status is the edge's (128 + signal
  number when it was killed by a signal).
The edge's stderr is passed through unchanged (and its last lines kept for status.json).
Standard library only.
"""
from __future__ import annotations

import collections
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import tomllib

DOCKER_DNS = ("127.0.0.11", 53)  # Docker's embedded resolver on user-defined networks
HEARTBEAT_FILE = "/tmp/rkdsc-edge.heartbeat"
HEARTBEAT_S = 2.0
CURRENT_RUN = "current-run"  # in the results root, written by deploy/compose_run.py
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _read_name(msg: bytes, pos: int) -> tuple[str, int]:
    """Decode a (possibly compressed) DNS name at `pos`; returns (name, position after it)."""
    labels, end, jumps = [], None, 0
    while True:
        length = msg[pos]
        if length & 0xC0 == 0xC0:  # pointer
            if end is None:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | msg[pos + 1]
            jumps += 1
            if jumps > 32:
                raise ValueError("DNS name: pointer loop")
            continue
        if length == 0:
            return ".".join(labels), (end if end is not None else pos + 1)
        labels.append(msg[pos + 1:pos + 1 + length].decode("ascii", "replace"))
        pos += 1 + length


def dns_query(qname: str, qtype: int, server: tuple[str, int] = DOCKER_DNS,
              timeout_s: float = 1.0) -> list[tuple[int, bytes, int]]:
    """Answers (type, message, rdata offset) of one UDP query to `server`; [] on any failure
    (no answer within `timeout_s`, NXDOMAIN, malformed reply)."""
    qid = random.randrange(1 << 16)
    query = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(p)]) + p.encode() for p in qname.split(".") if p) + b"\0"
    query += struct.pack(">HH", qtype, 1)  # IN
    out = []
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout_s)
            s.sendto(query, server)
            msg, _ = s.recvfrom(4096)
        rid, flags, qd, an = struct.unpack(">HHHH", msg[:8])
        if rid != qid or flags & 0x000F or an == 0:
            return []
        pos = 12
        for _ in range(qd):
            _, pos = _read_name(msg, pos)
            pos += 4
        for _ in range(an):
            _, pos = _read_name(msg, pos)
            rtype, _, _, rdlen = struct.unpack(">HHIH", msg[pos:pos + 10])
            pos += 10
            out.append((rtype, msg, pos, rdlen))
            pos += rdlen
    except (OSError, ValueError, IndexError, struct.error):
        return []
    return [(t, m, p) for t, m, p, n in out if n <= len(m) - p]


def reverse_dns(ip: str, server: tuple[str, int] = DOCKER_DNS, timeout_s: float = 1.0) -> str | None:
    """PTR name of an IPv4 address from `server`, or None (no answer, not IPv4, ...)."""
    try:
        octets = socket.inet_aton(ip)
    except OSError:
        return None
    qname = ".".join(str(b) for b in reversed(octets)) + ".in-addr.arpa"
    for rtype, msg, pos in dns_query(qname, 12, server, timeout_s):  # PTR
        if rtype == 12:
            try:
                return _read_name(msg, pos)[0]
            except (ValueError, IndexError):
                return None
    return None


def lookup_a(name: str, server: tuple[str, int] = DOCKER_DNS, timeout_s: float = 1.0) -> list[str]:
    """IPv4 addresses of `name` from `server` (a compose service name: one per running
    replica), [] when none answer within `timeout_s`."""
    return sorted({socket.inet_ntoa(msg[pos:pos + 4]) for rtype, msg, pos in dns_query(name, 1, server, timeout_s)
                   if rtype == 1 and len(msg) >= pos + 4})


def replica_from_name(name: str | None) -> int | None:
    """'rkdsc-edge-3.rkdsc_default' -> 3 (compose v2 ``-`` and v1 ``_`` separators); else None."""
    if not name:
        return None
    m = re.search(r"[-_](\d+)$", name.split(".")[0])
    return int(m.group(1)) if m else None


def replica_number() -> int | None:
    """The compose replica number of this container (``<project>-<service>-<n>``), or None."""
    try:
        ip = socket.gethostbyname(socket.gethostname())
    except OSError:
        return None
    return replica_from_name(reverse_dns(ip))


class EdgeIdError(ValueError):
    """The transmitter id cannot be derived (bad JOB_COMPLETION_INDEX, topology, pattern)."""


def topology_ids(config: str) -> list[str]:
    """The ``[[transmitters]]`` ids of a topology file, in file order (EdgeIdError otherwise)."""
    try:
        with open(config, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise EdgeIdError(f"cannot read the topology {config}: {exc}") from None
    txs = data.get("transmitters", [])
    if not isinstance(txs, list) or not all(isinstance(t, dict) and isinstance(t.get("id"), str) for t in txs):
        raise EdgeIdError(f"topology {config}: [[transmitters]] entries need a string id")
    ids = [t["id"] for t in txs]
    for f in data.get("fleets", []):  # [[fleets]] expand after them (rkdsc.common.config, docs/fleets.md)
        try:
            ids += [f["id_pattern"].format(index=i) for i in range(int(f["count"]))]
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise EdgeIdError(f"topology {config}: [[fleets]] entries need id_pattern and count ({exc!r})") from None
    return ids


def _ids_phrase(ids: list[str]) -> str:
    shown = ", ".join(ids[:8]) + (f", ... {ids[-1]}" if len(ids) > 8 else "")
    return f"{len(ids)} transmitter(s)" + (f": {shown}" if ids else "")


def id_from_index(index: str, config: str, pattern: str | None = None) -> str:
    """The transmitter id of pod `index` of an Indexed Job: `pattern` with {index} replaced,
    or the index-th transmitter of the topology `config`. EdgeIdError naming the topology when
    the index is not an integer >= 0, is beyond the list, or the pattern's id is unknown."""
    try:
        i = int(index.strip())
        if i < 0:
            raise ValueError
    except ValueError:
        raise EdgeIdError(f"JOB_COMPLETION_INDEX={index!r}: expected an integer >= 0") from None
    ids = topology_ids(config)
    if pattern:
        if "{index}" not in pattern:
            raise EdgeIdError(f"RKDSC_EDGE_ID_PATTERN={pattern!r}: expected {{index}} in it, e.g. 'edge-{{index}}'")
        tid = pattern.replace("{index}", str(i))
        if tid not in ids:
            raise EdgeIdError(f"JOB_COMPLETION_INDEX={i} -> id {tid!r} (RKDSC_EDGE_ID_PATTERN={pattern!r}), "
                              f"which the topology {config} does not list (the relay would refuse it); it has "
                              f"{_ids_phrase(ids)}")
        return tid
    if i >= len(ids):
        raise EdgeIdError(f"JOB_COMPLETION_INDEX={i} is out of range: the topology {config} has "
                          f"{_ids_phrase(ids)} (indexes 0..{len(ids) - 1}); make the Job's completions at most "
                          f"{len(ids)} or list more transmitters" if ids else
                          f"JOB_COMPLETION_INDEX={i} is out of range: the topology {config} lists no transmitters")
    return ids[i]


def transmitter_id(env: dict[str, str] | os._Environ = os.environ) -> str:
    """The transmitter id (module doc: RKDSC_EDGE_ID, JOB_COMPLETION_INDEX, compose replica,
    hostname); EdgeIdError when JOB_COMPLETION_INDEX is set but does not name a transmitter."""
    if env.get("RKDSC_EDGE_ID"):
        return env["RKDSC_EDGE_ID"]
    if env.get("JOB_COMPLETION_INDEX", "").strip():
        return id_from_index(env["JOB_COMPLETION_INDEX"], env.get("RKDSC_CONFIG", "deploy/topology.toml"),
                             env.get("RKDSC_EDGE_ID_PATTERN") or None)
    n = replica_number()
    return f"edge-{n}" if n is not None else socket.gethostname()


def new_run_id() -> str:
    """A fresh, sortable run id: UTC time + 6 random hex digits (20250101T120000Z-1a2b3c)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{random.randrange(1 << 24):06x}"


def valid_run_id(run_id: str) -> bool:
    return bool(_RUN_ID.match(run_id)) and run_id not in (".", "..")


def current_run_id(results: str, env: dict[str, str] | os._Environ = os.environ) -> tuple[str, str]:
    """(run id, where it came from): RKDSC_RUN_ID, else RESULTS/current-run, else a new one."""
    if env.get("RKDSC_RUN_ID"):
        return env["RKDSC_RUN_ID"], "RKDSC_RUN_ID"
    path = os.path.join(results, CURRENT_RUN)
    try:
        with open(path, encoding="utf-8") as fh:
            run_id = fh.read().strip()
        if valid_run_id(run_id):
            return run_id, path
    except OSError:
        pass
    return new_run_id(), "new (no current-run file)"


def write_json(path: str, data: dict) -> None:
    """Atomic write (temporary file + rename): readers never see a half-written file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
        fh.write("\n")
    os.replace(tmp, path)


class Supervisor:
    """Runs the edge command as a child; heartbeat + status files; passes signals on."""

    def __init__(self, cmd: list[str], status_path: str, info: dict, heartbeat_path: str = HEARTBEAT_FILE,
                 heartbeat_s: float = HEARTBEAT_S, tail_lines: int = 20):
        self.cmd, self.status_path, self.heartbeat_path = cmd, status_path, heartbeat_path
        self.heartbeat_s = heartbeat_s
        self.status = {**info, "state": "starting", "pid": None, "started": time.time(), "heartbeat": None,
                       "exit_code": None, "ended": None, "stderr_tail": []}
        self.tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self.proc: subprocess.Popen | None = None

    def _beat(self) -> None:
        now = time.time()
        self.status["heartbeat"] = now
        for path, data in ((self.status_path, self.status),
                           (self.heartbeat_path, {"time": now, "pid": self.status["pid"]})):
            try:
                write_json(path, data)
            except OSError as exc:
                print(f"edge entrypoint: cannot write {path}: {exc}", file=sys.stderr, flush=True)

    def _pump_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            sys.stderr.buffer.write(raw)
            sys.stderr.buffer.flush()
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.tail.append(line[:500])

    def _forward(self, signum, _frame) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._forward)
        try:
            self.proc = subprocess.Popen(self.cmd, stderr=subprocess.PIPE)
        except OSError as exc:
            self.tail.append(f"cannot start {self.cmd[0]}: {exc}")
            return self._finish(127)
        self.status.update(state="running", pid=self.proc.pid)
        pump = threading.Thread(target=self._pump_stderr, daemon=True)
        pump.start()
        while True:
            self._beat()
            try:
                rc = self.proc.wait(timeout=self.heartbeat_s)
                break
            except subprocess.TimeoutExpired:
                continue
        pump.join(5)
        return self._finish(rc if rc >= 0 else 128 - rc)

    def _finish(self, rc: int) -> int:
        self.status.update(state="exited", exit_code=rc, ended=time.time(), stderr_tail=list(self.tail))
        self._beat()
        try:
            os.unlink(self.heartbeat_path)  # not healthy any more
        except OSError:
            pass
        return rc


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        tid = transmitter_id()
    except EdgeIdError as exc:
        print(f"edge entrypoint: {exc}", file=sys.stderr)
        return 2
    config = os.environ.get("RKDSC_CONFIG", "deploy/topology.toml")
    results = os.environ.get("RKDSC_OUT", "runs/compose")
    run_id, source = current_run_id(results)
    if not valid_run_id(run_id):
        print(f"edge entrypoint: run id {run_id!r} ({source}): expected letters, digits, '.', '_', '-'",
              file=sys.stderr)
        return 2
    out = os.path.join(results, run_id, tid)
    extra = []
    if os.environ.get("RKDSC_EDGE_LIMIT", "").strip():
        extra = ["--limit", os.environ["RKDSC_EDGE_LIMIT"].strip()]
    cmd = [sys.executable, "-m", "rkdsc.edge", "--config", config, "--id", tid, "--out", out, *extra, *argv]
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        print(f"edge entrypoint: cannot create the results folder {out}: {exc} (running as uid {os.getuid()}; "
              "the `run` service prepares it: docker compose up, or RKDSC_UID/RKDSC_GID)", file=sys.stderr)
        return 2
    print(f"edge entrypoint: transmitter id {tid!r}, run {run_id} ({source}): {' '.join(cmd[1:])}", flush=True)
    sup = Supervisor(cmd, os.path.join(out, "status.json"), {"id": tid, "run_id": run_id, "cmd": cmd[1:]})
    return sup.run()


if __name__ == "__main__":
    sys.exit(main())
