"""Container health probe: asks a gRPC service's grpc.health.v1.Health whether it is SERVING.

    python deploy/healthcheck.py 127.0.0.1:50051                 # overall health ("")
    python deploy/healthcheck.py 127.0.0.1:50052 --metrics 9102  # and /metrics answers
    python deploy/healthcheck.py server:50051 --service rkdsc.v1.EdgeServer

Exit status 0 when healthy, 1 otherwise (the reason goes to stderr), which is what Docker's
HEALTHCHECK and compose's `healthcheck:` expect. Needs only grpcio and grpcio-health-checking
(the service images' runtime set), not the rkdsc package, so it also works against a
service built from another checkout.
"""
from __future__ import annotations

import argparse
import sys
import urllib.request


def check_grpc(addr: str, service: str, timeout_s: float) -> str | None:
    """None when `service` on `addr` reports SERVING, else a one-line reason."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(addr) as channel:
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
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = resp.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"{url}: {exc}"
    if "rkdsc_" not in body:
        return f"{url}: no rkdsc_ metrics in the answer"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="healthcheck.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("addr", help="host:port of the gRPC service (e.g. 127.0.0.1:50051)")
    p.add_argument("--service", default="",
                   help="service name to ask about (default: '' = the whole server)")
    p.add_argument("--metrics", type=int, default=None, metavar="PORT",
                   help="also require http://127.0.0.1:PORT/metrics to answer")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds per probe (default 2)")
    args = p.parse_args(argv)
    problem = check_grpc(args.addr, args.service, args.timeout)
    if problem is None and args.metrics is not None:
        problem = check_metrics(args.metrics, args.timeout)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
