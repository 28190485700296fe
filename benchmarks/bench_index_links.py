"""What libhdf5 charges a merge for changing an index, as the index grows (issue #26).

    python benchmarks/bench_index_links.py [--sizes 10000,100000,1000000] [--rounds 25]

A segmented output's index holds one external link per key in its root group (dense
link storage: a fractal heap of link messages and a B-tree of their names' hashes). A
merge of 10 new results adds 20 links to the spare index (its own 10, and the 10 of the
merge before, which the spare lacks). For files of ``--sizes`` such links, made here
with h5guard's file format and link properties (not timed), this times in this process:

* ``open+close``: opening the file for writing and closing it, changing nothing;
* ``1 link``, ``20 links``: opening it, adding that many links, closing it (the
  metadata flushed to the page cache; no fsync);
* ``10 lookups``: opening it read-only and looking up 10 names that are not there
  (what a merge's plan asks of the output).

Each is the median of ``--rounds``. Beside each size: the free-space records of the
link heap (its header's count, ``FSHD``), which libhdf5 reads in full when a change
first needs heap space and writes back at the close. The growth of each row per 10x of
the links is printed against the smallest size, measured in the same run: 1 costs what
is new, 10 is linear in what is already there. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

# Running as a script puts benchmarks/ first on sys.path; the package lives one level up.
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from h5guard._format.names import LIBVER  # noqa: E402  (the index's file format)
from h5guard._format.write import LINK_CREATE_UTF8 as LCPL  # noqa: E402  (its links')

LINK_FILE = b"out.h5.segments/seg-000000-301290aee8c5.h5"


def make_index(path: Path, n: int) -> None:
    with h5py.File(path, "w", libver=LIBVER) as f:
        for i in range(n):
            key = f"cfg-{i:09d}".encode()
            f.id.links.create_external(key, LINK_FILE, b"/" + key, lcpl=LCPL)


def free_space_records(path: Path) -> int:
    """The section count in the first free-space manager header of ``path``: a file of
    links only has one, its link heap's."""
    data = path.read_bytes()
    at = data.find(b"FSHD")
    if at < 0:
        return 0
    # signature, version, client id, then total space and total sections (8 bytes each)
    return int(struct.unpack_from("<Q", data, at + 6 + 8)[0])


def add_links(path: Path, count: int) -> Callable[[], None]:
    def run() -> None:
        f = h5py.File(path, "r+", libver=LIBVER, locking=False)
        for _ in range(count):
            key = f"new-{uuid.uuid4().hex}".encode()
            f.id.links.create_external(key, LINK_FILE, b"/" + key, lcpl=LCPL)
        f.close()

    return run


def lookups(path: Path) -> Callable[[], None]:
    def run() -> None:
        f = h5py.File(path, "r", locking=False)
        for _ in range(10):
            f.id.links.exists(f"absent-{uuid.uuid4().hex}".encode())
        f.close()

    return run


def median_ms(fn: Callable[[], None], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(statistics.median(times)) * 1e3


ROWS = ("open+close", "1 link", "20 links", "10 lookups")


def measure(directory: Path, n: int, rounds: int) -> dict[str, float]:
    made = directory / f"links{n}.h5"
    t0 = time.perf_counter()
    make_index(made, n)
    built = time.perf_counter() - t0
    work = directory / "work.h5"
    shutil.copyfile(made, work)  # every change goes to the copy: the original stays as made
    row = {
        "records": float(free_space_records(made)),
        "open+close": median_ms(add_links(work, 0), rounds),
        "1 link": median_ms(add_links(work, 1), rounds),
        "20 links": median_ms(add_links(work, 20), rounds),
        "10 lookups": median_ms(lookups(work), rounds),
    }
    print(
        f"  {n:>9,} links ({built:5.1f} s to make, {row['records']:>6,.0f} free-space records):"
        + "".join(f"  {name} {row[name]:6.2f} ms" for name in ROWS),
        flush=True,
    )
    made.unlink()
    work.unlink()
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--sizes", default="10000,100000,1000000", help="links per file")
    p.add_argument("--rounds", type=int, default=25, help="timings per row (median)")
    args = p.parse_args(argv)
    try:
        sizes = sorted(int(s) for s in args.sizes.split(",") if s)
    except ValueError:
        p.error(f"--sizes: expected numbers separated by commas, got {args.sizes!r}")
    if len(sizes) < 2 or sizes[0] < 1 or args.rounds < 1:
        p.error("--sizes: expected at least two sizes >= 1; --rounds: at least 1")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"bench_index_links: {os.cpu_count()} CPU(s); load average {load}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-index-links-") as tmp:
        rows = {n: measure(Path(tmp), n, args.rounds) for n in sizes}
    lo = sizes[0]
    print(f"\ngrowth per 10x of the links, from {lo:,} (1 = costs what is new, 10 = linear)")
    for hi in sizes[1:]:
        decades = float(np.log10(hi / lo))
        growth = "".join(
            f"  {name} {(rows[hi][name] / rows[lo][name]) ** (1 / decades):5.2f}" for name in ROWS
        )
        print(f"  {lo:,} -> {hi:,}:{growth}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
