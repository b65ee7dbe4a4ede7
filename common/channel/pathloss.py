"""Large-scale link models: path loss, log-normal shadowing, link budget (numpy only).

Units everywhere: distances ``d`` in metres, heights in metres, carrier ``f_c`` in **GHz** in
the path-loss formulas (Hz only inside the breakpoint distance), powers in dBm, gains and
losses in dB, bandwidth in Hz, speed of light ``C_M_PER_S = 299_792_458``.

Path loss (3GPP TR 38.901 V17, Table 7.4.1-1), ``d_3D = sqrt(d_2D^2 + (h_BS - h_UT)^2)``:

* breakpoint distance ``d'_BP = 4 h'_BS h'_UT f_c[Hz] / c`` with ``h' = h - h_E`` and the
  effective environment height ``h_E = 1 m`` (for UMa the table draws ``h_E`` at random when
  ``h_UT > 13 m``; here it is always 1 m, i.e. the ``h_UT <= 13 m`` case).
* UMi-Street Canyon (``h_BS = 10 m``), valid ``10 m <= d_2D <= 5 km``, ``1.5 <= h_UT <= 22.5 m``,
  ``0.5 <= f_c <= 100 GHz``:
  LOS ``PL1 = 32.4 + 21 log10(d_3D) + 20 log10(f_c)`` for ``d_2D <= d'_BP``,
  ``PL2 = 32.4 + 40 log10(d_3D) + 20 log10(f_c) - 9.5 log10(d'_BP^2 + (h_BS - h_UT)^2)`` beyond;
  NLOS ``max(PL_LOS, 35.3 log10(d_3D) + 22.4 + 21.3 log10(f_c) - 0.3 (h_UT - 1.5))``;
  shadowing sigma LOS 4 dB, NLOS 7.82 dB.
* UMa (``h_BS = 25 m``), same validity:
  LOS ``PL1 = 28.0 + 22 log10(d_3D) + 20 log10(f_c)``,
  ``PL2 = 28.0 + 40 log10(d_3D) + 20 log10(f_c) - 9 log10(d'_BP^2 + (h_BS - h_UT)^2)``;
  NLOS ``max(PL_LOS, 13.54 + 39.08 log10(d_3D) + 20 log10(f_c) - 0.6 (h_UT - 1.5))``;
  shadowing sigma LOS 4 dB, NLOS 6 dB.
* Log-distance: ``PL = FSPL(d0, f_c) + 10 n log10(d_3D / d0)``, ``d0 = 1 m`` by default,
  ``FSPL(d, f_c) = 32.45 + 20 log10(f_c) + 20 log10(d)`` (= ``20 log10(4 pi d f / c)``),
  exponent ``n`` stated by the caller (2 = free space), shadowing sigma stated by the caller.

Outside the validity range the formulas are evaluated as written (a distance below 10 m
is clamped to 10 m for the 3GPP models, the formula's lower end; ``validity_problem`` says
what is out of range). The LOS/NLOS state is given, not drawn (no LOS probability).

Shadowing: log-normal, ``S ~ N(0, sigma^2)`` in dB. ``Shadowing`` is spatially correlated
after Gudmundson (1991): ``rho(dx) = exp(-|dx| / d_corr)`` over the distance moved, with the
TR 38.901 Table 7.5-6 decorrelation distances (UMi LOS 10 m / NLOS 13 m, UMa 37 m / 50 m) as
defaults; it is an exact AR(1) in distance, so each sample is ``N(0, sigma^2)``.

Link budget: ``N = -174 dBm/Hz + 10 log10(B) + NF`` and
``SNR = P_tx + G_tx + G_rx - PL - S - N`` (dB). This SNR is ``Es/N0`` per complex symbol of the
channel conventions when one complex symbol occupies one resource element of the band
(symbol rate = bandwidth, the transmit power spread over the band).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["C_M_PER_S", "THERMAL_NOISE_DBM_PER_HZ", "PATHLOSS_MODELS", "SHADOW_SIGMA_DB",
           "DECORRELATION_M", "BS_HEIGHT_M", "fspl_db", "breakpoint_distance_m", "distance_3d_m",
           "umi_los_db", "umi_nlos_db", "uma_los_db", "uma_nlos_db", "log_distance_db", "path_loss_db",
           "validity_problem", "noise_power_dbm", "snr_db_from_budget", "PathLoss", "Shadowing"]

C_M_PER_S = 299_792_458.0
THERMAL_NOISE_DBM_PER_HZ = -174.0
PATHLOSS_MODELS = ("umi", "uma", "log_distance")
# TR 38.901 Table 7.4.1-1 shadow-fading standard deviations (dB), by (model, los)
SHADOW_SIGMA_DB = {("umi", True): 4.0, ("umi", False): 7.82, ("uma", True): 4.0, ("uma", False): 6.0}
# TR 38.901 Table 7.5-6 shadow-fading correlation distances (m)
DECORRELATION_M = {("umi", True): 10.0, ("umi", False): 13.0, ("uma", True): 37.0, ("uma", False): 50.0}
BS_HEIGHT_M = {"umi": 10.0, "uma": 25.0}  # the table's base-station heights
H_E_M = 1.0   # effective environment height
D2D_MIN_M, D2D_MAX_M = 10.0, 5000.0
FC_MIN_GHZ, FC_MAX_GHZ = 0.5, 100.0
H_UT_MIN_M, H_UT_MAX_M = 1.5, 22.5


def fspl_db(d_m, fc_ghz):
    """Free-space path loss ``20 log10(4 pi d f / c) = 32.45 + 20 log10(f_c[GHz]) + 20 log10(d[m])``."""
    return 20.0 * np.log10(4.0 * math.pi * np.asarray(d_m, float) * fc_ghz * 1e9 / C_M_PER_S)


def breakpoint_distance_m(fc_ghz: float, h_bs_m: float, h_ut_m: float, h_e_m: float = H_E_M) -> float:
    """``d'_BP = 4 (h_BS - h_E)(h_UT - h_E) f_c / c`` (f_c in Hz inside)."""
    return 4.0 * (h_bs_m - h_e_m) * (h_ut_m - h_e_m) * fc_ghz * 1e9 / C_M_PER_S


