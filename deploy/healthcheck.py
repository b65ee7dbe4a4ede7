"""Container health probe: asks a gRPC service's grpc.health.v1.Health whether it is SERVING,
or (edge devices, which serve nothing) whether a supervisor's heartbeat file is fresh.

    python deploy/healthcheck.py 127.0.0.1:50051                 # overall health ("")
    python deploy/healthcheck.py 127.0.0.1:50052 --metrics 9102  # and /metrics answers
    python deploy/healthcheck.py server:50051 --service rkdsc.v1.EdgeServer
    python deploy/healthcheck.py --heartbeat /tmp/rkdsc-edge.heartbeat --max-age 15

TLS: with ``RKDSC_TLS`` = ``tls`` or ``mtls`` in the environment (as the compose services have
it) the probe dials with TLS, trusting ``$RKDSC_TLS_CA`` (default ``$RKDSC_TLS_DIR/ca.pem``); under
``mtls`` it presents ``$RKDSC_TLS_DIR/<identity>.pem`` / ``.key`` (``--identity``, default
``$RKDSC_TLS_IDENTITY`` or ``admin``; a service probes itself with its own certificate, e.g.
``--identity server``). Health is open to every identity of the CA.

The heartbeat file (written every few seconds by deploy/edge_entrypoint.py while the edge
process runs) is JSON ``{"time": <unix s>, "pid": <edge process id>}``; healthy when it is
younger than ``--max-age`` seconds and that process is alive.

Exit status 0 when healthy, 1 otherwise (the reason goes to stderr), which is what Docker's
HEALTHCHECK and compose's `healthcheck:` expect. Needs only grpcio and grpcio-health-checking
(the service images' runtime set), not the rkdsc package, so it also works against a
service built from another checkout.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _channel(addr: str, identity: str, env=os.environ):
    """A plaintext channel, or a TLS one per RKDSC_TLS / RKDSC_TLS_DIR / RKDSC_TLS_CA (see above)."""
    import grpc

    mode = env.get("RKDSC_TLS") or "off"
    if mode == "off":
        return grpc.insecure_channel(addr)
    folder = env.get("RKDSC_TLS_DIR") or "."
    with open(env.get("RKDSC_TLS_CA") or os.path.join(folder, "ca.pem"), "rb") as fh:
        ca = fh.read()
    key = cert = None
    if mode == "mtls":
        with open(env.get("RKDSC_TLS_CERT") or os.path.join(folder, f"{identity}.pem"), "rb") as fh:
            cert = fh.read()
        with open(env.get("RKDSC_TLS_KEY") or os.path.join(folder, f"{identity}.key"), "rb") as fh:
            key = fh.read()
    options = [("grpc.ssl_target_name_override", env["RKDSC_TLS_SERVER_NAME"])] if env.get("RKDSC_TLS_SERVER_NAME") else []
    return grpc.secure_channel(addr, grpc.ssl_channel_credentials(ca, key, cert), options=options)


def check_grpc(addr: str, service: str, timeout_s: float, identity: str = "admin") -> str | None:
    """None when `service` on `addr` reports SERVING, else a one-line reason."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        channel = _channel(addr, identity)
    except OSError as exc:
        return f"{addr}: cannot read the TLS files ({exc})"
    try:
        with channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
    except grpc.RpcError as exc:
        return f"{addr}: health check failed: {exc.code().name}: {exc.details()}"
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return f"{addr}: service {service!r} is {name}"
    return None


def check_metrics(port: int, timeout_s: float) -> str | None:
    """None when http://127.0.0.1:PORT/metrics answers 200 with rkdsc_ metrics."""
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        import urllib.request  # here, not at the top: the edge's heartbeat probe stays a bare start-up

        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = resp.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"{url}: {exc}"
    if "rkdsc_" not in body:
        return f"{url}: no rkdsc_ metrics in the answer"
    return None


def check_heartbeat(path: str, max_age_s: float) -> str | None:
    """None when the heartbeat file is fresh and names a live process, else a reason."""
    try:
        with open(path, encoding="utf-8") as fh:
            beat = json.load(fh)
        age, pid = time.time() - float(beat["time"]), int(beat["pid"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{path}: no readable heartbeat: {exc}"
    if age > max_age_s:
        return f"{path}: last heartbeat {age:.0f} s ago (more than {max_age_s:g} s)"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"{path}: process {pid} is gone"
    except PermissionError:
        pass  # exists, another user
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="healthcheck.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("addr", nargs="?", default=None,
                   help="host:port of the gRPC service (e.g. 127.0.0.1:50051); not with --heartbeat")
    p.add_argument("--service", default="",
                   help="service name to ask about (default: '' = the whole server)")
    p.add_argument("--metrics", type=int, default=None, metavar="PORT",
                   help="also require http://127.0.0.1:PORT/metrics to answer")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds per probe (default 2)")
    p.add_argument("--identity", default=os.environ.get("RKDSC_TLS_IDENTITY") or "admin",
                   help="under RKDSC_TLS=mtls: the certificate of $RKDSC_TLS_DIR to present (server, relay, admin; "
                        "default $RKDSC_TLS_IDENTITY or admin)")
    p.add_argument("--heartbeat", default=None, metavar="FILE",
                   help="check a heartbeat file instead of a gRPC service (edge devices)")
    p.add_argument("--max-age", type=float, default=15.0, metavar="S",
                   help="with --heartbeat: oldest acceptable heartbeat, seconds (default 15)")
    args = p.parse_args(argv)
    if (args.addr is None) == (args.heartbeat is None):
        p.error("give either ADDR or --heartbeat FILE")
    if args.heartbeat is not None:
        problem = check_heartbeat(args.heartbeat, args.max_age)
        if problem is not None:
            print(problem, file=sys.stderr)
            return 1
        return 0
    problem = check_grpc(args.addr, args.service, args.timeout, args.identity)
    if problem is None and args.metrics is not None:
        problem = check_metrics(args.metrics, args.timeout)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
