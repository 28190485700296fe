"""The child side of :mod:`h5guard.salvage`: copy, patch, read and re-write one file.

Runs inside a :class:`~h5guard.Sandbox` child, because libhdf5 may hang or
crash on exactly the files salvage is for. Recovered groups never travel back to
the parent: the child writes them straight into committed shards with a
:class:`~h5guard.ShardWriter`, and returns only key lists and reasons.

What HDF5 2.0 does with files of a killed writer (measured with SIGKILLed h5py
writers, see tests/crash/test_salvage_crash.py):

* superblock v2/v3 (``libver="latest"``): the "open for write" status flags stay set
  and libhdf5 refuses the file until they are cleared (``h5clear -s``), which also
  needs the superblock checksum recomputed;
* superblock v0 (h5py's default): no flags; the file opens as of its last flush. A
  writer killed before its first flush leaves no root object header ("bad object
  header version number"): nothing to recover;
* a recorded end-of-file address *larger* than the file (truncation, or a kill inside
  a flush) makes libhdf5 refuse the file ("truncated file"); set to the real size, it
  opens, and any read past the real data fails instead of returning zeros;
* a recorded end-of-file address *smaller* than the file is normal (everything
  written since the last flush lies beyond it) and harmless, unless metadata written
  after the last completed flush (a cache eviction, or a kill inside ``flush()``)
  made the root's index point past it ("addr overflow"): raising the address to the
  real size then makes those entries readable;
* a kill inside ``flush()`` can also tear the root's index (a node and its parent
  from different flushes). Iteration stops at the first bad node, so the root is
  listed from both ends and index by index, and whatever can be named is read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt
from numpy.lib import recfunctions as rfn

from h5guard._check.inspector import one_line as _one_line
from h5guard._check.quick import SuperblockInfo, quick_check
from h5guard._format import digest as digests
from h5guard._format import names, reader, tree
from h5guard._format import write as layout
from h5guard._format.checksum import lookup3
from h5guard._format.names import RESERVED_PREFIX, UNDEFINED
from h5guard._format.tree import Dataset, Group
from h5guard._shard import SHARD_SUFFIX
from h5guard._writer import ShardWriter
from h5guard.errors import (
    InsufficientSpaceError,
    InvalidKeyError,
    ResultLimitError,
    UnsupportedValueError,
)
from h5guard.report import Severity
from h5guard.schema import Schema

log = logging.getLogger(__name__)

SALVAGE_PREFIX = "salvaged"
SOURCE_ATTR = "salvaged_from"
RUN_ATTR = "salvage_run"
# Small batches: a reader killed midway loses (and a resumed one redoes) at most this
# many groups, and the fsync per commit is cheap next to reading damaged files.
COMMIT_EVERY = 200


@dataclass(frozen=True, slots=True)
class FileOutcome:
    """What one salvage call did with one file (sent back to the parent)."""

    recovered: tuple[str, ...] = ()
    lost: tuple[tuple[str, str], ...] = ()
    shards: tuple[str, ...] = ()
    fatal: str | None = None  # the file as a whole could not be read
    notes: tuple[str, ...] = ()
    incomplete: str | None = None  # why some top-level names could not be listed


class _Lost(Exception):
    """A group that cannot be salvaged, and why (a one-line reason)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Progress:
    """Where the child is, on disk, so the parent can tell which group hung or crashed it."""

    def __init__(self, path: str) -> None:
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def at(self, stage: str, key: str | None = None) -> None:
        self._fh.write(json.dumps({"stage": stage, "key": key}) + "\n")
        # No fsync: only this machine's parent reads it, and the page cache outlives us.
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_progress(path: str) -> tuple[str | None, str | None, int]:
    """The last ``(stage, key)`` a child recorded in ``path``, and how many groups it began."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None, None, 0
    entries: list[dict[str, Any]] = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut short by the kill
        if isinstance(entry, dict):
            entries.append(entry)
    if not entries:
        return None, None, 0
    stage, key = entries[-1].get("stage"), entries[-1].get("key")
    return (
        stage if isinstance(stage, str) else None,
        key if isinstance(key, str) else None,
        sum(1 for e in entries if e.get("stage") == "group"),
    )


# -- the superblock ------------------------------------------------------------------
def _eof_field(info: SuperblockInfo, head: bytes | bytearray) -> tuple[int, int]:
    """``(position, size)`` of the end-of-file address inside the superblock bytes."""
    if info.version in (2, 3):
        size = head[9]
        return 12 + 2 * size, size
    size = head[13]
    fixed = 24 if info.version == 0 else 28
    return fixed + 2 * size, size


def patch_superblock(path: str, *, raise_eof: bool) -> tuple[str, ...]:
    """Make a copy openable: clear the write flags, fix the end-of-file address.

    The address is lowered to the real size when it points past the end; with
    ``raise_eof`` it is also raised to the real size when it points short of it.
    Returns what was changed, as notes. Raises ``_Lost`` if the superblock is unusable.
    """
    findings, info = quick_check(path)
    if info is None:
        problem = next((f for f in findings if f.severity is Severity.ERROR), None)
        raise _Lost(f"{problem.code} {problem.message}" if problem else "superblock unusable")
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.seek(info.offset)
        head = bytearray(fh.read(256))
        original = bytes(head)
        notes: list[str] = []
        if info.version in (2, 3) and info.open_for_write:
            head[11] = 0  # what `h5clear -s` does: a killed writer holds no access any more
            notes.append("cleared the 'open for write' flags a killed writer left set")
        pos, width = _eof_field(info, head)
        recorded = info.eof_address
        if recorded == UNDEFINED or recorded > size or (raise_eof and recorded < size):
            head[pos : pos + width] = (size - info.base_address).to_bytes(width, "little")
            shown = "undefined" if recorded == UNDEFINED else f"{recorded} bytes"
            notes.append(f"end-of-file address set from {shown} to the real size, {size} bytes")
        if info.version in (2, 3) and head != original:
            end = 12 + 4 * head[9]
            head[end : end + 4] = lookup3(bytes(head[:end])).to_bytes(4, "little")
        if head != original:
            fh.seek(info.offset)
            fh.write(head)
    return tuple(notes)


def _recorded_eof_short(path: str) -> bool:
    _, info = quick_check(path)
    return info is not None and info.eof_address < os.path.getsize(path)


def _list_root(f: h5py.File) -> tuple[list[str], str | None]:
    """Top-level names, as many as can be read, and why the listing is incomplete.

    A damaged node of the root's index stops iteration there; the names read before
    it are still good, iterating from the other end reaches those past it, and
    asking index by index skips entries whose names alone are damaged.
    """
    names: dict[str, None] = {}

    def collect(raw: bytes) -> None:
        names[raw.decode("utf-8", errors="surrogateescape")] = None

    try:
        f.id.links.iterate(collect)
        return list(names), None
    except Exception as err:
        problem = _one_line(err)
    # Sorted orders of dense (libver >= v18) storage first build a table of all links,
    # which fails as a whole; only the native order walks the index node by node.
    for order in (h5py.h5.ITER_NATIVE, h5py.h5.ITER_DEC):
        with contextlib.suppress(Exception):
            f.id.links.iterate(collect, order=order)
    try:
        count = f.id.get_num_objs()
    except Exception:
        count = 0
    for i in range(count):
        try:
            raw = f.id.get_objname_by_idx(i)
        except Exception as err:
            log.debug("root entry %d unreadable: %s", i, err)
            continue
        if raw:
            collect(raw)
    return sorted(names, key=lambda n: n.encode("utf-8", errors="surrogateescape")), problem


def _open(copy: str) -> tuple[h5py.File | None, list[str], str | None]:
    """Open a patched copy and list its root: ``(file, names, problem)``."""
    try:
        f = h5py.File(copy, "r", locking=False)
    except Exception as err:
        return None, [], f"HDF5 cannot open it: {_one_line(err)}"
    try:
        names, problem = _list_root(f)
    except Exception as err:  # the root object itself is unreadable
        f.close()
        return None, [], f"HDF5 cannot read the root group: {_one_line(err)}"
    if problem is not None:
        problem = f"the root group's index is damaged: {problem}"
    return f, names, problem


# -- reading one group ---------------------------------------------------------------
def _decode_vlen(raw: npt.NDArray[Any], what: str) -> npt.NDArray[Any]:
    texts: list[str] = []
    for item in raw.reshape(-1):
        if isinstance(item, bytes):
            try:
                text = item.decode("utf-8")
            except UnicodeDecodeError as err:
                raise _Lost(
                    f"{what}: expected UTF-8 text, found byte {item[err.start]:#04x} at {err.start}"
                ) from err
        elif isinstance(item, str):
            text = item
        else:
            raise _Lost(f"{what}: expected strings, found {type(item).__name__}")
        if text.endswith("\0"):
            raise _Lost(f"{what}: a string ends in NUL, which a fixed-length string drops")
        texts.append(text)
    return np.array(texts if raw.ndim else texts[0], dtype=str).reshape(raw.shape)


def _is_vlen_string(dtype: np.dtype[Any]) -> bool:
    info = h5py.check_string_dtype(dtype)
    return info is not None and info.length is None


def _read_attribute(obj: Any, name: str) -> tuple[npt.NDArray[Any], bool]:
    """An attribute's stored value, and whether it was a variable-length string."""
    what = f"attribute {name!r}"
    aid = h5py.h5a.open(obj.id, name.encode("utf-8"))
    if aid.shape is None:
        raise _Lost(f"{what} has a null dataspace (no value); shards cannot store it")
    dtype = aid.dtype
    out: npt.NDArray[Any] = np.empty(aid.shape, dtype=dtype)
    aid.read(out)
    if _is_vlen_string(dtype):
        return _decode_vlen(out, what), True
    return out, False


