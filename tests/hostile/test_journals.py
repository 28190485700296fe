"""Journals as untrusted input: streamed in bounded memory, damage named and skipped
(later records still found), a journal never taken as committed on its word, and an
impossible shard name a finding, not a traceback.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np

from h5guard import ShardWriter, _journal, check, merge, plan_merge
from h5guard._format import result as _result
from h5guard.report import Severity
from tests.hostile._helpers import gone_writer, run_cli, run_python, values

FRAME = struct.Struct("<4sIQ")
CRC = struct.Struct("<I")


def record_offsets(path: Path) -> list[int]:
    """Where each record frame of a well-formed journal starts (the meta record first)."""
    data = path.read_bytes()
    pos, out = len(_journal.MAGIC), []
    while pos < len(data):
        _, hlen, plen = FRAME.unpack_from(data, pos)
        out.append(pos)
        pos += FRAME.size + CRC.size + hlen + plen
    return out


def set_payload_length(path: Path, record: int, length: int) -> None:
    """Rewrite one record's payload length and recompute its CRC: a crafted record."""
    raw = bytearray(path.read_bytes())
    pos = record_offsets(path)[record]
    magic, hlen, _ = FRAME.unpack_from(raw, pos)
    head = FRAME.pack(magic, hlen, length)
    header = bytes(raw[pos + FRAME.size + CRC.size : pos + FRAME.size + CRC.size + hlen])
    raw[pos : pos + FRAME.size] = head
    raw[pos + FRAME.size : pos + FRAME.size + CRC.size] = CRC.pack(
        zlib.crc32(header, zlib.crc32(head))
    )
    path.write_bytes(bytes(raw))


def keys_in(path: Path) -> set[str]:
    with h5py.File(path, "r") as f:
        return {k for k in f if not k.startswith("h5guard_")}  # not the summary


def test_a_huge_payload_length_is_named_damage_and_later_records_are_found(
    tmp_path: Path,
) -> None:
    tmp = tmp_path / "tmp"
    journal = gone_writer(tmp, ["a", "b", "c", "d"])
    set_payload_length(journal, 2, 1 << 40)  # record of "b"
    plan = plan_merge(tmp, tmp_path / "out.h5", workers=1)
    assert plan.exit_code == 1 and len(plan.lost) == 1
    assert "claims 1099511627776 payload bytes" in plan.lost[0]
    report = merge(tmp, tmp_path / "out.h5", workers=1)
    assert report.exit_code == 1 and report.lost == plan.lost and not report.interrupted
    assert keys_in(tmp_path / "out.h5") == {"a", "c", "d"}


