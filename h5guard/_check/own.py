"""h5guard's own files in the deep layer: every group's digest verified, the schema applied.

A shard or output h5guard wrote must carry a digest on every top-level group. Each
group is read first by the independent byte reader (:mod:`h5guard._format.bytes`,
about 30 times faster than h5py, with libhdf5 still loading every object header), and
only a group it does not accept goes through libhdf5 and the streaming reader
(:mod:`h5guard._format.reader`), which says exactly what is wrong. Both describe the
group the same way for the schema (:meth:`h5guard.Schema.check_group`). A committed
shard whose seal matches is summarised from its root attributes alone
(:func:`sealed_summary`); the merge verifies the groups it copied with
:func:`verify_groups`.
"""

from __future__ import annotations

import json
import logging
import mmap
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

from h5guard._check.foreign import Walk
from h5guard._check.inspector import (
    Inspector,
    attr_text,
    file_size,
    link_kind,
    normalized,
    one_line,
    pick_schema,
)
from h5guard._format import bytes as bytes_reader
from h5guard._format import digest as digests
from h5guard._format import reader
from h5guard._format import summary as _summary
from h5guard._format.names import (
    DIGEST_ATTR,
    DIGEST_V2_PREFIX,
    FORMAT_ATTR,
    INDEX_ATTR,
    RESERVED_PREFIX,
    SCHEMA_ATTR,
    SHARD_FORMAT,
)
from h5guard.report import Code, FileKind, FileSummary, Finding, Severity
from h5guard.schema import DatasetInfo, FrozenMap, GroupInfo

log = logging.getLogger(__name__)


