"""rkdsc.v1: messages (``emulator_pb2``) and service stubs (``emulator_pb2_grpc``).

Regenerate with ``python scripts/gen_proto.py``; ``--check`` fails when these differ.
"""