def _read_dataset(dset: h5py.Dataset, name: str) -> tuple[npt.NDArray[Any], bool]:
    """A dataset's stored value, and whether it was a variable-length string."""
    what = f"dataset {name!r}"
    if dset.shape is None:
        raise _Lost(f"{what} has a null dataspace (no value); shards cannot store it")
    dtype = dset.dtype
    if _is_vlen_string(dtype):
        return _decode_vlen(np.asarray(dset[()], dtype=object), what), True
    if dset.size:
        # Unwritten storage reads back as fill values, which would pass for data.
        if dset.id.get_storage_size() == 0:
            raise _Lost(f"{what}: no data was ever written to it (storage not allocated)")
        if dset.chunks is not None:
            expected = math.prod(
                math.ceil(n / c) for n, c in zip(dset.shape, dset.chunks, strict=True)
            )
            written = dset.id.get_num_chunks()
            if written < expected:
                raise _Lost(f"{what}: only {written} of its {expected} chunks were written")
    return reader.read_dataset_array(dset), False


def _text(value: npt.NDArray[Any]) -> str:
    item = np.asarray(value)[()]
    return bytes(item).decode("utf-8", "replace") if isinstance(item, bytes) else str(item)


class _Conversions:
    """What salvage changed to make a foreign value storable (reported per file)."""

    def __init__(self) -> None:
        self.vlen: list[str] = []
        self.repacked: list[str] = []
        self.allow_external = False  # copy data kept in other files (see _refuse_external)


