"""h5guard._format.bytes: the independent reader agrees with libhdf5 and h5guard's digest."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from h5guard import Code, ShardWriter
from h5guard._check import own
from h5guard._format import bytes as _fastread
from h5guard._format import names as fmt
from h5guard._format import reader
from h5guard._format import write as layout
from h5guard._format.bytes import Malformed, Unsupported, group_digest_at, verify_groups_at
from h5guard._format.digest import digest_of
from tests.strategies import names

# -- building files the way h5guard does --------------------------------------------


def _gcpl(*, compact_attrs: bool = True, creation_order: bool = False) -> Any:
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    if compact_attrs:
        gcpl.set_attr_phase_change(65535, 0)
    if creation_order:
        order = h5py.h5p.CRT_ORDER_TRACKED | h5py.h5p.CRT_ORDER_INDEXED
        gcpl.set_attr_creation_order(order)
        gcpl.set_link_creation_order(order)
    return gcpl


def normalized(values: Mapping[str, Any]) -> dict[str, npt.NDArray[Any]]:
    return {name: layout.normalize_value(name, v) for name, v in values.items()}


def write_group(
    f: h5py.File,
    key: str,
    datasets: Mapping[str, Any],
    attrs: Mapping[str, Any],
    *,
    compact_attrs: bool = True,
    creation_order: bool = False,
    stored_digest: str | None = "computed",
) -> str:
    """One result group in h5guard's layout; returns its digest (of the normalized inputs)."""
    arrays, attr_arrays = normalized(datasets), normalized(attrs)
    digest = digest_of(arrays, attr_arrays)
    gcpl = _gcpl(compact_attrs=compact_attrs, creation_order=creation_order)
    h5py.h5g.create(f.id, key.encode(), lcpl=layout.LINK_CREATE_UTF8, gcpl=gcpl)
    group = f[key]
    for name, arr in arrays.items():
        layout.write_dataset(group, name, arr)
    for name, arr in attr_arrays.items():
        layout.create_attr(group, name, arr)
    if stored_digest is not None:
        text = digest if stored_digest == "computed" else stored_digest
        layout.create_attr(group, fmt.DIGEST_ATTR, np.array(text.encode(), dtype=np.bytes_))
    return digest


def addresses(path: str | Path, keys: Mapping[str, str] | None = None) -> dict[str, int]:
    with h5py.File(path, "r", locking=False) as f:
        return {k: h5py.h5o.get_info(f.id, k.encode()).addr for k in (keys or f)}


def expected_at(path: str | Path, digests: Mapping[str, str]) -> dict[str, tuple[int, str]]:
    where = addresses(path, digests)
    return {k: (where[k], d) for k, d in digests.items()}


def copy_groups(src: str | Path, dst: str | Path, keys: list[str]) -> None:
    """What merge does: H5Ocopy each group into an h5guard output file."""
    with h5py.File(src, "r", locking=False) as s, layout.create_file(str(dst)) as f:
        for key in keys:
            name = key.encode()
            h5py.h5o.copy(s.id, name, f.id, name, lcpl=layout.LINK_CREATE_UTF8)


def digest_via_h5py(path: str | Path, key: str) -> str:
    """The digest of a group as h5py reads it (what _deep computes)."""
    with h5py.File(path, "r", locking=False) as f:
        group = f[key]
        attrs = reader.read_attrs(group)
        attrs.pop(fmt.DIGEST_ATTR, None)
        datasets = {}
        for name in group:
            dset = group[name]
            # Into an array of the stored dtype: ``dset[()]`` turns a scalar string
            # into ``bytes`` and loses its trailing NULs.
            out = np.empty(dset.shape, dtype=dset.dtype)
            if out.size:
                dset.read_direct(out)
            datasets[name] = out
        return digest_of(datasets, attrs)


def digest_at(path: str | Path, addr: int) -> tuple[str, str | None]:
    data = Path(path).read_bytes()
    return group_digest_at(data, _fastread.base_address(data), addr)