def read_dataset(
    dset: h5py.Dataset, digest: digests.GroupDigest | None, *, need_finite: bool = False
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
        for block in reader.iter_blocks(dset):
            if check_finite and finite and not np.isfinite(block).all():
                finite = False
            yield block

    if digest is not None:
        digest.add_blocks(dset.name.rsplit("/", 1)[-1], dtype, shape, blocks())
    else:
        for _ in blocks():
            pass
    return DatasetInfo(dtype=dtype, shape=shape, all_finite=finite)


def inspect_group(ins: Inspector, group: h5py.Group, key: str) -> None:
    where = f"/{key}"
    attrs = ins.read_attrs(group, where)
    if attrs is None:
        ins.invalid.append(key)
        return
    stored = attrs.pop(DIGEST_ATTR, None)
    stored_text = bytes(np.asarray(stored)[()]).decode() if stored is not None else None
    if stored_text is not None and stored_text.startswith(DIGEST_V2_PREFIX):
        inspect_tree(ins, group, key, stored_text)
        return
    digest = digests.GroupDigest() if stored_text is not None else None
    infos: dict[str, DatasetInfo] = {}
    try:
        members = sorted(group, key=lambda n: n.encode("utf-8"))
    except Exception as err:
        ins.add(where, Code.OBJECT_UNREADABLE, f"member list unreadable: {one_line(err)}")
        return
    for name in members:
        member = f"{where}/{name}"
        try:
            link = link_kind(group.id, name)
            if link is not None:
                ins.add(member, Code.UNEXPECTED_OBJECT, f"{link} not followed", Severity.WARNING)
                continue
            obj = group[name]
            if isinstance(obj, h5py.Dataset):
                spec = ins.schema.datasets.get(name) if ins.schema is not None else None
                infos[name] = read_dataset(
                    obj, digest, need_finite=spec is not None and spec.finite
                )
            elif isinstance(obj, h5py.Group):
                if ins.owned:
                    ins.add(
                        member,
                        Code.UNEXPECTED_OBJECT,
                        "nested group in an h5guard file",
                        Severity.WARNING,
                    )
                walk_subtree(ins, obj.id, member)
            else:
                ins.add(
                    member,
                    Code.UNEXPECTED_OBJECT,
                    f"{type(obj).__name__} not checked",
                    Severity.WARNING,
                )
        except Exception as err:
            ins.add(member, Code.OBJECT_UNREADABLE, f"unreadable: {one_line(err)}")
            ins.invalid.append(key)
            return
    computed: str | None = None
    if digest is not None:
        for name in sorted(attrs, key=lambda n: n.encode("utf-8")):
            digest.add_array(b"A", name, attrs[name])
        computed = digest.hexdigest()
    elif ins.owned:
        ins.add(where, Code.DIGEST_MISSING, f"group has no {DIGEST_ATTR} attribute")
        ins.invalid.append(key)
        return
    # A v1 group holds datasets only (a nested group was reported above): no subgroups.
    info = GroupInfo(FrozenMap(infos), FrozenMap(attrs), FrozenMap())
    violations = ins.schema.check_group(info) if ins.schema is not None else []
    ins.settle(key, stored_text, computed, violations)


def inspect_tree(ins: Inspector, group: h5py.Group, key: str, stored_text: str) -> None:
    """A group with a v2 (tree) digest: read the whole tree, digest, apply the schema."""
    where = f"/{key}"
    try:
        computed, info = reader.verify_tree(group, key, finite=ins.schema is not None)
    except Exception as err:
        ins.add(where, Code.OBJECT_UNREADABLE, f"unreadable: {one_line(err)}")
        ins.invalid.append(key)
        return
    violations = (
        ins.schema.check_group(info) if ins.schema is not None and computed == stored_text else []
    )
    ins.settle(key, stored_text, computed, violations)


def walk_subtree(ins: Inspector, oid: Any, where: str) -> None:
    """Read everything below an object that no digest covers (:mod:`h5guard._check.foreign`)."""
    walk = Walk(ins.path, oid)
    walk.run(oid, where)
    ins.findings.extend(walk.findings)
    ins.tainted = ins.tainted or walk.tainted


class _FastGroups:
    """Checks groups of an h5guard file with :mod:`h5guard._format.bytes` (~30x faster
    than reading them through h5py), in the same sandboxed child.

    libhdf5 still loads every object header (and so verifies its checksum) through
    ``H5Oget_info``; the independent reader recomputes the digest and describes the
    group, nested groups included, for the schema's one entry point. Only a group that passes everything is accepted here: anything else
    (an unsupported construct, a digest that differs, a schema violation) is left to the
    libhdf5 path, which says exactly what is wrong.
    """

    def __init__(self, path: str) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        try:
            self._buf = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
            self._base = bytes_reader.base_address(self._buf)
        except BaseException:
            self._file.close()
            raise

    def accept(self, ins: Inspector, f: h5py.File, key: str) -> bool:
        link = key.encode("utf-8")
        try:
            if f.id.links.get_info(link).type != h5py.h5l.TYPE_HARD:
                return False  # soft and external links are reported by the libhdf5 path
            info = h5py.h5o.get_info(f.id, link)
            if info.type != h5py.h5o.TYPE_GROUP:
                return False
            computed, stored, description, members = bytes_reader.read_group_at(
                self._buf, self._base, info.addr, describe=ins.schema is not None
            )
            if stored is None or computed != stored:
                return False
            for member in members:  # load (and checksum) every object header below too
                h5py.h5o.get_info(f.id, link + b"/" + member)
        except Exception:  # damage of any kind: the libhdf5 path names it precisely
            return False
        if (
            ins.schema is not None
            and description is not None
            and ins.schema.check_group(description)
        ):
            return False  # the libhdf5 path reports the violations
        ins.groups[key] = stored
        return True

    def close(self) -> None:
        self._buf.close()
        self._file.close()


def inspect_owned(ins: Inspector, f: h5py.File, schema_json: str | None) -> tuple[bool, str | None]:
    root_attrs = ins.read_attrs(f, "/")
    embedded = attr_text(root_attrs, SCHEMA_ATTR)
    ins.schema = pick_schema(ins, schema_json, embedded)
    try:
        keys = reader.member_names(f.id)  # h5guard_* members: inspect_reserved
    except Exception as err:
        ins.add("/", Code.UNREADABLE, f"root group unreadable: {one_line(err)}")
        return False, embedded
    fast = _fast_groups(ins.path)
    try:
        _inspect_members(ins, f, keys, fast)
    finally:
        if fast is not None:
            fast.close()
    for problem in _summary.file_problems(f, ins.groups, ins.invalid):
        ins.add(f"/{_summary.NAME}", Code.SUMMARY_MISMATCH, problem)
    return root_attrs is not None, embedded


def _fast_groups(path: str) -> _FastGroups | None:
    try:
        return _FastGroups(path)
    except (OSError, ValueError, bytes_reader.Unsupported, bytes_reader.Malformed) as err:
        log.debug("%s: h5guard's reader cannot read it (%s); libhdf5 only", path, err)
        return None


def is_result_member(name: str) -> bool:
    """Whether a root member of an h5guard file is a result group.

    The one place that decides it, for both the libhdf5 path (:func:`_inspect_members`)
    and the byte reader's (:mod:`h5guard._check.sealed`): a member whose name starts
    with the reserved prefix is one of h5guard's own tables (``h5guard_summary``), not
    a result. Such members go to :func:`inspect_reserved` on the libhdf5 path and make
    the byte reader's path leave the file to libhdf5.
    """
    return not name.startswith(RESERVED_PREFIX)


def inspect_reserved(ins: Inspector, f: h5py.File, name: str, fast: _FastGroups | None) -> None:
    """A root member with a reserved name (:func:`is_result_member`).

    The summary table is verified after the groups (:func:`inspect_owned`); any other
    reserved name is checked as a result group is (a digest is required), so nothing
    it holds goes unread.
    """
    if name != _summary.NAME:
        _inspect_member(ins, f, name, fast)


def _inspect_members(
    ins: Inspector, f: h5py.File, keys: list[str], fast: _FastGroups | None
) -> None:
    for name in keys:
        if is_result_member(name):
            _inspect_member(ins, f, name, fast)
        else:
            inspect_reserved(ins, f, name, fast)


def _inspect_member(ins: Inspector, f: h5py.File, name: str, fast: _FastGroups | None) -> None:
    try:
        # The fast path first: it needs no h5py objects, which cost more than it does.
        if fast is not None and fast.accept(ins, f, name):
            return
        link = link_kind(f.id, name)
        if link is not None:
            ins.add(f"/{name}", Code.UNEXPECTED_OBJECT, f"{link} not followed", Severity.WARNING)
            return
        obj = f[name]
    except Exception as err:
        ins.add(f"/{name}", Code.OBJECT_UNREADABLE, f"unreadable: {one_line(err)}")
        return
    if isinstance(obj, h5py.Group):
        inspect_group(ins, obj, name)
    elif isinstance(obj, h5py.Dataset):
        try:
            read_dataset(obj, None)
        except Exception as err:
            ins.add(f"/{name}", Code.OBJECT_UNREADABLE, f"unreadable: {one_line(err)}")
            return
        if ins.owned:
            ins.add(
                f"/{name}",
                Code.UNEXPECTED_OBJECT,
                "dataset outside any group",
                Severity.WARNING,
            )


def sealed_summary(
    path: str, schema_json: str | None = None, root_attrs: Mapping[str, bytes] | None = None
) -> FileSummary | None:
    """The summary of a shard whose seal matched, from its root attributes alone.

    The seal proves the bytes are the ones an h5guard writer committed, and that writer
    digested every group and checked it against the schema it embedded. None when the
    file does not carry what this needs (an index, the same schema): read it fully then.
    ``root_attrs``: the root attributes' raw values when the caller parsed them already
    (:func:`h5guard.bytes_reader.root_attribute_values`); otherwise libhdf5 reads them.
    """
    if root_attrs is None:
        with h5py.File(path, "r", locking=False) as f:
            stored = reader.read_attrs(f)
        texts = {name: attr_text(stored, name) for name in (FORMAT_ATTR, INDEX_ATTR, SCHEMA_ATTR)}
    else:
        texts = {
            name: root_attrs[name].rstrip(b"\0").decode("utf-8", "replace")
            if name in root_attrs
            else None
            for name in (FORMAT_ATTR, INDEX_ATTR, SCHEMA_ATTR)
        }
    index_text, embedded = texts[INDEX_ATTR], texts[SCHEMA_ATTR]
    if texts[FORMAT_ATTR] != SHARD_FORMAT or index_text is None:
        return None
    if schema_json is not None and (
        embedded is None or normalized(embedded) != normalized(schema_json)
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
    return FileSummary(path, FileKind.SHARD, file_size(path), groups=groups, schema_json=embedded)


def verify_groups(path: str, expected: Mapping[str, str | None]) -> list[Finding]:
    """Re-read the named groups of ``path`` and check each against its expected digest."""
    ins = Inspector(path, None)
    ins.owned = True
    with h5py.File(path, "r", locking=False) as f:
        for key, want in expected.items():
            if key not in f:
                ins.add(f"/{key}", Code.OBJECT_UNREADABLE, "group missing after copy")
                continue
            inspect_group(ins, f[key], key)
            got = ins.groups.get(key)
            if key in ins.groups and got != want:
                ins.add(
                    f"/{key}",
                    Code.DIGEST_MISMATCH,
                    f"copied group has digest {got}, source had {want}",
                )
    return ins.findings


def verify_copied(path: str, added: Mapping[str, tuple[int, str]]) -> list[Finding]:
    """Verify groups just copied into ``path`` against the digests of their sources.

    What the merge calls after copying: the independent byte reader recomputes each
    group's digest from the bytes on disk (no libhdf5, which wrote them), and a group
    outside the layout it parses is read back through libhdf5 by :func:`verify_groups`
    (the streaming reader). A picklable top-level function, so the merge may also run
    it on part of the groups in a :class:`~h5guard.Sandbox` child
    (``"h5guard._check.own:verify_copied"``).

    Parameters
    ----------
    path
        The file the groups were copied into (closed, or flushed).
    added
        Key -> (object header address relative to the file's base address, the
        digest its source had).

    Returns
    -------
    list[Finding]
        A ``DIGEST_MISMATCH`` or ``OBJECT_UNREADABLE`` error for each group that does
        not match; empty when every group does.

    Raises
    ------
    OSError
        The file cannot be opened.
    """
    if not added:
        return []
    mismatched, unsupported = bytes_reader.verify_groups_at(path, added)
    problems = [
        Finding(path, f"/{key}", Code.DIGEST_MISMATCH, Severity.ERROR, message)
        for key, message in mismatched
    ]
    if unsupported:
        log.debug("%d group(s) verified through libhdf5", len(unsupported))
        problems += verify_groups(path, {k: added[k][1] for k in unsupported})
    return problems
