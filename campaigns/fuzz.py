"""Fuzz campaign: mutated HDF5 bytes into the quick layer and into ``validate_many``.

1. The pure-Python quick layer (``h5guard._check.quick.quick_check``) in-process, in a
   child interpreter: coverage-guided with atheris (libFuzzer) when it is installed,
   else Hypothesis over raw bytes and mutated seeds. It must never raise.
2. ``validate_many`` with one shared sandbox pool (3 s per file, under the watchdog of
   :mod:`campaigns._checker`) on random stacked mutations of the seed corpus (bit
   flips, byte runs, inserts, deletes, block copies, splices between files, extreme
   values in fields just after structure signatures, truncation). It must never raise
   or hang; a mutant of an h5guard file that passes must read back unchanged.

Seed corpus: every file in ``fixtures/`` and freshly written shards, merge output and
plain-h5py files (:mod:`campaigns._samples`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from campaigns import _samples
from campaigns._checker import CRASH, FLAGGED, HANG, PASSED, SILENT, Checker, Variant
from campaigns._common import CampaignResult, Deadline, scratch_root

NAME = "fuzz"
BATCH = 48
SIGNATURES = (
    b"OHDR",
    b"OCHK",
    b"TREE",
    b"HEAP",
    b"GCOL",
    b"SNOD",
    b"BTHD",
    b"BTLF",
    b"FRHP",
    b"FHDB",
    b"FSHD",
    b"FSSE",
    b"FAHD",
)
LEGEND = (
    "runs = inputs; quick_check rows: crashes = inputs that made it raise, hangs = the fuzzer "
    "child overran its time; validate_many rows as in the corruption campaign "
    "(passed-unchanged on the quick-fuzz corpus is unverified: no original to compare)."
)


def atheris_available() -> bool:
    return importlib.util.find_spec("atheris") is not None


def _find_all(data: bytes, sig: bytes, limit: int = 64) -> list[int]:
    out: list[int] = []
    pos = data.find(sig)
    while pos >= 0 and len(out) < limit:
        out.append(pos)
        pos = data.find(sig, pos + 1)
    return out


def _mutate(data: bytes, donors: list[bytes], rng: random.Random) -> tuple[bytes, str]:
    out = bytearray(data)
    done: list[str] = []
    for _ in range(rng.randint(1, 3)):
        if not out:
            break
        op = rng.choice(["flip", "run", "insert", "delete", "copy", "splice", "field", "truncate"])
        pos = rng.randrange(len(out))
        if op == "flip":
            bits = [(rng.randrange(len(out)), rng.randrange(8)) for _ in range(rng.randint(1, 8))]
            for p, b in bits:
                out[p] ^= 1 << b
            done.append(f"flip{bits}")
        elif op == "run":
            n = rng.randint(1, 16)
            value = rng.choice([b"\0" * n, b"\xff" * n, rng.randbytes(n)])
            out[pos : pos + n] = value
            done.append(f"set[{pos}:{pos + n}]={value.hex()}")
        elif op == "insert":
            value = rng.randbytes(rng.randint(1, 64))
            out[pos:pos] = value
            done.append(f"insert@{pos}:{value.hex()}")
        elif op == "delete":
            n = rng.randint(1, 256)
            del out[pos : pos + n]
            done.append(f"delete[{pos}:{pos + n}]")
        elif op == "copy":
            n = rng.randint(8, 512)
            src = rng.randrange(len(out))
            out[pos : pos + n] = out[src : src + n]
            done.append(f"copy[{src}:+{n}]->@{pos}")
        elif op == "splice":
            donor = rng.choice(donors)
            at = rng.randrange(len(donor)) if donor else 0
            out[pos:] = donor[at:]
            done.append(f"splice@{pos}<-donor[{at}:] ({len(donor)} B donor)")
        elif op == "field":
            blob = bytes(out)
            found = [(sig, i) for sig in SIGNATURES for i in _find_all(blob, sig)]
            if not found:
                continue
            sig, i = rng.choice(found)
            at = i + rng.randrange(4, 48)
            width = rng.choice([1, 2, 4, 8])
            value = rng.choice(
                [0, 1, 2 ** (8 * width) - 1, 2 ** (8 * width - 1), len(out), len(out) + 1]
            )
            value &= 2 ** (8 * width) - 1
            out[at : at + width] = value.to_bytes(width, "little")
            done.append(f"{sig.decode()}@{i}+{at - i}:{width}B={value:#x}")
        else:
            del out[pos:]
            done.append(f"truncate@{pos}")
    return bytes(out), "; ".join(done)


def _quick_layer(
    result: CampaignResult,
    corpus: Path,
    seconds: float,
    seed: int,
    keep: Path,
    engine: str | None = None,
) -> None:
    engine = engine or ("atheris" if atheris_available() else "hypothesis")
    row = result.row(f"quick_check in-process ({engine})", flagged=None, passed=None, silent=None)
    started = time.monotonic()
    keep.mkdir(parents=True, exist_ok=True)
    # Made here, not in the child: libFuzzer ends the child with exit(), skipping cleanup.
    scratch = tempfile.mkdtemp(prefix="campaign-fuzz-quick-", dir=scratch_root())
    cmd = [
        sys.executable,
        "-m",
        "campaigns._fuzz_quick",
        engine,
        str(corpus),
        f"{seconds:.1f}",
        str(seed),
        str(keep),
        scratch,
    ]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=seconds + 120,
            cwd=_samples.REPO,
            check=False,
        )
    except subprocess.TimeoutExpired:
        row.hangs += 1
        row.seconds = time.monotonic() - started
        result.violate(row, f"the quick-layer fuzzer did not finish within {seconds + 120:.0f} s")
        return
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    row.seconds = time.monotonic() - started
    summary: dict[str, object] = {}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            summary = json.loads(line)
            break
    done = re.findall(r"Done (\d+) runs", proc.stderr)
    runs = int(done[-1]) if done else int(str(summary.get("runs", 0)))
    if not runs:
        stats = re.findall(r"^#(\d+)\s", proc.stderr, flags=re.M)
        runs = int(stats[-1]) if stats else 0
    row.runs = runs
    artifacts = summary.get("artifacts") or [str(p) for p in keep.glob("quick-failure-*.bin")]
    failed = (
        proc.returncode != 0
        or bool(summary.get("failures"))
        or "Uncaught Python exception" in proc.stderr
    )
    if failed:
        row.crashes += 1
        tail = proc.stderr.strip().splitlines()[-6:]
        result.violate(
            row,
            f"quick_check raised (exit {proc.returncode}); inputs: {artifacts}; {' | '.join(tail)}",
        )
    if engine == "atheris" and atheris_available():
        from importlib.metadata import version

        result.notes.append(
            f"atheris {version('atheris')} is installed (pip install atheris worked): the quick "
            "layer was fuzzed coverage-guided with libFuzzer"
        )
    elif atheris_available():
        result.notes.append(
            "the quick layer was fuzzed with Hypothesis (asked for; atheris unused)"
        )
    else:
        result.notes.append(
            "atheris is not installed here; the quick layer was fuzzed with Hypothesis"
        )


def run(budget: float, seed: int = 0, *, engine: str | None = None) -> CampaignResult:
    """``engine``: ``atheris`` or ``hypothesis`` for the quick layer (default: atheris if
    installed)."""
    deadline = Deadline(budget)
    result = CampaignResult(NAME, legend=LEGEND)
    rng = random.Random(seed)
    keep = Path(tempfile.gettempdir()) / f"campaign-failures-fuzz-{seed}"
    with tempfile.TemporaryDirectory(prefix="campaign-fuzz-") as tmp:
        work = Path(tmp)
        originals = _samples.originals(work / "orig")
        corpus = work / "corpus"
        corpus.mkdir()
        fixtures = sorted(p for p in _samples.FIXTURES.glob("*.h5"))
        for p in fixtures:
            shutil.copyfile(p, corpus / f"fixture-{p.name}")
        for _, p in originals:
            shutil.copyfile(p, corpus / p.name)
        seeded = {p.name for p in corpus.iterdir()}
        _quick_layer(result, corpus, max(1.0, budget * 0.35), seed, keep, engine)
        donors = [p.read_bytes() for p in sorted(corpus.iterdir()) if p.is_file()]
        extra = [p for p in sorted(corpus.iterdir()) if p.name not in seeded][:2000]
        seeds: list[tuple[str, str, bytes]] = [(o, p.name, p.read_bytes()) for o, p in originals]
        seeds.append(
            ("h5guard", "good_shard.h5", (_samples.FIXTURES / "good_shard.h5").read_bytes())
        )
        seeds.append(("foreign", "foreign.h5", (_samples.FIXTURES / "foreign.h5").read_bytes()))
        with Checker(work, keep) as checker:
            for _, p in originals:
                checker.add_reference(p.name, p)
            checker.add_reference("good_shard.h5", _samples.FIXTURES / "good_shard.h5")
            checker.add_reference("foreign.h5", _samples.FIXTURES / "foreign.h5")
            # The quick-layer fuzzer's new corpus entries first (they are small and cheap).
            for start in range(0, len(extra), BATCH * 4):
                if deadline.expired():
                    break
                chunk = extra[start : start + BATCH * 4]
                variants = [
                    Variant(
                        "corpus",
                        f"corpus-{p.name}",
                        "validate_many: quick-fuzz corpus",
                        f"quick-fuzz corpus entry {p.name}",
                        p.read_bytes(),
                    )
                    for p in chunk
                ]
                _count(result, checker, variants)
            while not deadline.expired():
                variants = []
                for _ in range(BATCH):
                    origin, name, data = rng.choice(seeds)
                    mutated, how = _mutate(data, donors, rng)
                    variants.append(
                        Variant(
                            origin,
                            name,
                            f"validate_many: mutated {origin} files",
                            f"{name}: {how}",
                            mutated,
                        )
                    )
                _count(result, checker, variants)
    for r in result.rows:
        if r.scenario.endswith("quick-fuzz corpus"):
            r.silent = None
    with contextlib.suppress(OSError):
        keep.rmdir()  # only if no reproducer was kept
    result.seconds = deadline.elapsed()
    return result


def _count(result: CampaignResult, checker: Checker, variants: list[Variant]) -> None:
    started = time.monotonic()
    outcomes = checker.check(variants)
    per = (time.monotonic() - started) / max(1, len(outcomes))
    for o in outcomes:
        row = result.row(o.variant.row)
        row.runs += 1
        row.seconds += per
        if o.kind == FLAGGED:
            row.flagged = (row.flagged or 0) + 1
            for code in ("TIMEOUT", "MEMORY_LIMIT", "CHECKER_CRASHED"):
                if code in o.detail.split(","):
                    result.tally(
                        f"{o.variant.origin} mutants flagged {code} (caught in the sandbox)"
                    )
        elif o.kind == PASSED:
            row.passed = (row.passed or 0) + 1
        elif o.kind == SILENT:
            row.silent = (row.silent or 0) + 1
            if o.variant.origin == "h5guard":
                result.violate(
                    row, f"silent wrong data: {o.variant.describe}: {o.detail}", kind="silent"
                )
        elif o.kind == CRASH:
            row.crashes += 1
            result.violate(
                row, f"validate_many raised: {o.variant.describe}: {o.detail}", kind="crash"
            )
        elif o.kind == HANG:
            row.hangs += 1
            result.violate(
                row, f"validate_many hung: {o.variant.describe}: {o.detail}", kind="hang"
            )
