"""``rkdsc link``: the admin client of the base-station relay (``rkdsc.v1.Relay`` GetLink /
SetLink / ListLinks), to look at and change links while edge devices stream.

    rkdsc link list [--relay HOST:PORT | --config FILE] [--json]
    rkdsc link get edge-far
    rkdsc link set edge-far --snr -30 [--fading rician --rician-k 6] [--path-gain -3] [--seed 7]

    with RelayAdmin("127.0.0.1:50052") as admin:     # the same from Python
        admin.set("edge-far", snr_db=-30.0)          # -> dict of the new LinkState
        admin.list()                                 # -> [dict, ...]

Where the relay is: ``--relay HOST:PORT``; else ``$RKDSC_RELAY_ADDR``; else the relay address of
the topology ``--config FILE`` (default ``deploy/topology.toml``: ``[basestation] host:port``).
A change applies from the next frame of that link on; unset fields keep their value. The
generated stubs are ``rkdsc.v1.emulator_pb2`` (messages) and ``rkdsc.v1.emulator_pb2_grpc``
(``RelayStub``), from ``proto/rkdsc/v1/emulator.proto``.

TLS: the admin connects as the ``admin`` identity (``admin.pem`` of the certificate folder under
mutual TLS, else its bearer token): ``[tls]`` of ``--config`` (or ``deploy/topology.toml``) with
the ``RKDSC_TLS*`` environment on top, or the environment alone when there is no config file
(``RKDSC_TLS=mtls RKDSC_TLS_DIR=certs rkdsc link list --relay 127.0.0.1:50052``). A device
certificate gets PERMISSION_DENIED for ``set`` (docs/security.md).

Exit status: 0 on success, 2 for a bad argument or a request the relay refused
(INVALID_ARGUMENT: the message names the field, e.g. ``snr_db: expected a finite value in
[-100.0, 100.0], got 300.0``), 1 when the relay cannot be reached.

Client of the relay's own API: imports grpc, the generated stubs and ``rkdsc.common`` only
(never the server or the edge).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import grpc

from rkdsc.common.channel import DEFAULT_K_FACTOR, FADINGS
from rkdsc.common.config import TLSConfig
from rkdsc.common.service.security import ADMIN, check_client_credentials, open_channel
from rkdsc.v1 import emulator_pb2 as pb
from rkdsc.v1 import emulator_pb2_grpc as pb_grpc

DEFAULT_CONFIG = "deploy/topology.toml"
TIMEOUT_S = 10.0


class AdminError(RuntimeError):
    """A call the relay refused or could not answer; ``code`` is the grpc.StatusCode."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code


def state_dict(state: pb.LinkState) -> dict[str, Any]:
    """A LinkState as a plain dict (the fields of ``rkdsc link --json``)."""
    return {"transmitter_id": state.transmitter_id, "snr_db": state.snr_db, "path_gain_db": state.path_gain_db,
            "effective_snr_db": state.effective_snr_db, "fading": state.fading, "rician_k": state.rician_k,
            "seed": int(state.seed), "frames": int(state.frames)}


class RelayAdmin:
    """GetLink / SetLink / ListLinks of one relay; every call returns plain dicts."""

    def __init__(self, addr: str, timeout_s: float = TIMEOUT_S, channel: grpc.Channel | None = None,
                 tls: TLSConfig | None = None):
        self.addr = addr
        self.timeout_s = timeout_s
        self._own = channel is None
        self._channel = channel or open_channel(addr, tls, ADMIN)  # plaintext when tls is None / off
        self.stub = pb_grpc.RelayStub(self._channel)

    def __enter__(self) -> "RelayAdmin":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._own:
            self._channel.close()

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            code = exc.code()
            details = exc.details() or ""
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                details = f"relay at {self.addr} not reachable ({details})"
            raise AdminError(code, details) from None

    def list(self) -> list[dict[str, Any]]:
        return [state_dict(s) for s in self._call(self.stub.ListLinks, pb.ListLinksRequest()).links]

    def get(self, transmitter_id: str) -> dict[str, Any]:
        return state_dict(self._call(self.stub.GetLink, pb.LinkRequest(transmitter_id=transmitter_id)))

    def set(self, transmitter_id: str, *, snr_db: float | None = None, fading: str | None = None,
            path_gain_db: float | None = None, seed: int | None = None,
            rician_k: float | None = None) -> dict[str, Any]:
        """Change the given fields of one link (None = keep); returns the new state."""
        check_set_args(snr_db=snr_db, fading=fading, path_gain_db=path_gain_db, seed=seed, rician_k=rician_k)
        kw = {k: v for k, v in (("snr_db", snr_db), ("fading", fading), ("path_gain_db", path_gain_db),
                                ("seed", seed), ("rician_k", rician_k)) if v is not None}
        return state_dict(self._call(self.stub.SetLink, pb.SetLinkRequest(transmitter_id=transmitter_id, **kw)))


def check_set_args(*, snr_db=None, fading=None, path_gain_db=None, seed=None, rician_k=None) -> None:
    """Client-side checks (the relay checks again): ValueError naming the field."""
    for name, value in (("snr_db", snr_db), ("path_gain_db", path_gain_db), ("rician_k", rician_k)):
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if rician_k is not None and rician_k < 0:
        raise ValueError(f"rician_k: expected a K factor >= 0 (linear, not dB), got {rician_k!r}")
    if fading is not None and fading not in FADINGS:
        raise ValueError(f"fading: expected one of {', '.join(FADINGS)}, got {fading!r}")
    if seed is not None and not 0 <= seed < 2**64:
        raise ValueError(f"seed: expected an integer in [0, 2^64), got {seed!r}")


