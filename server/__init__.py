"""The edge server service: CAT decoder + semantic decoder(s) behind gRPC.

``python -m server --config deploy/topology.toml`` or ``rkdsc server --config ...``;
see ``server.service`` (servicer, create_server, cli) and ``server.batcher``.
"""
