"""The exceptions h5guard raises.

Everything h5guard raises on purpose derives from :class:`H5GuardError`, and every
leaf also derives from the builtin it is closest to, so callers that only know the
builtins (``except OSError``) still catch what they expect::

    H5GuardError (Exception)
    ├── SchemaError (ValueError)            a schema is malformed, or a group breaks it
    ├── InvalidKeyError (ValueError)        a group key that cannot name an HDF5 group
    ├── UnsupportedValueError (TypeError, ValueError)  a value add() cannot store; says what to do
    ├── ResultLimitError (ValueError)       a result deeper, bigger or wider than the limits
    ├── ResultNotFoundError (KeyError)      read(): no result of that key in the file
    ├── DigestMismatchError (ValueError)    read(): a group whose content differs from its digest
    ├── MissingDependencyError (ImportError) an optional extra (pandas) is not installed
    ├── DuplicateKeyError (ValueError)      a key this writer has already added
    ├── WriterClosedError (RuntimeError)    ShardWriter used after close()
    ├── WriterTransferError (TypeError)     a ShardWriter sent to another process
    ├── InsufficientSpaceError (OSError)    refused before writing: the disk is too full
    ├── WriteError (OSError)                libhdf5 or the OS failed a write; nothing committed
    ├── UnreadableOutputError (OSError)     a merge output that fails validation
    ├── SandboxError (RuntimeError)         the checker child could not be started
    ├── LockTimeoutError (TimeoutError)     another process holds the output's lock
    ├── MergeSourceError (ValueError)       nothing to merge from / no output recorded
    └── SettingError (ValueError)           an H5GUARD_* environment variable h5guard cannot use

Validation never raises for a bad *file*: damage is reported as findings in a
:class:`~h5guard.report.Report`. Exceptions are for misuse and for operations that
cannot go on (a full disk, a held lock).

All exceptions carry their data as attributes and define ``__reduce__`` so that they
survive being sent back from a worker process (pickling an exception normally
re-calls ``__init__`` with ``args`` only, which breaks keyword-only constructors).
"""

from __future__ import annotations

from typing import Any


class H5GuardError(Exception):
    """Root of every exception h5guard raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__.copy()))


def _rebuild(cls: type[H5GuardError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    obj = cls.__new__(cls)
    Exception.__init__(obj, *args)
    obj.__dict__.update(state)
    return obj


class SchemaError(H5GuardError, ValueError):
    """A schema document is malformed, or a group does not satisfy the schema."""


class InvalidKeyError(H5GuardError, ValueError):
    """A group key that cannot be used as an HDF5 group name."""

    def __init__(self, key: object, reason: str) -> None:
        super().__init__(f"group key {key!r}: {reason}")
        self.key = key
        self.reason = reason


class UnsupportedValueError(H5GuardError, TypeError, ValueError):
    """A value that h5guard cannot store as given (None, a dict, an object array, ...).

    Both a TypeError (the wrong kind of object) and a ValueError (a right kind with a
    value out of range, such as ``2**70``), so either ``except`` catches it. The message
    says where the value was, what it was, and what to store instead.
    """

    def __init__(self, where: str, what: str, instead: str) -> None:
        super().__init__(f"{where}: cannot store {what}; {instead}")
        self.where = where
        self.what = what
        self.instead = instead


class ResultLimitError(H5GuardError, ValueError):
    """A result beyond the documented limits (nesting depth, object count, name size)."""


class ResultNotFoundError(H5GuardError, KeyError):
    """No result of the requested key in the file."""

    def __init__(self, path: str, key: str) -> None:
        super().__init__(f"{path}: no result {key!r} (list them with h5guard.iter_results)")
        self.path = path
        self.key = key

    def __str__(self) -> str:
        # KeyError renders its argument with repr(): keep the message readable.
        return str(self.args[0])


class DigestMismatchError(H5GuardError, ValueError):
    """A group read back whose content does not match its stored digest (or has none)."""

    def __init__(self, path: str, key: str, stored: str | None, computed: str) -> None:
        if stored is None:
            text = f"{path}:/{key}: group has no h5guard_digest attribute (computed {computed}); read it with verify=False to accept it unverified"
        else:
            text = f"{path}:/{key}: content digest differs: stored {stored}, computed {computed}; the group is damaged, restore it from its shard or salvage"
        super().__init__(text)
        self.path = path
        self.key = key
        self.stored = stored
        self.computed = computed


class MissingDependencyError(H5GuardError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class DuplicateKeyError(H5GuardError, ValueError):
    """``add()`` of a key the same writer has already added (results are immutable)."""


class WriterTransferError(H5GuardError, TypeError):
    """A ShardWriter was pickled: each process must create its own writer."""


class WriterClosedError(H5GuardError, RuntimeError):
    """A ShardWriter was used after it was closed."""


class InsufficientSpaceError(H5GuardError, OSError):
    """Refused before writing because the file system cannot hold the data.

    When a write hits a full disk, libhdf5 fails inside ``close()``: a segfault in
    some of our runs, an opaque ``RuntimeError`` in others. So h5guard checks the free
    space first, and reserves the blocks a file will use before writing into it, and
    refuses instead. ``waiting`` says where the data waits meanwhile (a journal).
    """

    def __init__(self, directory: str, needed: int, available: int, *, waiting: str = "") -> None:
        super().__init__(
            f"{directory}: not enough free space: need {_human(needed)}, "
            f"file system has {_human(available)} free" + (f"; {waiting}" if waiting else "")
        )
        self.directory = directory
        self.needed = needed
        self.available = available
        self.waiting = waiting


class WriteError(H5GuardError, OSError):
    """A write failed (an I/O error, a full disk inside libhdf5): nothing was committed.

    libhdf5 reports failed writes as ``RuntimeError`` or a bare ``OSError`` whose text
    does not always name the file; this names it and keeps the original as ``__cause__``.
    """

    def __init__(self, path: str, what: str, cause: BaseException) -> None:
        detail = " ".join(str(cause).split()) or type(cause).__name__
        super().__init__(f"{path}: {what}: {detail}")
        self.path = path
        self.filename = path

    def __str__(self) -> str:
        # OSError renders "[Errno None] None: 'path'" once filename is set.
        return str(self.args[0])


class UnreadableOutputError(H5GuardError, OSError):
    """An existing merge output failed validation; it is left untouched."""


class SandboxError(H5GuardError, RuntimeError):
    """The sandboxed checker process could not be started or talked to."""


class LockTimeoutError(H5GuardError, TimeoutError):
    """Another process held the lock for longer than the timeout allowed."""

    def __init__(self, lock_path: str, timeout: float, holder: str) -> None:
        super().__init__(
            f"{lock_path}: still locked after {timeout:g} s by {holder}; "
            "wait for it to finish or raise --lock-timeout"
        )
        self.lock_path = lock_path
        self.timeout = timeout
        self.holder = holder


class MergeSourceError(H5GuardError, ValueError):
    """The merge was given nothing usable: a missing directory or no output path."""


class SettingError(H5GuardError, ValueError):
    """An ``H5GUARD_*`` environment variable holds a value h5guard cannot use."""


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
