"""h5guard keeps a few libhdf5 types and dataspaces made for reuse, never one per value
it meets: every live libhdf5 ID makes each file close slower (libhdf5 looks through them
for the file's open objects). An index's segment list is a string attribute of a new
length at every merge; a process that merged a thousand times kept a thousand types
alive, and its merges took twice as long (benchmarks/bench_incremental.py --many).
"""

from __future__ import annotations

import gc
from pathlib import Path

import h5py
import numpy as np

from h5guard._format import names, reader, write


def live_ids() -> int:
    gc.collect()
    return int(h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_ALL))


def test_values_of_ever_new_types_and_shapes_keep_no_libhdf5_ids_alive(tmp_path: Path) -> None:
    path = tmp_path / "attrs.h5"
    with h5py.File(path, "w", libver=names.LIBVER) as f:
        # Fill the caches first: what is measured is the growth after that.
        for n in range(1, 2 * names.MAX_CACHED_IDS):
            write.write_attr(f, f"s{n}", np.array(b"x" * n))
            write.write_dataset(f, f"d{n}", np.zeros(n))
            reader.text_attr(f, f"s{n}")
            reader.read_attr(f, f"s{n}")
        before = live_ids()
        for n in range(2 * names.MAX_CACHED_IDS, 400):
            text = "x" * n
            write.write_attr(f, f"s{n}", np.array(text.encode()))
            write.write_dataset(f, f"d{n}", np.zeros(n))  # a new shape each time
            assert reader.text_attr(f, f"s{n}") == text
            assert reader.read_attr(f, f"s{n}").tobytes() == text.encode()
        assert live_ids() - before <= 2  # the file's own: no ID per value
    assert len(reader._MTYPES) <= names.MAX_CACHED_IDS
    assert len(write._TYPES) <= names.MAX_CACHED_IDS
    assert len(write._SPACES) <= names.MAX_CACHED_IDS
