"""The version 2 seal of a big shard: pieces hashed by several threads, any changed byte
still breaks it, and shards sealed with version 1 still check."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import h5guard
from h5guard import ShardWriter
from h5guard._format import seal as _seal

PIECE = 4096  # the smallest piece a seal may name: small files get version 2 in tests


@pytest.fixture
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_seal, "_SEAL2_BLOCK", PIECE)
    monkeypatch.setattr("h5guard._shard.IN_MEMORY_SHARD", 0)  # sealed on disk


def big_shard(directory: Path) -> Path:
    with ShardWriter(directory, prefix="s") as w:
        for i in range(3):
            w.add(f"g{i}", {"x": np.arange(20_000.0) + i}, {"status": "ok"})
    [path] = w.committed
    return path


def expected_digest(data: bytes, piece: int) -> str:
    body = data[_seal.SEAL_SIZE :]
    pieces = [body[i : i + piece] for i in range(0, len(body), piece)]
    return hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in pieces)).hexdigest()


def test_a_big_shard_gets_a_version_2_seal_as_documented(
    tmp_path: Path, small_pieces: None
) -> None:
    path = big_shard(tmp_path)
    data = path.read_bytes()
    assert data.startswith(b"h5guard-seal/2\nblock:4096\nsha256:")
    seal = _seal.parse_seal(data[: _seal.SEAL_SIZE])
    assert seal is not None and seal.block == PIECE and seal.size == len(data)
    assert seal.sha256 == expected_digest(data, PIECE)
    assert _seal.check_seal(path) is True
    assert h5guard.check([path], workers=1).ok


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_the_seal_is_the_same_whatever_the_threads(
    tmp_path: Path, small_pieces: None, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    path = big_shard(tmp_path)
    monkeypatch.setattr(_seal, "_threads", lambda: threads)
    assert _seal.check_seal(path) is True


@pytest.mark.parametrize("where", ["first", "piece-edge", "middle", "last"])
def test_any_changed_byte_breaks_a_version_2_seal(
    tmp_path: Path, small_pieces: None, where: str
) -> None:
    path = big_shard(tmp_path)
    data = bytearray(path.read_bytes())
    offset = {
        "first": _seal.SEAL_SIZE,
        "piece-edge": _seal.SEAL_SIZE + 2 * PIECE - 1,
        "middle": len(data) // 2,
        "last": len(data) - 1,
    }[where]
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    assert _seal.check_seal(path) is False
    assert not h5guard.check([path], workers=1).ok


def test_appended_or_cut_bytes_break_a_version_2_seal(tmp_path: Path, small_pieces: None) -> None:
    path = big_shard(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data + b"\0")
    assert _seal.check_seal(path) is False
    path.write_bytes(data[:-1])
    assert _seal.check_seal(path) is False


def test_a_seal_naming_an_impossible_piece_size_is_no_seal() -> None:
    for block in ("0", "12", "x", str(1 << 31)):
        head = f"h5guard-seal/2\nblock:{block}\nsha256:{'0' * 64}\nsize:9999\n".encode()
        assert _seal.parse_seal(head.ljust(_seal.SEAL_SIZE, b"\0")) is None


def test_small_shards_keep_version_1_and_version_1_seals_still_check(tmp_path: Path) -> None:
    with ShardWriter(tmp_path / "a") as w:
        w.add("g", {"x": np.arange(10.0)})
    [small] = w.committed
    assert small.read_bytes().startswith(b"h5guard-seal/1\n")
    assert _seal.check_seal(small) is True
    # A shard too big for memory but of at most two pieces: version 1 on disk too.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("h5guard._shard.IN_MEMORY_SHARD", 0)
        with ShardWriter(tmp_path / "b") as w:
            w.add("g", {"x": np.arange(100_000.0)})
    [ondisk] = w.committed
    assert ondisk.read_bytes().startswith(b"h5guard-seal/1\n")
    assert _seal.check_seal(ondisk) is True


def test_a_version_2_seal_over_many_shapes_and_dtypes_matches_its_bytes(
    tmp_path: Path, small_pieces: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several results and datasets per shard, chunks cut along one axis or more."""
    monkeypatch.setattr("h5guard._format.write._BIG_DATASET", 64 * 1024)
    monkeypatch.setattr("h5guard._format.write._CHUNK_TARGET", 16 * 1024)
    rng = np.random.default_rng(7)
    text = np.array([b"x" * 40] * 3000)
    words = np.array(["h\u00e9llo" * 8] * 3000)
    with ShardWriter(tmp_path / "tmp", commit_every=10) as w:
        w.add("a", {"x": rng.random(40_000), "y": rng.integers(0, 9, (300, 70))})
        w.add("b", {"g": {"z": rng.random((5, 3, 3000))}, "s": text, "u": words}, {"s": "ok"})
        w.add("c", {"x": rng.random((2, 20_000)).astype(np.float32), "b": rng.random(9000) > 0.5})
    [path] = w.committed
    data = path.read_bytes()
    seal = _seal.parse_seal(data[: _seal.SEAL_SIZE])
    assert seal is not None and seal.block == PIECE
    assert seal.sha256 == expected_digest(data, PIECE)
    out = tmp_path / "out.h5"
    report = h5guard.merge(tmp_path / "tmp", out, workers=1)
    assert report.exit_code == 0, report.render_text()
    got = h5guard.read(out, "b").datasets
    np.testing.assert_array_equal(got["s"], text)
    np.testing.assert_array_equal(got["u"], words)


def test_a_big_commit_from_an_atexit_handler_is_sealed_and_not_reported_failed(
    tmp_path: Path,
) -> None:
    """At interpreter shutdown no seal thread may start: the shard is sealed in place
    (it was reported as a failed commit, and its results journaled a second time)."""
    import subprocess
    import sys

    code = (
        "import atexit, numpy as np, h5guard\n"
        f"w = h5guard.ShardWriter({str(tmp_path)!r}, commit_bytes=2**40)\n"
        "for i in range(3):\n"
        "    w.add(f'r{i}', {'x': np.full(3 * 2**20, float(i))})  # 72 MiB: written on disk\n"
        "atexit.register(w.close)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert not list(tmp_path.glob("*.journal"))
    [shard] = tmp_path.glob("*.h5")
    assert _seal.check_seal(shard) is True
    report = h5guard.merge(tmp_path, tmp_path / "out.h5", workers=1)
    assert (report.exit_code, report.groups_added, report.duplicates) == (0, 3, 0)
