"""The seal: a SHA-256 of a committed shard's bytes, kept in the file's HDF5 user block.

A shard is never modified after its commit, so one hash of its bytes, written when it
is committed, proves later that the file is exactly what the writer produced. The
merge then needs no libhdf5 read of the shard to trust it (hashing runs at about
1.7 GB/s; reading every group through libhdf5 costs ~300 µs per group), and it may
open a sealed shard in-process: the bytes are the ones an h5guard writer made.

Layout: the first :data:`SEAL_SIZE` bytes of the file are HDF5's *user block*, which
libhdf5 reserves for applications and never reads; the HDF5 superblock follows at
offset 512. The user block holds ASCII lines, padded with NUL bytes::

    h5guard-seal/1
    sha256:<hex of SHA-256 over bytes [512, size)>
    size:<file size in bytes>

The seal detects accidental change (a torn copy, a bit flip, a later append), not a
deliberate forgery: whoever rewrites the file can rewrite the seal.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from dataclasses import dataclass

SEAL_SIZE = 512
_MAGIC = b"h5guard-seal/1\n"


@dataclass(frozen=True, slots=True)
class Seal:
    sha256: str
    size: int


def _sha256_after_seal(buf: bytes | memoryview | mmap.mmap) -> str:
    return hashlib.sha256(memoryview(buf)[SEAL_SIZE:]).hexdigest()


def _mapped(fd: int) -> mmap.mmap:
    return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)


def write_seal(path: str | os.PathLike[str]) -> Seal:
    """Hash a closed file created with a :data:`SEAL_SIZE` user block and seal it.

    The caller fsyncs the file afterwards (the commit does).
    """
    fd = os.open(path, os.O_RDWR)
    try:
        with _mapped(fd) as buf:
            seal = Seal(_sha256_after_seal(buf), len(buf))
        text = _MAGIC + f"sha256:{seal.sha256}\nsize:{seal.size}\n".encode()
        os.pwrite(fd, text.ljust(SEAL_SIZE, b"\0"), 0)
    finally:
        os.close(fd)
    return seal


def parse_seal(head: bytes) -> Seal | None:
    """The seal in the first bytes of a file, or None if there is none."""
    if not head.startswith(_MAGIC):
        return None
    lines = head[len(_MAGIC) : SEAL_SIZE].split(b"\0", 1)[0].decode("ascii", "replace").split("\n")
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    digest, size = fields.get("sha256", ""), fields.get("size", "")
    if len(digest) != 64 or not size.isdigit():
        return None
    return Seal(digest, int(size))


def seal_matches(buf: bytes | memoryview | mmap.mmap) -> bool | None:
    """:func:`check_seal` for a file already in memory (or memory-mapped)."""
    seal = parse_seal(bytes(buf[:SEAL_SIZE]))
    if seal is None:
        return None
    if len(buf) != seal.size:
        return False
    return _sha256_after_seal(buf) == seal.sha256


def check_seal(path: str | os.PathLike[str]) -> bool | None:
    """True if the file carries a seal matching its bytes, False if the seal does not
    match, None if it has no seal (or cannot be read: the other layers will say why)."""
    try:
        with open(path, "rb") as fh, _mapped(fh.fileno()) as buf:
            return seal_matches(buf)
    except (OSError, ValueError):  # ValueError: an empty file cannot be mapped
        return None
