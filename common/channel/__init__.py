"""Channel models: numpy API (relay, evaluation; importing this package never imports torch).

The torch twin with the same names and conventions lives in `rkdsc.common.channel.torch_channel`
(import it explicitly). Conventions: see `rkdsc.common.channel.numpy_channel`.
"""

from rkdsc.common.channel.numpy_channel import (
    AWGN,
    EQUALIZERS,
    FADINGS,
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
    snr_db_to_noise_var,
)

__all__ = [
    "AWGN",
    "EQUALIZERS",
    "FADINGS",
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
    "snr_db_to_noise_var",
]
