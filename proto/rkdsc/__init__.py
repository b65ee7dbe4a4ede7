"""Generated gRPC API of the RKD-SC emulator (source: proto/rkdsc/v1/emulator.proto).

Installed as the top-level package ``rkdsc``; import ``from rkdsc.v1 import emulator_pb2``.
"""