def assert_verified(path: str | Path, expected: Mapping[str, tuple[int, str]]) -> None:
    assert verify_groups_at(path, expected) == ([], [])
    assert verify_groups_at(path, expected, checksums=True) == ([], [])
    assert own.verify_groups(str(path), {k: d for k, (_, d) in expected.items()}) == []


EVERY_KIND: dict[str, Any] = {
    "f8": 0.25,
    "f4": np.float32(-1.5),
    "f2": np.float16(3.0),
    "f8_be": np.array([1.0, -2.0, np.inf], dtype=">f8"),
    "f4_be": np.array(np.nan, dtype=">f4"),
    "i1": np.int8(-3),
    "i2_be": np.array([[1, -2], [3, 4]], dtype=">i2"),
    "i4": np.array([1, 2, 3], dtype=np.int32),
    "i8": 2**62,
    "u1": np.uint8(255),
    "u2": np.array([65535, 1], dtype="<u2"),
    "u4_be": np.array(7, dtype=">u4"),
    "u8": np.uint64(2**64 - 1),
    "bool": True,
    "bools": np.array([[True, False, True]]),
    "c8": np.complex64(1 - 2j),
    "c16_be": np.array([1 + 2j, -3j], dtype=">c16"),
    "text": "héllo wörld ✓",
    "texts": ["a", "bé", "ccc"],
    "bytes": np.array([b"a\x00b", b"xy"], dtype="S3"),
    "empty": np.zeros((0, 3)),
    "cube": np.arange(24, dtype=np.int64).reshape(2, 3, 4),
}
XY = np.arange(128, dtype=np.float64).reshape(64, 2) / 7


# -- agreement with the writer and with libhdf5 --------------------------------------


