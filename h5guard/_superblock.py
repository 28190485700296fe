"""The quick layer: what can be told about an HDF5 file from its first bytes alone.

Pure Python and no libhdf5, so it cannot hang or crash on a damaged file and runs at
tens of thousands of files per second. It finds the signature (HDF5 looks at offset
0, 512, 1024, 2048, ...), parses the superblock, verifies its checksum (versions 2
and 3), compares the recorded end-of-file address with the real size (truncation),
and reads the "file is open for write" flag that a killed writer leaves set.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import BinaryIO

from h5guard.report import Code, Finding, Severity

SIGNATURE = b"\x89HDF\r\n\x1a\n"
UNDEFINED = 0xFFFFFFFFFFFFFFFF
_MASK = 0xFFFFFFFF
_FLAG_WRITE = 0x01
_FLAG_SWMR_WRITE = 0x04


@dataclass(frozen=True, slots=True)
class SuperblockInfo:
    offset: int  # where the signature was found
    version: int
    base_address: int
    eof_address: int  # recorded end of file, comparable with the file size
    open_for_write: bool


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _MASK


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``, the checksum HDF5 puts on its metadata."""
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & _MASK
    i = 0
    while length > 12:
        a = (a + int.from_bytes(data[i : i + 4], "little")) & _MASK
        b = (b + int.from_bytes(data[i + 4 : i + 8], "little")) & _MASK
        c = (c + int.from_bytes(data[i + 8 : i + 12], "little")) & _MASK
        a = (a - c) & _MASK
        a ^= _rot(c, 4)
        c = (c + b) & _MASK
        b = (b - a) & _MASK
        b ^= _rot(a, 6)
        a = (a + c) & _MASK
        c = (c - b) & _MASK
        c ^= _rot(b, 8)
        b = (b + a) & _MASK
        a = (a - c) & _MASK
        a ^= _rot(c, 16)
        c = (c + b) & _MASK
        b = (b - a) & _MASK
        b ^= _rot(a, 19)
        a = (a + c) & _MASK
        c = (c - b) & _MASK
        c ^= _rot(b, 4)
        b = (b + a) & _MASK
        length -= 12
        i += 12
    if length == 0:
        return c
    tail = data[i:].ljust(12, b"\0")
    a = (a + int.from_bytes(tail[0:4], "little")) & _MASK
    b = (b + int.from_bytes(tail[4:8], "little")) & _MASK
    c = (c + int.from_bytes(tail[8:12], "little")) & _MASK
    c ^= b
    c = (c - _rot(b, 14)) & _MASK
    a ^= c
    a = (a - _rot(c, 11)) & _MASK
    b ^= a
    b = (b - _rot(a, 25)) & _MASK
    c ^= b
    c = (c - _rot(b, 16)) & _MASK
    a ^= c
    a = (a - _rot(c, 4)) & _MASK
    b ^= a
    b = (b - _rot(a, 14)) & _MASK
    c ^= b
    c = (c - _rot(b, 24)) & _MASK
    return c


def _find_signature(fh: BinaryIO, size: int) -> int | None:
    offset = 0
    while offset + len(SIGNATURE) <= size:
        fh.seek(offset)
        if fh.read(len(SIGNATURE)) == SIGNATURE:
            return offset
        offset = 512 if offset == 0 else offset * 2
    return None


def quick_check(path: str) -> tuple[list[Finding], SuperblockInfo | None]:
    """Findings of the quick layer and the parsed superblock (None if unusable)."""

    def finding(code: Code, message: str, severity: Severity = Severity.ERROR) -> Finding:
        return Finding(path, "/", code, severity, message)

    try:
        st = os.stat(path)
    except FileNotFoundError:
        return [finding(Code.NOT_FOUND, "no such file")], None
    except OSError as err:
        return [finding(Code.UNREADABLE, f"cannot stat: {err.strerror or err}")], None
    if not stat.S_ISREG(st.st_mode):
        return [finding(Code.NOT_A_FILE, "expected a regular file")], None
    size = st.st_size
    if size == 0:
        return [finding(Code.EMPTY, "file is empty (0 bytes): its writer never wrote it")], None
    try:
        with open(path, "rb") as fh:
            offset = _find_signature(fh, size)
            if offset is None:
                return [
                    finding(
                        Code.NOT_HDF5,
                        f"no HDF5 signature at offset 0, 512, 1024, ... ({size} bytes)",
                    )
                ], None
            fh.seek(offset)
            head = fh.read(256)
    except OSError as err:
        return [finding(Code.UNREADABLE, f"cannot read: {err.strerror or err}")], None
    return _parse_superblock(path, head, offset, size)


