"""The merge's output: where it is recorded, the file it looks keys up in, how the new
output is built (:func:`write_partial`), and quarantine, where bad shards go.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from h5guard import _atomic
from h5guard._check.api import QUARANTINE_DIR, validate_many
from h5guard._format import names, reader, segments, write
from h5guard._format import summary as _summary
from h5guard._version import __version__
from h5guard.errors import UnreadableOutputError, WriteError
from h5guard.report import FileSummary, Severity
from h5guard.schema import Schema

log = logging.getLogger(__name__)

RECORD_FILE = ".h5guard-output.json"
GROUPS_ATTR = "h5guard_groups"
SOURCES_ATTR = "h5guard_sources"  # JSON {shard file name: its file attributes}
LAST_MERGE_ATTR = "h5guard_last_merge"


def record_output(shard_dir: str | os.PathLike[str], output: str | os.PathLike[str]) -> None:
    """Remember in ``shard_dir`` which output its shards belong to.

    ``h5guard merge DIR``, :func:`h5guard.merge` and :func:`h5guard.plan_merge` then
    need no output argument for that directory.

    Parameters
    ----------
    shard_dir : str or os.PathLike
        The directory of shards; the record is the file ``.h5guard-output.json`` in it,
        replaced atomically.
    output : str or os.PathLike
        The output file (stored as an absolute path).

    Raises
    ------
    OSError
        The record could not be written.
    """
    record = Path(shard_dir) / RECORD_FILE
    tmp = record.with_name(f"{record.name}.{uuid.uuid4().hex[:12]}.tmp")
    _write_new(tmp, json.dumps({"output": os.path.abspath(output)}).encode("utf-8"))
    _atomic.commit_file(tmp, record)


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` exclusively (never through a link) and write ``data`` (the commit fsyncs it)."""
    fd = _atomic.create_exclusive(path)
    try:
        _atomic.write_fd(fd, data)
    except BaseException:
        os.close(fd)
        _atomic.remove_quietly(path)
        raise
    os.close(fd)


