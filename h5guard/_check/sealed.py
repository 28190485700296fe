"""The deep layer's fast path: a sealed shard checked by the byte reader, without libhdf5.

A shard whose seal matches (:mod:`h5guard._format.seal`) holds exactly the bytes its
writer committed. The deep check of such a shard needs no libhdf5: the independent
byte reader (:mod:`h5guard._format.bytes`) reads its root attributes (format, schema)
and its root links, recomputes every group's digest from the bytes and describes the
group for the schema, as the libhdf5 path's own fast groups do
(:class:`h5guard._check.own._FastGroups`); the seal vouches for the metadata checksums
libhdf5 would have verified while loading each header.

Only a shard that passes everything is answered here: anything else (no seal or one
that does not match, a construct the byte reader does not parse, a digest that
differs, a schema violation, a root member with a reserved name) is left to the
libhdf5 path (:func:`h5guard._check.deep.inspect_file`), which says exactly what is
wrong. So the verdict on a file is the one the libhdf5 path gives; this path only gives
it sooner for the files that pass.

:func:`inspect_sealed` is what a sandbox child runs on a batch of files: one round trip
for many files, each file's seal hashed in the child that then reads it.
"""

from __future__ import annotations

import logging
import mmap
import os
from collections.abc import Sequence

from h5guard._check.inspector import Inspector, pick_schema
from h5guard._check.own import is_result_member
from h5guard._format import bytes as bytes_reader
from h5guard._format import seal as _seal
from h5guard._format import summary as _summary
from h5guard._format.names import FORMAT_ATTR, SCHEMA_ATTR, SHARD_FORMAT
from h5guard.report import FileKind, FileSummary, Finding, Severity

log = logging.getLogger(__name__)

Answer = tuple[list[Finding], FileSummary]


def inspect_sealed(
    paths: Sequence[str], schema_json: str | None = None
) -> list[tuple[bool | None, Answer | None]]:
    """Check each sealed shard of ``paths`` with the byte reader alone.

    Parameters
    ----------
    paths
        Files the quick layer passed (h5guard shards, most likely).
    schema_json
        The schema to apply, as JSON; None: the one each file embeds, if any.

    Returns
    -------
    list
        Per path, ``(seal, answer)``: ``seal`` as :func:`h5guard._format.seal.check_seal`
        says (True, False, or None without a seal); ``answer`` the findings and summary
        :func:`h5guard._check.deep.inspect_file` would give, or None when the file must
        be read through libhdf5 to say.
    """
    out: list[tuple[bool | None, Answer | None]] = []
    for path in paths:
        try:
            out.append(_inspect(path, schema_json))
        except Exception as err:  # whatever it is, the libhdf5 path names it
            log.debug("%s: not checked by the byte reader (%s)", path, err)
            out.append((None, None))
    return out


def _inspect(path: str, schema_json: str | None) -> tuple[bool | None, Answer | None]:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        seal = _seal.check_seal_fd(fd)
        if seal is not True:
            return seal, None
        size = os.fstat(fd).st_size
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as buf:
            try:
                return seal, _read(path, buf, size, schema_json)
            except (bytes_reader.Unsupported, bytes_reader.Malformed) as err:
                log.debug("%s: left to libhdf5 (%s)", path, err)
                return seal, None
    finally:
        os.close(fd)


def reserved_member_ok(buf: mmap.mmap, base: int, name: str, addr: int) -> bool:
    """Whether a root member with a reserved name (one of h5guard's own tables, see
    :func:`h5guard._check.own.is_result_member`) is one the byte reader verifies:
    the summary table, checked by :func:`summary_problems` once the groups are read.

    The byte reader's hook for those tables, beside the libhdf5 path's
    (:func:`h5guard._check.own.inspect_reserved`). False leaves the file to the libhdf5
    path.
    """
    return name == _summary.NAME


def summary_problems(
    buf: mmap.mmap, base: int, addr: int, groups: dict[str, str | None]
) -> list[str] | None:
    """What is wrong with the summary at ``addr`` given the verified ``groups`` (its
    digest, its key set, each row's digest), or None if the byte reader cannot read it."""
    try:
        table, stored = _summary.load_bytes(buf, base, addr, f"/{_summary.NAME}")
    except (bytes_reader.Unsupported, bytes_reader.Malformed, _summary.SummaryError):
        return None
    return _summary.problems(table, stored, groups)


def _text(attrs: dict[str, bytes], name: str) -> str | None:
    value = attrs.get(name)
    return None if value is None else value.rstrip(b"\0").decode("utf-8", "replace")


def _read(path: str, buf: mmap.mmap, size: int, schema_json: str | None) -> Answer | None:
    base, attrs, links = bytes_reader.root_group(buf)
    if _text(attrs, FORMAT_ATTR) != SHARD_FORMAT:
        return None  # only shards carry seals
    embedded = _text(attrs, SCHEMA_ATTR)
    ins = Inspector(path, None)
    ins.owned = True
    ins.schema = pick_schema(ins, schema_json, embedded)
    if any(f.severity >= Severity.WARNING for f in ins.findings):
        return None  # an embedded schema that does not parse: the libhdf5 path reports it
    describe = ins.schema is not None
    tables: list[int] = []
    for name in sorted(links):
        try:
            key = name.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if not is_result_member(key):
            if not reserved_member_ok(buf, base, key, links[name]):
                return None
            tables.append(links[name])
            continue
        computed, stored, description, _ = bytes_reader.read_group_at(
            buf, base, links[name], describe=describe
        )
        if stored is None or computed != stored:
            return None
        if (
            ins.schema is not None
            and description is not None
            and ins.schema.check_group(description)
        ):
            return None
        ins.groups[key] = stored
    for addr in tables:
        # Any disagreement is left to the libhdf5 path, which reports SUMMARY_MISMATCH.
        if summary_problems(buf, base, addr, dict(ins.groups)) != []:
            return None
    summary = FileSummary(
        path,
        FileKind.SHARD,
        size,
        groups=ins.groups,
        schema_json=embedded if embedded is not None else schema_json,
    )
    return ins.findings, summary