def test_every_supported_kind_in_source_and_copy(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.h5", tmp_path / "dst.h5"
    with layout.create_file(str(src)) as f:
        digests = {
            "attrs": write_group(f, "attrs", {"xy": XY}, EVERY_KIND),
            "bare": write_group(f, "bare", {}, {}),
            "ordered": write_group(f, "ordered", {"xy": XY}, EVERY_KIND, creation_order=True),
        }
        # Past 8 links a group moves them to dense storage: at most 8 datasets a group.
        kinds = list(EVERY_KIND.items())
        for i in range(0, len(kinds), 8):
            key = f"datasets-{i}"
            digests[key] = write_group(f, key, dict(kinds[i : i + 8]), {"status": "ok"})
    copy_groups(src, dst, list(digests))
    for path in (src, dst):
        expected = expected_at(path, digests)
        assert_verified(path, expected)
        for key, (addr, digest) in expected.items():
            assert digest_at(path, addr) == (digest, digest)
            assert digest_via_h5py(path, key) == digest


def test_shard_writer_output_and_merge_copy(tmp_path: Path) -> None:
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    # Twelve attributes: past the 8 that libhdf5 keeps compact unless told otherwise.
    attrs = {"status": "ok", "n": 3, "loss": 0.5, "flag": False, "label": "ünïcode"}
    attrs |= {f"extra{i}": i * 0.5 for i in range(6)}
    with ShardWriter(shard_dir, prefix="t") as w:
        for i in range(5):
            w.add(f"cfg-{i}", {"xy": XY[: 10 + i], "ids": np.arange(i + 1)}, {**attrs, "i": i})
    [shard] = sorted(shard_dir.glob("*.h5"))
    with h5py.File(shard, "r") as f:
        digests = {
            k: reader.text_attr(f[k], fmt.DIGEST_ATTR) or ""
            for k in f
            if not k.startswith(fmt.RESERVED_PREFIX)  # the summary is no result
        }
    out = tmp_path / "out.h5"
    copy_groups(shard, out, sorted(digests))
    for path in (shard, out):
        assert_verified(path, expected_at(path, digests))


def test_userblock_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "ub.h5"
    with h5py.File(path, "w", libver=fmt.LIBVER, userblock_size=1024) as f:
        digests = {"g": write_group(f, "g", {"xy": XY}, {"a": 1})}
    with open(path, "rb") as fh:
        assert _fastread.base_address(fh.read()) == 1024
    assert_verified(path, expected_at(path, digests))


def test_contiguous_scalar_and_empty_datasets(tmp_path: Path) -> None:
    # Size-0 arrays and scalars over the compact limit are contiguous, not compact.
    path = tmp_path / "c.h5"
    big = "x" * (fmt.COMPACT_LIMIT + 10)
    with layout.create_file(str(path)) as f:
        digests = {"g": write_group(f, "g", {"empty": np.zeros((0, 2)), "big": big}, {})}
        assert f["g/big"].id.get_create_plist().get_layout() == h5py.h5d.CONTIGUOUS
    assert_verified(path, expected_at(path, digests))


def _string_type(size: int, pad: int, cset: int) -> Any:
    tid = h5py.h5t.C_S1.copy()
    tid.set_size(size)
    tid.set_strpad(pad)
    tid.set_cset(cset)
    return tid


@pytest.mark.parametrize(
    "pad", [h5py.h5t.STR_NULLTERM, h5py.h5t.STR_NULLPAD, h5py.h5t.STR_SPACEPAD]
)
@pytest.mark.parametrize("cset", [h5py.h5t.CSET_ASCII, h5py.h5t.CSET_UTF8])
def test_string_padding_read_as_h5py_reads_it(tmp_path: Path, pad: int, cset: int) -> None:
    # libhdf5 rewrites NULLTERM and SPACEPAD strings when h5py reads them into its
    # NULLPAD type; the reader must digest what h5py sees, not the stored bytes.
    path = tmp_path / "s.h5"
    values = np.array([b"a\x00b\x00", b"ab  ", b"abcd", b" \x00 ", b"\xc3\xa9  "], dtype="S4")
    tid = _string_type(4, pad, cset)
    with layout.create_file(str(path)) as f:
        write_group(f, "g", {}, {}, stored_digest=None)
        gid = f["g"].id
        aid = h5py.h5a.create(gid, b"attr", tid, h5py.h5s.create_simple(values.shape))
        aid.write(values, mtype=tid)
        aid = h5py.h5a.create(gid, b"one", tid, h5py.h5s.create(h5py.h5s.SCALAR))
        aid.write(values[:1].reshape(()), mtype=tid)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        dsid = h5py.h5d.create(gid, b"ds", tid, h5py.h5s.create_simple(values.shape), dcpl=dcpl)
        dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, values, mtype=tid)
    [addr] = addresses(path).values()
    computed, stored = digest_at(path, addr)
    assert stored is None
    assert computed == digest_via_h5py(path, "g")


# -- the Hypothesis property ----------------------------------------------------------

_NUMERIC = ["?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"]
dtypes = st.one_of(
    st.builds(
        lambda code, order: np.dtype(order + code), st.sampled_from(_NUMERIC), st.sampled_from("<>")
    ),
    st.integers(1, 40).map(lambda n: np.dtype(f"S{n}")),
)
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
values = st.one_of(
    dtypes.flatmap(lambda dt: shapes.flatmap(lambda shape: hnp.arrays(dt, shape))),
    st.text(
        alphabet=st.characters(codec="utf-8", exclude_characters="\x00"),
        min_size=1,
        max_size=20,
    ),
)
group_contents = st.tuples(
    st.dictionaries(names, values, max_size=3),
    st.dictionaries(names, values, max_size=30),
)


