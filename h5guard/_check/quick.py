"""The quick layer: what can be told about an HDF5 file from its first bytes alone.

Pure Python and no libhdf5, so it cannot hang or crash on a damaged file and runs at
tens of thousands of files per second. It finds the signature (HDF5 looks at offset
0, 512, 1024, 2048, ...), parses the superblock, verifies its checksum (versions 2
and 3), compares the recorded end-of-file address with the real size (truncation),
and reads the "file is open for write" flag that a killed writer leaves set.

The flags are judged as libhdf5 judges them when it opens a file read-only: only a
version-3 superblock with a write-access flag set makes libhdf5 refuse the file (an
error); a version-2 superblock's flags are ignored (a note); versions 0 and 1 have
flags libhdf5 only checks for unknown bits. Bytes past the recorded end of file are a
note: libhdf5 ignores them (the deep layer makes them a warning in h5guard's own files).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any

from h5guard._format.checksum import lookup3
from h5guard._format.names import SIGNATURE, UNDEFINED
from h5guard.report import Code, Finding, Severity

_MASK = 0xFFFFFFFF
_FLAG_WRITE = 0x01
_FLAG_SWMR_WRITE = 0x04
_KNOWN_FLAGS = 0x07  # write access, file ok, SWMR write access


@dataclass(frozen=True, slots=True)
class SuperblockInfo:
    offset: int  # where the signature was found
    version: int
    base_address: int
    eof_address: int  # recorded end of file, comparable with the file size
    open_for_write: bool  # a write-access flag is set (v2 or v3)
    refused: bool = False  # ... and libhdf5 refuses to open the file for it (v3 only)
    swmr_write: bool = False  # the SWMR-write flag is set (a live SWMR writer, v3)
    file_size: int = 0  # bytes, as found when the superblock was read


# One read at offset 0 covers the two places h5guard's and most files' signatures are
# (0, and 512 after a seal or another user block) and the superblock after either.
_FIRST_READ = 512 + 256


def _find_signature(fd: int, size: int, first: bytes) -> int | None:
    if first[:8] == SIGNATURE:
        return 0
    if first[512:520] == SIGNATURE:
        return 512
    offset = 1024
    while offset + len(SIGNATURE) <= size:
        if os.pread(fd, len(SIGNATURE), offset) == SIGNATURE:
            return offset
        offset *= 2
    return None


def quick_check(path: str, *, regular: bool = False) -> tuple[list[Finding], SuperblockInfo | None]:
    """Findings of the quick layer and the parsed superblock (None if unusable).

    ``regular``: the caller knows ``path`` names a regular file (its directory entry
    says so), so it is opened without a ``stat`` first; its type is still confirmed on
    the open file. Otherwise a path that is no regular file (a FIFO, a device) is
    never opened.
    """

    def finding(code: Code, message: str, severity: Severity = Severity.ERROR) -> Finding:
        return Finding(path, "/", code, severity, message)

    if not regular:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return [finding(Code.NOT_FOUND, "no such file")], None
        except OSError as err:
            return [finding(Code.UNREADABLE, f"cannot stat: {err.strerror or err}")], None
        if not stat.S_ISREG(st.st_mode):
            return [finding(Code.NOT_A_FILE, "expected a regular file")], None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return [finding(Code.NOT_FOUND, "no such file")], None
    except OSError as err:
        return [finding(Code.UNREADABLE, f"cannot read: {err.strerror or err}")], None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # replaced since it was listed
            return [finding(Code.NOT_A_FILE, "expected a regular file")], None
        size = st.st_size
        if size == 0:
            return [finding(Code.EMPTY, "file is empty (0 bytes): its writer never wrote it")], None
        first = os.pread(fd, _FIRST_READ, 0)
        offset = _find_signature(fd, size, first)
        if offset is None:
            return [
                finding(
                    Code.NOT_HDF5,
                    f"no HDF5 signature at offset 0, 512, 1024, ... ({size} bytes)",
                )
            ], None
        head = first[offset : offset + 256] if offset <= 512 else os.pread(fd, 256, offset)
    except OSError as err:
        return [finding(Code.UNREADABLE, f"cannot read: {err.strerror or err}")], None
    finally:
        os.close(fd)
    return _parse_superblock(path, head, offset, size)


_FAMILY_DRIVER = b"NCSAfami"


def _family_member_size(head: bytes, version: int) -> int | None:
    """The member size recorded by the family driver, if the superblock names it.

    Versions 0 and 1 keep a driver information block after the superblock (the
    driver's name, then its 8-byte member size); versions 2 and 3 a driver-info
    message in the superblock extension (name, a 2-byte length, the member size).
    """
    at = head.find(_FAMILY_DRIVER)
    if at < 0:
        return None
    start = at + len(_FAMILY_DRIVER) + (0 if version in (0, 1) else 2)
    if start + 8 > len(head):
        return None
    member = int.from_bytes(head[start : start + 8], "little")
    return member if member > 0 else None


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
        open_for_write = False  # libhdf5 does not act on v0/1 write flags
        flags = 0
        flags01 = int.from_bytes(head[20:24], "little")
        if flags01 & ~_KNOWN_FLAGS:
            add(
                Code.SUPERBLOCK_CORRUPT,
                f"superblock v{version}: unknown status flags {flags01:#x} (libhdf5 refuses them)",
            )
            return out, None
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
    refused = open_for_write and version >= 3
    swmr_write = version >= 3 and bool(flags & _FLAG_SWMR_WRITE)
    info = SuperblockInfo(
        offset, version, base, absolute_eof, open_for_write, refused, swmr_write, size
    )
    if refused:
        add(
            Code.OPEN_FOR_WRITE,
            "superblock says a writer still has the file open: it was killed before closing "
            "(or is still writing); libhdf5 refuses to open it until the flags are cleared"
            + (
                "; an SWMR writer's flag is set: --swmr reads it as an SWMR reader"
                if swmr_write
                else ""
            ),
        )
    elif open_for_write:
        add(
            Code.OPEN_FOR_WRITE,
            f"superblock v{version} says a writer had the file open (killed before closing?); "
            "libhdf5 ignores these flags in a version-2 superblock and opens it",
            Severity.INFO,
        )
    member = _family_member_size(head, version)
    if member is not None and absolute_eof != UNDEFINED and absolute_eof > size:
        # The first file of a family (driver="family"): the superblock describes the
        # whole family, so the address space ends in a later member. Not truncation.
        members = -(-absolute_eof // member)
        add(
            Code.FAMILY_MEMBER,
            f"the first member of an HDF5 file family (family driver, {members} member(s) of "
            f"{member} bytes, {absolute_eof} bytes in all): one piece of a file, not read "
            "alone; read the family with h5py.File(pattern, driver='family', "
            f"memb_size={member}) (e.g. pattern 'name%d.h5')",
            # Alone, the member cannot be opened (h5py and libhdf5 refuse it): the file
            # as given is not readable, though nothing in it is damaged.
            Severity.ERROR,
        )
        return out, None
    if absolute_eof == UNDEFINED or absolute_eof > size:
        shown = "undefined" if absolute_eof == UNDEFINED else f"{absolute_eof} bytes"
        add(Code.TRUNCATED, f"superblock says the file is {shown}, found {size} bytes")
    elif absolute_eof < size:
        if open_for_write:
            why = "written after the writer's last flush (or it was never flushed)"
        else:
            why = (
                "written after the writer's last flush, or appended to the file later; "
                "libhdf5 ignores them"
            )
        add(
            Code.TRAILING_DATA,
            f"superblock says the file ends at {absolute_eof} bytes, found {size}: "
            f"{size - absolute_eof} bytes lie past the recorded end, {why}",
            Severity.INFO,
        )
    return out, info


class FlagsClearedView:
    """A read-only file object over an HDF5 file whose superblock "open for write"
    flags read as cleared (checksum recomputed), for h5py's ``fileobj`` driver.

    libhdf5 refuses a version-3 file with those flags; this lets the deep layer read
    what lies behind them without modifying the file or copying it.
    """

    def __init__(self, path: str) -> None:
        self._fh = open(path, "rb")  # noqa: SIM115 - closed in close()
        try:
            _, info = quick_check(path)
            if info is None or info.version < 2:
                raise ValueError(f"{path}: no version 2/3 superblock to patch")
            self._fh.seek(info.offset)
            head = bytearray(self._fh.read(12 + 4 * 8 + 4))
            head[11] &= ~(_FLAG_WRITE | _FLAG_SWMR_WRITE) & 0xFF
            end = 12 + 4 * head[9]
            head[end : end + 4] = lookup3(bytes(head[:end])).to_bytes(4, "little")
            self._patch_at = info.offset
            self._patch = bytes(head[: end + 4])
        except BaseException:
            self._fh.close()
            raise
        self._pos = 0

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = self._fh.seek(pos, whence)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        self._fh.seek(self._pos)
        data = self._fh.read(n)
        start, stop = self._pos, self._pos + len(data)
        self._pos = stop
        lo, hi = max(start, self._patch_at), min(stop, self._patch_at + len(self._patch))
        if lo >= hi:
            return data
        out = bytearray(data)
        out[lo - start : hi - start] = self._patch[lo - self._patch_at : hi - self._patch_at]
        return bytes(out)

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def write(self, data: bytes) -> int:
        raise OSError("read-only view")

    def truncate(self, size: int | None = None) -> int:
        raise OSError("read-only view")

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self._fh.close()

    def __del__(self) -> None:
        self._fh.close()