def test_a_damaged_crc_hides_no_later_record(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    journal = gone_writer(tmp, ["a", "b", "c"])
    raw = bytearray(journal.read_bytes())
    raw[record_offsets(journal)[1] + FRAME.size + CRC.size + 3] ^= 0xFF  # header of "a"
    journal.write_bytes(bytes(raw))
    report = merge(tmp, tmp_path / "out.h5", workers=1)
    assert report.exit_code == 1 and len(report.lost) == 1 and "byte" in report.lost[0]
    assert keys_in(tmp_path / "out.h5") == {"b", "c"}


def test_a_torn_last_record_is_still_an_interrupted_add(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    journal = gone_writer(tmp, ["a", "b", "c"])
    size = journal.stat().st_size
    os.truncate(journal, size - 5)
    report = merge(tmp, tmp_path / "out.h5", workers=1)
    assert report.exit_code == 0 and report.interrupted == ((str(journal), "c"),)
    assert keys_in(tmp_path / "out.h5") == {"a", "b"}


SPARSE = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from h5guard.cli import main
code = main(sys.argv[1:])
print("maxrss_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def test_a_4_gb_sparse_journal_is_read_in_bounded_memory(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    journal = gone_writer(tmp, ["a", "b"])
    os.truncate(journal, 4 << 30)  # a hole of zeros after the records
    for args in (["status", tmp, "-o", tmp_path / "out.h5"], ["check", tmp]):
        proc = run_python(SPARSE, *args, timeout=300)
        assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr, proc.stderr
        assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr[-2000:])
        rss = int(proc.stderr.rsplit("maxrss_kib", 1)[1].split()[0])
        assert rss < 600 * 1024, f"{args[0]} used {rss} KiB"
    report = merge(tmp, tmp_path / "out.h5", workers=1)
    assert report.exit_code == 1 and keys_in(tmp_path / "out.h5") == {"a", "b"}
    assert "skipped" in report.lost[0]


def crafted_journal(path: Path, stem: object, keys: list[str]) -> Path:
    """A journal written by h5guard's own journal writer, its meta naming ``stem``."""
    header, buffers = _result.encode(_result.prepare_attrs("/", {}))
    meta = {"stem": stem, "schema": None, "file_attrs": header.decode(), "version": "x"}
    journal = _journal.JournalWriter(path, meta, buffers)
    for n, key in enumerate(keys):
        result = _result.prepare(key, *values(100 + n), schema=None)
        journal.append(*_result.encode(result))
    journal.close()
    return path


def committed_shard(tmp: Path) -> Path:
    with ShardWriter(tmp, commit_every=2) as w:
        w.add("s0", *values(0))
        w.add("s1", *values(1))
    [shard] = tmp.glob("*.h5")
    return shard


def test_a_journal_named_for_an_existing_shard_is_checked_against_its_keys(
    tmp_path: Path,
) -> None:
    tmp = tmp_path / "tmp"
    shard = committed_shard(tmp)
    stem = shard.name.removesuffix(".h5")
    crafted_journal(shard.with_name(shard.name + ".journal"), stem, ["x0", "x1"])
    report = merge(tmp, tmp_path / "out.h5", workers=1)
    assert report.exit_code == 0, report.render_text()
    assert keys_in(tmp_path / "out.h5") == {"s0", "s1", "x0", "x1"}
    assert not list(tmp.glob("*.journal"))


def test_a_journal_claiming_another_shards_name_is_quarantined_not_dropped(
    tmp_path: Path,
) -> None:
    tmp = tmp_path / "tmp"
    shard = committed_shard(tmp)
    crafted_journal(tmp / "other.h5.journal", shard.name.removesuffix(".h5"), ["x0"])
    status = run_cli("status", tmp, "-o", tmp_path / "out.h5")
    assert status.returncode == 1 and "Traceback" not in status.stderr
    assert "other.h5.journal" in status.stdout
    report = merge(tmp, tmp_path / "out.h5", workers=1)
    assert report.exit_code == 1
    [q] = report.quarantined
    assert q.path.endswith("quarantine/other.h5.journal") and "not its own" in q.reasons[0]
    assert keys_in(tmp_path / "out.h5") == {"s0", "s1"}


def test_an_impossible_recorded_name_is_a_finding_in_merge_status_and_check(
    tmp_path: Path,
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    crafted_journal(tmp / "evil.h5.journal", "../../etc/evil", ["x0"])
    crafted_journal(tmp / "nul.h5.journal", "a\0b", ["x1"])
    for args in (["check", tmp], ["status", tmp, "-o", tmp_path / "out.h5"]):
        proc = run_cli(*args)
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr and "Error" not in proc.stderr
    status = run_cli("status", tmp, "-o", tmp_path / "out.h5")
    assert status.stdout.count("impossible shard name") == 2
    # check's finding for a journal (validate.py switches to this one at integration).
    for name in ("evil.h5.journal", "nul.h5.journal"):
        finding = _journal.journal_finding(str(tmp / name))
        assert finding.severity is Severity.ERROR and "impossible shard name" in finding.message
    assert [f for f in check([tmp], workers=1).findings if f.code == "JOURNAL_FILE"]
    proc = run_cli("merge", tmp, "-o", tmp_path / "out.h5")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert sorted(p.name for p in (tmp / "quarantine").glob("*.journal")) == [
        "evil.h5.journal",
        "nul.h5.journal",
    ]
    assert not (tmp_path / "etc").exists()


def test_a_journal_record_is_read_lazily(tmp_path: Path) -> None:
    """A journal's results are decoded when iterated, one at a time."""
    journal = gone_writer(tmp_path, ["a", "b"])
    state, results = _journal.read_journal(journal)
    assert len(results) == 2 and [r.key for r in results] == ["a", "b"]
    np.testing.assert_array_equal(results[1].datasets["x"], values(1)[0]["x"])
    assert json.loads(json.dumps(state.results)) == [list(p) for p in state.results]


def test_a_damaged_meta_record_hides_no_result(tmp_path: Path) -> None:
    """Damage in the meta record: the records after it are results, all recovered."""
    tmp = tmp_path / "tmp"
    journal = gone_writer(tmp, ["a", "b", "c"])
    raw = bytearray(journal.read_bytes())
    raw[record_offsets(journal)[0] + FRAME.size + CRC.size + 2] ^= 0xFF
    journal.write_bytes(bytes(raw))
    report = merge(tmp, tmp_path / "out.h5", workers=1)
    assert report.exit_code == 1 and len(report.lost) == 1, report.render_text()
    assert keys_in(tmp_path / "out.h5") == {"a", "b", "c"}


def test_a_journal_that_is_a_link_is_reported_not_read(tmp_path: Path) -> None:
    target = tmp_path / "victim.txt"
    target.write_bytes(b"not a journal")
    link = tmp_path / "x.h5.journal"
    os.symlink(target, link)
    finding = _journal.journal_finding(str(link))
    assert finding.severity is Severity.ERROR and "SYMBOLIC_LINK" in finding.message
    proc = run_cli("check", tmp_path)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert target.read_bytes() == b"not a journal"