def distance_3d_m(d2d_m, h_bs_m: float, h_ut_m: float):
    return np.hypot(np.asarray(d2d_m, float), h_bs_m - h_ut_m)


def _dual_slope(d2d, fc, h_bs, h_ut, a, b_near, b_far, c_far):
    d2d = np.maximum(np.asarray(d2d, float), D2D_MIN_M)
    d3d = distance_3d_m(d2d, h_bs, h_ut)
    dbp = breakpoint_distance_m(fc, h_bs, h_ut)
    pl1 = a + b_near * np.log10(d3d) + 20.0 * math.log10(fc)
    pl2 = a + b_far * np.log10(d3d) + 20.0 * math.log10(fc) - c_far * math.log10(dbp ** 2 + (h_bs - h_ut) ** 2)
    return np.where(d2d <= dbp, pl1, pl2)


def umi_los_db(d2d_m, fc_ghz: float, h_ut_m: float = 1.5, h_bs_m: float = BS_HEIGHT_M["umi"]):
    """TR 38.901 UMi-Street Canyon LOS path loss (dB)."""
    return _dual_slope(d2d_m, fc_ghz, h_bs_m, h_ut_m, 32.4, 21.0, 40.0, 9.5)


def umi_nlos_db(d2d_m, fc_ghz: float, h_ut_m: float = 1.5, h_bs_m: float = BS_HEIGHT_M["umi"]):
    """TR 38.901 UMi-Street Canyon NLOS path loss (dB): max(LOS, PL'_NLOS)."""
    d3d = distance_3d_m(np.maximum(np.asarray(d2d_m, float), D2D_MIN_M), h_bs_m, h_ut_m)
    nlos = 35.3 * np.log10(d3d) + 22.4 + 21.3 * math.log10(fc_ghz) - 0.3 * (h_ut_m - 1.5)
    return np.maximum(umi_los_db(d2d_m, fc_ghz, h_ut_m, h_bs_m), nlos)


def uma_los_db(d2d_m, fc_ghz: float, h_ut_m: float = 1.5, h_bs_m: float = BS_HEIGHT_M["uma"]):
    """TR 38.901 UMa LOS path loss (dB)."""
    return _dual_slope(d2d_m, fc_ghz, h_bs_m, h_ut_m, 28.0, 22.0, 40.0, 9.0)


def uma_nlos_db(d2d_m, fc_ghz: float, h_ut_m: float = 1.5, h_bs_m: float = BS_HEIGHT_M["uma"]):
    """TR 38.901 UMa NLOS path loss (dB): max(LOS, PL'_NLOS)."""
    d3d = distance_3d_m(np.maximum(np.asarray(d2d_m, float), D2D_MIN_M), h_bs_m, h_ut_m)
    nlos = 13.54 + 39.08 * np.log10(d3d) + 20.0 * math.log10(fc_ghz) - 0.6 * (h_ut_m - 1.5)
    return np.maximum(uma_los_db(d2d_m, fc_ghz, h_ut_m, h_bs_m), nlos)


