"""IEA37 case study 1 wake model: a PyWake model with wake expansion continuation, and a fast
vectorized numpy evaluation of the same model with an analytic gradient.

The model is PyWake's ``IEA37CaseStudy1``: 16 wind directions at one wind speed (9.8 m/s), the
IEA 3.35 MW turbine (cubic power curve, constant thrust coefficient 8/9), the simplified
Bastankhah Gaussian deficit with sigma = k dw + D / sqrt(8) and squared-sum superposition, every
turbine seeing the free stream (``All2All``).

Wake expansion continuation (WEC, Thomas & Ning) widens the wake by ``xi`` only inside the
Gaussian exponent, exp(-0.5 (cw / (xi sigma))^2), keeping the centre-line deficit, so that
turbines far off a wake's centre line still feel its gradient. At ``xi = 1`` both models are
exactly ``IEA37CaseStudy1``. PyWake's own ``EngineeringWindFarmModel.wec`` is not used because
``All2All`` (the base of ``IEA37CaseStudy1``) ignores it.

:class:`FastIEA37` is the fast path used inside the optimization loop when a config asks for
``evaluator = "fast"``; PyWake stays the model of record (the sweep stores PyWake's AEP of every
returned layout), and the tests check both against each other to 1e-9 relative.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from optimizer.sites import FloatArray

# PyWake's split between wake and blockage sits slightly upstream of the rotor, and its wake
# expansion starts only at dw > 1e-10 (engineering_models.py, IEA37SimpleBastankhahGaussian).
_WAKE_SPLIT_DW_M = -1e-10
_EXPANSION_START_DW_M = 1e-10
_HOURS_PER_YEAR = 24.0 * 365.0


def check_xi(xi: float) -> None:
    if not (isinstance(xi, int | float) and math.isfinite(xi) and xi >= 1.0):
        raise ValueError(f"wec: expected wake expansion factors >= 1, got {xi!r}")


@functools.cache
def _wec_deficit_class() -> Any:
    from py_wake import np as pwnp
    from py_wake.deficit_models.gaussian import IEA37SimpleBastankhahGaussianDeficit

    class WECIEA37SimpleBastankhahGaussianDeficit(IEA37SimpleBastankhahGaussianDeficit):  # type: ignore[misc]
        """The IEA37 deficit with the wake width scaled by ``xi`` inside the exponent only."""

        def __init__(self, xi: float) -> None:
            super().__init__()
            self.xi = xi

        # The parent's layout terms with xi * sigma in the exponent, written with py_wake's
        # numpy so that autograd differentiates it exactly.
        def _calc_layout_terms(
            self, WS_ilk: Any, D_src_il: Any, dw_ijlk: Any, cw_ijlk: Any, **_: Any
        ) -> None:
            sigma_ijlk = self.sigma_ijlk(WS_ilk, dw_ijlk, D_src_il)
            self.layout_factor_ijlk = WS_ilk[:, None] * pwnp.exp(
                -0.5 * (cw_ijlk / (self.xi * sigma_ijlk)) ** 2
            )
            self.denominator_ijlk = 8.0 * (sigma_ijlk / D_src_il[:, None, :, None]) ** 2

    return WECIEA37SimpleBastankhahGaussianDeficit


@functools.cache
def iea37_wec_model(n_turbines: int, xi: float) -> Any:
    """``IEA37CaseStudy1(n_turbines)`` with the wake width scaled by ``xi`` in the exponent.

    Built exactly as ``IEA37CaseStudy1`` builds itself, with the deficit model swapped.
    """
    check_xi(xi)
    from py_wake.examples.data.iea37._iea37 import IEA37Site, IEA37WindTurbines
    from py_wake.superposition_models import SquaredSum
    from py_wake.wind_farm_models.engineering_models import All2All

    site = IEA37Site(n_turbines)
    site.default_wd = np.arange(0.0, 360.0, 22.5)
    return All2All(
        site,
        IEA37WindTurbines(),
        wake_deficitModel=_wec_deficit_class()(float(xi)),
        superpositionModel=SquaredSum(),
    )


@functools.cache
def _iea37_constants() -> tuple[FloatArray, float, float, float, float, float, float, float]:
    """Wind rose and turbine constants, read from PyWake's own IEA37 files."""
    from py_wake.examples.data.iea37 import iea37_path
    from py_wake.examples.data.iea37.iea37_reader import (
        read_iea37_windrose,
        read_iea37_windturbine,
    )

    wd, ws, freq = read_iea37_windrose(iea37_path + "iea37-windrose.yaml")
    _, _, diameter, power_ct = read_iea37_windturbine(iea37_path + "iea37-335mw.yaml")
    directions = np.asarray(wd, dtype=np.float64)
    if not np.allclose(directions, np.arange(0.0, 360.0, 22.5)):
        raise ValueError(f"IEA37 wind rose: expected 16 bins of 22.5 deg, got {directions}")
    return (
        np.asarray(freq, dtype=np.float64),
        float(np.asarray(ws).ravel()[0]),
        float(diameter),
        float(power_ct.ct),
        float(power_ct.ws_cutin),
        float(power_ct.ws_rated),
        float(power_ct.power_rated),
        0.0324555,
    )


