"""Site registry: published IEA37 baseline AEPs are reproduced with real PyWake."""

from __future__ import annotations

import numpy as np
import pytest
from py_wake.examples.data.iea37 import iea37_path
from py_wake.examples.data.iea37.iea37_reader import read_iea37_windfarm

from optimizer.layouts import boundary_violation, spacing_violation
from optimizer.sites import SITES, get_site, polygon_signed_area


@pytest.mark.parametrize("n_turbines", [16, 36, 64])
def test_iea37_baseline_reproduces_published_aep(n_turbines: int) -> None:
    site = get_site("iea37")
    layout = site.baseline_layout(n_turbines)
    assert layout is not None and layout.shape == (n_turbines, 2)
    _, _, (published_mwh, _) = read_iea37_windfarm(f"{iea37_path}iea37-ex{n_turbines}.yaml")
    wfm = site.wind_farm_model(n_turbines)
    x, y = layout[:, 0], layout[:, 1]

    # The IEA37 way: 16 wind-direction bins, the single 9.8 m/s wind speed, probabilities
    # normalised per direction.
    sim = wfm(x, y, wd=np.arange(0.0, 360.0, 22.5), ws=[9.8])
    aep_iea37_mwh = float(sim.aep_ilk(normalize_probabilities=True).sum()) * 1e3
    assert aep_iea37_mwh == pytest.approx(published_mwh, abs=1e-3)

    # The fast path the optimizer uses gives the same number.
    assert float(wfm.aep(x, y, n_cpu=1)) * 1e3 == pytest.approx(published_mwh, abs=1e-3)

    reference = site.reference_for(n_turbines)
    assert reference is not None
    assert reference.baseline_mwh == pytest.approx(published_mwh, abs=0.05)
    assert reference.best_published_mwh > reference.baseline_mwh


@pytest.mark.parametrize("n_turbines", [16, 36, 64])
def test_iea37_geometry(n_turbines: int) -> None:
    site = get_site("iea37")
    circle = site.circle(n_turbines)
    assert circle is not None
    assert circle.radius == {16: 1300.0, 36: 2000.0, 64: 3000.0}[n_turbines]
    polygon = site.boundary(n_turbines)
    assert polygon_signed_area(polygon) > 0.0
    assert np.hypot(polygon[:, 0], polygon[:, 1]) == pytest.approx(circle.radius)
    layout = site.baseline_layout(n_turbines)
    assert layout is not None
    # Published coordinates are rounded, so the outer ring sits up to ~3e-5 m outside.
    assert boundary_violation(site, n_turbines, layout).max() < 1e-3
    assert spacing_violation(site, layout) == 0.0
    assert site.min_spacing_m == 2.0 * site.rotor_diameter == 260.0


def test_hornsrev1_real_layout_fits_its_boundary() -> None:
    site = get_site("hornsrev1")
    assert site.circle(80) is None
    polygon = site.boundary(80)
    assert polygon.shape == (4, 2)
    assert polygon_signed_area(polygon) > 0.0
    layout = site.baseline_layout(80)
    assert layout is not None and layout.shape == (80, 2)
    assert boundary_violation(site, 80, layout).max() == 0.0
    assert spacing_violation(site, layout) == 0.0
    assert site.baseline_layout(16) is None
    aep = float(site.wind_farm_model(80).aep(layout[:, 0], layout[:, 1], n_cpu=1))
    assert np.isfinite(aep) and 500.0 < aep < 800.0


def test_unknown_site_lists_known_names() -> None:
    with pytest.raises(ValueError, match="site: expected one of") as info:
        get_site("atlantis")
    for name in SITES:
        assert name in str(info.value)
    assert "'atlantis'" in str(info.value)


@pytest.mark.parametrize("n_turbines", [0, 17, -1])
def test_iea37_rejects_unsupported_farm_sizes(n_turbines: int) -> None:
    with pytest.raises(ValueError, match="n_turbines"):
        get_site("iea37").boundary(n_turbines)
