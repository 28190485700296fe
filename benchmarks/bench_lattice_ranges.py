"""Which narrowing of a record spec's lattice draw makes its record: the spec with each of its
lattice options removed in turn (back to the default range), run through the CLI.

Usage::

    python benchmarks/bench_lattice_ranges.py [--size 36] [--seeds 0-199] [--workers 2]

Each variant is ``layout-sweep run`` of ``benchmarks/specs/iea37-N.toml`` with one lattice option
of its ``[optimizer]`` table deleted (and one variant with all of them deleted: the default
lattice draw), on the same seeds and a clean output. The table gives, per variant, the best
stored AEP (PyWake's), how many starts reached par12's AEP, the median, and the wall time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import h5py
import numpy as np

# Running as a script puts benchmarks/ first on sys.path; bench_iea37 finds the packages.
from bench_iea37 import SPECS, cli_env, published_aeps

LATTICE_OPTIONS = (
    "ring_turbines",
    "ring_mode",
    "ring_pair_deg",
    "lattice_offset",
    "lattice_spacing",
    "lattice_rotation_deg",
    "lattice_margin_m",
)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def dump_spec(spec: dict[str, Any]) -> str:
    """The subset of TOML the record specs use: [[sweep]] blocks and one [optimizer] table."""
    lines: list[str] = []
    for block in spec.get("sweep", []):
        lines.append("[[sweep]]")
        lines += [f"{key} = {toml_value(value)}" for key, value in block.items()]
        lines.append("")
    lines.append("[optimizer]")
    lines += [f"{key} = {toml_value(value)}" for key, value in spec.get("optimizer", {}).items()]
    return "\n".join(lines) + "\n"


def stored_aeps(path: Path) -> list[float]:
    with h5py.File(path, "r") as f:
        return [
            float(f[key].attrs["aep_gwh"])
            for key in f
            if f[key].attrs.get("status") in ("ok", b"ok")
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", type=int, default=36, choices=[16, 36, 64])
    parser.add_argument("--seeds", default="0-199", help="seeds of every variant (default 0-199)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    with (SPECS / f"iea37-{args.size}.toml").open("rb") as fh:
        spec = tomllib.load(fh)
    narrowed = [name for name in LATTICE_OPTIONS if name in spec.get("optimizer", {})]
    variants: list[tuple[str, list[str]]] = [("the spec", [])]
    variants += [(f"without {name}", [name]) for name in narrowed]
    if len(narrowed) > 1:
        variants.append(("default lattice draw", narrowed))
    target = published_aeps(args.size)["par12"]
    env = cli_env()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-lattice-") as tmp:
        for number, (label, removed) in enumerate(variants):
            variant = {
                "sweep": spec["sweep"],
                "optimizer": {k: v for k, v in spec["optimizer"].items() if k not in removed},
            }
            spec_path = Path(tmp) / f"variant-{number}.toml"
            spec_path.write_text(dump_spec(variant))
            output = Path(tmp) / f"variant-{number}.h5"
            command = [sys.executable, "-m", "optimizer.cli", "run", str(spec_path)]
            command += ["-o", str(output), "-q", "--workers", str(args.workers)]
            command += ["--seeds", args.seeds]
            t0 = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            seconds = time.perf_counter() - t0
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
            aeps = np.array(stored_aeps(output))
            rows.append((label, len(aeps), aeps.max(), int(np.sum(aeps >= target)), aeps, seconds))
            print(f"  {label}: best {aeps.max():.2f} GWh in {seconds:.0f} s", file=sys.stderr)
    print(f"iea37-{args.size}, seeds {args.seeds}, par12 {target:.2f} GWh")
    header = (
        f"{'variant':<32} {'starts':>6} {'best GWh':>9} {'>= par12':>8} {'median':>8} {'time s':>7}"
    )
    print(header)
    print("-" * len(header))
    for label, count, best, hits, aeps, seconds in rows:
        print(
            f"{label:<32} {count:>6} {best:>9.2f} {hits:>8} {np.median(aeps):>8.2f} {seconds:>7.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
