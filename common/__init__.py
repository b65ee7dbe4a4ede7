"""rkdsc.common: the library the services and the offline tools share.

channel, wire, config, metrics, bundle, data (no torch); models, train, experiments (torch);
service (the gRPC skeleton: the only part that imports grpc). It never imports a service.
Map and import rules: docs/architecture.md.
"""