def _as_given(where: str, arr: npt.NDArray[Any], vlen: bool, conv: _Conversions) -> Any:
    """A value of a file no h5guard writer digested, as ``add()`` should receive it:
    the Python object h5guard.read returns for such a stored value."""
    if vlen:
        conv.vlen.append(where)
        return str(arr[()]) if arr.ndim == 0 else arr
    if arr.dtype.names is not None:
        packed = rfn.repack_fields(arr)
        if packed.dtype.itemsize != arr.dtype.itemsize:
            conv.repacked.append(where)
        arr = np.asarray(packed)
    try:
        return tree.python_value(reader.stored_value(where, arr, None))
    except UnicodeDecodeError as err:
        raise _Lost(f"{where}: tagged UTF-8 but holds invalid UTF-8 at byte {err.start}") from err


def _foreign_attrs(obj: Any, where: str, conv: _Conversions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in obj.attrs:
        arr, vlen = _read_attribute(obj, name)
        out[name] = _as_given(f"{where}@{name}", arr, vlen, conv)
    return out


def _foreign_members(
    group: h5py.Group, where: str, depth: int, conv: _Conversions
) -> dict[str, Any]:
    if depth > names.MAX_DEPTH:
        raise _Lost(f"{where}: groups nested deeper than {names.MAX_DEPTH}")
    out: dict[str, Any] = {}
    for name in group:
        member = group.get(name, getlink=True)
        child = f"{where}/{name}"
        if not isinstance(member, h5py.HardLink):
            raise _Lost(
                f"{child} is a {type(member).__name__}; shards hold groups and datasets only"
            )
        obj = group[name]
        if isinstance(obj, h5py.Group):
            sub = _foreign_members(obj, child, depth + 1, conv)
            sub_attrs = _foreign_attrs(obj, child, conv)
            out[name] = Group(sub, sub_attrs) if sub_attrs else sub
        elif isinstance(obj, h5py.Dataset):
            arr, vlen = _read_dataset(obj, child)
            data = _as_given(child, arr, vlen, conv)
            dattrs = _foreign_attrs(obj, child, conv)
            out[name] = Dataset(data, dattrs) if dattrs else data
        else:
            raise _Lost(f"{child} is a {type(obj).__name__}; shards hold groups and datasets only")
    return out


def external_sources(dset: h5py.Dataset) -> list[str]:
    """The other files a dataset's raw data lives in: external storage, and the
    sources of a virtual dataset outside its own file (``"."``)."""
    dcpl = dset.id.get_create_plist()
    found = [_decode_name(dcpl.get_external(i)[0]) for i in range(dcpl.get_external_count())]
    if dcpl.get_layout() == h5py.h5d.VIRTUAL:
        for i in range(dcpl.get_virtual_count()):
            name = _decode_name(dcpl.get_virtual_filename(i))
            if name != "." and name not in found:
                found.append(name)
    return found


def _decode_name(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def _refuse_external(group: h5py.Group, key: str) -> None:
    """Raise ``_Lost`` naming the first dataset of ``group`` whose data is in another file.

    An untrusted file is read only where it is: external storage can name any
    readable file (a key file), and salvage would copy its bytes into the results.
    """
    problem: list[str] = []

    def visit(name: str, obj: Any) -> Any:
        if isinstance(obj, h5py.Dataset):
            sources = external_sources(obj)
            if sources:
                shown = ", ".join(sources[:3]) + (" ..." if len(sources) > 3 else "")
                problem.append(
                    f"dataset {key}/{name}: its data is stored in other file(s) ({shown}); "
                    "not read (untrusted files are read only where they are: pass "
                    "allow_external=True, --allow-external, to copy it)"
                )
                return True
        return None

    group.visititems(visit)
    if problem:
        raise _Lost(problem[0])


def _read_group(
    f: h5py.File,
    key: str,
    schema: Schema | None,
    conv: _Conversions,
    *,
    allow_external: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The datasets and attributes of result group ``key`` as ``add()`` takes them, verified
    against the group's digest when it has one. Data stored in other files is refused
    unless ``allow_external``."""
    link = f.get(key, getlink=True)
    if not isinstance(link, h5py.HardLink):
        raise _Lost(f"a {type(link).__name__} at the top level, not a result group")
    group = f[key]
    if isinstance(group, h5py.Dataset):
        raise _Lost("a dataset at the top level, not a result group (add it to ignore to skip it)")
    if not isinstance(group, h5py.Group):
        raise _Lost(f"a {type(group).__name__} at the top level, not a result group")
    if not allow_external:
        _refuse_external(group, key)
    try:
        layout.check_key(key)
    except InvalidKeyError as err:
        raise _Lost(f"cannot name a shard group: {err.reason}") from err
    stored = reader.stored_digest(group)
    if stored is not None:
        # Written by h5guard: the tree as stored, trusted only if its digest agrees.
        node = reader.read_tree(group, key)
        computed = digests.computed_digest(node, stored)
        if computed != stored:
            raise _Lost(f"{names.DIGEST_ATTR} mismatch: stored {stored}, recomputed {computed}")
        if not stored.startswith(names.DIGEST_V2_PREFIX):
            node = reader.v1_strings(node)
        datasets, attrs = tree.python_tree(node)
    else:
        datasets = _foreign_members(group, key, 0, conv)
        attrs = _foreign_attrs(group, key, conv)
    try:
        # Refuses what a shard cannot hold (reserved names, opaque data, ...) with a reason.
        root = tree.build(key, datasets, attrs)
    except (UnsupportedValueError, ResultLimitError, ValueError) as err:
        raise _Lost(str(err)) from err
    if schema is not None:
        problems = schema.check_group(tree.describe(root))
        if problems:
            p = problems[0]
            where = f" {p.obj}:" if p.obj else ""
            raise _Lost(f"schema {schema.name!r}:{where} {p.code} {p.message}")
    return datasets, attrs


# -- writing -------------------------------------------------------------------------
class _Output:
    """The salvaged shards of one source file; tracks which keys are committed."""

    def __init__(self, out_dir: str, source: str, run_id: str, schema: Schema | None) -> None:
        self._out_dir = out_dir
        self._file_attrs = {SOURCE_ATTR: source, RUN_ATTR: run_id}
        self._schema = schema
        self._writer: ShardWriter | None = None
        self._seen_keys = 0
        self._seen_shards = 0
        self.pending: list[str] = []
        self.recovered: list[str] = []
        self.shards: list[str] = []
        self.lost: list[tuple[str, str]] = []

    def _harvest(self, writer: ShardWriter) -> None:
        fresh = writer.committed_keys[self._seen_keys :]
        self._seen_keys = len(writer.committed_keys)
        self.recovered.extend(fresh)
        done = set(fresh)
        self.pending = [k for k in self.pending if k not in done]
        self.shards.extend(str(p) for p in writer.committed[self._seen_shards :])
        self._seen_shards = len(writer.committed)

    def _abandon(self, writer: ShardWriter, reason: str) -> None:
        self._harvest(writer)
        try:
            writer.discard()
        except Exception as err:  # the batch is lost either way
            log.debug("discarding a failed salvage batch: %s", err)
        self.lost.extend((k, reason) for k in self.pending)
        self.pending = []
        self._writer = None

    def add(
        self,
        key: str,
        datasets: Mapping[str, Any],
        attrs: Mapping[str, Any],
    ) -> str | None:
        """Write one group; returns why it was lost, or None."""
        if self._writer is None:
            self._writer = ShardWriter(
                self._out_dir,
                schema=self._schema,
                prefix=SALVAGE_PREFIX,
                commit_every=COMMIT_EVERY,
                file_attrs=self._file_attrs,
            )
            self._seen_keys = self._seen_shards = 0
        writer = self._writer
        try:
            writer.add(key, datasets, attrs)
        except InsufficientSpaceError as err:
            return f"not written: {err}"  # refused before anything was written
        except Exception as err:
            # A half-written group may sit in the open batch: never commit it.
            self.pending.append(key)
            self._abandon(writer, f"discarded with its shard after a write error: {_one_line(err)}")
            return None
        self.pending.append(key)
        self._harvest(writer)
        return None

    def __enter__(self) -> _Output:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        elif self._writer is not None:
            # Salvage itself failed: commit nothing more, leave no partial file behind.
            self._abandon(self._writer, "salvage stopped before its shard was committed")

    def commit(self) -> None:
        """Make every group added so far durable before a risky step."""
        writer = self._writer
        if writer is None:
            return
        try:
            writer.commit()
        except Exception as err:
            self._abandon(writer, f"its shard could not be committed: {_one_line(err)}")
            return
        self._harvest(writer)

    def close(self) -> None:
        writer = self._writer
        if writer is None:
            return
        try:
            writer.close()
        except Exception as err:
            self._abandon(writer, f"its shard could not be committed: {_one_line(err)}")
            return
        self._harvest(writer)
        self._writer = None


# -- entry points (run in the sandbox) -----------------------------------------------
def salvage_file(
    source: str,
    copy: str,
    out_dir: str,
    progress_path: str,
    run_id: str,
    ignore: tuple[str, ...],
    skip: tuple[str, ...],
    schema_json: str | None,
    allow_external: bool = False,
) -> FileOutcome:
    """Salvage ``source`` through a copy at ``copy`` into shards in ``out_dir``.

    ``skip`` are keys an earlier, interrupted call already settled; ``allow_external``:
    copy data a dataset keeps in other files too (refused by default).
    """
    progress = _Progress(progress_path)
    try:
        progress.at("copy")
        shutil.copyfile(source, copy)
        try:
            return _salvage_copy(
                source, copy, out_dir, progress, run_id, ignore, skip, schema_json, allow_external
            )
        finally:
            Path(copy).unlink(missing_ok=True)
    finally:
        progress.close()


def _salvage_copy(
    source: str,
    copy: str,
    out_dir: str,
    progress: _Progress,
    run_id: str,
    ignore: tuple[str, ...],
    skip: tuple[str, ...],
    schema_json: str | None,
    allow_external: bool,
) -> FileOutcome:
    schema = Schema.from_json(schema_json) if schema_json is not None else None
    progress.at("open")
    try:
        notes = list(patch_superblock(copy, raise_eof=False))
    except _Lost as err:
        return FileOutcome(fatal=err.reason)
    handled = set(ignore) | set(skip)
    lost: list[tuple[str, str]] = []
    listed = False
    conv = _Conversions()
    conv.allow_external = allow_external
    with _Output(out_dir, source, run_id, schema) as out:
        f, names, problem = _open(copy)
        if f is not None:
            listed = bool(names) or problem is None
            with f:
                _walk(f, names, handled, schema, out, lost, progress, conv)
        if problem is not None and _recorded_eof_short(copy):
            # Metadata written after the last completed flush (a cache eviction, or a
            # kill inside flush()) can point past the recorded end of file; the bytes
            # there are real, only the address is stale. Read only what the first pass
            # could not find.
            out.commit()  # a hang in the second pass must not cost the first one's groups
            progress.at("reopen")
            notes.extend(patch_superblock(copy, raise_eof=True))
            g, more, second = _open(copy)
            if g is not None and (more or second is None):
                with g:
                    extra = _walk(g, more, handled, schema, out, lost, progress, conv)
                if extra:
                    notes.append(
                        f"{extra} group(s) were found only with the end-of-file address raised "
                        "to the real size (metadata written after the last completed flush); "
                        "each read completely"
                    )
                problem = second
                listed = True
            else:
                if g is not None:
                    g.close()
                if not listed:
                    problem = f"{problem}; with the end-of-file address raised: {second}"
        progress.at("close")
    progress.at("done")
    notes.extend(_conversion_notes(conv, set(out.recovered)))
    if not listed:
        return FileOutcome(fatal=problem, notes=tuple(notes))
    return FileOutcome(
        recovered=tuple(out.recovered),
        lost=tuple(lost + out.lost),
        shards=tuple(out.shards),
        notes=tuple(notes),
        incomplete=problem,
    )


def _conversion_notes(conv: _Conversions, recovered: set[str]) -> list[str]:
    """Say what salvage changed to store a value, for the groups it recovered."""
    notes: list[str] = []
    for label, where in (
        ("variable-length string(s) stored as fixed-length UTF-8", conv.vlen),
        ("compound value(s) repacked without padding bytes", conv.repacked),
    ):
        kept = [w for w in where if w.split("/", 1)[0].split("@", 1)[0] in recovered]
        if kept:
            shown = ", ".join(kept[:5]) + (f", ... ({len(kept)} in all)" if len(kept) > 5 else "")
            notes.append(f"converted {len(kept)} {label}: {shown}")
    return notes


def _walk(
    f: h5py.File,
    names: list[str],
    handled: set[str],
    schema: Schema | None,
    out: _Output,
    lost: list[tuple[str, str]],
    progress: _Progress,
    conv: _Conversions,
) -> int:
    """Read and write each group of ``names`` not yet handled; returns how many were kept."""
    kept = 0
    for key in names:
        # h5guard_* root members are h5guard's own (an output's summary), never results.
        if key in handled or key.startswith(RESERVED_PREFIX):
            continue
        handled.add(key)
        progress.at("group", key)
        try:
            datasets, attrs = _read_group(f, key, schema, conv, allow_external=conv.allow_external)
        except _Lost as err:
            lost.append((key, err.reason))
            continue
        except MemoryError as err:
            # One oversized group must not end the file.
            lost.append((key, f"over the reader's memory limit: {_one_line(err)}"))
            continue
        except Exception as err:
            lost.append((key, f"unreadable: {_one_line(err)}"))
            continue
        reason = out.add(key, datasets, attrs)
        if reason is not None:
            lost.append((key, reason))
        else:
            kept += 1
    return kept


def committed_by_run(out_dir: str, run_id: str) -> dict[str, list[tuple[str, list[str]]]]:
    """``{source: [(shard, keys)]}`` of the committed shards salvage run ``run_id`` wrote."""
    found: dict[str, list[tuple[str, list[str]]]] = {}
    for path in sorted(Path(out_dir).glob(f"{SALVAGE_PREFIX}-*{SHARD_SUFFIX}")):
        try:
            with h5py.File(path, "r", locking=False) as f:
                if reader.text_attr(f, RUN_ATTR) != run_id:
                    continue
                source = reader.text_attr(f, SOURCE_ATTR)
                keys = [k for k, obj in f.items() if isinstance(obj, h5py.Group)]
        except Exception as err:
            log.warning("%s: cannot list salvaged groups: %s", path, _one_line(err))
            continue
        if source is not None:
            found.setdefault(source, []).append((str(path), keys))
    return found
