"""Corruption campaign: damage real files in every structure and see what the checker says.

Originals: a ShardWriter shard, a merge output that a second merge added groups to
(both h5guard-written), the committed ``fixtures/foreign.h5`` and a fresh plain-h5py
file (default settings: v0 superblock, no checksums, variable-length strings in the
global heap, contiguous data). Damage: 0-byte; truncation at every offset (small files)
or sampled offsets; single-bit flips and 8-byte overwrites in each labelled region
(superblock, object headers, B-trees/chunk indexes, local/global/fractal heaps,
symbol-table nodes, free-space managers, raw data, unlabeled bytes); zeroed 512 B and
4 KiB pages; appended and prepended junk.

A third origin, ``corpus``, is real files other projects wrote, copied from the shared
corpus into ``fixtures/foreign/`` because each pinned a false alarm or a missed damage of
``h5guard check`` (array datatypes, soft/external links at depth, committed datatypes,
version-2 write flags, bytes past the end of file): their mutations are held to the
foreign invariants (no crash, no hang) and the silent cases are counted.

Each variant goes through ``h5guard.validate_many`` (shared sandbox pool, 3 s per file,
under a watchdog) and is classified by :mod:`campaigns._checker`. Invariants: for
h5guard-written files no silent wrong data, no crash, no hang; for foreign files no
crash and no hang (a libhdf5 hang must come back as a TIMEOUT finding); foreign silent
cases are counted.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from campaigns import _regions, _samples
from campaigns._checker import CRASH, FLAGGED, HANG, PASSED, SILENT, Checker, Outcome, Variant
from campaigns._common import CampaignResult, Deadline, Row
from h5guard import Sandbox

NAME = "corruption"
CORPUS_DIR = _samples.FIXTURES / "foreign"
# Those of fixtures/foreign/ that the campaign's read-back (h5py's high-level API) can
# fingerprint: no hard-link cycles, no user-defined links, no region references.
CORPUS_ORIGINALS = (
    "hdf5__tarray1.h5",
    "hdf5__h5clear_sec2_v2.h5",
    "hdf5__h5diff_softlinks.h5",
    "pytables__vlstr_attr.h5",
    "hdf5__tnamed_dtype_attr.h5",
    "pytables__elink.h5",
)
EXHAUSTIVE_TRUNCATION = 64 * 1024  # files up to this size are cut at every offset
SAMPLED_TRUNCATIONS = 8192  # offsets tried on bigger files
BATCH = 64
LEGEND = (
    "runs = damaged variants checked; flagged = a warning/error finding; passed-unchanged = "
    "no finding and every value reads back equal; silent = no finding but values differ; "
    "crashes = validate_many raised; hangs = validate_many did not return (watchdog)."
)

Stream = Iterator[Variant]


def _flip(data: bytes, pos: int, bit: int) -> bytes:
    out = bytearray(data)
    out[pos] ^= 1 << bit
    return bytes(out)


def _overwrite(data: bytes, pos: int, value: bytes) -> bytes:
    out = bytearray(data)
    end = min(len(out), pos + len(value))
    out[pos:end] = value[: end - pos]
    return bytes(out)


def _streams(
    origin: str, name: str, data: bytes, labels: np.ndarray, rng: random.Random
) -> list[tuple[int, Stream]]:
    size = len(data)

    def v(row: str, describe: str, payload: bytes) -> Variant:
        return Variant(origin, name, f"{origin}: {row}", f"{name}: {describe}", payload)

    def empty() -> Stream:
        yield v("0-byte", "emptied", b"")

    def truncations() -> Stream:
        if size <= EXHAUSTIVE_TRUNCATION:
            offsets = list(range(1, size))
        else:
            offsets = list(range(1, 1024)) + rng.sample(
                range(1024, size), SAMPLED_TRUNCATIONS - 1023
            )
        rng.shuffle(offsets)
        for n in offsets:
            yield v("truncation", f"truncated to {n} bytes", data[:n])

    def region(label: str, where: np.ndarray) -> Stream:
        finite = where.size * 8 <= 4096
        pairs = [(int(p), b) for p in where for b in range(8)] if finite else []
        rng.shuffle(pairs)
        n = 0
        while True:
            if n % 2 == 0:
                if finite:
                    if not pairs:
                        return
                    pos, bit = pairs.pop()
                else:
                    pos, bit = int(where[rng.randrange(where.size)]), rng.randrange(8)
                yield v(
                    f"flip/overwrite {label}",
                    f"bit {bit} of byte {pos} flipped ({label})",
                    _flip(data, pos, bit),
                )
            else:
                pos = int(where[rng.randrange(where.size)])
                kind = rng.choice(["random", "zeros", "ones", "increment"])
                if kind == "random":
                    value = rng.randbytes(8)
                elif kind == "zeros":
                    value = b"\0" * 8
                elif kind == "ones":
                    value = b"\xff" * 8
                else:
                    old = int.from_bytes(data[pos : pos + 8].ljust(8, b"\0"), "little")
                    value = ((old + 1) % 2**64).to_bytes(8, "little")
                yield v(
                    f"flip/overwrite {label}",
                    f"8 bytes at {pos} overwritten with {value.hex()} ({label})",
                    _overwrite(data, pos, value),
                )
            n += 1

    def pages(page: int) -> Stream:
        starts = list(range(0, size, page))
        rng.shuffle(starts)
        label = "zero 512 B page" if page == 512 else "zero 4 KiB page"
        for s in starts:
            yield v(
                label, f"bytes {s}..{min(size, s + page)} zeroed", _overwrite(data, s, b"\0" * page)
            )

    def appended() -> Stream:
        junk = [
            ("1 random byte", rng.randbytes(1)),
            ("7 random bytes", rng.randbytes(7)),
            ("512 random bytes", rng.randbytes(512)),
            ("4096 zero bytes", b"\0" * 4096),
            ("4096 random bytes", rng.randbytes(4096)),
            ("an HDF5 signature and junk", b"\x89HDF\r\n\x1a\n" + rng.randbytes(600)),
            ("a copy of the file", data),
        ]
        for what, extra in junk:
            yield v("appended junk", f"{what} appended", data + extra)

    def prepended() -> Stream:
        junk = [
            ("1 random byte", rng.randbytes(1)),
            ("8 zero bytes", b"\0" * 8),
            ("100 random bytes", rng.randbytes(100)),
            ("511 random bytes", rng.randbytes(511)),
            ("512 zero bytes", b"\0" * 512),
            ("512 random bytes", rng.randbytes(512)),
            ("1024 random bytes", rng.randbytes(1024)),
            ("2048 zero bytes", b"\0" * 2048),
            ("4096 random bytes", rng.randbytes(4096)),
        ]
        for what, extra in junk:
            yield v("prepended junk", f"{what} prepended", extra + data)

    out: list[tuple[int, Stream]] = [(1, empty()), (64, truncations())]
    for label, where in _regions.regions(labels).items():
        out.append((2, region(label, where)))
    out += [(1, pages(512)), (1, pages(4096)), (1, appended()), (1, prepended())]
    return out


def _batches(streams: list[tuple[int, Stream]]) -> Iterator[list[Variant]]:
    """Round-robin over the streams, ``weight`` variants from each per turn."""
    live = list(streams)
    batch: list[Variant] = []
    while live:
        still: list[tuple[int, Stream]] = []
        for weight, stream in live:
            alive = True
            for _ in range(weight):
                try:
                    batch.append(next(stream))
                except StopIteration:
                    alive = False
                    break
            if alive:
                still.append((weight, stream))
            if len(batch) >= BATCH:
                yield batch
                batch = []
        live = still
    if batch:
        yield batch


def record(result: CampaignResult, outcome: Outcome, seconds: float) -> None:
    """Count one outcome in its row and apply the invariants."""
    v = outcome.variant
    row = result.row(v.row)
    row.runs += 1
    row.seconds += seconds
    if outcome.kind == FLAGGED:
        assert row.flagged is not None
        row.flagged += 1
        for code in ("TIMEOUT", "MEMORY_LIMIT", "CHECKER_CRASHED"):
            if code in outcome.detail.split(","):
                result.tally(f"{v.origin} variants flagged {code} (caught in the sandbox)")
    elif outcome.kind == PASSED:
        assert row.passed is not None
        row.passed += 1
    elif outcome.kind == SILENT:
        assert row.silent is not None
        row.silent += 1
        if v.origin == "h5guard":
            result.violate(
                row, f"silent wrong data: {v.describe}: {outcome.detail}", kind="silent wrong data"
            )
        elif sum(1 for n in result.notes if n.startswith("foreign silent")) < 5:
            result.notes.append(f"foreign silent example: {v.describe}: {outcome.detail}")
    elif outcome.kind == CRASH:
        row.crashes += 1
        result.violate(row, f"checker crashed: {v.describe}: {outcome.detail}", kind="crash")
    elif outcome.kind == HANG:
        row.hangs += 1
        result.violate(row, f"checker hung: {v.describe}: {outcome.detail}", kind="hang")


_QUICK_CODES = {"EMPTY", "NOT_HDF5", "TRUNCATED", "SUPERBLOCK_CORRUPT", "OPEN_FOR_WRITE"}


def _quick_only(outcome: Outcome) -> bool:
    return outcome.kind == FLAGGED and bool(set(outcome.detail.split(",")) & _QUICK_CODES)


def add_totals(result: CampaignResult, origins: tuple[str, ...]) -> None:
    """One ``<origin>: all`` row per origin, summing its rows."""
    for origin in origins:
        rows = [r for r in result.rows if r.scenario.startswith(origin + ": ")]
        if not rows:
            continue
        total = Row(result.name, f"{origin}: all")
        for r in rows:
            total.runs += r.runs
            total.flagged = (total.flagged or 0) + (r.flagged or 0)
            total.passed = (total.passed or 0) + (r.passed or 0)
            total.silent = (total.silent or 0) + (r.silent or 0)
            total.crashes += r.crashes
            total.hangs += r.hangs
            total.violations += r.violations
            total.seconds += r.seconds
        result.rows.insert(result.rows.index(rows[-1]) + 1, total)


CORPUS_MIN_BUDGET = 30.0  # seconds; shorter runs spend them on h5guard's own files


def run(budget: float, seed: int = 0, *, corpus: bool | None = None) -> CampaignResult:
    """``corpus``: include the corpus originals (default: when ``budget`` allows)."""
    deadline = Deadline(budget)
    if corpus is None:
        corpus = budget >= CORPUS_MIN_BUDGET
    result = CampaignResult(NAME, legend=LEGEND)
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="campaign-corruption-") as tmp:
        work = Path(tmp)
        keep = Path(tempfile.gettempdir()) / f"campaign-failures-corruption-{seed}"
        originals = _samples.originals(work / "orig")
        if corpus:
            originals += _corpus_originals(work / "orig")
        sizes = [f"{p.name} ({origin}, {p.stat().st_size} B)" for origin, p in originals]
        streams: list[tuple[int, Stream]] = []
        with Checker(work, keep) as checker:
            _reuse_children(checker)
            for origin, path in originals:
                try:
                    checker.add_reference(path.name, path)
                except RuntimeError as err:
                    if origin != "corpus":
                        raise
                    result.notes.append(f"corpus original skipped: {err}")
                    continue
                labels = _regions.label_bytes(str(path))
                streams += _streams(origin, path.name, path.read_bytes(), labels, rng)
            for batch in _batches(streams):
                if deadline.expired():
                    break
                started = time.monotonic()
                outcomes = checker.check(batch)
                # Apportion the batch's time: a variant the quick layer condemned costs
                # next to nothing next to one libhdf5 had to read.
                costs = [1.0 if _quick_only(o) else 50.0 for o in outcomes]
                unit = (time.monotonic() - started) / max(1.0, sum(costs))
                for outcome, cost in zip(outcomes, costs, strict=True):
                    record(result, outcome, unit * cost)
    origin_rank = {"h5guard": 0, "foreign": 1, "corpus": 2}
    result.rows.sort(
        key=lambda r: (origin_rank.get(r.scenario.split(": ", 1)[0], 3), _order(r.scenario))
    )
    add_totals(result, ("h5guard", "foreign", "corpus"))
    result.seconds = deadline.elapsed()
    result.notes.insert(0, "originals: " + ", ".join(sizes))
    return result


def _reuse_children(checker: Checker) -> None:
    """Let the checker's pool reuse children that ``h5guard.check`` would retire.

    The product retires a child after libhdf5 failed on a file without checksums (its
    heap may be damaged; see ``h5guard._check.inspector.retire``): here that is nearly every
    foreign variant, and a new interpreter per variant costs 4.5x of the budget. The
    campaign's invariants (no crash, no hang of ``validate_many``) hold either way; a
    crash caused by an earlier variant's heap damage is contained and flagged.
    """
    new_box = checker._new_box

    def reusing() -> Sandbox:
        box = new_box()
        box.retire_on_request = False
        return box

    checker._new_box = reusing  # type: ignore[method-assign]
    checker.box.retire_on_request = False


def _corpus_originals(work: Path) -> list[tuple[str, Path]]:
    """Copies of the corpus originals (``fixtures/foreign/``), origin ``corpus``."""
    work.mkdir(parents=True, exist_ok=True)
    out = []
    for name in CORPUS_ORIGINALS:
        copy = work / f"corpus-{name}"
        copy.write_bytes((CORPUS_DIR / name).read_bytes())
        out.append(("corpus", copy))
    return out


_ORDER = ("0-byte", "truncation", "flip/overwrite", "zero 512", "zero 4", "appended", "prepended")


def _order(scenario: str) -> tuple[int, str]:
    kind = scenario.split(": ", 1)[1]
    for i, prefix in enumerate(_ORDER):
        if kind.startswith(prefix):
            return i, kind
    return len(_ORDER), kind
