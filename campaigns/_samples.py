"""Original files the campaigns damage, and deterministic result groups to write."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from h5guard import AttrSpec, Dataset, DatasetSpec, Group, Schema, ShardWriter, merge
from h5guard._format import result as _result

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"

SCHEMA = Schema(
    name="campaign-results",
    datasets={
        "layout": DatasetSpec(dtype="float", shape=("n", 2), finite=True),
        "aep": DatasetSpec(dtype="float64", shape=("n",)),
        "wake": DatasetSpec(dtype="float64", shape=(None,), required=False),
    },
    attrs={
        "status": AttrSpec(dtype="string", allowed=("ok", "failed")),
        "seed": AttrSpec(dtype="int"),
        "wind_speed": AttrSpec(dtype="float"),
    },
)


def group(i: int, *, wake: int = 0, variant: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """Result group ``i``: compact (n, 2) layout and (n,) aep, optional chunked ``wake``."""
    rng = np.random.default_rng([i, variant])
    n = 4 + i % 13
    datasets: dict[str, Any] = {
        "layout": rng.uniform(0.0, 1000.0, (n, 2)),
        "aep": rng.uniform(10.0, 20.0, n),
    }
    if wake:
        datasets["wake"] = rng.random(wake)
    attrs: dict[str, Any] = {"status": "ok", "seed": np.int64(i), "wind_speed": 9.5 + i % 7}
    if i % 6 == 2:
        # A result tree (#14): a dataset with attributes, nested groups with attributes,
        # compound records, UTF-8 text and raw bytes, so damage lands in those too.
        records = np.zeros(n, dtype=[("turbine", "<i4"), ("power_kw", "<f8"), ("ok", "?")])
        records["turbine"] = np.arange(n)
        records["power_kw"] = rng.uniform(0.0, 3000.0, n)
        records["ok"] = rng.random(n) > 0.2
        datasets["layout"] = Dataset(datasets["layout"], attrs={"units": "m", "crs": "local"})
        datasets["records"] = records
        datasets["history"] = {
            f"iter_{k:03d}": Group({"x": rng.random(n), "f": np.float64(k)}, attrs={"step": k})
            for k in range(2)
        }
        datasets["labels"] = np.array([f"wt-{k}-ñ" for k in range(n)])
        attrs["label"] = "Nørre Økse"
        attrs["raw"] = bytes([0, 1, 255, 0, 0])
    if i % 4 == 1:
        # More than 8 attributes: libhdf5 moves them to dense storage (a fractal heap
        # and a v2 B-tree name index), so those structures are in the files too.
        attrs.update({f"extra{k}": float(rng.random()) for k in range(10)})
        attrs["message"] = f"group {i} converged after {10 + i} iterations"
    return datasets, attrs


def expected_digest(i: int, *, wake: int = 0, variant: int = 0) -> str:
    datasets, attrs = group(i, wake=wake, variant=variant)
    return _result.prepare(f"g{i}", datasets, attrs, schema=None).digest


def write_shards(
    directory: Path,
    indices: range | list[int],
    *,
    per_shard: int,
    wake_every: int = 0,
    wake: int = 5000,
    prefix: str = "shard",
) -> list[Path]:
    """Commit ``g<i>`` groups with ShardWriter (every ``wake_every``-th one with bulk data)."""
    directory.mkdir(parents=True, exist_ok=True)
    with ShardWriter(directory, schema=SCHEMA, commit_every=per_shard, prefix=prefix) as w:
        for i in indices:
            bulk = wake if wake_every and i % wake_every == 0 else 0
            datasets, attrs = group(i, wake=bulk)
            w.add(f"g{i}", datasets, attrs)
    return list(w.committed)


def wake_of(i: int, wake_every: int, wake: int = 5000) -> int:
    return wake if wake_every and i % wake_every == 0 else 0


def h5guard_shard(work: Path) -> Path:
    """A ShardWriter shard: 3 groups, compact data, one 40 KB chunked+fletcher32 dataset."""
    (path,) = write_shards(work / "shard-src", range(3), per_shard=3, wake_every=2)
    out = work / "h5guard-shard.h5"
    shutil.copyfile(path, out)
    return out


def h5guard_output(work: Path) -> Path:
    """A merge output that already held groups when a second merge added more."""
    src = work / "output-src"
    out = work / "h5guard-output.h5"
    write_shards(src, range(0, 4), per_shard=2, wake_every=3)
    merge(src, out, workers=1, root_attrs={"campaign": "corruption", "round": 1})
    write_shards(src, range(4, 8), per_shard=4, wake_every=3)
    merge(
        src,
        out,
        workers=1,
        root_attrs={
            "round": 2,
            "note": "second merge",
            "total_configs": 8,
            "sites": "iea37,hornsrev1",
            "grid_size": [4, 5],
            "spec": '{"sweep": [{"site": "iea37"}]}',
        },
    )
    return out


def foreign(work: Path) -> Path:
    """Plain h5py defaults: v0 superblock, no checksums, vlen strings, contiguous data."""
    rng = np.random.default_rng(7)
    out = work / "foreign-plain.h5"
    with h5py.File(out, "w") as f:
        f.attrs["title"] = "layout sweep, written without h5guard"
        f.attrs["optimizers"] = np.array(["SLSQP", "COBYLA", "TNC"], dtype=h5py.string_dtype())
        f.create_dataset("init", data=rng.uniform(0.0, 1000.0, (16, 2)))
        f.create_dataset("labels", data=np.array(["a", "bb", "ccc"], dtype=h5py.string_dtype()))
        for i in range(3):
            g = f.create_group(f"run{i}")
            g.create_dataset("layout", data=rng.uniform(0.0, 1000.0, (16, 2)))
            g.create_dataset("aep", data=rng.uniform(10.0, 20.0))
            g.create_dataset("wake", data=rng.random(2000 if i == 1 else 50))
            g.create_dataset("evals", data=np.arange(40, dtype=np.int32) * (i + 1))
            g.attrs["status"] = "ok"
            g.attrs["site"] = f"site-{i}"
            g.attrs["seed"] = i
    return out


def originals(work: Path) -> list[tuple[str, Path]]:
    """``(origin, path)``: origin is ``h5guard`` or ``foreign``."""
    work.mkdir(parents=True, exist_ok=True)
    fixture_foreign = work / "foreign-fixture.h5"
    shutil.copyfile(FIXTURES / "foreign.h5", fixture_foreign)
    return [
        ("h5guard", h5guard_shard(work)),
        ("h5guard", h5guard_output(work)),
        ("foreign", fixture_foreign),
        ("foreign", foreign(work)),
    ]