def log_distance_db(d3d_m, fc_ghz: float, exponent: float, d0_m: float = 1.0):
    """``FSPL(d0, f_c) + 10 n log10(d / d0)``; distances below d0 are clamped to d0."""
    d = np.maximum(np.asarray(d3d_m, float), d0_m)
    return fspl_db(d0_m, fc_ghz) + 10.0 * exponent * np.log10(d / d0_m)


@dataclass(frozen=True)
class PathLoss:
    """A path-loss model with its parameters: ``model`` in PATHLOSS_MODELS, ``los`` (3GPP models),
    ``exponent`` and ``shadow_sigma_db`` (log-distance; for 3GPP, None = the table's sigma)."""
    model: str = "umi"
    fc_ghz: float = 3.5
    los: bool = True
    h_bs_m: float | None = None   # None: the table's height (log-distance: 10 m)
    h_ut_m: float = 1.5
    exponent: float = 3.0         # log-distance only
    d0_m: float = 1.0             # log-distance only
    shadow_sigma_db: float | None = None  # None: TR 38.901 table (log-distance: 0)

    def __post_init__(self):
        if self.model not in PATHLOSS_MODELS:
            raise ValueError(f"model: expected one of {', '.join(PATHLOSS_MODELS)}, got {self.model!r}")
        if not self.fc_ghz > 0:
            raise ValueError(f"fc_ghz: expected a value > 0, got {self.fc_ghz!r}")

    @property
    def bs_height_m(self) -> float:
        return self.h_bs_m if self.h_bs_m is not None else BS_HEIGHT_M.get(self.model, 10.0)

    @property
    def sigma_db(self) -> float:
        if self.shadow_sigma_db is not None:
            return self.shadow_sigma_db
        return SHADOW_SIGMA_DB.get((self.model, self.los), 0.0)

    @property
    def decorrelation_m(self) -> float:
        return DECORRELATION_M.get((self.model, self.los), 10.0)

    def __call__(self, d2d_m):
        """Path loss in dB at 2D distance(s) ``d2d_m`` (m); a float for a float."""
        h_bs = self.bs_height_m
        if isinstance(d2d_m, (float, int)):
            return _scalar_path_loss(self.model, self.los, float(d2d_m), self.fc_ghz, h_bs, self.h_ut_m,
                                     self.exponent, self.d0_m)
        if self.model == "log_distance":
            return log_distance_db(distance_3d_m(d2d_m, h_bs, self.h_ut_m), self.fc_ghz, self.exponent, self.d0_m)
        fn = {("umi", True): umi_los_db, ("umi", False): umi_nlos_db,
              ("uma", True): uma_los_db, ("uma", False): uma_nlos_db}[(self.model, self.los)]
        return fn(d2d_m, self.fc_ghz, self.h_ut_m, h_bs)

    def validity_problem(self, d2d_m: float) -> str | None:
        return validity_problem(self.model, d2d_m, self.fc_ghz, self.h_ut_m)


def _scalar_path_loss(model, los, d2d, fc, h_bs, h_ut, exponent, d0) -> float:
    """The same formulas as the array functions above, in plain floats (called every slot)."""
    lg = math.log10
    if model == "log_distance":
        d = max(math.hypot(d2d, h_bs - h_ut), d0)
        return 20.0 * lg(4.0 * math.pi * d0 * fc * 1e9 / C_M_PER_S) + 10.0 * exponent * lg(d / d0)
    d2d = max(d2d, D2D_MIN_M)
    d3d = math.hypot(d2d, h_bs - h_ut)
    dbp = breakpoint_distance_m(fc, h_bs, h_ut)
    a, b_near, c_far = (32.4, 21.0, 9.5) if model == "umi" else (28.0, 22.0, 9.0)
    if d2d <= dbp:
        pl_los = a + b_near * lg(d3d) + 20.0 * lg(fc)
    else:
        pl_los = a + 40.0 * lg(d3d) + 20.0 * lg(fc) - c_far * lg(dbp ** 2 + (h_bs - h_ut) ** 2)
    if los:
        return pl_los
    if model == "umi":
        nlos = 35.3 * lg(d3d) + 22.4 + 21.3 * lg(fc) - 0.3 * (h_ut - 1.5)
    else:
        nlos = 13.54 + 39.08 * lg(d3d) + 20.0 * lg(fc) - 0.6 * (h_ut - 1.5)
    return max(pl_los, nlos)


def path_loss_db(model: str, d2d_m, fc_ghz: float, los: bool = True, **kw):
    """Functional form of ``PathLoss(model, fc_ghz, los, **kw)(d2d_m)``."""
    return PathLoss(model=model, fc_ghz=fc_ghz, los=los, **kw)(d2d_m)


