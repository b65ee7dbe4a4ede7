"""RKD-SC semantic-communication emulator: the one import namespace of the project.

Each folder of the repository is a subpackage (mapped in pyproject.toml):
``rkdsc.common`` (common/: the library), ``rkdsc.edge``, ``rkdsc.basestation``,
``rkdsc.server`` (one service each) and ``rkdsc.v1`` (generated gRPC code of
proto/rkdsc/v1/emulator.proto). The map and the import rules: docs/architecture.md.
"""
