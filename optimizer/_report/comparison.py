"""The best layout of an IEA37 farm beside the published par4 and par12 layouts.

The published coordinates are :mod:`optimizer.published`'s; their AEPs are recomputed here
with the site's PyWake model (``IEA37CaseStudy1``), like every AEP of the sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from optimizer._report import figures
from optimizer.sites import get_site
from optimizer.summary import NotASweepOutputError, OkRow, read_layouts

log = logging.getLogger(__name__)

COMPARED_ENTRIES = ("par4", "par12")
"""The published entries shown beside the best layouts (:mod:`optimizer.published`)."""

COMPARED_SIZES = (16, 36, 64)
"""The farm sizes of IEA37 case study 1."""


@dataclass(frozen=True, slots=True)
class PublishedComparison:
    """The best layout of one IEA37 farm size beside the published par4 and par12 layouts.

    Attributes
    ----------
    label : str
        The site label, e.g. ``iea37-16``.
    config_id : str
        The best config of the sweep for it.
    aep_gwh : float
        Its AEP.
    published_gwh : Mapping
        Published entry -> its layout's AEP, recomputed with PyWake.
    image : str or None
        The figure's file name in the report directory.
    """

    label: str
    config_id: str
    aep_gwh: float
    published_gwh: Mapping[str, float]
    image: str | None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (``layout-sweep report --json``), floats rounded to 4 digits."""
        return {
            "site": self.label,
            "config_id": self.config_id,
            "best_aep_gwh": round(self.aep_gwh, 4),
            "published_aep_gwh": {k: round(v, 4) for k, v in self.published_gwh.items()},
            "difference_gwh": {
                k: round(self.aep_gwh - v, 4) for k, v in self.published_gwh.items()
            },
        }


def compare_with_published(
    path: str, row: OkRow, out_dir: Path, slug: str
) -> PublishedComparison | None:
    """Compare the best layout of a site with par4 and par12 of the same size.

    Parameters
    ----------
    path : str
        The sweep output (the layout of ``row`` is read from it).
    row : OkRow
        The best result of its site.
    out_dir : pathlib.Path
        The report directory: ``published-<slug>.png`` is written there.
    slug : str
        The site's file-name part.

    Returns
    -------
    PublishedComparison or None
        None for a site that is not IEA37 case study 1 (16, 36 or 64 turbines), or whose
        layout cannot be read.
    """
    from optimizer.published import PUBLISHED_DESCRIPTIONS, published_layout

    if row.site != "iea37" or row.n_turbines not in COMPARED_SIZES:
        return None
    site = get_site(row.site)
    wfm = site.wind_farm_model(row.n_turbines)
    published: dict[str, float] = {}
    panels: list[tuple[str, NDArray[np.float64]]] = []
    try:
        _, ours = read_layouts(path, row.key)
    except (NotASweepOutputError, OSError, KeyError) as err:
        log.warning("%s: cannot read the layout: %s", row.key, err)
        return None
    panels.append((f"this sweep: {row.key}\n{row.aep_gwh:.2f} GWh", ours))
    for entry in COMPARED_ENTRIES:
        xy = np.array(published_layout(entry, row.n_turbines))
        aep = float(wfm.aep(xy[:, 0], xy[:, 1], n_cpu=1))
        published[entry] = aep
        panels.append(
            (
                f"{PUBLISHED_DESCRIPTIONS[entry]}\n{aep:.2f} GWh "
                f"(this sweep {row.aep_gwh - aep:+.2f} GWh)",
                xy,
            )
        )
    fig = figures.published_figure(
        title=f"{row.label}: best layout beside the published IEA37 layouts",
        boundary=site.boundary(row.n_turbines),
        panels=panels,
        min_spacing_m=site.min_spacing_m,
    )
    name = f"published-{slug}.png"
    figures.save_png(fig, out_dir / name)
    figures.close(fig)
    return PublishedComparison(row.label, row.key, row.aep_gwh, published, name)
