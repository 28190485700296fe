"""h5guard: never lose a result of a parallel HDF5-producing run.

* :class:`ShardWriter` writes results as committed, immutable, digest-carrying shards.
* :func:`validate` / :func:`check` tell exactly what is wrong with a file.
* :func:`merge` merges shards into one output under a lock, crash-safely;
  :func:`compact` makes a segmented output one self-contained file again.
* :func:`salvage` recovers what a crashed run that wrote without h5guard left behind.
* :func:`read` / :func:`iter_results` / :func:`to_dataframe` give results back as they
  were added (:class:`Dataset` and :class:`Group` carry attributes inside a result).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from h5guard._version import __version__

if TYPE_CHECKING:
    from h5guard._check.api import check, validate, validate_many
    from h5guard._liveness import WriterIdentity, writer_identity
    from h5guard._lock import exclusive
    from h5guard._merge.compact import compact
    from h5guard._merge.output import Quarantined, record_output
    from h5guard._merge.plan import MergePlan, plan_merge
    from h5guard._merge.run import MergeReport, merge
    from h5guard._reading import Dataset, Group, Result, iter_results, read
    from h5guard._salvage.api import FileSalvage, SalvageReport, salvage
    from h5guard._sandbox import Sandbox, SandboxResult
    from h5guard._table import to_dataframe
    from h5guard._writer import ShardWriter
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
        SettingError,
        UnreadableOutputError,
        UnsupportedValueError,
        WriteError,
        WriterClosedError,
        WriterTransferError,
    )
    from h5guard.report import Code, FileKind, FileSummary, Finding, Report, Severity
    from h5guard.schema import AttrSpec, DatasetSpec, GroupSpec, Schema

# Each public name is imported from its module on first use (PEP 562): ``h5guard check
# --quick`` and other light commands then never import h5py (about 0.3 s per call).
# No module is named like a function it exports, so importing a submodule never rebinds
# a public name of the package.
_HOMES = {
    "exclusive": "_lock",
    **dict.fromkeys(("WriterIdentity", "writer_identity"), "_liveness"),
    **dict.fromkeys(("Dataset", "Group", "Result", "iter_results", "read"), "_reading"),
    "to_dataframe": "_table",
    **dict.fromkeys(
        (
            "DigestMismatchError",
            "DuplicateKeyError",
            "H5GuardError",
            "InsufficientSpaceError",
            "InvalidKeyError",
            "LockTimeoutError",
            "MergeSourceError",
            "MissingDependencyError",
            "ResultLimitError",
            "ResultNotFoundError",
            "SandboxError",
            "SchemaError",
            "SettingError",
            "UnreadableOutputError",
            "UnsupportedValueError",
            "WriteError",
            "WriterClosedError",
            "WriterTransferError",
        ),
        "errors",
    ),
    **dict.fromkeys(("Quarantined", "record_output"), "_merge.output"),
    **dict.fromkeys(("MergePlan", "plan_merge"), "_merge.plan"),
    **dict.fromkeys(("MergeReport", "merge"), "_merge.run"),
    "compact": "_merge.compact",
    **dict.fromkeys(("Code", "FileKind", "FileSummary", "Finding", "Report", "Severity"), "report"),
    **dict.fromkeys(("FileSalvage", "SalvageReport", "salvage"), "_salvage.api"),
    **dict.fromkeys(("Sandbox", "SandboxResult"), "_sandbox"),
    **dict.fromkeys(("AttrSpec", "DatasetSpec", "GroupSpec", "Schema"), "schema"),
    "ShardWriter": "_writer",
    **dict.fromkeys(("check", "validate", "validate_many"), "_check.api"),
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'h5guard' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"h5guard.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))


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
    "SettingError",
    "Severity",
    "ShardWriter",
    "UnreadableOutputError",
    "UnsupportedValueError",
    "WriteError",
    "WriterClosedError",
    "WriterIdentity",
    "WriterTransferError",
    "__version__",
    "check",
    "compact",
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
    "writer_identity",
]
