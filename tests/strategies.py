"""Hypothesis strategies for result groups h5guard can store."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

names = st.text(
    alphabet=st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", "..") and not s.startswith("h5guard_"))

_dtypes = st.sampled_from(
    [np.float64, np.float32, np.int64, np.int32, np.uint8, np.int16, np.bool_, np.complex128]
)


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray[Any, Any]:
    dtype = draw(_dtypes)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=6))
    return draw(hnp.arrays(dtype, shape))


big_arrays = st.integers(min_value=4200, max_value=9000).map(
    lambda n: np.arange(n, dtype=np.float64) * 0.5
)

attr_values = st.one_of(
    st.integers(min_value=-(2**62), max_value=2**62),
    st.floats(allow_nan=True),
    st.booleans(),
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        max_size=30,
    ),
    arrays(),
)

groups = st.fixed_dictionaries(
    {
        "datasets": st.dictionaries(names, st.one_of(arrays(), big_arrays), min_size=1, max_size=4),
        "attrs": st.dictionaries(names, attr_values, max_size=4),
    }
)