class FastIEA37:
    """AEP (GWh) of IEA37 case study 1 and its exact gradient, vectorized over directions.

    ``aep_and_gradient(xy)`` returns the AEP and d AEP / d(x, y) of shape (2, n), the layout of
    PyWake's ``aep_gradients(wrt_arg=["x", "y"])``.
    """

    def __init__(self, n_turbines: int, *, xi: float = 1.0) -> None:
        check_xi(xi)
        self.n = n_turbines
        self.xi = float(xi)
        freq, ws, diameter, ct, cutin, rated, power_rated, k = _iea37_constants()
        self.freq = freq
        self.ws = ws
        self.diameter = diameter
        self.ct = ct
        self.cutin = cutin
        self.rated = rated
        self.power_rated = power_rated
        self.k = k
        theta = np.deg2rad(np.arange(0.0, 360.0, 22.5))
        # Wind from direction theta (clockwise from north) blows towards -(sin, cos).
        self.n_dir = len(theta)
        self.sin_l = np.sin(theta)
        self.cos_l = np.cos(theta)
        self.sin = self.sin_l[:, None, None]
        self.cos = self.cos_l[:, None, None]
        self.off_diagonal = ~np.eye(n_turbines, dtype=bool)

    def aep(self, xy: FloatArray) -> float:
        return self._evaluate(xy, gradient=False)[0]

    def aep_and_gradient(self, xy: FloatArray) -> tuple[float, FloatArray]:
        aep, grad = self._evaluate(xy, gradient=True)
        assert grad is not None
        return aep, grad

    def _evaluate(self, xy: FloatArray, *, gradient: bool) -> tuple[float, FloatArray | None]:
        n = self.n
        x, y = xy[:, 0], xy[:, 1]
        # [i, j]: source turbine i, affected turbine j.
        dx = x[None, :] - x[:, None]
        dy = y[None, :] - y[:, None]
        # Only the (direction, source, affected) triples inside a wake carry a deficit: about
        # half of them. Working on those alone halves the arithmetic; sums go through bincount.
        waked = ((-dx * self.sin - dy * self.cos) > _WAKE_SPLIT_DW_M) & self.off_diagonal
        direction, i, j = np.nonzero(waked)
        sin, cos = self.sin_l[direction], self.cos_l[direction]
        dx_w, dy_w = dx[i, j], dy[i, j]
        dw = -dx_w * sin - dy_w * cos
        cw = dx_w * cos - dy_w * sin
        expanding = dw > _EXPANSION_START_DW_M
        sigma = np.where(expanding, self.k * dw, 0.0) + self.diameter / math.sqrt(8.0)
        xs = self.xi * sigma
        ratio = cw / xs
        gauss = np.exp(-0.5 * ratio * ratio)
        c = self.ct * self.diameter**2 / 8.0
        root = np.sqrt(1.0 - c / (sigma * sigma))
        centre = 1.0 - root
        deficit = self.ws * gauss * centre
        # Squared sum over the sources i of every (direction, affected turbine j) pair.
        lj = direction * n + j
        total_sq = np.bincount(lj, weights=deficit * deficit, minlength=self.n_dir * n)
        total = np.sqrt(total_sq.reshape(self.n_dir, n))
        u = self.ws - total
        span = self.rated - self.cutin
        running = u > self.cutin
        frac = (u - self.cutin) / span
        cube = self.power_rated * frac**3
        power = np.where(running, np.minimum(cube, self.power_rated), 0.0)
        to_gwh = _HOURS_PER_YEAR * 1e-9
        aep = float(np.sum(self.freq[:, None] * power) * to_gwh)
        if not gradient:
            return aep, None
        dpower_du = np.where(
            running & (cube < self.power_rated), 3.0 * self.power_rated * frac**2 / span, 0.0
        )
        # d u_j / d S_j with S_j = sum_i deficit_ij^2; zero where no wake reaches j (S_j = 0):
        # there every deficit and its derivative vanish too.
        safe_total = np.where(total > 0.0, total, 1.0)
        du_dsq = np.where(total > 0.0, -0.5 / safe_total, 0.0)
        weight = (self.freq[:, None] * dpower_du * du_dsq * to_gwh).ravel()[lj]
        # d deficit / d dw (sigma grows with dw only where the wake expands) and / d cw.
        d_centre_dsigma = -c / (root * sigma**3)
        d_gauss_dsigma = gauss * cw**2 / (xs**2 * sigma)
        d_def_ddw = np.where(
            expanding, self.ws * self.k * (d_centre_dsigma * gauss + centre * d_gauss_dsigma), 0.0
        )
        d_def_dcw = -self.ws * centre * gauss * cw / xs**2
        coef = weight * 2.0 * deficit
        g_dw = coef * d_def_ddw
        g_cw = coef * d_def_dcw
        # dAEP / d(dx_ij) where dx_ij = x_j - x_i; dw = -dx sin - dy cos, cw = dx cos - dy sin.
        g_dx = -g_dw * sin + g_cw * cos
        g_dy = -g_dw * cos - g_cw * sin
        gx = np.bincount(j, weights=g_dx, minlength=n) - np.bincount(i, weights=g_dx, minlength=n)
        gy = np.bincount(j, weights=g_dy, minlength=n) - np.bincount(i, weights=g_dy, minlength=n)
        return aep, np.vstack((gx, gy)).astype(np.float64)
