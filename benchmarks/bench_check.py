"""``h5guard check`` over many files against one plain h5py process reading the same files.

The baseline is what a user would write to read files completely: one Python process
that imports h5py, opens each file, visits every object by hard link, reads every
attribute and every dataset (big ones in slices of 16 MiB). The measured command is
``h5guard check -q FILE...`` (one call: the library's many-file path, sandboxed children,
every file also through the quick layer). Both are run as fresh processes, in
alternation, ``--repeat`` times; the best of each is compared. Target (issue #15): the
ratio stays within 2.

    python benchmarks/bench_check.py                       # readable files of the shared corpus
    python benchmarks/bench_check.py --repeat 3 FILE...    # any files
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The shared corpus sits beside the repository; from a git worktree (/work/wt/NAME) it
# is further up: the first ``shared/corpus/foreign`` above the repository.
CORPUS = next(
    (d / "shared" / "corpus" / "foreign" for d in REPO.parents if (d / "shared").is_dir()),
    REPO.parent / "shared" / "corpus" / "foreign",
)

# As the corpus's VERDICTS.tsv was made: datasets over 200 MB are not read (h5py has no
# way to skip never-written chunks, and h5repack_layouto.h5 declares 9.2 EB of them).
# It prints the files it skipped something in, so that the ratio can also be given
# without them (h5guard reads every allocated chunk of those: a 2 GB dataset for one).
_BASELINE = r"""
import sys, h5py
LIMIT = 200 * 2**20
skipped = set()
def read(path, obj):
    for name in obj.attrs:
        obj.attrs[name]
    if isinstance(obj, h5py.Dataset) and obj.shape is not None and obj.size:
        if obj.nbytes > LIMIT:
            skipped.add(path)
        else:
            obj[()]
for path in sys.argv[1:]:
    with h5py.File(path, "r") as f:
        read(path, f)
        f.visititems(lambda name, obj: read(path, obj))
print("\n".join(sorted(skipped)))
"""


def readable_corpus_files() -> list[str]:
    with open(CORPUS / "VERDICTS.tsv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [str(CORPUS / r["file"]) for r in rows if r["verdict"] == "readable"]


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    seconds = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{cmd[:4]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return seconds, proc.stdout


def compare(
    files: list[str], repeat: int, timeout: float, env: dict[str, str]
) -> tuple[float, float, set[str]]:
    baseline_cmd = [sys.executable, "-c", _BASELINE, *files]
    check_cmd = [
        sys.executable,
        "-m",
        "h5guard.cli",
        "check",
        "-q",
        "--timeout",
        str(timeout),
        *files,
    ]
    base: list[float] = []
    check: list[float] = []
    skipped: set[str] = set()
    for _ in range(repeat):
        seconds, out = timed(baseline_cmd, env)
        base.append(seconds)
        skipped = set(out.split())
        check.append(timed(check_cmd, env)[0])
    print(f"  files:                         {len(files)}")
    print(
        f"  one h5py process reading them: {min(base):.2f} s (runs: {', '.join(f'{x:.2f}' for x in base)})"
    )
    print(
        f"  h5guard check (one call):      {min(check):.2f} s (runs: {', '.join(f'{x:.2f}' for x in check)})"
    )
    print(f"  ratio:                         {min(check) / min(base):.2f} (target <= 2)")
    return min(base), min(check), skipped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", help="default: the shared corpus's readable files")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    files = args.files or readable_corpus_files()
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    print("all files:")
    _, _, skipped = compare(files, args.repeat, args.timeout, env)
    if skipped:
        print(f"without the {len(skipped)} file(s) with datasets over 200 MB the baseline skips:")
        compare([f for f in files if f not in skipped], args.repeat, args.timeout, env)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} core(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
