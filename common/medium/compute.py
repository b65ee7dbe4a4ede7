"""Device compute time: how long the emulated device takes to encode a batch.

Model (as the paper's Table II footnote scales CPU time to a Raspberry Pi 4 B by peak
throughput): ``t_device = t_host * host_gflops / device_gflops``.

* ``"wall"`` clock: ``t_host`` is the encode time measured on this host for the batch.
* ``"virtual"`` clock: a measurement would carry the host's load into the figures, so
  ``t_host = reference_cpu_ms * images`` (a stated per-image host time; default 3.90 ms, the
  paper's Table II CPU time of RKD-SC on CIFAR10), which keeps runs identical for a seed.

``host_gflops`` defaults to the paper's CPU (871.49 GFLOPS, i9-14900KF); device profiles give a
device's peak GFLOPS (``DEVICE_PROFILES``; ``host`` = the host itself, factor 1).
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEVICE_PROFILES", "PAPER_CPU_GFLOPS", "REFERENCE_CPU_MS", "ComputeModel"]

PAPER_CPU_GFLOPS = 871.49   # the paper's CPU (i9-14900KF), measured by its authors
REFERENCE_CPU_MS = 3.90     # paper Table II: RKD-SC, CIFAR10, CPU ms per image
DEVICE_PROFILES = {          # name -> peak GFLOPS (None: the host itself)
    "host": None,
    "raspberry-pi-4b": 32.0,  # CPU-Monkey peak, as in the paper
}


@dataclass(frozen=True)
class ComputeModel:
    device: str = "host"
    device_gflops: float | None = None     # None: from DEVICE_PROFILES[device]
    host_gflops: float = PAPER_CPU_GFLOPS
    reference_cpu_ms: float = REFERENCE_CPU_MS

    def __post_init__(self):
        if self.device not in DEVICE_PROFILES and self.device_gflops is None:
            raise ValueError(f"device: expected one of {', '.join(DEVICE_PROFILES)} (or give device_gflops), "
                             f"got {self.device!r}")
        if self.device_gflops is not None and not self.device_gflops > 0:
            raise ValueError(f"device_gflops: expected a value > 0, got {self.device_gflops!r}")

    @property
    def factor(self) -> float:
        """``host_gflops / device_gflops`` (1 for the host)."""
        g = self.device_gflops if self.device_gflops is not None else DEVICE_PROFILES.get(self.device)
        return 1.0 if g is None else self.host_gflops / g

    def encode_s(self, images: int, measured_s: float | None = None) -> float:
        """Emulated encode time of a batch of ``images``: ``measured_s`` (wall) or the reference
        time (virtual, ``measured_s=None``), scaled by ``factor``."""
        host_s = self.reference_cpu_ms * 1e-3 * images if measured_s is None else float(measured_s)
        return host_s * self.factor
