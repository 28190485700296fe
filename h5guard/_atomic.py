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
import socket
import stat
from pathlib import Path

from h5guard.errors import InsufficientSpaceError, WriteError

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"

# libhdf5 may segfault (or raise an opaque RuntimeError) when a write hits a full disk, so every write
# keeps this much room in reserve on top of its own estimate.
DEFAULT_MIN_FREE = 16 * 1024 * 1024


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file's data and metadata to stable storage."""
    fsync_opened(os.open(path, os.O_RDONLY | os.O_CLOEXEC))


def fsync_opened(fd: int) -> None:
    """:func:`fsync_path` of a file the caller has opened: the descriptor is closed.

    A background thread's call then begins with the fsync itself
    (:meth:`h5guard._background.Tasks.begin`).
    """
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


def commit_file(
    partial: str | os.PathLike[str], final: str | os.PathLike[str], *, flushed: bool = False
) -> None:
    """Durably move a finished temporary file to its final name.

    Parameters
    ----------
    partial : str or os.PathLike
        The finished file, closed by the caller, in the directory of ``final``.
    final : str or os.PathLike
        The name it takes (a symbolic link there is replaced, never followed).
    flushed : bool
        The caller has fsynced ``partial`` since its last write: only the rename and the
        directory fsync are left.

    Raises
    ------
    OSError
        The fsync or the rename failed (the error names ``partial``): the temporary file
        is removed and the final name is untouched. A failure of the directory fsync
        after the rename is raised too; the new file is then already in place.
    """
    try:
        if not flushed:
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
    """Unlink ``path`` (a link itself, never its target); a missing name is fine."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# Every file h5guard creates on the write side is created through this: the name must
# not exist (O_EXCL), and a symbolic link planted under it is never followed (O_EXCL
# alone already refuses a link; O_NOFOLLOW says so twice, for the old kernels' sake).
_CREATE_FLAGS = os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def create_exclusive(path: str | os.PathLike[str], *, mode: int = 0o644, read: bool = False) -> int:
    """Create a new file and return a descriptor open for writing.

    Parameters
    ----------
    path : str or os.PathLike
        The new file's name; nothing (no file, no link) may exist under it.
    mode : int
        Permission bits (before the umask).
    read : bool
        Open it for reading too.

    Returns
    -------
    int
        The descriptor; the caller closes it.

    Raises
    ------
    FileExistsError
        Something (a file, a symbolic link) already has that name; it is untouched.
    """
    return os.open(path, _CREATE_FLAGS | (os.O_RDWR if read else os.O_WRONLY), mode)


def clear_own_name(path: str | os.PathLike[str]) -> str | None:
    """Remove whatever is under a name that only h5guard creates (a ``.partial``).

    A leftover of a crashed commit or merge, or a link someone planted there: the name
    is removed (``unlink`` removes a link, never its target), so that the next exclusive
    creation succeeds. A directory under the name is not removed.

    Parameters
    ----------
    path : str or os.PathLike
        The name.

    Returns
    -------
    str or None
        What was removed (for the log), or None if nothing was there.

    Raises
    ------
    WriteError
        The name holds a directory, or cannot be removed (it belongs to someone else).
    """
    name = os.fspath(path)
    try:
        st = os.lstat(name)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        what = f"a symbolic link to {os.readlink(name)!r} (removed, its target untouched)"
    elif stat.S_ISREG(st.st_mode):
        what = "a leftover file"
    else:
        raise WriteError(
            name,
            "expected no file under this name (h5guard creates it), found something that is "
            "not a regular file; remove it",
            FileExistsError(errno.EEXIST, "exists"),
        )
    try:
        os.unlink(name)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise WriteError(name, f"expected to remove {what} under h5guard's own name", err) from err
    log.warning("%s: removed %s before writing", name, what)
    return what


def require_real_dir(path: str | os.PathLike[str], *, create: bool = False) -> None:
    """Check that ``path`` is a directory itself, not a symbolic link to one.

    Parameters
    ----------
    path : str or os.PathLike
        A directory h5guard writes into on its own account (``quarantine/``).
    create : bool
        Create it (one level) when missing.

    Raises
    ------
    WriteError
        It is a symbolic link (never followed: h5guard writes nothing through a link it
        did not make) or something other than a directory, or it cannot be created.
    """
    name = os.fspath(path)
    try:
        st = os.lstat(name)
    except FileNotFoundError:
        if not create:
            raise
        try:
            os.mkdir(name)
        except FileExistsError:
            pass
        except OSError as err:
            raise WriteError(name, "expected to create this directory", err) from err
        st = os.lstat(name)
    if stat.S_ISLNK(st.st_mode):
        raise WriteError(
            name,
            f"expected a directory, found a symbolic link to {os.readlink(name)!r}; h5guard never "
            "writes through a link here: remove the link (h5guard creates the directory)",
            NotADirectoryError(errno.ENOTDIR, "symbolic link"),
        )
    if not stat.S_ISDIR(st.st_mode):
        raise WriteError(
            name,
            "expected a directory, found a file; remove it",
            NotADirectoryError(errno.ENOTDIR, "not a directory"),
        )


def require_own_link(path: str | os.PathLike[str]) -> None:
    """Refuse a directory the user named that is a symbolic link planted by someone else.

    A link the user (or root) made is the user's choice and is followed; one owned by
    another account would send the user's files wherever that account chose.

    Parameters
    ----------
    path : str or os.PathLike
        A directory the caller was given (TEMP_DIR).

    Raises
    ------
    WriteError
        ``path`` is a symbolic link owned by another account.
    """
    name = os.fspath(path)
    try:
        st = os.lstat(name)
    except OSError:
        return  # missing (created later) or unreadable: the caller's own errors say so
    if stat.S_ISLNK(st.st_mode) and st.st_uid not in (os.geteuid(), 0):
        raise WriteError(
            name,
            f"expected a directory, found a symbolic link to {os.readlink(name)!r} owned by "
            f"another account (uid {st.st_uid}); h5guard follows only your own links: remove "
            "it, or name the target if you trust it",
            NotADirectoryError(errno.ENOTDIR, "symbolic link of another account"),
        )


def write_fd(fd: int, data: bytes | bytearray | memoryview, *, offset: int = 0) -> None:
    """Write all of ``data`` at ``offset`` (``pwrite`` until done)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def reserve(fd: int, size: int, *, path: str, waiting: str) -> None:
    """Make the file system allocate ``size`` bytes of ``fd`` now, or refuse cleanly.

    libhdf5 must never be the one to meet a full disk (it may crash the process): the
    blocks a write will use are allocated here first, where ENOSPC is a plain error.

    Parameters
    ----------
    fd : int
        The file, open for writing.
    size : int
        Bytes from offset 0 it must be able to hold.
    path : str
        The file's name, for the message.
    waiting : str
        Where the data to be written waits meanwhile (for the message).

    Raises
    ------
    InsufficientSpaceError
        The file system cannot hold ``size`` bytes.
    WriteError
        The file system is read-only, or another error.
    """
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as err:
        if err.errno == errno.ENOSPC or err.errno == errno.EDQUOT:
            raise InsufficientSpaceError(
                path, size, free_bytes(os.path.dirname(path) or "."), waiting=waiting
            ) from err
        if err.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            return  # the file system cannot preallocate: the free-space check must do
        raise WriteError(
            path, f"reserving {size} bytes failed{waiting and '; ' + waiting}", err
        ) from err


