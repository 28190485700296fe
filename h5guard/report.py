"""Findings about files, and the reports that collect them.

A :class:`Finding` is one fact about one object in one file, with a stable code
that scripts can match on. A :class:`Report` is what :func:`h5guard.validate` and
:func:`h5guard.check` return: every finding plus a summary of each file that was
looked at (its kind and the digests of its groups), which the merge reuses instead
of opening the file again.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class Severity(enum.IntEnum):
    """How bad a finding is. ``ERROR`` and ``WARNING`` make a check fail."""

    INFO = 0
    WARNING = 1
    ERROR = 2

    def __str__(self) -> str:
        return self.name.lower()


class Code(enum.StrEnum):
    """Stable finding codes. Never renumber or reuse one; add new ones at the end."""

    NOT_FOUND = "NOT_FOUND"
    NOT_A_FILE = "NOT_A_FILE"
    EMPTY = "EMPTY"
    NOT_HDF5 = "NOT_HDF5"
    TRUNCATED = "TRUNCATED"
    SUPERBLOCK_CORRUPT = "SUPERBLOCK_CORRUPT"
    OPEN_FOR_WRITE = "OPEN_FOR_WRITE"
    TRAILING_DATA = "TRAILING_DATA"
    UNREADABLE = "UNREADABLE"
    OBJECT_UNREADABLE = "OBJECT_UNREADABLE"
    DIGEST_MISMATCH = "DIGEST_MISMATCH"
    DIGEST_MISSING = "DIGEST_MISSING"
    NO_DIGESTS = "NO_DIGESTS"
    UNEXPECTED_OBJECT = "UNEXPECTED_OBJECT"
    SCHEMA_INVALID = "SCHEMA_INVALID"
    SCHEMA_MISSING = "SCHEMA_MISSING"
    SCHEMA_DTYPE = "SCHEMA_DTYPE"
    SCHEMA_SHAPE = "SCHEMA_SHAPE"
    SCHEMA_NOT_FINITE = "SCHEMA_NOT_FINITE"
    SCHEMA_VALUE = "SCHEMA_VALUE"
    SCHEMA_MISMATCH = "SCHEMA_MISMATCH"
    TIMEOUT = "TIMEOUT"
    MEMORY_LIMIT = "MEMORY_LIMIT"
    CHECKER_CRASHED = "CHECKER_CRASHED"
    PARTIAL_FILE = "PARTIAL_FILE"
    JOURNAL_FILE = "JOURNAL_FILE"
    EXPECTED_MISSING = "EXPECTED_MISSING"
    SEAL_MISMATCH = "SEAL_MISMATCH"
    LINK_NOT_FOLLOWED = "LINK_NOT_FOLLOWED"
    COMMITTED_DATATYPE = "COMMITTED_DATATYPE"
    UNALLOCATED_DATA = "UNALLOCATED_DATA"
    EXTERNAL_DATA = "EXTERNAL_DATA"
    FILTER_MISSING = "FILTER_MISSING"
    NOTHING_TO_CHECK = "NOTHING_TO_CHECK"
    FAMILY_MEMBER = "FAMILY_MEMBER"
    UNSUPPORTED_TYPE = "UNSUPPORTED_TYPE"
    SUMMARY_MISMATCH = "SUMMARY_MISMATCH"  # the summary is damaged or disagrees with the groups


@dataclass(frozen=True, slots=True, order=True)
class Finding:
    """One fact about one object of one file.

    Findings sort by file, object, code, so printed reports are stable.

    Parameters
    ----------
    path
        The file.
    obj
        The HDF5 path inside the file (``/`` for the file as a whole).
    code
        The stable code scripts match on.
    severity
        ``ERROR`` and ``WARNING`` make a check fail.
    message
        What was expected and what was found.
    """

    path: str
    obj: str
    code: Code
    severity: Severity
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.obj}: {self.code} {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {
            "path": self.path,
            "object": self.obj,
            "code": str(self.code),
            "severity": str(self.severity),
            "message": self.message,
        }


class FileKind(enum.StrEnum):
    """What a file turned out to be."""

    SHARD = "shard"  # written by ShardWriter
    OUTPUT = "output"  # written by the merge
    FOREIGN = "foreign"  # readable HDF5 that h5guard did not write
    UNREADABLE = "unreadable"  # not opened, or its content could not be read
    UNOPENED = "unopened"  # passed the quick layer; not opened (check --quick)


@dataclass(frozen=True, slots=True)
class FileSummary:
    """What validation learned about one file.

    Parameters
    ----------
    path
        The file.
    kind
        What it turned out to be.
    size
        Its size in bytes.
    groups
        Each valid top-level group's key and its stored digest (None where it has none).
    schema_json
        The schema embedded in the file, if any.
    invalid_groups
        Top-level groups that were read but are not valid (damaged, schema, digest).
    """

    path: str
    kind: FileKind
    size: int
    groups: Mapping[str, str | None] = field(default_factory=dict)
    schema_json: str | None = None
    # Top-level groups that were read but are not valid (damaged, schema, digest).
    invalid_groups: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": str(self.kind),
            "size": self.size,
            "groups": len(self.groups),
            "groups_invalid": len(self.invalid_groups),
        }


@dataclass(frozen=True, slots=True)
class Report:
    """Every finding of a check, and a summary of each file looked at.

    Parameters
    ----------
    findings
        Every finding, of every file.
    files
        A :class:`FileSummary` per file looked at.
    """

    findings: tuple[Finding, ...] = ()
    files: tuple[FileSummary, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no finding is a warning or an error."""
        return all(f.severity < Severity.WARNING for f in self.findings)

    def for_path(self, path: str) -> tuple[Finding, ...]:
        """The findings about one file (a scan: index ``findings`` yourself for many files)."""
        return tuple(f for f in self.findings if f.path == path)

    def summary(self, path: str) -> FileSummary | None:
        """The summary of one file, or None if it was not checked."""
        for s in self.files:
            if s.path == path:
                return s
        return None

    def counts(self) -> dict[str, int]:
        out = {str(s): 0 for s in Severity}
        for f in self.findings:
            out[str(f.severity)] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "files_checked": len(self.files),
            "groups_checked": sum(len(f.groups) + len(f.invalid_groups) for f in self.files),
            "groups_valid": sum(len(f.groups) for f in self.files),
            "counts": self.counts(),
            "findings": [f.to_dict() for f in sorted(self.findings)],
            "files": [f.to_dict() for f in self.files],
        }

    def render_text(self) -> str:
        """One line per finding, ``path:/object: CODE message``, sorted."""
        return "\n".join(str(f) for f in sorted(self.findings))

    def render_summary(self) -> str:
        """One line; its words are the keys of :meth:`to_dict` (``info``, not "notes")."""
        c = self.counts()
        valid = sum(len(f.groups) for f in self.files)
        invalid = sum(len(f.invalid_groups) for f in self.files)
        verdict = "OK" if self.ok else "PROBLEMS FOUND"
        groups = f"{valid} group(s) checked"
        if invalid:
            groups = f"{valid + invalid} group(s) checked, {invalid} invalid"
        return (
            f"{verdict}: {len(self.files)} file(s), {groups}; "
            f"{c['error']} error(s), {c['warning']} warning(s), {c['info']} info"
        )

    def render_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
