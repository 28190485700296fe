"""h5guard: never lose a result of a parallel HDF5-producing run.

* :class:`ShardWriter` writes results as committed, immutable, digest-carrying shards.
* :func:`validate` / :func:`check` tell exactly what is wrong with a file.
* :func:`merge` merges shards into one output under a lock, crash-safely.
* :func:`salvage` recovers what a crashed run that wrote without h5guard left behind.
"""

from __future__ import annotations

from h5guard._lock import exclusive
from h5guard._version import __version__
from h5guard.errors import (
    DuplicateKeyError,
    H5GuardError,
    InsufficientSpaceError,
    InvalidKeyError,
    LockTimeoutError,
    MergeSourceError,
    SandboxError,
    SchemaError,
    UnreadableOutputError,
    WriteError,
    WriterClosedError,
    WriterTransferError,
)
from h5guard.merge import MergePlan, MergeReport, Quarantined, merge, plan_merge, record_output
from h5guard.report import Code, FileKind, FileSummary, Finding, Report, Severity
from h5guard.salvage import FileSalvage, SalvageReport, salvage
from h5guard.sandbox import Sandbox, SandboxResult
from h5guard.schema import AttrSpec, DatasetSpec, Schema
from h5guard.shards import ShardWriter
from h5guard.validate import check, validate, validate_many

__all__ = [
    "AttrSpec",
    "Code",
    "DatasetSpec",
    "DuplicateKeyError",
    "FileKind",
    "FileSalvage",
    "FileSummary",
    "Finding",
    "H5GuardError",
    "InsufficientSpaceError",
    "InvalidKeyError",
    "LockTimeoutError",
    "MergePlan",
    "MergeReport",
    "MergeSourceError",
    "Quarantined",
    "Report",
    "SalvageReport",
    "Sandbox",
    "SandboxError",
    "SandboxResult",
    "Schema",
    "SchemaError",
    "Severity",
    "ShardWriter",
    "UnreadableOutputError",
    "WriteError",
    "WriterClosedError",
    "WriterTransferError",
    "__version__",
    "check",
    "exclusive",
    "merge",
    "plan_merge",
    "record_output",
    "salvage",
    "validate",
    "validate_many",
]
