"""Child process for crash tests: write deterministic groups until killed.

After each ``add()`` returns it appends the key to a log and fsyncs it, so the parent
knows which results were promised safe before the SIGKILL.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from h5guard import ShardWriter


def group(i: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(i)
    return {"xy": rng.random((8, 2)), "big": rng.random(5000)}


def main() -> None:
    directory, log_path, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(log_path, "a", encoding="utf-8") as log, ShardWriter(directory, commit_every=3) as w:
        for i in range(count):
            w.add(f"g{i}", group(i), {"i": i})
            log.write(f"g{i}\n")
            log.flush()
            os.fsync(log.fileno())


if __name__ == "__main__":
    main()