@given(contents=group_contents)
def test_property_digest_matches_writer(contents: tuple[dict[str, Any], dict[str, Any]]) -> None:
    datasets, attrs = contents
    tmp = tempfile.mkdtemp(prefix="fastread-")
    try:
        src, dst = os.path.join(tmp, "src.h5"), os.path.join(tmp, "dst.h5")
        with layout.create_file(src) as f:
            digest = write_group(f, "g", datasets, attrs)
        copy_groups(src, dst, ["g"])
        for path in (src, dst):
            expected = expected_at(path, {"g": digest})
            assert verify_groups_at(path, expected) == ([], [])
            assert digest_at(path, expected["g"][0]) == (digest, digest)
        assert digest_via_h5py(dst, "g") == digest
        assert own.verify_groups(dst, {"g": digest}) == []
    finally:
        shutil.rmtree(tmp)


# -- outside the subset: unsupported, not a problem -----------------------------------


def test_constructs_outside_the_subset_are_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "u.h5"
    many = {f"a{i}": i for i in range(12)}
    with layout.create_file(str(path)) as f:
        digests = {
            "dense": write_group(f, "dense", {"xy": XY}, many, compact_attrs=False),
            "chunked": write_group(f, "chunked", {"big": np.zeros(5000)}, {}),
            "ok": write_group(f, "ok", {"xy": XY}, many),
            "dense links": write_group(f, "dense links", {f"d{i}": i for i in range(9)}, {}),
        }
        digests["nested"] = write_group(f, "nested", {"xy": XY}, {})
        f["nested"].create_group("inner")
        digests["vlen"] = write_group(f, "vlen", {}, {})
        f["vlen"].attrs["s"] = "variable-length"
        digests["null"] = write_group(f, "null", {}, {})
        f["null"].attrs["e"] = h5py.Empty("f8")
        digests["compound"] = write_group(f, "compound", {}, {})
        f["compound"].attrs["c"] = np.zeros(2, dtype=[("a", "i4"), ("b", "f8")])
        digests["enum"] = write_group(f, "enum", {}, {})
        f["enum"].attrs.create("e", 1, dtype=h5py.enum_dtype({"A": 0, "B": 1}, basetype="i1"))
        digests["soft"] = write_group(f, "soft", {"xy": XY}, {})
        f["soft"]["link"] = h5py.SoftLink("/ok/xy")
        digests["dataset"] = "sha256:none"
        f["dataset"] = XY
    problems, unsupported = verify_groups_at(path, expected_at(path, digests))
    assert problems == []
    assert sorted(unsupported) == sorted(set(digests) - {"ok"})
    # The libhdf5 path (which the caller falls back to) still verifies the real groups.
    assert own.verify_groups(str(path), {k: digests[k] for k in ("dense", "chunked")}) == []


def test_unsupported_superblock_defers_every_group(tmp_path: Path) -> None:
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as f:  # default libver: superblock version 0
        f.create_group("g")
    assert verify_groups_at(path, expected_at(path, {"g": "sha256:x"})) == ([], ["g"])


# -- damage: problems, never exceptions ----------------------------------------------


@functools.cache
def _sample() -> tuple[bytes, dict[str, tuple[int, str]]]:
    """A small valid file (and its expected groups), written once."""
    tmp = tempfile.mkdtemp(prefix="fastread-")
    try:
        path = os.path.join(tmp, "sample.h5")
        with layout.create_file(path) as f:
            digests = {
                "a": write_group(f, "a", {"xy": XY}, {**EVERY_KIND, "marker": 1234.5678}),
                "b": write_group(f, "b", {"t": ["x", "yz"]}, {"n": 1}),
            }
        return Path(path).read_bytes(), expected_at(path, digests)
    finally:
        shutil.rmtree(tmp)


def _damaged(tmp_path: Path, data: bytes | bytearray) -> Path:
    path = tmp_path / "damaged.h5"
    path.write_bytes(bytes(data))
    return path


def _flip(data: bytes, at: int) -> bytearray:
    out = bytearray(data)
    out[at] ^= 0x40
    return out


