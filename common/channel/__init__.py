"""Channel models: the numpy API (relay, evaluation) and the channel conventions' names.

Contract: importing this package never imports torch. ``FADINGS``, ``EQUALIZERS`` and the
defaults (``DEFAULT_FADING``, ``DEFAULT_EQUALIZER``, ``DEFAULT_K_FACTOR``) are defined once, in
`rkdsc.common.channel.numpy_channel`; every other module (the torch twin, the topology
config, the services) imports them from there. The torch twin with the same names and
conventions lives in `rkdsc.common.channel.torch_channel` (import it explicitly).
Conventions: see `rkdsc.common.channel.numpy_channel`.
"""

from rkdsc.common.channel.numpy_channel import (
    AWGN,
    DEFAULT_EQUALIZER,
    DEFAULT_FADING,
    DEFAULT_K_FACTOR,
    EQUALIZERS,
    FADINGS,
    FrameChannel,
    MMSE,
    ZF,
    RayleighBlockFading,
    RayleighFastFading,
    RicianBlockFading,
    complex_to_real,
    make_channel,
    make_equalizer,
    normalize_power,
    real_to_complex,
    simulate,
    simulate_frames,
    snr_db_to_noise_var,
)

__all__ = [
    "AWGN",
    "DEFAULT_EQUALIZER",
    "DEFAULT_FADING",
    "DEFAULT_K_FACTOR",
    "EQUALIZERS",
    "FADINGS",
    "FrameChannel",
    "MMSE",
    "ZF",
    "RayleighBlockFading",
    "RayleighFastFading",
    "RicianBlockFading",
    "complex_to_real",
    "make_channel",
    "make_equalizer",
    "normalize_power",
    "real_to_complex",
    "simulate",
    "simulate_frames",
    "snr_db_to_noise_var",
]
