"""Client side of grpc.health.v1: ask a service whether it is SERVING.

``health_status(addr, service="", timeout_s=2.0, tls=None, who=None) -> str``: ``"SERVING"``, another serving
status name (``"NOT_SERVING"``, ...) or the gRPC status code name of a failed call
(``"UNAVAILABLE"``, ``"DEADLINE_EXCEEDED"``, ...). ``HealthProbe(addr)`` keeps one channel
for repeated checks (close it, or use it as a context manager); ``HealthProbe(addr, channel=ch)``
checks over a channel the caller owns (closing the probe leaves it open); ``tls`` (the topology's
``[tls]``) and ``who`` (the identity to present, default admin) make the probe's own channel a
TLS one (``security.open_channel``).
"""
from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


class HealthProbe:
    """One channel to ``addr`` (plaintext unless ``tls``) for repeated Health/Check calls."""

    def __init__(self, addr: str, channel: grpc.Channel | None = None, tls: Any = None, who: Any = None):
        self.addr = addr
        self._own = channel is None
        if channel is None:
            from rkdsc.common.service.security import ADMIN, open_channel

            channel = open_channel(addr, tls, who or ADMIN)
        self._channel = channel
        self._stub = health_pb2_grpc.HealthStub(self._channel)

    def status(self, service: str = "", timeout_s: float = 2.0) -> str:
        try:
            reply = self._stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            return exc.code().name
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def close(self) -> None:
        if self._own:
            self._channel.close()

    def __enter__(self) -> "HealthProbe":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def health_status(addr: str, service: str = "", timeout_s: float = 2.0, tls: Any = None, who: Any = None) -> str:
    """The serving status name of ``service`` at ``addr``, or the failed call's status code name."""
    with HealthProbe(addr, tls=tls, who=who) as probe:
        return probe.status(service, timeout_s)
