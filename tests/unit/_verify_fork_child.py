"""Run by test_merge.py in a fresh, single-threaded interpreter: the merge's forked
verification helper, with a wrong digest in each half and with the child killed."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from h5guard import ShardWriter, merge
from h5guard._format import bytes as _fastread

merge_module = importlib.import_module("h5guard.merge")  # h5guard.merge is the function


def copied(tmp: Path, n: int) -> tuple[str, dict[str, tuple[int, str]]]:
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
        }
    return str(out), added


def main() -> None:
    out, added = copied(Path(sys.argv[1]), 40)
    keys = sorted(added)
    forks: list[int] = []
    real_fork = os.fork

    def counting_fork() -> int:
        forks.append(1)
        return real_fork()

    os.fork = counting_fork  # type: ignore[assignment]
    merge_module.PARALLEL_VERIFY_MIN = 2
    result: dict[str, Any] = {"keys": keys}

    wrong = dict(added)
    for key in (keys[3], keys[30]):  # one in this process's half, one in the child's
        wrong[key] = (added[key][0], "sha256:" + "0" * 64)
    problems, _ = merge_module._verify_in_two(out, wrong)
    result["mismatch_in_either_half"] = sorted(k for k, _ in problems)
    result["clean"] = list(merge_module._verify_in_two(out, added))

    parent = os.getpid()
    real_verify = _fastread.verify_groups_at

    def dies_in_the_child(path: str, groups: Any) -> Any:
        if os.getpid() != parent:
            os.kill(os.getpid(), 9)
        return real_verify(path, groups)

    _fastread.verify_groups_at = dies_in_the_child  # type: ignore[assignment]
    wrong = dict(added)
    wrong[keys[35]] = (added[keys[35]][0], "sha256:" + "1" * 64)
    problems, _ = merge_module._verify_in_two(out, wrong)
    result["child_killed"] = [k for k, _ in problems]
    result["forks"] = len(forks)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