def validity_problem(model: str, d2d_m: float, fc_ghz: float, h_ut_m: float) -> str | None:
    """What is outside the TR 38.901 validity range (None when inside or for log-distance)."""
    if model == "log_distance":
        return None
    out = []
    if not D2D_MIN_M <= d2d_m <= D2D_MAX_M:
        out.append(f"d_2D = {d2d_m:g} m outside {D2D_MIN_M:g}..{D2D_MAX_M:g} m")
    if not FC_MIN_GHZ <= fc_ghz <= FC_MAX_GHZ:
        out.append(f"f_c = {fc_ghz:g} GHz outside {FC_MIN_GHZ:g}..{FC_MAX_GHZ:g} GHz")
    if not H_UT_MIN_M <= h_ut_m <= H_UT_MAX_M:
        out.append(f"h_UT = {h_ut_m:g} m outside {H_UT_MIN_M:g}..{H_UT_MAX_M:g} m")
    return "; ".join(out) or None


def noise_power_dbm(bandwidth_hz: float, noise_figure_db: float) -> float:
    """Thermal noise over the band plus the receiver noise figure: ``-174 + 10 log10(B) + NF`` dBm."""
    if not bandwidth_hz > 0:
        raise ValueError(f"bandwidth_hz: expected a value > 0, got {bandwidth_hz!r}")
    return THERMAL_NOISE_DBM_PER_HZ + 10.0 * math.log10(bandwidth_hz) + noise_figure_db


def snr_db_from_budget(tx_power_dbm: float, path_loss_db, bandwidth_hz: float, noise_figure_db: float,
                       shadowing_db=0.0, antenna_gain_db: float = 0.0):
    """``P_tx + G - PL - S - N`` in dB (Es/N0 per complex symbol, one symbol per resource element)."""
    return (tx_power_dbm + antenna_gain_db - np.asarray(path_loss_db, float) - np.asarray(shadowing_db, float)
            - noise_power_dbm(bandwidth_hz, noise_figure_db))


class Shadowing:
    """Log-normal shadowing in dB as a function of the distance moved ``s`` (m), Gudmundson-correlated.

    The process is generated on a grid ``s_k = k * step_m`` (``step_m = decorrelation_m / 20`` by
    default) as an exact AR(1): ``S_0 ~ N(0, sigma^2)``,
    ``S_{k+1} = rho S_k + sqrt(1 - rho^2) sigma w_k`` with ``rho = exp(-step_m / decorrelation_m)``,
    so every sample is ``N(0, sigma^2)`` and ``corr(S_j, S_k) = exp(-|s_j - s_k| / decorrelation_m)``.
    ``at(s)`` holds the grid value at or below ``s`` (zero-order hold). The grid is extended in
    increasing ``k`` whatever the order of the queries, so the values depend on the seed only.
    ``sigma_db = 0`` gives 0 always."""

    def __init__(self, sigma_db: float, decorrelation_m: float, rng: np.random.Generator,
                 step_m: float | None = None):
        if sigma_db < 0:
            raise ValueError(f"sigma_db: expected a value >= 0, got {sigma_db!r}")
        if not decorrelation_m > 0:
            raise ValueError(f"decorrelation_m: expected a value > 0, got {decorrelation_m!r}")
        self.sigma_db, self.decorrelation_m, self.rng = float(sigma_db), float(decorrelation_m), rng
        self.step_m = float(step_m) if step_m is not None else self.decorrelation_m / 20.0
        if not self.step_m > 0:
            raise ValueError(f"step_m: expected a value > 0, got {step_m!r}")
        self.rho = math.exp(-self.step_m / self.decorrelation_m)
        self._grid: list[float] = []

    def _extend(self, k: int) -> None:
        while len(self._grid) <= k:
            w = float(self.rng.standard_normal())
            if not self._grid:
                self._grid.append(self.sigma_db * w)
            else:
                self._grid.append(self.rho * self._grid[-1] + math.sqrt(1.0 - self.rho ** 2) * self.sigma_db * w)

    def at(self, distance_moved_m: float) -> float:
        """Shadowing (dB) after moving ``distance_moved_m`` (>= 0) metres."""
        if self.sigma_db == 0:
            return 0.0
        if distance_moved_m < 0:
            raise ValueError(f"distance_moved_m: expected a value >= 0, got {distance_moved_m!r}")
        k = int(math.floor(distance_moved_m / self.step_m + 1e-9))
        self._extend(k)
        return self._grid[k]