def test_flipped_data_byte_is_a_digest_mismatch(tmp_path: Path) -> None:
    data, expected = _sample()
    at = data.find(XY.tobytes())
    assert at > 0
    path = _damaged(tmp_path, _flip(data, at + 100))
    problems, unsupported = verify_groups_at(path, expected)
    assert unsupported == []
    assert [key for key, _ in problems] == ["a"]
    assert "copied group has digest" in problems[0][1]


def test_flipped_attribute_byte_is_a_digest_mismatch(tmp_path: Path) -> None:
    data, expected = _sample()
    at = data.find(np.float64(1234.5678).tobytes())
    assert at > 0
    problems, _ = verify_groups_at(_damaged(tmp_path, _flip(data, at + 3)), expected)
    assert [key for key, _ in problems] == ["a"]


def test_flipped_stored_digest_is_reported(tmp_path: Path) -> None:
    data, expected = _sample()
    at = data.find(expected["b"][1].encode())
    problems, _ = verify_groups_at(_damaged(tmp_path, _flip(data, at + 20)), expected)
    [(key, message)] = problems
    assert key == "b" and message.startswith("copied group stores digest sha256:")


def test_missing_or_wrong_stored_digest(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    with layout.create_file(str(path)) as f:
        digests = {
            "none": write_group(f, "none", {"xy": XY}, {}, stored_digest=None),
            "wrong": write_group(f, "wrong", {"xy": XY}, {}, stored_digest="sha256:0"),
            "ok": write_group(f, "ok", {"xy": XY}, {}),
        }
    expected = expected_at(path, digests)
    problems, unsupported = verify_groups_at(path, expected)
    assert unsupported == []
    assert dict(problems) == {
        "none": "copied group has no h5guard_digest attribute",
        "wrong": f"copied group stores digest sha256:0, expected {digests['wrong']}",
    }
    other = {"ok": (expected["ok"][0], "sha256:" + "0" * 64)}
    [(key, message)] = verify_groups_at(path, other)[0]
    assert key == "ok" and message.startswith("copied group has digest")


def _continuation_of(data: bytes, addr: int) -> int:
    """Offset in ``data`` of the first continuation message body of the header at addr."""
    header = data.find(b"OHDR", addr)
    assert header == addr
    flags = data[addr + 5]
    p = addr + 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0) + (1 << (flags & 3))
    step = 6 if flags & 0x04 else 4
    while data[p] != 0x10:
        p += step + int.from_bytes(data[p + 1 : p + 3], "little")
    return p + step


def test_garbled_headers_are_problems(tmp_path: Path) -> None:
    data, expected = _sample()
    addr = expected["a"][0]
    cont = _continuation_of(data, addr)
    cases = {
        "signature": data[:addr] + b"XXXX" + data[addr + 4 :],
        "truncated": data[: addr + 40],
        "cycle": data[:cont] + addr.to_bytes(8, "little") + data[cont + 8 :],
        "outside": data[:cont] + (len(data) * 2).to_bytes(8, "little") + data[cont + 8 :],
        "huge": data[: cont + 8] + (2**40).to_bytes(8, "little") + data[cont + 16 :],
        "chunk sig": data.replace(b"OCHK", b"OCHX"),
    }
    for label, damaged in cases.items():
        problems, unsupported = verify_groups_at(_damaged(tmp_path, damaged), {"a": expected["a"]})
        assert [k for k, _ in problems] == ["a"], label
        assert problems[0][1].startswith("unreadable: "), label
        assert unsupported == [], label


def test_checksums_catch_damage_the_digest_does_not_cover(tmp_path: Path) -> None:
    data, expected = _sample()
    # The group's modification times sit in its header, outside the digest.
    addr = expected["a"][0]
    assert data[addr + 5] & 0x20
    path = _damaged(tmp_path, _flip(data, addr + 7))
    assert verify_groups_at(path, expected) == ([], [])
    problems, _ = verify_groups_at(path, expected, checksums=True)
    assert problems == [("a", f"unreadable: object header at {addr}: checksum mismatch")]


