"""For test_merge.py's test of the merge's verification helper: a merged output to
verify, and a helper function that dies in the sandbox child (run there by name)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from h5guard import ShardWriter, merge


def copied(tmp: Path, n: int) -> tuple[str, dict[str, tuple[int, str]]]:
    """A merged output of ``n`` groups, and each group's address and stored digest."""
    shards = tmp / "in"
    shards.mkdir()
    with ShardWriter(shards, commit_every=n) as w:
        for i in range(n):
            w.add(f"k{i:04d}", {"x": np.full((3, 2), float(i))}, {"i": i})
    out = tmp / "out.h5"
    assert merge(shards, out).exit_code == 0
    with h5py.File(out, "r") as f:
        added = {
            k: (h5py.h5o.get_info(f.id, k.encode()).addr, f[k].attrs["h5guard_digest"].decode())
            for k in f
            if not k.startswith("h5guard_")  # the summary is no result
        }
    return str(out), added


def dies(partial: str, groups: Any) -> Any:
    """The helper killed mid-verification."""
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")
