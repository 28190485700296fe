"""h5guard: never lose a result of a parallel HDF5-producing run.

* :class:`ShardWriter` writes results as committed, immutable, digest-carrying shards.
* :func:`validate` / :func:`check` tell exactly what is wrong with a file.
* :func:`merge` merges shards into one output under a lock, crash-safely.
* :func:`salvage` recovers what a crashed run that wrote without h5guard left behind.
* :func:`read` / :func:`iter_results` / :func:`to_dataframe` give results back as they
  were added (:class:`Dataset` and :class:`Group` carry attributes inside a result).
"""

from __future__ import annotations

from h5guard._lock import exclusive
from h5guard._read import Dataset, Group, Result, iter_results, read, to_dataframe
from h5guard._version import __version__
from h5guard.errors import (
    DigestMismatchError,
    DuplicateKeyError,
    H5GuardError,
    InsufficientSpaceError,
    InvalidKeyError,
    LockTimeoutError,
    MergeSourceError,
    MissingDependencyError,
    ResultLimitError,
    ResultNotFoundError,
    SandboxError,
    SchemaError,
    UnreadableOutputError,
    UnsupportedValueError,
    WriteError,
    WriterClosedError,
    WriterTransferError,
)
from h5guard.merge import MergePlan, MergeReport, Quarantined, merge, plan_merge, record_output
from h5guard.report import Code, FileKind, FileSummary, Finding, Report, Severity
from h5guard.salvage import FileSalvage, SalvageReport, salvage
from h5guard.sandbox import Sandbox, SandboxResult
from h5guard.schema import AttrSpec, DatasetSpec, GroupSpec, Schema
from h5guard.shards import ShardWriter
from h5guard.validate import check, validate, validate_many

__all__ = [
    "AttrSpec",
    "Code",
    "Dataset",
    "DatasetSpec",
    "DigestMismatchError",
    "DuplicateKeyError",
    "FileKind",
    "FileSalvage",
    "FileSummary",
    "Finding",
    "Group",
    "GroupSpec",
    "H5GuardError",
    "InsufficientSpaceError",
    "InvalidKeyError",
    "LockTimeoutError",
    "MergePlan",
    "MergeReport",
    "MergeSourceError",
    "MissingDependencyError",
    "Quarantined",
    "Report",
    "Result",
    "ResultLimitError",
    "ResultNotFoundError",
    "SalvageReport",
    "Sandbox",
    "SandboxError",
    "SandboxResult",
    "Schema",
    "SchemaError",
    "Severity",
    "ShardWriter",
    "UnreadableOutputError",
    "UnsupportedValueError",
    "WriteError",
    "WriterClosedError",
    "WriterTransferError",
    "__version__",
    "check",
    "exclusive",
    "iter_results",
    "merge",
    "plan_merge",
    "read",
    "record_output",
    "salvage",
    "to_dataframe",
    "validate",
    "validate_many",
]
