"""The shared service skeleton: the only part of ``rkdsc.common`` that imports grpc.

- ``skeleton``: server building (thread pool, message limits, health + reflection, bind
  errors), ``ServiceHandle`` (start / graceful stop), signal-driven ``serve``, logging set-up,
  the services' ``run_cli`` shape, ``handler_threads``, ``status_code_from_value``;
- ``frames``: validation at a service boundary (``FrameRejected``, ``check_symbols``, ...);
- ``pump``: the server side of a bidirectional stream (``StreamPump``, ``pump``) and the
  client side's queue-fed request iterator (``RequestQueue``);
- ``probe``: the client side of grpc.health.v1 (``HealthProbe``, ``health_status``);
- ``security``: TLS credentials, client channels (``open_channel``), caller identities and the
  policy (``Guard``, ``authorize_frame``); imported from ``rkdsc.common.service.security``.

Services import from here and never from each other. Every name below is re-exported.
"""
from rkdsc.common.service.frames import (MAX_FILE_BYTES, MAX_ID_CHARS, POWER_TOLERANCE, SERVER_MAX_MESSAGE_BYTES,
                                         SNR_LIMIT_DB, FrameIdRegistry, FrameRejected, bounded,
                                         check_batch, check_client_strings, check_finite, check_symbol_rows,
                                         check_symbols, invalid, shown)
from rkdsc.common.service.probe import HealthProbe, health_status
from rkdsc.common.service.pump import RequestQueue, StreamPump, pump
from rkdsc.common.service.skeleton import (ServiceHandle, StreamSlots, add_health_and_reflection,
                                           build_grpc_server, channel_options, grpc_options, handler_threads,
                                           run_cli, serve, server_options, service_config, set_health,
                                           setup_logging, status_code_from_value)

__all__ = ["MAX_FILE_BYTES", "MAX_ID_CHARS", "POWER_TOLERANCE", "SERVER_MAX_MESSAGE_BYTES", "SNR_LIMIT_DB",
           "FrameIdRegistry", "FrameRejected", "bounded", "check_batch", "check_client_strings", "check_finite",
           "check_symbol_rows", "check_symbols", "invalid", "shown", "StreamSlots", "channel_options", "server_options",
           "service_config", "HealthProbe", "health_status", "RequestQueue", "StreamPump", "pump", "ServiceHandle",
           "add_health_and_reflection", "build_grpc_server", "grpc_options", "handler_threads", "run_cli",
           "serve", "set_health", "setup_logging", "status_code_from_value"]
