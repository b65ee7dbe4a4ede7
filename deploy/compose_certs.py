"""Make the compose stack's certificates: the one-shot `certs` service runs this before the
server, the relay and the edge devices start (they wait with
``condition: service_completed_successfully``).

    python deploy/compose_certs.py [--out /certs] [--ca-dir /ca] [--config $RKDSC_CONFIG]

1. ``rkdsc certs`` into ``--out`` (the `certs` volume, mounted read-only by the services) for
   every transmitter of the image's topology (the three fixed devices and the scale pool
   edge-1 .. edge-SCALE_POOL); the CA and its key stay in ``--ca-dir`` (the `ca` volume, which
   only this service mounts), so no service container holds the CA key;
2. idempotent: certificates of this CA valid for at least 7 more days are kept (``--keep 7``),
   so a second ``docker compose up`` neither renews them nor disturbs running services;
   ``docker compose down -v`` removes both volumes (a new CA next time);
3. when it runs as root: hands the server's and the relay's key to the images' user ``rkdsc``
   (uid 10001, what those services run as) and the transmitters' and admin keys to
   ``RKDSC_UID:RKDSC_GID`` (what the edge devices run as); keys stay mode 0600.

Exit status 0, or 1 with the reason on stderr.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

SERVICE_UID = 10001  # the images' user rkdsc: the server and the relay run as it


def _owner(env) -> tuple[int, int]:
    try:
        return int(env.get("RKDSC_UID") or SERVICE_UID), int(env.get("RKDSC_GID") or SERVICE_UID)
    except ValueError:
        raise SystemExit(f"compose_certs: RKDSC_UID / RKDSC_GID must be integers, got "
                         f"{env.get('RKDSC_UID')!r} / {env.get('RKDSC_GID')!r}") from None


def hand_over(out: Path, env=os.environ) -> None:
    """chown the files of ``out``: server/relay to the service user, the rest to RKDSC_UID:GID."""
    edge_owner = _owner(env)
    for path in [out, out / "transmitters", *out.rglob("*")]:
        if not path.exists():
            continue
        if path.is_dir():
            os.chown(path, 0, 0)
            os.chmod(path, 0o755)
            continue
        service = path.name.startswith(("server.", "relay."))
        uid, gid = (SERVICE_UID, SERVICE_UID) if service else edge_owner
        os.chown(path, uid, gid)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="compose_certs.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/certs")
    p.add_argument("--ca-dir", default="/ca")
    p.add_argument("--config", default=os.environ.get("RKDSC_CONFIG", "deploy/topology.toml"))
    args = p.parse_args(argv)
    from rkdsc.common.certs import cli as certs_cli

    rc = certs_cli(["--out", args.out, "--ca-dir", args.ca_dir, "--config", args.config, "--keep", "7"])
    if rc != 0:
        return 1
    if os.geteuid() == 0:
        hand_over(Path(args.out))
    print(f"compose_certs: certificates ready in {args.out} (TLS mode {os.environ.get('RKDSC_TLS', 'mtls')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