def test_unreadable_files(tmp_path: Path) -> None:
    groups = {"a": (0, "sha256:x"), "b": (48, "sha256:y")}
    empty = _damaged(tmp_path, b"")
    assert verify_groups_at(empty, groups) == (
        [("a", "the file is empty"), ("b", "the file is empty")],
        [],
    )
    junk = _damaged(tmp_path, b"not an HDF5 file" * 100)
    problems, unsupported = verify_groups_at(junk, groups)
    assert [k for k, _ in problems] == ["a", "b"] and unsupported == []
    assert verify_groups_at(junk, {}) == ([], [])


@given(
    near=st.sampled_from(["a", "b", None]),
    offset=st.integers(0, 2**20),
    patch=st.binary(min_size=1, max_size=24),
)
def test_random_bytes_never_raise_or_hang(near: str | None, offset: int, patch: bytes) -> None:
    data, expected = _sample()
    # Mostly inside a group's object header, where the parser has to make sense of them.
    at = (expected[near][0] + offset % 600 if near else offset) % len(data)
    damaged = data[:at] + patch + data[at + len(patch) :]
    base = _fastread.base_address(data)
    for addr, digest in expected.values():
        for checksums in (False, True):
            try:
                computed, _ = group_digest_at(damaged, base, addr, checksums=checksums)
            except (Unsupported, Malformed):
                continue
            if checksums:  # whatever parses with good checksums is the real content
                assert computed == digest


@given(data=st.binary(max_size=2048), addr=st.one_of(st.just(0), st.integers(0, 2**64)))
def test_random_buffer_at_random_address(data: bytes, addr: int) -> None:
    with contextlib.suppress(Unsupported, Malformed):
        group_digest_at(b"OHDR\x02" + data, 0, addr)


def test_scalar_string_dataset_with_trailing_nuls_verifies_through_libhdf5(
    tmp_path: Path,
) -> None:
    """``dset[()]`` strips a scalar string's trailing NULs; the digest must not."""
    path = tmp_path / "nul.h5"
    with layout.create_file(str(path)) as f:
        digest = write_group(f, "g", {"s": np.array(b"a", dtype="S2")}, {})
    assert own.verify_groups(str(path), {"g": digest}) == []


def test_verify_copied_reads_with_bytes_then_falls_back_to_the_streaming_reader(
    tmp_path: Path,
) -> None:
    """own.verify_copied: what the merge calls after copying groups into its output."""
    src = tmp_path / "src.h5"
    with ShardWriter(tmp_path / "shards") as w:
        w.add("flat", {"xy": XY}, {"status": "ok"})
        w.add("tree", {"history": {"loss": np.arange(3.0)}}, {"status": "ok"})
        w.add("chunked", {"big": np.arange(50_000.0)}, {})  # outside the byte reader's subset
    shutil.copy(w.committed[0], src)
    with h5py.File(src, "r", locking=False) as f:
        digests = {
            k: reader.text_attr(f[k], fmt.DIGEST_ATTR) or ""
            for k in f
            if not k.startswith(fmt.RESERVED_PREFIX)  # the summary is no result
        }
    dst = tmp_path / "out.h5"
    copy_groups(src, dst, list(digests))
    added = expected_at(dst, digests)
    assert verify_groups_at(dst, added)[1] == ["chunked"]  # the fallback is exercised
    assert own.verify_copied(str(dst), added) == []
    wrong = {**added, "chunked": (added["chunked"][0], "sha256-v2:" + "0" * 64)}
    wrong["tree"] = (added["tree"][0], "sha256-v2:" + "1" * 64)
    problems = own.verify_copied(str(dst), wrong)
    assert {(p.obj, p.code) for p in problems} == {
        ("/chunked", Code.DIGEST_MISMATCH),
        ("/tree", Code.DIGEST_MISMATCH),
    }
