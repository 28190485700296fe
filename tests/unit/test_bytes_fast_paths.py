"""The byte reader's fast paths agree with its generic parse, and find damage as it does.

A dataset without attributes whose header is one chunk (the commonest member of a
result) is parsed by a short loop of its own (``_File._plain_dataset``); every other
object by the generic parse. Both must give the digest the writer stored, and a damaged
byte in either must make the merge's verification report the group.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import h5py
import numpy as np

from h5guard import ShardWriter, merge
from h5guard._check.own import verify_copied
from h5guard._format import bytes as bytes_reader
from h5guard.report import Code

MARK = 9876.54321  # bytes easy to find: the first element of k0's "plain" dataset


def merged(tmp_path: Path) -> tuple[Path, dict[str, tuple[int, str]]]:
    shards = tmp_path / "shards"
    with ShardWriter(shards, commit_every=4) as w:
        for i in range(4):
            w.add(
                f"k{i}",
                {
                    "plain": np.full((3, 2), MARK if i == 0 else float(i)),
                    "big": np.arange(100.0 * (i + 1)),  # headers past the first read
                    "tree": {"inner": np.arange(3) + i},
                },
                {"status": "ok", "seed": i},
            )
    out = tmp_path / "out.h5"
    report = merge(shards, out, workers=1)
    assert report.exit_code == 0, report.render_text()
    added = {}
    with h5py.File(out, "r") as f:
        for key in f:
            if key.startswith("h5guard"):
                continue
            digest = f[key].attrs["h5guard_digest"]
            text = digest.decode() if isinstance(digest, bytes) else str(digest)
            added[key] = (h5py.h5o.get_info(f.id, key.encode()).addr, text)
    return out, added


def test_fast_and_generic_parses_agree(tmp_path: Path) -> None:
    out, added = merged(tmp_path)
    assert verify_copied(str(out), added) == []
    with open(out, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        base = bytes_reader.base_address(buf)
        file = bytes_reader._File(buf, base)
        plain = 0
        for addr, want in added.values():
            links = file.object(addr).links()
            # the fast path is taken for the plain datasets, big ones included
            assert file._plain(links[b"plain"]) is not None
            assert file._plain(links[b"big"]) is not None
            assert file._plain(links[b"tree"]) is None  # a group
            plain += 2
            assert bytes_reader.group_digest_at(buf, base, addr) == (want, want)
            # the description path (a check's) gives the same digest
            computed, stored, info, members = bytes_reader.read_group_at(buf, base, addr)
            assert (computed, stored) == (want, want)
            assert info is not None and sorted(info.datasets) == ["big", "plain"]
            assert sorted(members) == [b"big", b"plain", b"tree", b"tree/inner"]
        assert plain == 8


def test_damage_in_a_plain_dataset_is_found(tmp_path: Path) -> None:
    out, added = merged(tmp_path)
    data = bytearray(out.read_bytes())
    at = data.find(np.float64(MARK).tobytes())
    assert at > 0
    data[at + 3] ^= 0x10
    damaged = tmp_path / "damaged.h5"
    damaged.write_bytes(bytes(data))
    problems = verify_copied(str(damaged), added)
    assert [(p.obj, p.code) for p in problems] == [("/k0", Code.DIGEST_MISMATCH)]