def _parse_superblock(
    path: str, head: bytes, offset: int, size: int
) -> tuple[list[Finding], SuperblockInfo | None]:
    out: list[Finding] = []

    def add(code: Code, message: str, severity: Severity = Severity.ERROR) -> None:
        out.append(Finding(path, "/", code, severity, message))

    if len(head) < 9:
        add(Code.TRUNCATED, f"file ends inside the superblock ({size} bytes)")
        return out, None
    version = head[8]
    if version in (0, 1):
        fixed = 24 if version == 0 else 28
        if len(head) < fixed:
            add(Code.TRUNCATED, f"file ends inside the superblock ({size} bytes)")
            return out, None
        sizeof_offsets = head[13]
        pos = fixed
        need = pos + 4 * sizeof_offsets
        if sizeof_offsets not in (2, 4, 8) or len(head) < need:
            add(
                Code.SUPERBLOCK_CORRUPT,
                f"superblock v{version}: offset size {sizeof_offsets} is invalid",
            )
            return out, None
        base = int.from_bytes(head[pos : pos + sizeof_offsets], "little")
        eof = int.from_bytes(head[pos + 2 * sizeof_offsets : pos + 3 * sizeof_offsets], "little")
        open_for_write = False  # v0/1 superblocks have no usable status flags
    elif version in (2, 3):
        if len(head) < 12:
            add(Code.TRUNCATED, f"file ends inside the superblock ({size} bytes)")
            return out, None
        sizeof_offsets = head[9]
        if sizeof_offsets not in (2, 4, 8):
            add(
                Code.SUPERBLOCK_CORRUPT,
                f"superblock v{version}: offset size {sizeof_offsets} is invalid",
            )
            return out, None
        end = 12 + 4 * sizeof_offsets
        if len(head) < end + 4:
            add(Code.TRUNCATED, f"file ends inside the superblock ({size} bytes)")
            return out, None
        stored = int.from_bytes(head[end : end + 4], "little")
        computed = lookup3(head[:end])
        if stored != computed:
            add(
                Code.SUPERBLOCK_CORRUPT,
                f"superblock checksum mismatch: stored {stored:#010x}, computed {computed:#010x}",
            )
            return out, None
        flags = head[11]
        base = int.from_bytes(head[12 : 12 + sizeof_offsets], "little")
        eof = int.from_bytes(head[12 + 2 * sizeof_offsets : 12 + 3 * sizeof_offsets], "little")
        open_for_write = bool(flags & (_FLAG_WRITE | _FLAG_SWMR_WRITE))
    else:
        add(Code.SUPERBLOCK_CORRUPT, f"unknown superblock version {version}")
        return out, None
    # libhdf5 compares the stored end-of-file address with the physical size as is:
    # despite the format spec, it is not offset by the base address (a userblock).
    absolute_eof = eof
    info = SuperblockInfo(offset, version, base, absolute_eof, open_for_write)
    if open_for_write:
        add(
            Code.OPEN_FOR_WRITE,
            "superblock says a writer still has the file open: it was killed before closing "
            "(or is still writing)",
        )
    if absolute_eof == UNDEFINED or absolute_eof > size:
        shown = "undefined" if absolute_eof == UNDEFINED else f"{absolute_eof} bytes"
        add(Code.TRUNCATED, f"superblock says the file is {shown}, found {size} bytes")
    elif absolute_eof < size:
        add(
            Code.TRAILING_DATA,
            f"superblock says the file is {absolute_eof} bytes, found {size}: "
            f"{size - absolute_eof} bytes were appended after the writer closed it",
            Severity.WARNING,
        )
    return out, info
