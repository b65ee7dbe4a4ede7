"""The shared service skeleton: the only part of ``rkdsc.common`` that imports grpc.

- ``skeleton``: server building (thread pool, message limits, health + reflection, bind
  errors), ``ServiceHandle`` (start / graceful stop), signal-driven ``serve``, logging set-up,
  the services' ``run_cli`` shape, ``handler_threads``, ``status_code_from_value``;
- ``frames``: validation at a service boundary (``FrameRejected``, ``check_symbols``, ...);
- ``pump``: the server side of a bidirectional stream (``StreamPump``, ``pump``) and the
  client side's queue-fed request iterator (``RequestQueue``);
- ``probe``: the client side of grpc.health.v1 (``HealthProbe``, ``health_status``).

Services import from here and never from each other. Every name below is re-exported.
"""
from rkdsc.common.service.frames import (POWER_TOLERANCE, SNR_LIMIT_DB, FrameIdRegistry, FrameRejected,
                                         check_finite, check_symbols, invalid)
from rkdsc.common.service.probe import HealthProbe, health_status
from rkdsc.common.service.pump import RequestQueue, StreamPump, pump
from rkdsc.common.service.skeleton import (ServiceHandle, add_health_and_reflection, build_grpc_server,
                                           grpc_options, handler_threads, run_cli, serve, set_health,
                                           setup_logging, status_code_from_value)

__all__ = ["POWER_TOLERANCE", "SNR_LIMIT_DB", "FrameIdRegistry", "FrameRejected", "check_finite",
           "check_symbols", "invalid", "HealthProbe", "health_status", "RequestQueue", "StreamPump", "pump", "ServiceHandle",
           "add_health_and_reflection", "build_grpc_server", "grpc_options", "handler_threads", "run_cli",
           "serve", "set_health", "setup_logging", "status_code_from_value"]
