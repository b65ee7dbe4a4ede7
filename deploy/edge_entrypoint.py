"""Entry point of the edge image: choose the transmitter id, then run `python -m rkdsc.edge`.

    python deploy/edge_entrypoint.py [extra `rkdsc edge` flags ...]

The transmitter id is, in this order:
1. ``RKDSC_EDGE_ID`` when set (the fixed devices of deploy/compose.yaml: edge-near, ...);
2. ``edge-<n>`` where ``n`` is the compose replica number of this container
   (``docker compose up --scale edge=N`` names the containers ``<project>-edge-1..N``; the
   number is read from the compose network's DNS: a PTR query for the container's own
   address to Docker's embedded resolver 127.0.0.11);
3. the container hostname.

The relay only accepts transmitter ids of its topology, so the images' compose topology
(deploy/topology.compose.toml, made by deploy/Dockerfile) adds a pool of ``edge-1`` ..
``edge-<SCALE_POOL>`` transmitters with default link settings.

Then it execs ``python -m rkdsc.edge --config $RKDSC_CONFIG --id ID --out $RKDSC_OUT/ID`` plus the
arguments given. Standard library only.
"""
from __future__ import annotations

import os
import random
import re
import socket
import struct
import sys

DOCKER_DNS = ("127.0.0.11", 53)  # Docker's embedded resolver on user-defined networks


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


def reverse_dns(ip: str, server: tuple[str, int] = DOCKER_DNS, timeout_s: float = 1.0) -> str | None:
    """PTR name of an IPv4 address from `server`, or None (no answer, not IPv4, ...)."""
    try:
        octets = socket.inet_aton(ip)
    except OSError:
        return None
    qname = ".".join(str(b) for b in reversed(octets)) + ".in-addr.arpa"
    qid = random.randrange(1 << 16)
    query = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(p)]) + p.encode() for p in qname.split(".")) + b"\0"
    query += struct.pack(">HH", 12, 1)  # PTR, IN
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout_s)
            s.sendto(query, server)
            msg, _ = s.recvfrom(4096)
        rid, flags, qd, an = struct.unpack(">HHHH", msg[:8])
        if rid != qid or flags & 0x000F or an == 0:
            return None
        pos = 12
        for _ in range(qd):
            _, pos = _read_name(msg, pos)
            pos += 4
        for _ in range(an):
            _, pos = _read_name(msg, pos)
            rtype, _, _, rdlen = struct.unpack(">HHIH", msg[pos:pos + 10])
            pos += 10
            if rtype == 12:
                return _read_name(msg, pos)[0]
            pos += rdlen
    except (OSError, ValueError, IndexError, struct.error):
        return None
    return None


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


def transmitter_id(env: dict[str, str] | os._Environ = os.environ) -> str:
    if env.get("RKDSC_EDGE_ID"):
        return env["RKDSC_EDGE_ID"]
    n = replica_number()
    return f"edge-{n}" if n is not None else socket.gethostname()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    tid = transmitter_id()
    config = os.environ.get("RKDSC_CONFIG", "deploy/topology.toml")
    out = os.path.join(os.environ.get("RKDSC_OUT", "runs/compose"), tid)
    cmd = [sys.executable, "-m", "rkdsc.edge", "--config", config, "--id", tid, "--out", out, *argv]
    print(f"edge entrypoint: transmitter id {tid!r}: {' '.join(cmd[1:])}", flush=True)
    os.execv(sys.executable, cmd)


if __name__ == "__main__":
    main()
