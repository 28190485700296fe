"""The exception tree: builtin bases, attributes kept, and survival through pickling."""

from __future__ import annotations

import pickle

import pytest

from h5guard import (
    H5GuardError,
    InsufficientSpaceError,
    InvalidKeyError,
    LockTimeoutError,
    MergeSourceError,
    SandboxError,
    SchemaError,
    SettingError,
    UnreadableOutputError,
    WriterClosedError,
)

CASES = [
    (SchemaError("group g: SCHEMA_SHAPE"), ValueError),
    (InvalidKeyError("a/b", "expected no '/'"), ValueError),
    (WriterClosedError("closed"), RuntimeError),
    (InsufficientSpaceError("/data", 10 * 2**20, 2**20), OSError),
    (UnreadableOutputError("out.h5: damaged"), OSError),
    (SandboxError("cannot start"), RuntimeError),
    (LockTimeoutError("out.h5.lock", 5.0, "pid 12 on host since now"), TimeoutError),
    (MergeSourceError("tmp: no directory"), ValueError),
    (SettingError("$H5GUARD_SEGMENT_FANOUT: expected a whole number >= 2, got 'x'"), ValueError),
]


@pytest.mark.parametrize(("error", "builtin"), CASES)
def test_bases_and_pickling(error: H5GuardError, builtin: type[Exception]) -> None:
    assert isinstance(error, H5GuardError)
    assert isinstance(error, builtin)
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is type(error)
    assert str(clone) == str(error)
    assert clone.__dict__ == error.__dict__


def test_messages_say_where_expected_and_found() -> None:
    err = InsufficientSpaceError("/data", 10 * 2**20, 2**20)
    assert str(err) == "/data: not enough free space: need 10.0 MiB, file system has 1.0 MiB free"
    assert (err.needed, err.available) == (10 * 2**20, 2**20)
    lock = LockTimeoutError("out.h5.lock", 5.0, "pid 12 on host")
    assert "still locked after 5 s by pid 12 on host" in str(lock)
    assert lock.holder == "pid 12 on host"
    key = InvalidKeyError(5, "expected a str, got int")
    assert str(key) == "group key 5: expected a str, got int"


def test_write_error_message_names_the_file_step_and_cause() -> None:
    from h5guard import WriteError

    err = WriteError("/data/out.h5.partial", "closing the shard failed", RuntimeError("boom\n x"))
    assert str(err) == "/data/out.h5.partial: closing the shard failed: boom x"
    assert err.filename == "/data/out.h5.partial"
    assert isinstance(err, OSError)