def resolve_relay(relay: str | None, config: str | None, env: dict[str, str] | None = None) -> str:
    """--relay, else $RKDSC_RELAY_ADDR, else the topology's relay address (ValueError naming the flag)."""
    from rkdsc.common.config import ConfigError, load_config, split_hostport

    env = os.environ if env is None else env
    if relay:
        try:
            split_hostport(relay, "--relay")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return relay
    if env.get("RKDSC_RELAY_ADDR"):
        try:
            split_hostport(env["RKDSC_RELAY_ADDR"], "RKDSC_RELAY_ADDR")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return env["RKDSC_RELAY_ADDR"]
    path = Path(config or DEFAULT_CONFIG)
    if not path.is_file():
        raise ValueError(f"--relay: no relay address given (--relay HOST:PORT, $RKDSC_RELAY_ADDR, or --config "
                         f"FILE; {path} not found)")
    try:
        return load_config(path, env=env).relay_addr
    except ConfigError as exc:
        raise ValueError(f"--config: {exc}") from None


def resolve_tls(config: str | None, env: dict[str, str] | None = None) -> TLSConfig:
    """[tls] of the topology (--config, else deploy/topology.toml when present) with the RKDSC_TLS*
    environment on top; the environment alone without a config file (ValueError naming --config)."""
    from rkdsc.common.config import ConfigError, apply_tls_env, load_config

    env = os.environ if env is None else env
    path = Path(config or DEFAULT_CONFIG)
    try:
        if path.is_file():
            return load_config(path, env=env).tls
        return apply_tls_env(TLSConfig(), env)
    except ConfigError as exc:
        raise ValueError(f"--config: {exc}") from None


def format_table(states: list[dict[str, Any]]) -> str:
    head = (f"{'transmitter':<16}{'snr_db':>8}{'path_gain':>10}{'effective':>10} {'fading':<14}"
            f"{'rician_k':>9}{'seed':>8}{'frames':>9}")
    lines = [head, "-" * len(head)]
    for s in states:
        lines.append(f"{s['transmitter_id']:<16}{s['snr_db']:>8.2f}{s['path_gain_db']:>10.2f}"
                     f"{s['effective_snr_db']:>10.2f} {s['fading']:<14}{s['rician_k']:>9g}{s['seed']:>8}"
                     f"{s['frames']:>9}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--relay", metavar="HOST:PORT", default=None,
                        help="relay address (default: $RKDSC_RELAY_ADDR, else the [basestation] host:port of --config)")
    common.add_argument("--config", metavar="FILE", default=None,
                        help=f"topology TOML whose relay to ask when no --relay / $RKDSC_RELAY_ADDR (default {DEFAULT_CONFIG})")
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    common.add_argument("--timeout", type=float, default=TIMEOUT_S, metavar="S",
                        help=f"seconds to wait for the relay (default {TIMEOUT_S:g})")
    p = argparse.ArgumentParser(
        prog="rkdsc link",
        description="Look at and change the relay's links at run time (the admin calls ListLinks, GetLink, SetLink "
                    "of rkdsc.v1.Relay). A change applies from the link's next frame; the edge devices see it in "
                    "the link feedback of every result (results.jsonl: link_snr_db).")
    sub = p.add_subparsers(dest="action", required=True, metavar="{list,get,set}")
    sub.add_parser("list", parents=[common], help="every link of the relay")
    g = sub.add_parser("get", parents=[common], help="one link")
    g.add_argument("id", help="transmitter id ([[transmitters]] id)")
    s = sub.add_parser("set", parents=[common], help="change one link; fields not given keep their value",
                       description="Change one link of the relay. Fields not given keep their value. Negative "
                                   "numbers work as they are: --snr -30.")
    s.add_argument("id", help="transmitter id ([[transmitters]] id)")
    s.add_argument("--snr", type=float, default=None, metavar="DB",
                   help="configured SNR in dB (Es/N0 per complex symbol), in [-100, 100]")
    s.add_argument("--path-gain", type=float, default=None, metavar="DB",
                   help="path gain in dB added to the SNR (negative = loss); snr + path gain must stay in [-100, 100]")
    s.add_argument("--fading", default=None, choices=FADINGS, help="channel model")
    s.add_argument("--rician-k", type=float, default=None, metavar="K",
                   help=f"Rician K factor, linear (LOS power / scattered power), >= 0; used when the fading is "
                        f"rician (default of a link: {DEFAULT_K_FACTOR:g})")
    s.add_argument("--seed", type=int, default=None, help="re-seed the link's noise/fading generator")
    return p


def cli(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        addr = resolve_relay(args.relay, args.config)
        tls = resolve_tls(args.config)
        check_client_credentials(tls, ADMIN)  # TLSError (a ValueError) naming the field and the file
        if args.action == "set":
            fields = dict(snr_db=args.snr, fading=args.fading, path_gain_db=args.path_gain, seed=args.seed,
                          rician_k=args.rician_k)
            if all(v is None for v in fields.values()):
                raise ValueError("set: give at least one of --snr, --path-gain, --fading, --rician-k, --seed")
            check_set_args(**fields)
    except ValueError as exc:
        print(f"rkdsc link: error: {exc}", file=sys.stderr)
        return 2
    try:
        with RelayAdmin(addr, timeout_s=args.timeout, tls=tls) as admin:
            if args.action == "list":
                states = admin.list()
            elif args.action == "get":
                states = [admin.get(args.id)]
            else:
                states = [admin.set(args.id, **fields)]
    except AdminError as exc:
        print(f"rkdsc link: error: {exc}", file=sys.stderr)
        return 1 if exc.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) else 2
    if args.json:
        print(json.dumps(states if args.action == "list" else states[0], indent=2))
    else:
        print(format_table(states))
    return 0


def main() -> None:
    sys.exit(cli())


if __name__ == "__main__":
    main()
