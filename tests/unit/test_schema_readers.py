"""A schema gives the same verdict whichever reader looks at a group (issue #21).

Every reader (h5guard's streaming reader, the byte reader, the walk over foreign
files, the tree in memory, salvage) describes a group as one ``GroupInfo`` and
``Schema.check_group`` checks it. Nested rules (``groups`` / ``GroupSpec``, rules of a
dataset's attributes) used to be skipped for files h5guard did not write: a plain h5py
file missing a required subgroup passed ``check --schema``.
"""

from __future__ import annotations

import json
import mmap
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

import h5guard
from h5guard import Code, Dataset, Sandbox, Schema, ShardWriter
from h5guard._check.foreign import Walk
from h5guard._format import bytes as byte_reader
from h5guard._format import reader, tree
from h5guard._format.result import prepare
from h5guard.schema import GroupInfo

SCHEMA = {
    "name": "nested",
    "datasets": {"x": {"dtype": "float"}},
    "groups": {
        "history": {
            "datasets": {
                "loss": {
                    "dtype": "float64",
                    "shape": ["n"],
                    "attrs": {"kind": {"allowed": ["train", "test"]}},
                }
            },
            "attrs": {"units": {"allowed": ["m"]}},
            "groups": {"last": {"datasets": {"step": {"dtype": "int"}}}},
        }
    },
}

# Each case: what the group "g" holds (members as nested dicts; "@name" keys are the
# attributes of the group or dataset holding them), and the findings a check must give.
Tree = dict[str, Any]
_OK: Tree = {
    "x": np.arange(3.0),
    "history": {
        "@units": "m",
        "loss": {"@kind": "train", "": np.linspace(1.0, 0.1, 4)},
        "last": {"step": np.int64(4)},
    },
}


def _with(path: str, value: Any) -> Tree:
    """``_OK`` with the member at ``path`` ("a/b") replaced (``None``: removed)."""
    *parents, leaf = path.split("/")
    result: Tree = _copy(_OK)
    node = result
    for part in parents:
        node = node[part]
    if value is None:
        del node[leaf]
    else:
        node[leaf] = value
    return result


def _copy(node: Tree) -> Tree:
    return {k: _copy(v) if isinstance(v, dict) else v for k, v in node.items()}


CASES: dict[str, tuple[Tree, set[tuple[Code, str]]]] = {
    "valid": (_OK, set()),
    "missing subgroup": (_with("history", None), {(Code.SCHEMA_MISSING, "/g/history")}),
    "missing nested subgroup": (
        _with("history/last", None),
        {(Code.SCHEMA_MISSING, "/g/history/last")},
    ),
    "missing nested dataset": (
        _with("history/loss", None),
        {(Code.SCHEMA_MISSING, "/g/history/loss")},
    ),
    "wrong nested dtype": (
        _with("history/loss", {"@kind": "train", "": np.arange(4, dtype=np.int32)}),
        {(Code.SCHEMA_DTYPE, "/g/history/loss")},
    ),
    "wrong dtype two levels down": (
        _with("history/last/step", np.float64(4.0)),
        {(Code.SCHEMA_DTYPE, "/g/history/last/step")},
    ),
    "wrong nested shape": (
        _with("history/loss", {"@kind": "train", "": np.zeros((2, 2))}),
        {(Code.SCHEMA_SHAPE, "/g/history/loss")},
    ),
    "wrong nested group attribute": (
        _with("history/@units", "km"),
        {(Code.SCHEMA_VALUE, "/g/history")},
    ),
    "missing nested group attribute": (
        _with("history/@units", None),
        {(Code.SCHEMA_MISSING, "/g/history")},
    ),
    "wrong nested dataset attribute": (
        _with("history/loss", {"@kind": "eval", "": np.linspace(1.0, 0.1, 4)}),
        {(Code.SCHEMA_VALUE, "/g/history/loss")},
    ),
}


def _split(node: Tree) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(members, attrs)`` of a case's group, as ``ShardWriter.add`` takes them."""
    members: dict[str, Any] = {}
    attrs = {k[1:]: v for k, v in node.items() if k.startswith("@")}
    for name, value in node.items():
        if name.startswith("@"):
            continue
        if isinstance(value, dict) and "" in value:  # a dataset with attributes
            members[name] = Dataset(value[""], {k[1:]: v for k, v in value.items() if k})
        elif isinstance(value, dict):
            sub, sub_attrs = _split(value)
            members[name] = h5guard.Group(sub, sub_attrs) if sub_attrs else sub
        else:
            members[name] = value
    return members, attrs


