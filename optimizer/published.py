"""Published IEA Wind Task 37 case study 1 layouts: the example (baseline), par4 and par12.

Public reference data from IEA Wind Task 37, repository ``IEAWindTask37/iea37-wflo-casestudies``
(folder ``cs1-2/``, files ``iea37-ex{16,36,64}.yaml`` and ``iea37-par{4,12}-opt{16,36,64}.yaml``),
described in Baker et al., "Best Practices for Wake Model and Optimization Algorithm Selection in
Wind Farm Layout Optimization", AIAA SciTech 2019. Coordinates in metres as published (rounded by
the participants, so par12's layouts sit up to 3.52 m (16 turbines) or 5 mm outside the circle).

``par4``: SNOPT with wake expansion continuation (gradient-based); ``par12``: the best entry at
every size (gradient-free). Their AEPs are recomputed with PyWake's ``IEA37CaseStudy1`` wherever
they are shown, never copied.

The coordinates live in the package data file ``optimizer/data/iea37_cs1_published.json``
(with the same attribution in its header fields), read once, at import.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType
from typing import Any

import numpy as np

from optimizer.sites import FloatArray

DATA_FILE = "data/iea37_cs1_published.json"
"""The data file, relative to the ``optimizer`` package."""

PUBLISHED_ENTRIES: tuple[str, ...] = ("baseline", "par4", "par12")


def _load() -> tuple[Mapping[str, str], Mapping[tuple[str, int], FloatArray]]:
    text = resources.files("optimizer").joinpath(DATA_FILE).read_text(encoding="utf-8")
    doc: dict[str, Any] = json.loads(text)
    entries: dict[str, Any] = doc["entries"]
    if tuple(entries) != PUBLISHED_ENTRIES:
        raise RuntimeError(
            f"optimizer/{DATA_FILE}: expected the entries {list(PUBLISHED_ENTRIES)}, "
            f"found {list(entries)}"
        )
    descriptions = {name: str(entry["description"]) for name, entry in entries.items()}
    layouts: dict[tuple[str, int], FloatArray] = {}
    for name, entry in entries.items():
        for n, xy in entry["layouts"].items():
            layout = np.column_stack(
                (np.array(xy["x"], dtype=np.float64), np.array(xy["y"], dtype=np.float64))
            )
            layout.setflags(write=False)
            layouts[(name, int(n))] = layout
    return MappingProxyType(descriptions), MappingProxyType(layouts)


PUBLISHED_DESCRIPTIONS: Mapping[str, str]
_LAYOUTS: Mapping[tuple[str, int], FloatArray]
PUBLISHED_DESCRIPTIONS, _LAYOUTS = _load()


def published_layout(entry: str, n_turbines: int) -> FloatArray:
    """Return one published layout.

    Parameters
    ----------
    entry : str
        One of :data:`PUBLISHED_ENTRIES`: ``"baseline"``, ``"par4"`` or ``"par12"``.
    n_turbines : int
        16, 36 or 64.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_turbines, 2)``, float64, metres, read-only (shared between callers).

    Raises
    ------
    ValueError
        For an unknown entry or farm size, naming what exists.

    Examples
    --------
    >>> published_layout("par12", 16).shape
    (16, 2)
    """
    try:
        return _LAYOUTS[(entry, n_turbines)]
    except KeyError:
        raise ValueError(
            f"published layout: expected an entry in {list(PUBLISHED_ENTRIES)} and 16, 36 or 64 "
            f"turbines, got {entry!r} with {n_turbines}"
        ) from None
