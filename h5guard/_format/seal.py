"""The seal: a SHA-256 of a committed shard's bytes, kept in the file's HDF5 user block.

A shard's bytes after its user block never change after its commit, so one hash of
them, written when it is committed (a big shard's just after, h5guard._shard.seal_later),
proves later that the file is exactly what the writer produced. The
merge then needs no libhdf5 read of the shard to trust it (hashing runs at about
1.7 GB/s; reading every group through libhdf5 costs ~300 µs per group), and it may
open a sealed shard in-process: the bytes are the ones an h5guard writer made.

Layout: the first :data:`SEAL_SIZE` bytes of the file are HDF5's *user block*, which
libhdf5 reserves for applications and never reads; the HDF5 superblock follows at
offset 512. The user block holds ASCII lines, padded with NUL bytes, in one of two
versions (both are written and both are checked)::

    h5guard-seal/1
    sha256:<hex of SHA-256 over bytes [512, size)>
    size:<file size in bytes>

    h5guard-seal/2
    block:<B, bytes>
    sha256:<hex of SHA-256 over the concatenated 32-byte SHA-256 digests of bytes
            [512, size) cut into pieces of B bytes (the last one shorter)>
    size:<file size in bytes>

Version 2 is written for shards of more than two blocks (:data:`_SEAL2_BLOCK`): its
pieces are hashed by several threads at once (hashlib drops the GIL), so sealing and
checking a big shard take a fraction of a single SHA-256 stream's time. Smaller shards
keep version 1.

The seal detects accidental change (a torn copy, a bit flip, a later append), not a
deliberate forgery: whoever rewrites the file can rewrite the seal.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass

SEAL_SIZE = 512
_MAGIC = b"h5guard-seal/1\n"
_MAGIC2 = b"h5guard-seal/2\n"
# Version 2's piece size; a shard of more than two pieces gets a version 2 seal.
_SEAL2_BLOCK = 8 * 1024 * 1024
# Threads that hash a version 2 seal's pieces: the cores this process may use, at most 4.
_MAX_THREADS = 4
# Files are hashed through one buffer of this size, never mapped whole: the peak memory
# of sealing or checking a shard is this, not the shard's size (a 800 MB shard mapped
# and hashed counted 817 MiB of resident memory; read in blocks, 25 MiB, same speed).
_BLOCK = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Seal:
    sha256: str
    size: int
    block: int = 0  # version 2's piece size; 0 for version 1

    def text(self) -> bytes:
        """The user block that carries this seal (ASCII lines padded with NUL bytes)."""
        if self.block:
            lines = (
                _MAGIC2 + f"block:{self.block}\nsha256:{self.sha256}\nsize:{self.size}\n".encode()
            )
        else:
            lines = _MAGIC + f"sha256:{self.sha256}\nsize:{self.size}\n".encode()
        return lines.ljust(SEAL_SIZE, b"\0")


def _threads() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(_MAX_THREADS, cores))


def _pieces_digest(fd: int, size: int, block: int) -> str:
    """Version 2's hash of bytes [SEAL_SIZE, size) of ``fd`` in pieces of ``block`` bytes.

    Threads take pieces in turn (piece i by thread i mod n), each through one buffer of
    ``block`` bytes: memory is ``n * block``, never the file's size.
    """
    count = max(0, -(-(size - SEAL_SIZE) // block))
    digests: list[bytes] = [b""] * count
    failures: list[BaseException] = []

    def work(first: int, step: int) -> None:
        try:
            buf = bytearray(block)
            view = memoryview(buf)
            for i in range(first, count, step):
                start = SEAL_SIZE + i * block
                want = min(block, size - start)
                got = 0
                while got < want:  # a short read only at the end of a shrinking file
                    n = os.preadv(fd, [view[got:want]], start + got)
                    if n == 0:
                        break
                    got += n
                digests[i] = hashlib.sha256(view[:got]).digest()
        except BaseException as err:
            failures.append(err)

    n = min(_threads(), count) or 1
    helpers = [threading.Thread(target=work, args=(k, n), daemon=True) for k in range(1, n)]
    for t in helpers:
        t.start()
    work(0, n)
    for t in helpers:
        t.join()
    if failures:
        raise failures[0]
    return hashlib.sha256(b"".join(digests)).hexdigest()


def _digest_of(fd: int, size: int, block: int) -> str:
    return _pieces_digest(fd, size, block) if block else _sha256_of_file(fd, size)


def _sha256_of_file(fd: int, size: int) -> str:
    """SHA-256 of bytes [SEAL_SIZE, size) of ``fd``, read in :data:`_BLOCK` blocks."""
    digest = hashlib.sha256()
    buf = bytearray(min(_BLOCK, max(size - SEAL_SIZE, 0)) or 1)
    view = memoryview(buf)
    pos = SEAL_SIZE
    while pos < size:
        n = os.preadv(fd, [view[: min(len(buf), size - pos)]], pos)
        if n == 0:  # shorter than it was a moment ago: the caller compares sizes
            break
        digest.update(view[:n])
        pos += n
    return digest.hexdigest()


def write_seal(path: str | os.PathLike[str]) -> Seal:
    """Hash a closed file created with a :data:`SEAL_SIZE` user block and seal it.

    The caller fsyncs the file afterwards (the commit does).
    """
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        return write_seal_fd(fd)
    finally:
        os.close(fd)


def write_seal_fd(fd: int) -> Seal:
    """:func:`write_seal` of a file open for writing."""
    size = os.fstat(fd).st_size
    block = _SEAL2_BLOCK if size - SEAL_SIZE > 2 * _SEAL2_BLOCK else 0
    seal = Seal(_digest_of(fd, size, block), size, block)
    os.pwrite(fd, seal.text(), 0)
    return seal


def seal_image(image: bytearray) -> Seal:
    """Seal a shard still in memory: write the seal into its user block, in place."""
    seal = Seal(hashlib.sha256(memoryview(image)[SEAL_SIZE:]).hexdigest(), len(image))
    image[:SEAL_SIZE] = seal.text()
    return seal


def parse_seal(head: bytes) -> Seal | None:
    """The seal in the first bytes of a file, or None if there is none."""
    magic = _MAGIC if head.startswith(_MAGIC) else _MAGIC2 if head.startswith(_MAGIC2) else None
    if magic is None:
        return None
    lines = head[len(magic) : SEAL_SIZE].split(b"\0", 1)[0].decode("ascii", "replace").split("\n")
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    digest, size = fields.get("sha256", ""), fields.get("size", "")
    if len(digest) != 64 or not size.isdigit():
        return None
    if magic is _MAGIC:
        return Seal(digest, int(size))
    block = fields.get("block", "")
    # A piece size h5guard never writes is no seal (nor a huge buffer to allocate).
    if not block.isdigit() or not 4096 <= int(block) <= 1 << 30:
        return None
    return Seal(digest, int(size), int(block))


def check_seal_fd(fd: int) -> bool | None:
    """:func:`check_seal` of an open file: whoever hashed it then reads the same file."""
    seal = parse_seal(os.pread(fd, SEAL_SIZE, 0))
    if seal is None:
        return None
    size = os.fstat(fd).st_size
    if size != seal.size:
        return False
    return _digest_of(fd, size, seal.block) == seal.sha256


def check_seal(path: str | os.PathLike[str]) -> bool | None:
    """True if the file carries a seal matching its bytes, False if the seal does not
    match, None if it has no seal (or cannot be read: the other layers will say why)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return check_seal_fd(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