def _write_plain(group: h5py.Group, node: Tree) -> None:
    """The same content written with plain h5py, as another pipeline would."""
    for name, value in node.items():
        if name.startswith("@"):
            group.attrs[name[1:]] = value
        elif isinstance(value, dict) and "" in value:
            dset = group.create_dataset(name, data=value[""])
            for k, v in value.items():
                if k:
                    dset.attrs[k[1:]] = v
        elif isinstance(value, dict):
            _write_plain(group.create_group(name), value)
        else:
            group[name] = value


def plain_file(directory: Path, node: Tree) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "plain.h5"
    with h5py.File(path, "w") as f:
        _write_plain(f.create_group("g"), node)
    return path


def h5guard_file(directory: Path, node: Tree) -> Path:
    members, attrs = _split(node)
    with ShardWriter(directory / "shards") as w:  # no schema: the writer accepts anything
        w.add("g", members, attrs)
    return Path(w.committed[0])


def schema_codes(report: h5guard.Report) -> set[tuple[Code, str]]:
    return {(f.code, f.obj) for f in report.findings if f.code.name.startswith("SCHEMA_")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_plain_h5py_and_h5guard_files_get_the_same_schema_findings(
    case: str, tmp_path: Path, sandbox: Sandbox
) -> None:
    node, expected = CASES[case]
    schema = Schema.from_dict(SCHEMA)
    plain = h5guard.validate(plain_file(tmp_path, node), schema=schema, sandbox=sandbox)
    own = h5guard.validate(h5guard_file(tmp_path, node), schema=schema, sandbox=sandbox)
    assert schema_codes(plain) == expected
    assert schema_codes(own) == expected
    assert plain.ok is own.ok is (not expected)
    for report in (plain, own):
        [summary] = report.files
        assert (list(summary.groups), list(summary.invalid_groups)) == (
            ([], ["g"]) if expected else (["g"], [])
        )


def _descriptions(path: Path, node: Tree) -> dict[str, GroupInfo]:
    """The description of group "g" by every reader h5guard has."""
    members, attrs = _split(node)
    out = {"tree in memory": tree.describe(prepare("g", members, attrs, schema=None).root)}
    with h5py.File(path, "r") as f:
        out["streaming reader"] = reader.verify_tree(f["g"], "g", finite=True)[1]
        walk = Walk(str(path), f.id, keep=True)
        walk.run(h5py.h5o.open(f.id, b"/"), "/")
        out["walk over foreign files"] = walk.describe("/g")
        addr = h5py.h5o.get_info(f.id, b"g").addr
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        base = byte_reader.base_address(buf)
        info = byte_reader.read_group_at(buf, base, addr, describe=True)[2]
        assert info is not None
        out["byte reader"] = info
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_reader_describes_a_group_so_that_the_schema_agrees(
    case: str, tmp_path: Path
) -> None:
    node, expected = CASES[case]
    schema = Schema.from_dict(SCHEMA)
    verdicts = {
        name: {(v.code, "/g/" + v.obj if v.obj else "/g") for v in schema.check_group(info)}
        for name, info in _descriptions(h5guard_file(tmp_path, node), node).items()
    }
    assert verdicts == dict.fromkeys(verdicts, expected)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "h5guard.cli", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("make", [plain_file, h5guard_file], ids=["plain h5py", "h5guard"])
def test_check_schema_on_the_command_line_applies_nested_rules(
    make: Callable[[Path, Tree], Path], tmp_path: Path
) -> None:
    schema_path = tmp_path / "nested.json"
    schema_path.write_text(json.dumps(SCHEMA))
    bad = make(tmp_path, _with("history/loss", {"@kind": "train", "": np.zeros(4, np.int8)}))
    proc = _cli("check", "--json", "--schema", str(schema_path), str(bad))
    assert proc.returncode != 0, proc.stdout
    doc = json.loads(proc.stdout)
    found = {(f["code"], f["object"]) for f in doc["findings"] if f["code"].startswith("SCHEMA_")}
    assert found == {("SCHEMA_DTYPE", "/g/history/loss")}
    missing = make(tmp_path / "second", _with("history", None))
    text = _cli("check", "--schema", str(schema_path), str(missing))
    assert text.returncode != 0
    assert f"{missing}:/g/history: SCHEMA_MISSING required group is missing" in text.stdout


def test_salvage_applies_nested_rules_to_plain_files(tmp_path: Path) -> None:
    good = plain_file(tmp_path / "good", _OK)
    bad = plain_file(tmp_path / "bad", _with("history/last/step", np.float64(4.0)))
    schema = Schema.from_dict(SCHEMA)
    report = h5guard.salvage([good, bad], tmp_path / "out", schema=schema, timeout=60)
    by_path = {Path(f.path).parent.name: f for f in report.files}
    assert by_path["good"].recovered == ("g",)
    [(key, reason)] = by_path["bad"].lost
    assert key == "g" and "SCHEMA_DTYPE" in reason and "history/last/step" in reason
