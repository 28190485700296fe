"""Fuzz h5guard's pure-Python quick layer in-process (run as a child of the fuzz campaign).

    python -m campaigns._fuzz_quick ENGINE CORPUS_DIR SECONDS SEED ARTIFACT_DIR SCRATCH_DIR

ENGINE is ``atheris`` (coverage-guided libFuzzer, if the package is installed) or
``hypothesis`` (``@given`` over raw bytes and mutated seeds). For every input the
target writes the bytes to a file and calls ``quick_check`` on it, then pads the file
with a hole to the end-of-file address its superblock claims (so the "complete file"
paths run too) and checks again; it also calls the superblock parser directly. Any
exception is a failure: the input is saved to ARTIFACT_DIR. The last line printed is
a JSON summary: ``{"engine", "runs", "failures", "artifacts"}``. SCRATCH_DIR (made and
removed by the caller: libFuzzer ends the process with ``exit()``) holds the input file.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

_STATE: dict[str, Any] = {"runs": 0, "failures": 0, "artifacts": []}
_SEEN: set[str] = set()


def _target_factory(scratch: str, artifacts: Path) -> Any:
    from h5guard._check import quick as _superblock
    from h5guard.report import Finding, Severity

    path = os.path.join(scratch, "input.h5")

    def check_result(findings: Any, info: Any) -> None:
        if not isinstance(findings, list) or not all(isinstance(f, Finding) for f in findings):
            raise AssertionError(f"quick_check returned {findings!r}")
        if info is None and not any(f.severity is Severity.ERROR for f in findings):
            raise AssertionError(f"no superblock info and no error finding: {findings}")

    def target(data: bytes) -> None:
        _STATE["runs"] += 1
        try:
            with open(path, "wb") as fh:
                fh.write(data)
            check_result(*_superblock.quick_check(path))
            _, info = _superblock.quick_check(path)
            if info is not None and 0 < info.eof_address < 1 << 24:
                os.truncate(path, info.eof_address)
                check_result(*_superblock.quick_check(path))
            for size in (len(data), len(data) + 1, max(0, len(data) - 1)):
                check_result(*_superblock._parse_superblock("fuzz", data[:256], 0, size))
        except BaseException as err:
            # One artifact per distinct failure (Hypothesis re-runs a failure while shrinking).
            tb = traceback.extract_tb(err.__traceback__)
            where = f"{type(err).__name__}@{tb[-1].filename}:{tb[-1].lineno}" if tb else repr(err)
            if where not in _SEEN:
                _SEEN.add(where)
                _STATE["failures"] += 1
                artifacts.mkdir(parents=True, exist_ok=True)
                name = artifacts / f"quick-failure-{_STATE['failures']}.bin"
                name.write_bytes(data)
                _STATE["artifacts"].append(f"{name} ({where})")
                (artifacts / (name.name + ".txt")).write_text(
                    traceback.format_exc(), encoding="utf-8"
                )
            raise

    return target


def _summary(engine: str) -> None:
    print(json.dumps({"engine": engine, **_STATE}), flush=True)


def run_atheris(corpus: Path, seconds: float, seed: int, artifacts: Path, scratch: str) -> None:
    if "h5guard" in sys.modules:
        raise RuntimeError("h5guard was imported before atheris could instrument it")
    import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]

    with atheris.instrument_imports(include=["h5guard"]):
        target = _target_factory(scratch, artifacts)
    import atexit

    atexit.register(_summary, "atheris")
    atheris.Setup(
        [
            sys.argv[0],
            f"-max_total_time={max(1, int(seconds))}",
            f"-seed={seed + 1}",
            "-timeout=10",
            "-max_len=8192",
            "-print_final_stats=1",
            f"-artifact_prefix={artifacts}/",
            str(corpus),
        ],
        target,
    )
    atheris.Fuzz()


def run_hypothesis(corpus: Path, seconds: float, seed: int, artifacts: Path, scratch: str) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    target = _target_factory(scratch, artifacts)
    seeds = [p.read_bytes()[:8192] for p in sorted(corpus.iterdir()) if p.is_file()]

    @st.composite
    def mutated(draw: Any) -> bytes:
        base = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(0, 8))):
            if not base:
                break
            op = draw(st.sampled_from(["set", "flip", "cut", "u64"]))
            pos = draw(st.integers(0, len(base) - 1))
            if op == "set":
                base[pos] = draw(st.integers(0, 255))
            elif op == "flip":
                base[pos] ^= 1 << draw(st.integers(0, 7))
            elif op == "cut":
                del base[pos:]
            else:
                value = draw(st.sampled_from([0, 1, len(base), len(base) + 1, 2**63, 2**64 - 1]))
                base[pos : pos + 8] = value.to_bytes(8, "little")
        return bytes(base)

    end = time.monotonic() + seconds
    round_ = 0
    try:
        while time.monotonic() < end:
            round_ += 1

            @hseed(seed * 1000 + round_)
            @settings(
                max_examples=300,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(st.one_of(st.binary(max_size=600), mutated()))
            def prop(data: bytes) -> None:
                target(data)

            prop()
    finally:
        _summary("hypothesis")


def main(argv: list[str]) -> int:
    engine, corpus, seconds, seed, artifacts, scratch = argv
    runner = run_atheris if engine == "atheris" else run_hypothesis
    try:
        runner(Path(corpus), float(seconds), int(seed), Path(artifacts), scratch)
    except Exception:
        traceback.print_exc()
        return 1
    return 1 if _STATE["failures"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
