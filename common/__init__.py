"""Shared library of the RKD-SC emulator: channel, models, bundle, data, offline pipeline.

Nothing in this package imports grpc; the services (edge/, basestation/, server/) build on it.
"""
