"""Listing a group's links (``reader.member_names``, ``reader.link_types``): the names
and order libhdf5's own name-order iteration gives, from real files with many links,
and libhdf5's metadata cache as it was afterwards."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from h5guard._format import reader

NAMES = ["a", "B", "z", "é", "Zeta", "ß", "日本", "\U0001f600", "a b", "a.b", "0", "9"]


def many(tmp_path: Path, count: int) -> Path:
    """A file whose root has ``count`` links of every kind (dense storage past 8)."""
    path = tmp_path / "many.h5"
    with h5py.File(path, "w", libver=("v110", "latest")) as f:
        for i in range(count):
            name = f"{NAMES[i % len(NAMES)]}-{i:06d}"
            if i % 3 == 0:
                f.create_group(name)
            elif i % 3 == 1:
                f[name] = h5py.ExternalLink("elsewhere.h5", "/" + name)
            else:
                f[name] = h5py.SoftLink("/nowhere")
    return path


@pytest.mark.parametrize("count", [5, 3000])  # compact storage; dense, past _MANY_LINKS
def test_names_and_types_in_libhdf5s_name_order(tmp_path: Path, count: int) -> None:
    path = many(tmp_path, count)
    with h5py.File(path, "r") as f:
        in_name_order: list[tuple[bytes, int]] = []
        f.id.links.iterate(
            lambda name, info: in_name_order.append((name, info.type)),
            idx_type=h5py.h5.INDEX_NAME,
            order=h5py.h5.ITER_INC,
            info=True,
        )
        assert reader.link_types(f.id) == in_name_order
        assert reader.member_names(f.id) == [n.decode() for n, _ in in_name_order]
        assert len(in_name_order) == count


def test_the_metadata_cache_is_as_it_was_after_a_big_listing(tmp_path: Path) -> None:
    path = many(tmp_path, 3000)
    with h5py.File(path, "a") as f:
        f["h5guard_padding"] = np.zeros(400_000)  # a file past the cache's first 2 MiB
    with h5py.File(path, "r") as f:
        before = f.id.get_mdc_config()
        with reader.room_for_metadata(f.id):
            during = f.id.get_mdc_config()
            assert during.initial_size > before.initial_size
            assert during.initial_size >= f.id.get_filesize()
            reader.member_names(f.id)
        after = f.id.get_mdc_config()
        assert (after.initial_size, after.max_size, after.min_size) == (
            before.initial_size,
            before.max_size,
            before.min_size,
        )
