"""The byte reader's cached headers (datasets: ``bytes._Plain``, groups:
``bytes._Header``) give what parsing each header gives, intact or damaged, and a damaged
copy is still refused by the merge's verification."""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

import h5guard
from h5guard import ShardWriter, merge
from h5guard._check.own import verify_copied
from h5guard._format import bytes as bytes_reader
from h5guard.report import Code

Added = dict[str, tuple[int, str]]
MARK = 9876.54321  # bytes easy to find in the output


def _merged(tmp_path: Path, n: int = 8) -> tuple[Path, Added]:
    shards = tmp_path / "shards"
    with ShardWriter(shards, commit_every=n) as w:
        for i in range(n):
            w.add(
                f"k{i}",
                {
                    "xy": np.full((5, 2), float(i)),
                    "ids": np.arange(4, dtype=">i4") + i,  # big-endian: converted
                    "name": np.array([b"ab", b"c"]),
                    "tree": {"inner": np.arange(3) + i},
                },
                {"status": "ok", "seed": i},
            )
    out = tmp_path / "out.h5"
    report = merge(shards, out, workers=1)
    assert report.exit_code == 0, report.render_text()
    added: Added = {}
    with h5py.File(out, "r") as f:
        for key in f:
            if not key.startswith("h5guard"):
                stored = f[key].attrs["h5guard_digest"]
                added[key] = (h5py.h5o.get_info(f.id, key.encode()).addr, stored.decode())
    return out, added


def _without_caches(m: pytest.MonkeyPatch) -> None:
    m.setattr(bytes_reader, "_PLAIN", {})
    m.setattr(bytes_reader, "_PLAIN_LENGTHS", [])
    m.setattr(bytes_reader, "_PLAIN_LENGTH_LIMIT", 0)
    m.setattr(bytes_reader, "_HEADERS", {})
    m.setattr(bytes_reader, "_HEADER_LENGTHS", [])
    m.setattr(bytes_reader, "_HEADER_LENGTH_LIMIT", 0)


