"""The deep layer: open a file with libhdf5, read every byte of it, verify digests.

Meant to run inside a :class:`~h5guard.sandbox.Sandbox` child (it may hang or crash
on a damaged file), but it is an ordinary function that can run in-process on files
h5guard itself just wrote.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from h5guard import _fastread, _layout, _read, _superblock, _tree, _walk
from h5guard.errors import SchemaError
from h5guard.report import Code, FileKind, FileSummary, Finding, Severity
from h5guard.sandbox import retire_after_call
from h5guard.schema import DatasetInfo, Schema, SchemaViolation

log = logging.getLogger(__name__)


_one_line = _walk.one_line


class _Inspector:
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
            out: dict[str, Any] = _layout.read_attrs(obj)
        except Exception as err:
            self.add(where, Code.OBJECT_UNREADABLE, f"attribute unreadable: {_one_line(err)}")
            return None
        return out

    def read_dataset(
        self, dset: h5py.Dataset, digest: _layout.GroupDigest | None, *, need_finite: bool = False
    ) -> DatasetInfo:
        """Read all of ``dset`` (feeding the digest); raises on any read error."""
        dtype = dset.dtype
        shape = tuple(int(n) for n in dset.shape) if dset.shape is not None else ()
        finite = True
        # Scanning for NaN costs as much as hashing: only when the schema asks for it.
        check_finite = need_finite and dtype.kind in "fc"

        def blocks() -> Any:
            nonlocal finite
            if dset.shape is None or dset.size == 0:
                yield np.empty(shape, dtype=dtype)
                return
            for block in _layout.iter_blocks(dset):
                if check_finite and finite and not np.isfinite(block).all():
                    finite = False
                yield block

        if digest is not None:
            digest.add_blocks(dset.name.rsplit("/", 1)[-1], dtype, shape, blocks())
        else:
            for _ in blocks():
                pass
        return DatasetInfo(dtype=dtype, shape=shape, all_finite=finite)

    def inspect_group(self, group: h5py.Group, key: str) -> None:
        where = f"/{key}"
        attrs = self.read_attrs(group, where)
        if attrs is None:
            self.invalid.append(key)
            return
        stored = attrs.pop(_layout.DIGEST_ATTR, None)
        stored_text = bytes(np.asarray(stored)[()]).decode() if stored is not None else None
        if stored_text is not None and stored_text.startswith(_tree.DIGEST_V2_PREFIX):
            self.inspect_tree(group, key, stored_text)
            return
        digest = _layout.GroupDigest() if stored_text is not None else None
        infos: dict[str, DatasetInfo] = {}
        try:
            names = sorted(group, key=lambda n: n.encode("utf-8"))
        except Exception as err:
            self.add(where, Code.OBJECT_UNREADABLE, f"member list unreadable: {_one_line(err)}")
            return
        for name in names:
            member = f"{where}/{name}"
            try:
                link = _link_kind(group.id, name)
                if link is not None:
                    self.add(
                        member, Code.UNEXPECTED_OBJECT, f"{link} not followed", Severity.WARNING
                    )
                    continue
                obj = group[name]
                if isinstance(obj, h5py.Dataset):
                    spec = self.schema.datasets.get(name) if self.schema is not None else None
                    infos[name] = self.read_dataset(
                        obj, digest, need_finite=spec is not None and spec.finite
                    )
                elif isinstance(obj, h5py.Group):
                    if self.owned:
                        self.add(
                            member,
                            Code.UNEXPECTED_OBJECT,
                            "nested group in an h5guard file",
                            Severity.WARNING,
                        )
                    self.walk_subtree(obj.id, member)
                else:
                    self.add(
                        member,
                        Code.UNEXPECTED_OBJECT,
                        f"{type(obj).__name__} not checked",
                        Severity.WARNING,
                    )
            except Exception as err:
                self.add(member, Code.OBJECT_UNREADABLE, f"unreadable: {_one_line(err)}")
                self.invalid.append(key)
                return
        computed: str | None = None
        if digest is not None:
            for name in sorted(attrs, key=lambda n: n.encode("utf-8")):
                digest.add_array(b"A", name, attrs[name])
            computed = digest.hexdigest()
        elif self.owned:
            self.add(where, Code.DIGEST_MISSING, f"group has no {_layout.DIGEST_ATTR} attribute")
            self.invalid.append(key)
            return
        violations = self.schema.check(infos, attrs) if self.schema is not None else []
        self.settle(key, stored_text, computed, violations)

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

    def inspect_tree(self, group: h5py.Group, key: str, stored_text: str) -> None:
        """A group with a v2 (tree) digest: read the whole tree, digest, apply the schema."""
        where = f"/{key}"
        try:
            computed, info = _read.verify_tree(group, key, finite=self.schema is not None)
        except Exception as err:
            self.add(where, Code.OBJECT_UNREADABLE, f"unreadable: {_one_line(err)}")
            self.invalid.append(key)
            return
        violations = (
            self.schema.check(info.datasets, info.attrs, info.groups)
            if self.schema is not None and computed == stored_text
            else []
        )
        self.settle(key, stored_text, computed, violations)

    def walk_subtree(self, oid: Any, where: str) -> None:
        """Read everything below an object that no digest covers (:mod:`h5guard._walk`)."""
        walk = _walk.Walk(self.path, oid)
        walk.run(oid, where)
        self.findings.extend(walk.findings)
        self.tainted = self.tainted or walk.tainted


class _FastGroups:
    """Checks groups of an h5guard file with :mod:`h5guard._fastread` (~30x faster than
    reading them through h5py), in the same sandboxed child.

    libhdf5 still loads every object header (and so verifies its checksum) through
    ``H5Oget_info``; the independent reader recomputes the digest and yields the values
    for the schema. Only a group that passes everything is accepted here: anything else
    (an unsupported construct, a digest that differs, a schema violation) is left to the
    libhdf5 path, which says exactly what is wrong.
    """

    def __init__(self, path: str) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        try:
            self._buf = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
            self._base = _fastread.base_address(self._buf)
        except BaseException:
            self._file.close()
            raise

    def accept(self, ins: _Inspector, f: h5py.File, key: str) -> bool:
        link = key.encode("utf-8")
        try:
            if f.id.links.get_info(link).type != h5py.h5l.TYPE_HARD:
                return False  # soft and external links are reported by the libhdf5 path
            info = h5py.h5o.get_info(f.id, link)
            if info.type != h5py.h5o.TYPE_GROUP:
                return False
            computed, stored, datasets, attrs = _fastread.read_group_at(
                self._buf, self._base, info.addr, attributes=ins.schema is not None
            )
            if stored is None or computed != stored:
                return False
            for name in datasets:  # load (and checksum) each dataset's header too
                h5py.h5o.get_info(f.id, link + b"/" + name.encode("utf-8"))
        except Exception:  # damage of any kind: the libhdf5 path names it precisely
            return False
        if ins.schema is not None:
            infos = {name: DatasetInfo.of(arr) for name, arr in datasets.items()}
            # groups={}: the reader only accepts groups without subgroups, so a schema's
            # required subgroup is missing here (the libhdf5 path then names it).
            if ins.schema.check(infos, attrs, groups={}):
                return False
        ins.groups[key] = stored
        return True

    def close(self) -> None:
        self._buf.close()
        self._file.close()


def _pick_schema(ins: _Inspector, explicit_json: str | None, embedded: str | None) -> Schema | None:
    if explicit_json is not None:
        schema = Schema.from_json(explicit_json)
        if embedded is not None and _normalized(embedded) != _normalized(explicit_json):
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
        return Schema.from_json(embedded, source=f"{_layout.SCHEMA_ATTR} attribute")
    except SchemaError as err:
        ins.add("/", Code.SCHEMA_INVALID, str(err))
        return None


def _normalized(text: str) -> str:
    try:
        return Schema.from_json(text).to_json()
    except SchemaError:
        return text


def inspect_file(
    path: str, schema_json: str | None = None, clear_write_flags: bool = False
) -> tuple[list[Finding], FileSummary]:
    """Read every object of ``path``; return findings and a summary of the file.

    ``clear_write_flags``: the superblock's "open for write" flags are set (libhdf5
    refuses such a file; the quick layer reported it): read the file as if they were
    clear, so that damage behind the flags is reported too. The file is not modified.
    """
    ins = _Inspector(path, None)
    size = _size(path)
    try:
        f = _open(path, clear_write_flags=clear_write_flags)
    except Exception as err:
        ins.add("/", Code.UNREADABLE, f"HDF5 cannot open the file: {_one_line(err)}")
        _retire(ins)
        return ins.findings, FileSummary(path, FileKind.UNREADABLE, size)
    with f:
        fmt = _root_text(f, _layout.FORMAT_ATTR)
        kind = {
            _layout.SHARD_FORMAT: FileKind.SHARD,
            _layout.OUTPUT_FORMAT: FileKind.OUTPUT,
        }.get(fmt or "", FileKind.FOREIGN)
        ins.owned = kind is not FileKind.FOREIGN
        if ins.owned:
            readable, embedded = _inspect_owned(ins, f, schema_json)
        else:
            embedded = _root_text(f, _layout.SCHEMA_ATTR)
            ins.schema = _pick_schema(ins, schema_json, embedded)
            readable = _inspect_foreign(ins, f)
            _note_foreign(ins)
    _retire(ins)
    summary = FileSummary(
        path,
        kind if readable else FileKind.UNREADABLE,
        size,
        groups=ins.groups,
        schema_json=embedded if embedded is not None else schema_json,
        invalid_groups=tuple(ins.invalid),
    )
    return ins.findings, summary


_LIBHDF5_FAILURES = frozenset({Code.UNREADABLE, Code.OBJECT_UNREADABLE, Code.MEMORY_LIMIT})


def _retire(ins: _Inspector) -> None:
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


def _inspect_owned(
    ins: _Inspector, f: h5py.File, schema_json: str | None
) -> tuple[bool, str | None]:
    root_attrs = ins.read_attrs(f, "/")
    embedded = _text(root_attrs, _layout.SCHEMA_ATTR)
    ins.schema = _pick_schema(ins, schema_json, embedded)
    try:
        names = list(f)
    except Exception as err:
        ins.add("/", Code.UNREADABLE, f"root group unreadable: {_one_line(err)}")
        return False, embedded
    fast = _fast_groups(ins.path)
    try:
        _inspect_members(ins, f, names, fast)
    finally:
        if fast is not None:
            fast.close()
    return root_attrs is not None, embedded


def _inspect_foreign(ins: _Inspector, f: h5py.File) -> bool:
    """The whole file through one walk; top-level groups then get the schema."""
    schema = ins.schema
    finite = schema is not None and any(spec.finite for spec in schema.datasets.values())
    walk = _walk.Walk(ins.path, f.id, finite=finite, keep=True)
    try:
        root = h5py.h5o.open(f.id, b"/")  # the root group itself, not the file
    except Exception as err:
        ins.add("/", Code.UNREADABLE, f"root group unreadable: {_one_line(err)}")
        return False
    walk.run(root, "/")
    ins.findings.extend(walk.findings)
    ins.tainted = ins.tainted or walk.tainted
    bad = [x.obj for x in walk.findings if x.severity >= Severity.WARNING]
    for where in sorted(walk.kept_datasets, key=lambda w: w.encode("utf-8")):
        key = where[1:]
        if any(obj == where or obj.startswith(where + "/") for obj in bad):
            ins.invalid.append(key)
            continue
        if schema is not None:
            infos = {
                name: DatasetInfo(dtype=r.dtype, shape=r.shape, all_finite=r.all_finite)
                for name, r in walk.kept_datasets[where].items()
            }
            violations = schema.check(infos, walk.kept_attrs.get(where, {}))
            for v in violations:
                ins.add(f"{where}/{v.obj}" if v.obj else where, v.code, v.message)
            if violations:
                ins.invalid.append(key)
                continue
        ins.groups[key] = None
    root_damaged = any(x.obj == "/" and x.severity is Severity.ERROR for x in walk.findings)
    return not root_damaged


def _root_text(f: h5py.File, name: str) -> str | None:
    """One root attribute as text, opened by name alone (the walk reads all of them)."""
    try:
        if not h5py.h5a.exists(f.id, name.encode("utf-8")):
            return None
        value = _layout.read_attr_id(h5py.h5a.open(f.id, name.encode("utf-8")))
    except Exception:  # damaged attribute storage: the walk reports it
        return None
    return _text({name: value}, name)


def _link_kind(gid: Any, name: str) -> str | None:
    """None for a hard link, else what kind of link it is (raises if unreadable)."""
    kind = int(gid.links.get_info(name.encode("utf-8")).type)
    if kind == h5py.h5l.TYPE_HARD:
        return None
    if kind == h5py.h5l.TYPE_SOFT:
        return "soft link"
    if kind == h5py.h5l.TYPE_EXTERNAL:
        return "external link"
    return f"user-defined link (type {kind})"


def _open(path: str, *, clear_write_flags: bool) -> h5py.File:
    if not clear_write_flags:
        return h5py.File(path, "r", locking=False)
    view = _superblock.FlagsClearedView(path)
    try:
        return h5py.File(view, "r", locking=False)
    except BaseException:
        view.close()
        raise


def _fast_groups(path: str) -> _FastGroups | None:
    try:
        return _FastGroups(path)
    except (OSError, ValueError, _fastread.Unsupported, _fastread.Malformed) as err:
        log.debug("%s: h5guard's reader cannot read it (%s); libhdf5 only", path, err)
        return None


def _inspect_members(
    ins: _Inspector, f: h5py.File, names: list[str], fast: _FastGroups | None
) -> None:
    for name in names:
        try:
            # The fast path first: it needs no h5py objects, which cost more than it does.
            if fast is not None and fast.accept(ins, f, name):
                continue
            link = _link_kind(f.id, name)
            if link is not None:
                ins.add(
                    f"/{name}", Code.UNEXPECTED_OBJECT, f"{link} not followed", Severity.WARNING
                )
                continue
            obj = f[name]
        except Exception as err:
            ins.add(f"/{name}", Code.OBJECT_UNREADABLE, f"unreadable: {_one_line(err)}")
            continue
        if isinstance(obj, h5py.Group):
            ins.inspect_group(obj, name)
        elif isinstance(obj, h5py.Dataset):
            try:
                ins.read_dataset(obj, None)
            except Exception as err:
                ins.add(f"/{name}", Code.OBJECT_UNREADABLE, f"unreadable: {_one_line(err)}")
                continue
            if ins.owned:
                ins.add(
                    f"/{name}",
                    Code.UNEXPECTED_OBJECT,
                    "dataset outside any group",
                    Severity.WARNING,
                )


def _note_foreign(ins: _Inspector) -> None:
    if not ins.owned:
        ins.add(
            "/",
            Code.NO_DIGESTS,
            "not written by h5guard: readable, but silent data damage cannot be ruled out",
            Severity.INFO,
        )


def _text(attrs: Mapping[str, npt.NDArray[Any]] | None, name: str) -> str | None:
    if not attrs or name not in attrs:
        return None
    value = np.asarray(attrs[name])
    if value.ndim != 0:
        return None
    item = value[()]
    if isinstance(item, bytes):
        return item.decode("utf-8", errors="replace")
    return str(item)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def sealed_summary(
    path: str, schema_json: str | None = None, root_attrs: Mapping[str, bytes] | None = None
) -> FileSummary | None:
    """The summary of a shard whose seal matched, from its root attributes alone.

    The seal proves the bytes are the ones an h5guard writer committed, and that writer
    digested every group and checked it against the schema it embedded. None when the
    file does not carry what this needs (an index, the same schema): read it fully then.
    ``root_attrs``: the root attributes' raw values when the caller parsed them already
    (:func:`h5guard._fastread.root_attribute_values`); otherwise libhdf5 reads them.
    """
    if root_attrs is None:
        with h5py.File(path, "r", locking=False) as f:
            stored = _layout.read_attrs(f)
        texts = {
            name: _text(stored, name)
            for name in (_layout.FORMAT_ATTR, _layout.INDEX_ATTR, _layout.SCHEMA_ATTR)
        }
    else:
        texts = {
            name: root_attrs[name].rstrip(b"\0").decode("utf-8", "replace")
            if name in root_attrs
            else None
            for name in (_layout.FORMAT_ATTR, _layout.INDEX_ATTR, _layout.SCHEMA_ATTR)
        }
    index_text, embedded = texts[_layout.INDEX_ATTR], texts[_layout.SCHEMA_ATTR]
    if texts[_layout.FORMAT_ATTR] != _layout.SHARD_FORMAT or index_text is None:
        return None
    if schema_json is not None and (
        embedded is None or _normalized(embedded) != _normalized(schema_json)
    ):
        return None
    try:
        index = json.loads(index_text)
    except ValueError:
        return None
    if not isinstance(index, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in index.items()
    ):
        return None
    groups: dict[str, str | None] = dict(index)
    return FileSummary(path, FileKind.SHARD, _size(path), groups=groups, schema_json=embedded)


def verify_groups(path: str, expected: Mapping[str, str | None]) -> list[Finding]:
    """Re-read the named groups of ``path`` and check each against its expected digest."""
    ins = _Inspector(path, None)
    ins.owned = True
    with h5py.File(path, "r", locking=False) as f:
        for key, want in expected.items():
            if key not in f:
                ins.add(f"/{key}", Code.OBJECT_UNREADABLE, "group missing after copy")
                continue
            ins.inspect_group(f[key], key)
            got = ins.groups.get(key)
            if key in ins.groups and got != want:
                ins.add(
                    f"/{key}",
                    Code.DIGEST_MISMATCH,
                    f"copied group has digest {got}, source had {want}",
                )
    return ins.findings
