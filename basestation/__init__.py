"""The base-station relay service: per-transmitter channel emulation between the edge
devices and the edge server. ``python -m rkdsc.basestation --config deploy/topology.toml`` or
``rkdsc basestation --config ...``; see ``rkdsc.basestation.relay``.
"""
