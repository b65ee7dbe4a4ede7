"""The base station as a shared wireless medium, with emulated time (numpy only, no grpc, no torch).

* ``cell``: the uplink as slots of a shared capacity, queues, ``UplinkRecord`` per frame;
* ``schedulers``: the ``Scheduler`` interface, round-robin, proportional-fair, max-SNR;
* ``geometry``: device trajectories, propagation delay;
* ``link``: a device's SNR over time (path loss, shadowing, Doppler fading, or a trace);
* ``compute``: device compute time (measured or reference time scaled by a device profile);
* ``clock``: virtual and wall clocks;
* ``emulator``: the whole emulated path of every frame and its ``emulated_ms`` breakdown;
* ``settings``: the topology config's ``[medium]`` and ``[transmitters.medium]`` sections.

The model, its conventions and references: docs/medium.md.
"""
from rkdsc.common.medium.cell import Cell, UplinkRecord
from rkdsc.common.medium.clock import CLOCKS, VirtualClock, WallClock, make_clock
from rkdsc.common.medium.compute import DEVICE_PROFILES, ComputeModel
from rkdsc.common.medium.geometry import Trajectory, propagation_delay_s
from rkdsc.common.medium.link import LinkModel
from rkdsc.common.medium.schedulers import (SCHEDULERS, MaxSnr, ProportionalFair, RoundRobin, Scheduler, Slot,
                                            jain_index, make_scheduler, spectral_efficiency)

__all__ = ["Cell", "UplinkRecord", "CLOCKS", "VirtualClock", "WallClock", "make_clock", "DEVICE_PROFILES",
           "ComputeModel", "Trajectory", "propagation_delay_s", "LinkModel", "SCHEDULERS", "MaxSnr",
           "ProportionalFair", "RoundRobin", "Scheduler", "Slot", "jain_index", "make_scheduler",
           "spectral_efficiency"]
