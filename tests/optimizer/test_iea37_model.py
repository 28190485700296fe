"""The WEC PyWake model and the fast numpy IEA37 model, checked against PyWake itself."""

from __future__ import annotations

import numpy as np
import pytest
from py_wake.literature.iea37_case_study1 import IEA37CaseStudy1
from py_wake.utils.gradients import autograd

from optimizer.iea37_model import FastIEA37, iea37_wec_model
from optimizer.layouts import initial_layout
from optimizer.sites import FloatArray, get_site

IEA37 = get_site("iea37")
RTOL = 1e-9


def layout(n: int, seed: int) -> FloatArray:
    # Part lattice, part random: wakes overlap at every distance, some turbines unwaked.
    return initial_layout(
        IEA37, n_turbines=n, start="lattice", grid_size=4, random_pct=40.0, seed=seed
    )


def pywake(wfm: object, xy: FloatArray) -> tuple[float, FloatArray]:
    aep = float(wfm.aep(xy[:, 0], xy[:, 1], n_cpu=1))  # type: ignore[attr-defined]
    grad = wfm.aep_gradients(  # type: ignore[attr-defined]
        gradient_method=autograd, wrt_arg=["x", "y"], x=xy[:, 0], y=xy[:, 1], n_cpu=1
    )
    return aep, np.asarray(grad, dtype=np.float64)


def relative(a: FloatArray, b: FloatArray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("n", [16, 36, 64])
def test_wec_model_at_xi_1_is_iea37_case_study_1(n: int) -> None:
    xy = layout(n, seed=n)
    aep, grad = pywake(iea37_wec_model(n, 1.0), xy)
    ref_aep, ref_grad = pywake(IEA37CaseStudy1(n), xy)
    assert aep == pytest.approx(ref_aep, rel=1e-12)
    assert relative(grad, ref_grad) < 1e-12


def test_wec_widens_the_wake_and_lowers_the_aep() -> None:
    xy = layout(16, seed=3)
    aeps = [float(iea37_wec_model(16, xi).aep(xy[:, 0], xy[:, 1], n_cpu=1)) for xi in (1, 2, 3)]
    assert aeps[0] > aeps[1] > aeps[2]


@pytest.mark.parametrize("xi", [1.7, 3.0])
def test_wec_gradient_matches_finite_differences(xi: float) -> None:
    n = 16
    xy = layout(n, seed=7)
    wfm = iea37_wec_model(n, xi)
    _, grad = pywake(wfm, xy)
    fast = FastIEA37(n, xi=xi)
    _, fast_grad = fast.aep_and_gradient(xy)
    h = 1e-3  # metres; central differences are accurate to ~h^2 here
    fd = np.zeros((2, n))
    for axis in range(2):
        for i in range(n):
            up, down = xy.copy(), xy.copy()
            up[i, axis] += h
            down[i, axis] -= h
            a_up = float(wfm.aep(up[:, 0], up[:, 1], n_cpu=1))
            a_down = float(wfm.aep(down[:, 0], down[:, 1], n_cpu=1))
            fd[axis, i] = (a_up - a_down) / (2 * h)
    assert relative(grad, fd) < 1e-6
    assert relative(fast_grad, fd) < 1e-6


@pytest.mark.parametrize("xi", [1.0, 2.2])
@pytest.mark.parametrize("n", [16, 36, 64])
def test_fast_model_equals_pywake(n: int, xi: float) -> None:
    for seed in (0, 1):
        xy = layout(n, seed=seed)
        ref = IEA37CaseStudy1(n) if xi == 1.0 else iea37_wec_model(n, xi)
        ref_aep, ref_grad = pywake(ref, xy)
        fast = FastIEA37(n, xi=xi)
        aep, grad = fast.aep_and_gradient(xy)
        assert fast.aep(xy) == aep
        assert aep == pytest.approx(ref_aep, rel=RTOL)
        assert relative(grad, ref_grad) < RTOL


def test_fast_model_on_published_layouts() -> None:
    from optimizer.published import published_layout

    for n in (16, 36, 64):
        for entry in ("baseline", "par4", "par12"):
            xy = published_layout(entry, n)
            ref_aep, ref_grad = pywake(IEA37CaseStudy1(n), xy)
            aep, grad = FastIEA37(n).aep_and_gradient(xy)
            assert aep == pytest.approx(ref_aep, rel=RTOL)
            assert relative(grad, ref_grad) < RTOL


def test_fast_model_rejects_xi_below_1() -> None:
    with pytest.raises(ValueError, match="wec: expected wake expansion factors >= 1"):
        FastIEA37(16, xi=0.5)