def recorded_output(shard_dir: str | os.PathLike[str]) -> str | None:
    """The output recorded by :func:`record_output` for ``shard_dir``.

    Parameters
    ----------
    shard_dir : str or os.PathLike
        The directory of shards.

    Returns
    -------
    str or None
        The recorded absolute output path, or None when none (or an unreadable
        record) is there.
    """
    try:
        data = json.loads((Path(shard_dir) / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    out = data.get("output") if isinstance(data, dict) else None
    return out if isinstance(out, str) else None


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A shard (or a gone writer's journal) moved to ``quarantine/``, and why.

    Attributes
    ----------
    path : str
        Where it is now (inside ``quarantine/``; a JSON note with the reasons is beside it).
    reasons : tuple of str
        The findings that condemned it, each ``path:/object: CODE message``.
    """

    path: str
    reasons: tuple[str, ...]


class Output:
    """The existing output, opened read-only in-process to look keys up.

    Only the keys a merge brings are looked up, so an incremental merge costs what it
    adds, not what the output already holds. The quick layer vets the file first; it
    is a file this library wrote (and verified) in an earlier merge.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.file: h5py.File | None = None
        self.schema_json: str | None = None
        self.count = 0
        self.index: segments.Index | None = None  # set when the output is an index
        self._segments: dict[str, h5py.File] = {}
        if not path or not os.path.exists(path):
            return
        quick = validate_many([path], deep=False)
        errors = [f for f in quick.findings if f.severity is Severity.ERROR]
        if errors:
            raise UnreadableOutputError(
                f"{path}: existing output is damaged, left untouched: {errors[0].code} {errors[0].message}"
            )
        try:
            self.file = h5py.File(path, "r", locking=False)
            root = reader.text_attrs(self.file, (names.SCHEMA_ATTR, *segments.INDEX_ATTRS))
            fmt = root.get(names.FORMAT_ATTR)
            self.schema_json = root.get(names.SCHEMA_ATTR)
            if fmt == segments.INDEX_FORMAT:
                self.index = segments.open_index(self.file, path, root)
                self.count = self.index.groups
            else:
                self.count = _summary.result_count(self.file)
        except Exception as err:
            self.close()
            if isinstance(err, UnreadableOutputError):
                raise UnreadableOutputError(f"{err}; left untouched") from err
            raise UnreadableOutputError(
                f"{path}: existing output could not be opened ({_one_line(err)}); left untouched"
            ) from err
        if fmt not in (names.OUTPUT_FORMAT, names.SHARD_FORMAT, segments.INDEX_FORMAT):
            self.close()
            found = f"format {fmt!r}" if fmt else "an HDF5 file h5guard did not write"
            raise UnreadableOutputError(
                f"{path}: expected an h5guard output, found {found}; "
                "merge into a new output, or salvage it first"
            )

    def _holder(self, key: str) -> tuple[h5py.File, str] | None:
        """The file that holds ``key`` (the output, or its segment) and its name there."""
        if self.file is None:
            return None
        if self.index is None:
            return self.file, self.path
        seg = segments.target(self.file, self.index, key)
        if seg is None:
            return None
        if seg not in self._segments:
            quick = validate_many([seg], deep=False)
            errors = [f for f in quick.findings if f.severity is Severity.ERROR]
            if errors:
                raise UnreadableOutputError(
                    f"{seg}: segment of {self.path} is damaged, left untouched: "
                    f"{errors[0].code} {errors[0].message}"
                )
            self._segments[seg] = segments.open_segment(seg)
        return self._segments[seg], seg

    def digest(self, key: str) -> str | None:
        """The digest of ``key`` in the output, or None if the output has no such group."""
        try:
            holder = self._holder(key)
        except UnreadableOutputError as err:
            raise UnreadableOutputError(f"{err}; left untouched") from err
        if holder is None:
            return None
        f, where = holder
        name = key.encode("utf-8")
        try:
            if not f.id.links.exists(name):
                return None
            aid = h5py.h5a.open(f.id, names.DIGEST_ATTR.encode(), obj_name=name)
            value = reader.read_attr_id(aid)
        except KeyError:
            value = None
        except Exception as err:
            raise UnreadableOutputError(
                f"{where}:/{key}: existing output group unreadable ({_one_line(err)}); left untouched"
            ) from err
        if value is None:
            raise UnreadableOutputError(f"{where}: group {key!r} has no digest; left untouched")
        return bytes(np.asarray(value)[()]).decode("utf-8", "replace")

    def keys(self) -> frozenset[str]:
        """Every key of the output (an index lists them in its links, never followed)."""
        if self.file is None:
            return frozenset()
        if self.index is not None:
            return frozenset(reader.member_names(self.file.id))
        return frozenset(_summary.result_names(self.file))

    def close(self) -> None:
        for f in self._segments.values():
            f.close()
        self._segments.clear()
        if self.file is not None:
            reader.close_file(self.file)
            self.file = None


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def quarantine(path: str, reasons: Sequence[str], directory: str) -> Quarantined:
    """Move ``path`` to ``directory/quarantine/`` beside a JSON note of its ``reasons``.

    Parameters
    ----------
    path : str
        The shard (or journal) to move.
    reasons : sequence of str
        Why, for the note.
    directory : str
        The shard directory.

    Returns
    -------
    Quarantined
        Where it is now, and why.

    Raises
    ------
    WriteError
        ``quarantine/`` is a symbolic link or no directory (never followed), or a step
        failed; the message names the file and the step.
    """
    qdir = Path(directory) / QUARANTINE_DIR
    _atomic.require_real_dir(qdir, create=True)
    # Never replace an earlier quarantined file (or a link) of the same name. A note
    # alone is what a merge killed between the note and the move left: its file is the
    # one being quarantined now, under the same name, and the note is replaced.
    name, n = Path(path).name, 0
    while os.path.lexists(qdir / name) or (
        os.path.islink(qdir / (name + ".json")) or os.path.isdir(qdir / (name + ".json"))
    ):
        n += 1
        name = f"{Path(path).stem}.{n}{Path(path).suffix}"
    target = qdir / name
    note = qdir / (name + ".json")
    tmp = note.with_name(f"{note.name}.{uuid.uuid4().hex[:12]}.tmp")
    text = json.dumps(
        {
            "file": Path(path).name,
            "quarantined": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "reasons": list(reasons),
        },
        indent=2,
    )
    step, where = "writing its note", str(note)
    try:
        # The note first: a crash between the two leaves a note without a file (harmless,
        # the next merge quarantines again), never a file without its reason.
        _write_new(tmp, text.encode("utf-8"))
        _atomic.commit_file(tmp, note)
        step, where = f"moving it to {target}", path
        os.replace(path, target)
        step, where = "making the move durable", str(qdir)
        _atomic.fsync_dir(qdir)
        _atomic.fsync_dir(directory)
    except OSError as err:
        if isinstance(err, WriteError):
            raise
        raise WriteError(where, f"quarantining {path} failed while {step}", err) from err
    log.warning("quarantined %s: %s", path, reasons[0] if reasons else "")
    return Quarantined(str(target), tuple(reasons))


def write_partial(
    output: str,
    partial: str,
    *,
    shards: Sequence[str],
    summaries: Mapping[str, FileSummary],
    new: Mapping[str, str | None],
    existing_groups: int,
    schema: Schema | None,
    root_attrs: Mapping[str, Any],
    reserve: int = 0,
    inherit_sources: bool = False,
) -> dict[str, tuple[int, str]]:
    """Build the new output in ``partial``: a byte copy of ``output`` plus the new groups.

    The one function that fills a new output file, a new segment of a segmented output
    (``output`` is then ""), or a compacted output (the "shards" are the segments) with
    groups.

    ``partial`` is created exclusively (whatever was under its name, a crashed merge's
    leftover or a planted link, is removed first, never followed) and ``reserve`` bytes
    of it are allocated before libhdf5 writes into it, so that libhdf5 does not meet a
    full disk; its close gives the unused part back.

    Parameters
    ----------
    output, partial : str
        The existing output (may not exist yet) and the file to build.
    shards : sequence of str
        The valid shards, in merge order; the first holding a new key gives its group.
    summaries : mapping of str to FileSummary
        Each shard's summary (its keys).
    new : mapping of str to str or None
        The keys to add, with their digests.
    existing_groups : int
        Groups already in ``output``.
    schema : Schema or None
        The schema the output embeds.
    root_attrs : mapping of str to Any
        The caller's root attributes.
    reserve : int
        Bytes the new output may take (0: no reservation).
    inherit_sources : bool
        The sources are outputs (a compaction): keep the shards each one records
        instead of recording the sources themselves.

    Returns
    -------
    dict of str to (int, str)
        Each added group's object header address and digest, for the verification.

    Raises
    ------
    InsufficientSpaceError
        ``reserve`` bytes cannot be allocated; ``partial`` is removed.
    """
    start_partial(output, partial, reserve)
    f = h5py.File(partial, "r+", libver=names.LIBVER, locking=False)
    added: dict[str, tuple[int, str]] = {}
    todo = set(new)
    sources: dict[str, dict[str, Any]] = {}
    try:
        table = _summary.Merging(f, partial)  # the existing output's rows
        if SOURCES_ATTR in f.attrs:
            sources = json.loads(reader.text_attr(f, SOURCES_ATTR) or "{}")
        for shard in shards:
            keys = [k for k in sorted(summaries[shard].groups) if k in todo]
            if not keys:
                continue
            src = h5py.File(shard, "r", locking=False)
            try:
                if inherit_sources:
                    sources.update(json.loads(reader.text_attr(src, SOURCES_ATTR) or "{}"))
                elif attrs := _file_attrs(src):
                    sources[os.path.basename(shard)] = attrs
                for key in keys:
                    link = key.encode("utf-8")
                    # The low-level call: h5py's Group.copy spends as long resolving its
                    # arguments as libhdf5 spends copying a small group.
                    h5py.h5o.copy(src.id, link, f.id, link, lcpl=write.LINK_CREATE_UTF8)
                    # The link's target (a hard link's address): no header loaded for it.
                    added[key] = (f.id.links.get_info(link).u, str(new[key]))
                    todo.discard(key)
                table.take(src, keys, shard)
            finally:
                reader.close_file(src)  # 1 ms a shard saved
        f.attrs[names.FORMAT_ATTR] = np.bytes_(names.OUTPUT_FORMAT.encode())
        f.attrs[names.VERSION_ATTR] = np.bytes_(__version__.encode())
        if schema is not None:
            f.attrs[names.SCHEMA_ATTR] = np.bytes_(schema.to_json().encode())
        f.attrs[GROUPS_ATTR] = np.int64(existing_groups + len(added))
        f.attrs[LAST_MERGE_ATTR] = np.bytes_(
            _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").encode()
        )
        for name, value in root_attrs.items():
            write.write_attr(f, name, write.normalize_value(name, value))
        if sources:
            text = json.dumps(sources, sort_keys=True, ensure_ascii=False)
            write.write_attr(f, SOURCES_ATTR, np.array(text.encode(), dtype=np.bytes_))
        table.write(f)
    finally:
        f.close()
    return added


def start_partial(output: str, partial: str, reserve: int) -> None:
    """``partial`` as a new file: the bytes of ``output`` (or an empty HDF5 file), reserved."""
    _atomic.clear_own_name(partial)
    if os.path.exists(output):
        _atomic.copy_file(output, partial)  # creates partial exclusively
        fd = os.open(partial, os.O_RDWR | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
        try:
            size = os.fstat(fd).st_size
            _atomic.reserve(fd, max(reserve, size), path=partial, waiting=f"{output} is unchanged")
        except BaseException:
            os.close(fd)
            _atomic.remove_quietly(partial)
            raise
        os.close(fd)
        return
    fd = _atomic.create_exclusive(partial, read=True)
    try:
        with h5py.File(
            f"/proc/self/fdinfo/h5guard-output-image-{os.getpid()}-{uuid.uuid4().hex}",
            "w",
            driver="core",
            backing_store=False,
            libver=names.LIBVER,
            locking=False,
        ) as f:
            f.flush()
            image = f.id.get_file_image()
        _atomic.reserve(fd, max(reserve, len(image)), path=partial, waiting="nothing was merged")
        _atomic.write_fd(fd, image)
    except BaseException:
        os.close(fd)
        _atomic.remove_quietly(partial)
        raise
    os.close(fd)


def _file_attrs(src: h5py.File) -> dict[str, Any]:
    """A shard's worker-level attributes (``ShardWriter(file_attrs=...)``), as JSON values."""
    out: dict[str, Any] = {}
    for name in src.attrs:
        if not name.startswith(names.RESERVED_PREFIX):
            out[name] = _jsonable(reader.read_attr(src, name))
    return out


def _jsonable(value: Any) -> Any:
    arr = np.asarray(value)
    if arr.dtype.kind == "S":
        decoded = np.char.decode(arr, "utf-8", errors="backslashreplace")
        return decoded.tolist()
    return arr.tolist()


# Below this many added groups a forked helper costs more than the half it verifies.
