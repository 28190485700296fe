"""The state of one deep inspection of a file, and the verdict on each of its groups.

The deep layer reads a file in a sandboxed child (it may hang or crash on a damaged
file): :mod:`h5guard._check.deep` opens it, :mod:`h5guard._check.own` reads the files
h5guard wrote (seal, digests), :mod:`h5guard._check.foreign` the others. They all
collect findings in one :class:`Inspector` and settle each top-level group the same
way (:meth:`Inspector.settle`), the schema applied through its one entry point.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from h5guard._format import names
from h5guard._format import reader as _reader
from h5guard._sandbox import retire_after_call
from h5guard.errors import SchemaError
from h5guard.report import Code, Finding, Severity
from h5guard.schema import Schema, SchemaViolation


def one_line(err: BaseException) -> str:
    """An exception's message on one line (libhdf5's span several)."""
    text = " ".join(str(err).split())
    return text or type(err).__name__


class Inspector:
    def __init__(self, path: str, schema: Schema | None) -> None:
        self.path = path
        self.schema = schema
        self.findings: list[Finding] = []
        self.groups: dict[str, str | None] = {}
        self.invalid: list[str] = []  # top-level groups read and found not valid
        self.owned = False  # written by h5guard: digests are mandatory
        self.tainted = False  # libhdf5 saw damage: this process should read no more files

    def add(self, obj: str, code: Code, message: str, severity: Severity = Severity.ERROR) -> None:
        self.findings.append(Finding(self.path, obj, code, severity, message))

    def read_attrs(self, obj: h5py.Group | h5py.File, where: str) -> dict[str, Any] | None:
        try:
            out: dict[str, Any] = _reader.read_attrs(obj)
        except Exception as err:
            self.add(where, Code.OBJECT_UNREADABLE, f"attribute unreadable: {one_line(err)}")
            return None
        return out

    def settle(
        self,
        key: str,
        stored_text: str | None,
        computed: str | None,
        violations: Sequence[SchemaViolation],
    ) -> None:
        """The verdict on one top-level group, the same for v1 and v2 digests."""
        where = f"/{key}"
        if computed is not None and computed != stored_text:
            self.add(
                where,
                Code.DIGEST_MISMATCH,
                f"content digest differs: stored {stored_text}, computed {computed}",
            )
            self.invalid.append(key)
            return
        for v in violations:
            self.add(f"{where}/{v.obj}" if v.obj else where, v.code, v.message)
        if violations:
            self.invalid.append(key)
            return
        if any(
            f.severity >= Severity.WARNING and (f.obj == where or f.obj.startswith(where + "/"))
            for f in self.findings
        ):
            self.invalid.append(key)  # something below it (a nested group) is damaged
            return
        self.groups[key] = stored_text


def pick_schema(ins: Inspector, explicit_json: str | None, embedded: str | None) -> Schema | None:
    if explicit_json is not None:
        schema = Schema.from_json(explicit_json)
        if embedded is not None and normalized(embedded) != normalized(explicit_json):
            ins.add(
                "/",
                Code.SCHEMA_MISMATCH,
                "the file embeds a different schema; checked against the one given",
                Severity.INFO,
            )
        return schema
    if embedded is None:
        return None
    try:
        return Schema.from_json(embedded, source=f"{names.SCHEMA_ATTR} attribute")
    except SchemaError as err:
        ins.add("/", Code.SCHEMA_INVALID, str(err))
        return None


def normalized(text: str) -> str:
    try:
        return Schema.from_json(text).to_json()
    except SchemaError:
        return text


_LIBHDF5_FAILURES = frozenset({Code.UNREADABLE, Code.OBJECT_UNREADABLE, Code.MEMORY_LIMIT})


def retire(ins: Inspector) -> None:
    """Ask for a fresh sandbox child after this file when its heap may be damaged.

    That is after reading region references (see :mod:`h5guard._walk`) and after libhdf5
    failed on the file, unless only checksums failed: libhdf5 verifies a checksummed
    piece of metadata (or a fletcher32 chunk) before decoding it, so damaged bytes never
    reached its decoder. Crafted metadata without a checksum can overflow a buffer
    before libhdf5 notices: with children reused after such errors, a valid file read
    next crashed ("free(): corrupted unsorted chunks") in a corpus run.
    """
    if ins.tainted or any(
        f.code in _LIBHDF5_FAILURES and "checksum" not in f.message for f in ins.findings
    ):
        retire_after_call()


def link_kind(gid: Any, name: str) -> str | None:
    """None for a hard link, else what kind of link it is (raises if unreadable)."""
    kind = int(gid.links.get_info(name.encode("utf-8")).type)
    if kind == h5py.h5l.TYPE_HARD:
        return None
    if kind == h5py.h5l.TYPE_SOFT:
        return "soft link"
    if kind == h5py.h5l.TYPE_EXTERNAL:
        return "external link"
    return f"user-defined link (type {kind})"


def attr_text(attrs: Mapping[str, npt.NDArray[Any]] | None, name: str) -> str | None:
    if not attrs or name not in attrs:
        return None
    value = np.asarray(attrs[name])
    if value.ndim != 0:
        return None
    item = value[()]
    if isinstance(item, bytes):
        return item.decode("utf-8", errors="replace")
    return str(item)


def file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
