"""Durable file operations: the only way h5guard puts a file under a final name.

The protocol is always: write a temporary file in the *same directory* (so the rename
cannot cross file systems), flush and fsync it, ``os.replace`` it over the final name,
then fsync the directory so the rename itself survives a power loss. Readers see
either the old file or the new one, never a mixture.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import socket
from pathlib import Path

from h5guard.errors import InsufficientSpaceError

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"

# libhdf5 may segfault (or raise an opaque RuntimeError) when a write hits a full disk, so every write
# keeps this much room in reserve on top of its own estimate.
DEFAULT_MIN_FREE = 16 * 1024 * 1024


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file's data and metadata to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Directory fsync is refused with these by file systems that do not support it; any
# other error (EIO, ENOSPC, ...) means the rename may not be durable and is raised.
_DIR_FSYNC_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EBADF}


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make renames and creations inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno in _DIR_FSYNC_UNSUPPORTED:
            log.debug("fsync of directory %s not supported: %s", directory, err)
        else:
            raise OSError(
                err.errno, f"fsync of the directory failed: {err.strerror}", os.fspath(directory)
            ) from err
    finally:
        os.close(fd)


def commit_file(partial: str | os.PathLike[str], final: str | os.PathLike[str]) -> None:
    """Durably move a finished temporary file to its final name.

    Parameters
    ----------
    partial : str or os.PathLike
        The finished file, closed by the caller, in the directory of ``final``.
    final : str or os.PathLike
        The name it takes.

    Raises
    ------
    OSError
        The fsync or the rename failed (the error names ``partial``): the temporary file
        is removed and the final name is untouched. A failure of the directory fsync
        after the rename is raised too; the new file is then already in place.
    """
    try:
        fsync_path(partial)
        os.replace(partial, final)
    except OSError as err:
        remove_quietly(partial)
        # os.fsync's error names no file; the caller's user needs to know which.
        raise OSError(err.errno, f"committing failed: {err.strerror}", os.fspath(partial)) from err
    except BaseException:
        remove_quietly(partial)
        raise
    fsync_dir(Path(final).parent)


def remove_quietly(path: str | os.PathLike[str]) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def free_bytes(directory: str | os.PathLike[str]) -> int:
    st = os.statvfs(directory)
    # f_bavail, not f_bfree: the blocks reserved for root are not ours to count on.
    return st.f_bavail * st.f_frsize


def require_free_space(
    directory: str | os.PathLike[str], needed: int, *, min_free: int = DEFAULT_MIN_FREE
) -> None:
    """Check that ``needed + min_free`` bytes are free in ``directory``.

    Parameters
    ----------
    directory : str or os.PathLike
        Where the bytes will be written.
    needed : int
        Bytes the write needs.
    min_free : int
        Bytes to keep free on top (libhdf5 must never be the one to meet a full disk).

    Raises
    ------
    InsufficientSpaceError
        Fewer bytes are available.
    """
    available = free_bytes(directory)
    if available < needed + min_free:
        raise InsufficientSpaceError(os.fspath(directory), needed + min_free, available)


def copy_file(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Byte-for-byte copy (kernel-side where the OS allows it)."""
    shutil.copyfile(src, dst)


def writer_tag() -> str:
    """``host-pid``: who owns a temporary file, so stale ones can be recognised."""
    host = socket.gethostname().split(".")[0].replace("-", "_") or "host"
    return f"{host}-{os.getpid()}"


def partial_owner_alive(name: str) -> bool | None:
    """Whether the process named in a ``*-host-pid-*.partial`` name still runs.

    ``None`` when that cannot be known (another host, or a name not made by us).
    """
    parts = Path(name).name.split("-")
    if len(parts) < 4:
        return None
    host, pid_text = parts[-3], parts[-2]
    me = socket.gethostname().split(".")[0].replace("-", "_") or "host"
    if host != me or not pid_text.isdigit():
        return None
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
