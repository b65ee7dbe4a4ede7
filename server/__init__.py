"""The edge server service: CAT decoder + semantic decoder(s) behind gRPC.

``python -m rkdsc.server --config deploy/topology.toml`` or ``rkdsc server --config ...``;
see ``rkdsc.server.service`` (servicer, create_server, cli) and ``rkdsc.server.batcher``.
"""