@pytest.fixture
def no_templates(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    _without_caches(monkeypatch)
    yield


def _outcome(buf: bytes, base: int, addr: int) -> tuple[str, str | None] | str:
    try:
        return bytes_reader.group_digest_at(buf, base, addr)
    except (bytes_reader.Unsupported, bytes_reader.Malformed) as err:
        return type(err).__name__


def test_cached_headers_are_used_and_agree(tmp_path: Path) -> None:
    out, added = _merged(tmp_path)
    bytes_reader._PLAIN.clear()
    assert verify_copied(str(out), added) == []
    assert bytes_reader._PLAIN  # the datasets of one shape share a cached header
    assert verify_copied(str(out), added) == []  # now from the cache
    with open(out, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        base = bytes_reader.base_address(buf)
        for addr, want in added.values():
            assert bytes_reader.group_digest_at(buf, base, addr) == (want, want)
            # the description path parses every header (no cache): the same digest
            assert bytes_reader.read_group_at(buf, base, addr)[:2] == (want, want)


def _dataset_header(buf: bytes, base: int, group: int, name: bytes | None) -> tuple[int, int]:
    """Where the header of the group's member ``name`` (None: of the group) is, and its size."""
    file = bytes_reader._File(buf, base)
    addr = group if name is None else file.object(group).links()[name]
    start = base + addr
    flags = buf[start + 5]
    at = start + 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
    width = 1 << (flags & 3)
    size = int.from_bytes(buf[at : at + width], "little")
    return start, at + width - start + size + 4  # the whole chunk, its checksum included


@pytest.mark.parametrize("member", [b"xy", b"ids"])
def test_every_damaged_byte_of_a_header_reads_as_without_the_cache(
    tmp_path: Path, member: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, added = _merged(tmp_path, 4)
    intact = out.read_bytes()
    base = bytes_reader.base_address(intact)
    group = added["k2"][0]
    start, length = _dataset_header(intact, base, group, member)
    outcomes = _flip_each_byte(
        monkeypatch,
        intact,
        added,
        "k2",
        range(start, start + length),
        0x01,
        f"header of {member!r}",
    )
    # The damage was seen (an error, or a digest that differs) and some bytes are
    # outside what the digest covers (the fill value message).
    assert {True, False} <= outcomes


def test_every_damaged_byte_of_a_group_header_reads_as_without_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, added = _merged(tmp_path, 6)
    intact = out.read_bytes()
    base = bytes_reader.base_address(intact)
    for addr, _ in added.values():
        bytes_reader.group_digest_at(intact, base, addr)
    assert bytes_reader._HEADERS  # the groups' headers were learnt
    group = added["k3"][0]
    start, length = _dataset_header(intact, base, group, None)
    outcomes = _flip_each_byte(
        monkeypatch, intact, added, "k3", range(start, start + length), 0x04, "group header"
    )
    assert {True, False} <= outcomes


def _flip_each_byte(
    monkeypatch: pytest.MonkeyPatch,
    intact: bytes,
    added: Added,
    key: str,
    where: range,
    mask: int,
    what: str,
) -> set[object]:
    """Damage each byte of ``where`` in turn: the caches (warm from the intact file)
    must give what the generic parse gives. The outcomes seen: error texts, and whether
    the digest still matched."""
    base = bytes_reader.base_address(intact)
    group = added[key][0]
    outcomes: set[object] = set()
    for at in where:
        damaged = bytearray(intact)
        damaged[at] ^= mask
        data = bytes(damaged)
        for addr, _ in added.values():  # every intact header learnt (again) first
            bytes_reader.group_digest_at(intact, base, addr)
        warm = _outcome(data, base, group)
        with monkeypatch.context() as m:
            _without_caches(m)
            cold = _outcome(data, base, group)
        assert warm == cold, f"byte {at - where.start} of the {what}"
        outcomes.add(warm if isinstance(warm, str) else warm[0] == added[key][1])
    return outcomes


def test_groups_of_several_layouts_are_all_verified(tmp_path: Path) -> None:
    """Headers that begin alike and differ later (other attributes, other members)."""
    shards = tmp_path / "shards"
    with ShardWriter(shards, commit_every=5) as w:
        for i in range(30):
            attrs: dict[str, object] = {"aep": i / 7, "seed": i}
            if i % 3 == 0:
                attrs["status"] = "ok" if i % 2 else "failed"
            members: dict[str, object] = {"xy": np.full((i % 4 + 1, 2), float(i))}
            if i % 5 == 0:
                members["extra"] = np.arange(3.0)
            w.add(f"g{i:02d}", members, attrs)
    out = tmp_path / "out.h5"
    assert merge(shards, out, workers=1).exit_code == 0
    with h5py.File(out, "r") as f:
        added = {
            k: (h5py.h5o.get_info(f.id, k.encode()).addr, f[k].attrs["h5guard_digest"].decode())
            for k in f
            if not k.startswith("h5guard")
        }
    for _ in range(2):  # learning, then from what was learnt
        assert verify_copied(str(out), added) == []
    wrong = {k: (a, added["g00"][1]) for k, (a, _) in added.items() if k != "g00"}
    problems = verify_copied(str(out), wrong)
    assert sorted(p.obj for p in problems) == sorted(f"/{k}" for k in wrong)


def test_a_damaged_copy_is_refused_with_the_cache_warm(tmp_path: Path) -> None:
    out, added = _merged(tmp_path)
    assert verify_copied(str(out), added) == []  # caches warm
    data = bytearray(out.read_bytes())
    base = bytes_reader.base_address(bytes(data))
    start, length = _dataset_header(bytes(data), base, added["k5"][0], b"xy")
    data[start + length - 4 - 8] ^= 0x40  # the last element of k5's "xy"
    damaged = tmp_path / "damaged.h5"
    damaged.write_bytes(bytes(data))
    problems = verify_copied(str(damaged), added)
    assert [(p.obj, p.code) for p in problems] == [("/k5", Code.DIGEST_MISMATCH)]


def test_without_the_cache_the_same_verdicts(tmp_path: Path, no_templates: None) -> None:
    out, added = _merged(tmp_path)
    assert verify_copied(str(out), added) == []
    assert not bytes_reader._PLAIN


def test_learning_pauses_when_headers_do_not_repeat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bytes_reader, "_HEADER_USE", [10, 300, 1])
    assert not bytes_reader._learning()  # rarely met again: not learnt
    monkeypatch.setattr(bytes_reader, "_HEADER_USE", [10, 300, 64])
    assert bytes_reader._learning()  # one chance in 64 all the same
    monkeypatch.setattr(bytes_reader, "_HEADER_USE", [400, 300, 1])
    assert bytes_reader._learning()


def test_the_merge_refuses_a_copy_damaged_after_it_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A byte of a copied value changed between the copy and the verification (the caches
    warm from an earlier merge of the same layouts): no output, the shards kept."""
    _merged(tmp_path / "warm", 8)  # learns the headers of these groups
    shards = tmp_path / "shards"
    with ShardWriter(shards, commit_every=8) as w:
        for i in range(8):
            w.add(f"k{i}", {"xy": np.full((5, 2), MARK if i == 3 else float(i))}, {"seed": i})
    from h5guard._merge import output as output_mod

    real = output_mod.write_partial

    def damaging(*args: object, **kwargs: object) -> dict[str, tuple[int, str]]:
        added = real(*args, **kwargs)  # type: ignore[arg-type]
        partial = Path(str(args[1]))
        data = bytearray(partial.read_bytes())
        at = data.find(np.float64(MARK).tobytes())
        assert at > 0
        data[at] ^= 0x01
        partial.write_bytes(bytes(data))
        return added

    monkeypatch.setattr(output_mod, "write_partial", damaging)
    out = tmp_path / "out.h5"
    before = sorted(p.name for p in shards.glob("*.h5"))
    with pytest.raises(h5guard.UnreadableOutputError, match="verification"):
        merge(shards, out, workers=1)
    assert not out.exists() and sorted(p.name for p in shards.glob("*.h5")) == before