def is_read_only(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` lives on a file system mounted read-only."""
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def free_bytes(directory: str | os.PathLike[str]) -> int:
    st = os.statvfs(directory)
    # f_bavail, not f_bfree: the blocks reserved for root are not ours to count on.
    return st.f_bavail * st.f_frsize


def require_free_space(
    directory: str | os.PathLike[str],
    needed: int,
    *,
    min_free: int = DEFAULT_MIN_FREE,
    waiting: str = "",
) -> int:
    """Check that ``needed + min_free`` bytes are free in ``directory``; return the free bytes.

    Parameters
    ----------
    directory : str or os.PathLike
        Where the bytes will be written.
    needed : int
        Bytes the write needs.
    min_free : int
        Bytes to keep free on top (libhdf5 must never be the one to meet a full disk).
    waiting : str
        Where the data waits meanwhile (``"3 result(s) are safe in J"``), for the message.

    Returns
    -------
    int
        The bytes available (at least ``needed + min_free``).

    Raises
    ------
    InsufficientSpaceError
        Fewer bytes are available.
    WriteError
        The file system is read-only, or ``directory`` is gone.
    """
    try:
        st = os.statvfs(directory)
    except FileNotFoundError as err:
        raise WriteError(
            os.fspath(directory),
            f"expected a directory to write into, found none{waiting and '; ' + waiting}",
            err,
        ) from err
    if st.f_flag & os.ST_RDONLY:
        raise WriteError(
            os.fspath(directory),
            f"the file system is read-only, nothing can be written there{waiting and '; ' + waiting}",
            OSError(errno.EROFS, os.strerror(errno.EROFS)),
        )
    available = st.f_bavail * st.f_frsize
    if available < needed + min_free:
        raise InsufficientSpaceError(
            os.fspath(directory), needed + min_free, available, waiting=waiting
        )
    return available


def copy_file(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Byte-for-byte copy into a new file ``dst`` (kernel-side where the OS allows it).

    ``dst`` is created exclusively, never through a link; ``src`` is not read through
    a link either.

    Raises
    ------
    FileExistsError
        Something already has the name ``dst``.
    OSError
        Reading or writing failed (``dst`` is then removed).
    """
    src_fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
    try:
        dst_fd = create_exclusive(dst)
        try:
            size = os.fstat(src_fd).st_size
            offset = 0
            while offset < size:
                n = os.sendfile(dst_fd, src_fd, offset, min(size - offset, 1 << 30))
                if n == 0:
                    raise OSError(errno.EIO, "source shrank while it was copied", os.fspath(src))
                offset += n
        except BaseException:
            os.close(dst_fd)
            remove_quietly(dst)
            raise
        os.close(dst_fd)
    finally:
        os.close(src_fd)


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


class SpaceBudget:
    """:func:`require_free_space` for many small writes, with one ``statvfs`` per many.

    After a check finds ``available`` bytes, writes may use up to half of what is left
    above ``min_free`` (at most :attr:`MAX_UNCHECKED` bytes) before the next check: a
    writer of tiny results checks about once per few thousand, one of big results at
    every write, and one near a full disk at every write too.

    Parameters
    ----------
    directory : str or os.PathLike
        Where the bytes will be written.
    min_free : int
        Bytes to keep free on top of each write.
    """

    MAX_UNCHECKED = 8 * 1024 * 1024

    def __init__(self, directory: str | os.PathLike[str], *, min_free: int) -> None:
        self.directory = directory
        self.min_free = min_free
        self._unchecked = 0  # bytes that may still be written without a check

    def require(self, needed: int) -> None:
        """Check (or trust the last check) that ``needed + min_free`` bytes are free.

        Raises
        ------
        InsufficientSpaceError, WriteError
            As :func:`require_free_space`.
        """
        if needed <= self._unchecked:
            self._unchecked -= needed
            return
        self._unchecked = 0
        available = require_free_space(self.directory, needed, min_free=self.min_free)
        left = available - self.min_free - needed
        self._unchecked = max(0, min(left // 2, self.MAX_UNCHECKED))
