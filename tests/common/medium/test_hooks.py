"""The services' hooks of the medium: off without [medium], the wall clock refused naming the
field, the decoder's per-row SNR checked."""
from __future__ import annotations

import numpy as np
import pytest

from rkdsc.common.config import ConfigError, parse_config
from rkdsc.common.medium.hooks import EdgeHook, RelayHook, decoder_snr_db
from rkdsc.common.service import FrameRejected
from rkdsc.v1 import emulator_pb2 as pb


def config(medium: dict | None):
    top = {"bundle": {"path": "b"}, "transmitters": [{"id": "e0", "medium": {"distance_m": 50.0}}]}
    if medium is not None:
        top["medium"] = medium
    return parse_config(top)


def test_no_medium_no_hooks():
    cfg = config(None)
    assert RelayHook.create(cfg) is None
    assert EdgeHook.create(cfg, cfg.transmitters[0], 26, [object()]) is None


def test_wall_clock_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match=r"medium\.clock.*'wall'"):
        RelayHook.create(config({"clock": "wall"}))


def test_decoder_snr_per_row_or_the_message_snr():
    cb = pb.ChannelFrameBatch(snr_db=4.0, frames=[pb.FrameMeta(frame_id=i) for i in range(3)])
    assert decoder_snr_db(cb) == 4.0
    cb.row_snr_db.extend([1.0, 2.5, -3.0])
    np.testing.assert_array_equal(decoder_snr_db(cb), np.array([1.0, 2.5, -3.0], np.float32))
    cb.row_snr_db.append(7.0)
    with pytest.raises(FrameRejected, match=r"row_snr_db: expected 3 values"):
        decoder_snr_db(cb)
    del cb.row_snr_db[:]
    cb.row_snr_db.extend([1.0, float("nan"), 0.0])
    with pytest.raises(FrameRejected, match=r"row_snr_db: expected finite values.*nan"):
        decoder_snr_db(cb)
