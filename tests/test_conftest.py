"""The test helpers themselves: ports that a rebind after a restart can count on."""
from __future__ import annotations

import socket

from tests.conftest import _ephemeral_range, free_port


def test_free_port_is_bindable_and_below_the_ephemeral_range():
    low, high = _ephemeral_range()
    assert 1024 < low <= high
    ports = {free_port() for _ in range(20)}
    assert all(10_000 <= p < low for p in ports), ports  # a client never gets it as its source port
    assert len(ports) > 1  # random, so two tests rarely pick the same one
    for p in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", p))
