"""A segmented output: immutable segment files plus a small index replaced atomically.

A big output is not rewritten by each incremental merge. Its groups live in
*segments*, ordinary h5guard output files in a directory beside the output
(``OUTPUT.segments/``), each written once by one merge and never changed; the output
path itself holds an *index*: an HDF5 file whose root has one external link per key,
``key -> <segment dir>/<segment>:/key`` (a relative name), and root attributes that say
it is an h5guard index and list its segments (name, size, groups, listing digest).
A merge adds a segment and replaces the index (the index before the current one
brought up to date, or a copy of the current one, plus the new links, renamed over it:
:mod:`h5guard._merge.spare`): the output is the old one or the new one at every instant.

Plain h5py sees every key through the links. h5guard's own readers never let libhdf5
resolve them (libhdf5 looks for a relative target under ``HDF5_EXT_PREFIX``, the link
access prefix, the linking file's directory, then the current directory, so a file
planted in one of those could be read): they resolve each segment themselves, relative
to the index file's directory, and accept only the index's own segments.

Keys are never replaced in an output, so segments never supersede each other: a key
is in exactly one segment.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import re
import stat
import uuid
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import h5py
import numpy as np

from h5guard._format import bytes as bytes_reader
from h5guard._format import names, reader, write
from h5guard.errors import ResultNotFoundError, UnreadableOutputError
from h5guard.report import Code, FileKind, FileSummary, Finding, Report, Severity

INDEX_FORMAT = "h5guard-index/1"
# JSON [{"name", "size", "groups", "digest", "level"}, ...]; "level" absent: 0.
SEGMENTS_ATTR = "h5guard_segments"
SEGMENT_DIR_ATTR = "h5guard_segment_dir"  # the segment directory's name, beside the index
GROUPS_ATTR = "h5guard_groups"
# Which file the index before this one was when this one was written, and how many of
# this index's first segments it lists too: "dev:inode:size:mtime_ns:segments"
# (h5guard._merge.spare).
SPARE_ATTR = "h5guard_spare"
# What open_index reads.
INDEX_ATTRS = (names.FORMAT_ATTR, SEGMENT_DIR_ATTR, SEGMENTS_ATTR, GROUPS_ATTR, SPARE_ATTR)
_SEGMENT_NAME = re.compile(r"seg-[0-9]{6,18}-[0-9a-f]{12}\.h5")  # whole names: fullmatch
_SEGMENT_NAMES = re.compile(r"(?:seg-[0-9]{6,18}-[0-9a-f]{12}\.h5\n)*")  # one per line
_DIGEST_ATTR_B = names.DIGEST_ATTR.encode()
_RESERVED_B = names.RESERVED_PREFIX.encode()


class BadIndexError(UnreadableOutputError):
    """An index that is not well-formed (named by file and, where known, by key)."""


class Segment(NamedTuple):
    """One segment as the index lists it (a tuple: an index of a thousand segments is
    parsed by every merge, and a tuple is built three times faster than a dataclass).

    Attributes
    ----------
    name : str
        Its file name inside the segment directory.
    size : int
        Its size in bytes when it was written (segments never change).
    groups : int
        How many result groups it holds.
    digest : str
        :func:`listing_digest` of its ``{key: group digest}``.
    level : int
        0 for a merge's own segment; ``n + 1`` for one folded from segments of level
        ``n`` (:mod:`h5guard._merge.fold`).
    """

    name: str
    size: int
    groups: int
    digest: str
    level: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "size": self.size, "groups": self.groups, "digest": self.digest}
        if self.level:
            out["level"] = self.level
        return out


@dataclass(frozen=True, slots=True)
class Index:
    """An opened index: where it is, its segment directory, its segments."""

    path: str
    dir_name: str
    segments: tuple[Segment, ...]
    groups: int
    spare: str | None = None  # SPARE_ATTR, as written
    # Every link lookup asks whether its segment is listed, and where it is: computed once.
    names: frozenset[str] = field(init=False, repr=False, compare=False)
    directory: str = field(init=False, repr=False, compare=False)
    """The segment directory, resolved relative to the index file's directory."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", frozenset(s.name for s in self.segments))
        directory = os.path.join(os.path.dirname(os.path.abspath(self.path)), self.dir_name)
        object.__setattr__(self, "directory", directory)

    def segment_path(self, name: str) -> str:
        return self.directory + os.sep + name


def listing_digest(groups: Mapping[str, str | None]) -> str:
    """The digest of a segment's ``{key: group digest}``, in key (UTF-8) order.

    It binds the index to its segments' contents: a segment swapped for another valid
    output (other keys, or other values under the same keys) no longer matches.
    """
    h = hashlib.sha256(b"h5guard-segment-listing-v1\0")
    for key in sorted(groups, key=lambda k: k.encode("utf-8")):
        h.update(key.encode("utf-8") + b"\0" + (groups[key] or "").encode("utf-8") + b"\n")
    return "sha256:" + h.hexdigest()


def dir_name_for(output: str) -> str:
    """The segment directory name of a new index at ``output``: ``NAME.segments``."""
    return os.path.basename(output) + names.SEGMENT_DIR_SUFFIX


def new_segment_name(number: int) -> str:
    """A fresh segment file name: numbered in merge order, with a random part so that a
    crashed merge's leftover never has the name of the next segment."""
    return f"seg-{number:06d}-{uuid.uuid4().hex[:12]}.h5"


def next_number(segments: Iterable[Segment]) -> int:
    """The number of the next segment after ``segments`` (one more than the highest)."""
    return max((int(s.name[4:].partition("-")[0]) for s in segments), default=-1) + 1


def is_segment_name(name: str) -> bool:
    return bool(_SEGMENT_NAME.fullmatch(name))


def _plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


def is_index(f: h5py.File) -> bool:
    """Whether an open file is an h5guard index (its root says so)."""
    return reader.text_attr(f, names.FORMAT_ATTR) == INDEX_FORMAT


def is_index_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an h5guard index (False for anything unreadable)."""
    try:
        with h5py.File(os.fspath(path), "r", locking=False) as f:
            return is_index(f)
    except Exception:
        return False


def open_index(f: h5py.File, path: str, attrs: Mapping[str, str] | None = None) -> Index:
    """The index of the open file ``f`` at ``path``, its root attributes validated.

    ``attrs``: the root's :data:`INDEX_ATTRS` as
    :func:`~h5guard._format.reader.text_attrs` reads them, if the caller has already.

    Raises
    ------
    UnreadableOutputError
        The root attributes are missing or malformed, the segment directory is not a
        plain name, or a segment name is not one h5guard gives.
    """
    if attrs is None:
        attrs = reader.text_attrs(f, INDEX_ATTRS)
    if attrs.get(names.FORMAT_ATTR) != INDEX_FORMAT:
        raise BadIndexError(f"{path}: expected an h5guard index, found another file")
    dir_name = attrs.get(SEGMENT_DIR_ATTR, "")
    if not _plain_name(dir_name):
        raise BadIndexError(
            f"{path}:/: the segment directory {dir_name!r} is not a plain name beside the index"
        )
    try:
        listed = json.loads(attrs.get(SEGMENTS_ATTR, ""))
        segments = tuple(
            Segment(
                str(s["name"]),
                int(s["size"]),
                int(s["groups"]),
                str(s["digest"]),
                int(s.get("level", 0)),
            )
            for s in listed
        )
        groups = int(attrs[GROUPS_ATTR])
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise BadIndexError(f"{path}:/: malformed segment list ({err})") from err
    if any(s.level < 0 for s in segments):
        raise BadIndexError(f"{path}:/: malformed segment list (a negative level)")
    index = Index(path, dir_name, segments, groups, attrs.get(SPARE_ATTR))
    if not _SEGMENT_NAMES.fullmatch("".join(s.name + "\n" for s in segments)):
        bad = next((s.name for s in segments if not is_segment_name(s.name)), "")
        raise BadIndexError(f"{path}:/: {bad!r} is not an h5guard segment name")
    if len(index.names) != len(segments):
        raise BadIndexError(f"{path}:/: a segment is listed twice")
    return index


def link_target(index: Index, key: str, value: tuple[bytes, bytes]) -> str:
    """The segment name a link value ``(file, object)`` of ``key`` points into.

    Raises
    ------
    UnreadableOutputError
        The link points anywhere else than ``/key`` of one of the index's own segments
        through ``<segment dir>/<segment>``.
    """
    file_name, obj = (v.decode("utf-8", "replace") for v in value)
    head, _, seg = file_name.partition("/")
    if head != index.dir_name or seg not in index.names or obj != "/" + key:
        raise BadIndexError(
            f"{index.path}:/{key}: external link to {file_name!r}:{obj!r} points outside the "
            f"index's own segments ({index.dir_name}/seg-*.h5:/{key}); not followed"
        )
    return seg


def target(f: h5py.File, index: Index, key: str) -> str | None:
    """The path of the segment holding ``key``, or None if the index has no such key.

    Raises
    ------
    UnreadableOutputError
        The name is there but is no well-formed link into the index's segments.
    """
    name = key.encode("utf-8")
    if not f.id.links.exists(name):
        return None
    value = _external_value(f, name)
    if value is None:
        raise BadIndexError(f"{index.path}:/{key}: expected an external link into a segment")
    return index.segment_path(link_target(index, key, value))


def _external_value(f: h5py.File, name: bytes) -> tuple[bytes, bytes] | None:
    """The ``(file, object)`` of the external link ``name``, None for another kind.

    get_val finds the link once for its kind and once for its value: asking for the
    kind first would look the name up twice more.
    """
    try:
        value = f.id.links.get_val(name)
    except TypeError:  # a hard link
        return None
    return value if isinstance(value, tuple) else None  # bytes: a soft link


def _vet_segment(path: str) -> None:
    """Raise unless ``path`` is a regular file in a real directory (no link on the way)."""
    try:
        parent = os.lstat(os.path.dirname(path))
        st = os.lstat(path)
    except OSError as err:
        raise BadIndexError(f"{path}: segment missing ({err.strerror})") from err
    if not stat.S_ISDIR(parent.st_mode):
        raise BadIndexError(f"{path}: the segment directory is a link or no directory")
    if not stat.S_ISREG(st.st_mode):
        raise BadIndexError(f"{path}: expected a segment file, found a link or no regular file")


def open_segment(path: str) -> h5py.File:
    """A segment, opened read-only; never through a symbolic link.

    Raises
    ------
    UnreadableOutputError
        It is missing, a link or no regular file, or libhdf5 cannot open it.
    """
    _vet_segment(path)
    try:
        return h5py.File(path, "r", locking=False)
    except Exception as err:
        raise BadIndexError(f"{path}: segment could not be opened ({err})") from err


def segment_keys(f: h5py.File) -> list[str]:
    """The result keys of a segment (or of a self-contained output): its top-level
    groups, never following a link."""
    return [
        name.decode("utf-8")
        for name, link in reader.link_types(f.id)  # one pass over the links, no lookups
        if link == h5py.h5l.TYPE_HARD and not name.startswith(_RESERVED_B)
    ]


def segment_keys_at(path: str) -> list[str]:
    """:func:`segment_keys` of the segment at ``path``, read by h5guard's byte reader
    when it parses the root (a third of the time of an open through libhdf5, which a
    merge would spend on a segment only to list it); through libhdf5 otherwise.

    Raises
    ------
    UnreadableOutputError
        As :func:`open_segment`.
    """
    _vet_segment(path)  # as open_segment: never through a planted link
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
        try:
            if os.fstat(fd).st_size > 0:
                with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as buf:
                    _, _, links = bytes_reader.root_group(buf)
                keys = [n.decode("utf-8") for n in links]
                return sorted(k for k in keys if not k.startswith(names.RESERVED_PREFIX))
        finally:
            os.close(fd)
    except (OSError, ValueError, bytes_reader.Unsupported, bytes_reader.Malformed):
        pass  # libhdf5 reads it, or names what is wrong
    with open_segment(path) as f:
        return segment_keys(f)


def group_digests(f: h5py.File, keys: Iterable[str]) -> dict[str, str | None]:
    """The stored digest of each group ``keys`` of ``f`` (None where it has none)."""
    out: dict[str, str | None] = {}
    # One buffer wider than any digest: libhdf5 pads a shorter fixed-length string into
    # it, and one read per group is all (a turned-output of 100,000 groups reads them all).
    buf = np.empty((), dtype="S128")
    mtype = h5py.h5t.py_create(buf.dtype)  # derived once, not at every read
    for key in keys:
        name = key.encode("utf-8")
        try:
            aid = h5py.h5a.open(f.id, _DIGEST_ATTR_B, obj_name=name)
        except KeyError:
            out[key] = None
            continue
        try:
            aid.read(buf, mtype=mtype)
            raw = buf.tobytes()
        except Exception:  # not a fixed-length string: read it as it is
            raw = bytes(np.asarray(reader.read_attr_id(aid))[()])
        out[key] = raw.rstrip(b"\0").decode("utf-8", "replace")
    return out


def resolve(path: str | os.PathLike[str]) -> list[tuple[str, tuple[str, ...]]] | None:
    """The segments of an index and the keys each holds, or None for any other file.

    Parameters
    ----------
    path
        An output: an index or a self-contained file.

    Returns
    -------
    list of (str, tuple of str) or None
        ``(segment path, its keys in UTF-8 order)`` for each segment in merge order;
        None when ``path`` is no index.

    Raises
    ------
    UnreadableOutputError
        The index is malformed, a segment is missing or not a segment, or a key is in
        two segments.
    """
    where = os.fspath(path)
    with h5py.File(where, "r", locking=False) as f:
        if not is_index(f):
            return None
        index = open_index(f, where)
    out: list[tuple[str, tuple[str, ...]]] = []
    seen: set[str] = set()
    for seg in index.segments:
        seg_path = index.segment_path(seg.name)
        with open_segment(seg_path) as s:
            keys = sorted(segment_keys(s), key=lambda k: k.encode("utf-8"))
        twice = seen.intersection(keys)
        if twice:
            raise BadIndexError(f"{seg_path}:/{min(twice)}: key also in an earlier segment")
        seen.update(keys)
        out.append((seg_path, tuple(keys)))
    return out


@contextlib.contextmanager
def iter_groups(path: str | os.PathLike[str]) -> Iterator[Iterator[tuple[str, Any, str]]]:
    """Every key of an index in key (UTF-8) order, as ``(segment path, the segment's
    low-level file id, key)``: each key is a hard link in that segment
    (:func:`segment_keys`); the segments stay open while the context lasts."""
    parts = resolve(path)
    if parts is None:
        raise BadIndexError(f"{os.fspath(path)}: expected an h5guard index")
    with contextlib.ExitStack() as stack:
        files = [(p, stack.enter_context(open_segment(p))) for p, _ in parts]
        order = sorted(
            ((k, n) for n, (_, keys) in enumerate(parts) for k in keys),
            key=lambda kn: kn[0].encode("utf-8"),
        )

        def groups() -> Iterator[tuple[str, Any, str]]:
            for key, n in order:
                seg_path, f = files[n]
                yield seg_path, f.id, key

        yield groups()


def write_index(
    path: str,
    *,
    dir_name: str,
    segments: Sequence[Segment],
    links: Mapping[str, Iterable[str]],
    groups: int,
    root_attrs: Mapping[str, Any],
    fresh: bool = True,
    relinked: Collection[str] = (),
) -> None:
    """Write the index into ``path``: a new file, a copy of the old index, or an earlier
    state of it (a spare).

    Parameters
    ----------
    path
        The index partial: an empty HDF5 file h5guard created, or a byte copy of the
        old index (its links are kept).
    dir_name
        The segment directory's name.
    segments
        Every segment of the new index, in merge order.
    links
        The links to add: ``{segment name: its keys}``.
    groups
        Groups in the new index.
    root_attrs
        Further root attributes (format, version, schema, the caller's), as arrays.
    fresh
        ``path`` is a new, empty file. An index of the same segment directory already
        says what it is and where its segments are: those two attributes stay.
    relinked
        Segments of ``links`` whose keys ``path`` may link already, into segments a
        fold replaced: those links are replaced.
    """
    f = h5py.File(path, "r+", libver=names.LIBVER, locking=False)
    try:
        for seg, keys in links.items():
            file_name = f"{dir_name}/{seg}".encode()
            replacing = seg in relinked
            for key in keys:
                name = key.encode("utf-8")
                if replacing and f.id.links.exists(name):
                    f.id.unlink(name)
                f.id.links.create_external(
                    name, file_name, b"/" + name, lcpl=write.LINK_CREATE_UTF8
                )
        for attr, value in root_attrs.items():
            write.update_attr(f, attr, np.asarray(value))
        if fresh:
            write.write_attr(f, names.FORMAT_ATTR, np.array(INDEX_FORMAT.encode(), dtype=np.bytes_))
            write.write_attr(
                f, SEGMENT_DIR_ATTR, np.array(dir_name.encode("utf-8"), dtype=np.bytes_)
            )
        text = json.dumps([s.to_dict() for s in segments])
        write.write_attr(f, SEGMENTS_ATTR, np.array(text.encode(), dtype=np.bytes_))
        write.update_attr(f, GROUPS_ATTR, np.asarray(np.int64(groups)))  # in place: one type
    finally:
        reader.close_file(f)  # flushed and closed: nothing else of it is open


def check_links(path: str, expected: Mapping[str, str], *, total: int) -> list[str]:
    """Read ``expected`` ``{key: segment name}`` links back from the index at ``path``,
    and count its links (``total``).

    Returns
    -------
    list of str
        A problem for each key whose link is missing or points elsewhere, one if the
        root attributes do not parse, one if the index does not hold ``total`` links.
    """
    problems: list[str] = []
    f = h5py.File(path, "r", locking=False)
    try:
        try:
            index = open_index(f, path)
        except UnreadableOutputError as err:
            return [str(err)]
        if f.id.get_num_objs() != total or index.groups != total:
            problems.append(f"{path}: expected {total} links, found {f.id.get_num_objs()}")
        for key, seg in expected.items():
            try:
                found = target(f, index, key)
            except UnreadableOutputError as err:
                problems.append(str(err))
                continue
            if found != index.segment_path(seg):
                problems.append(f"{path}:/{key}: link points to {found}, expected {seg}")
    finally:
        reader.close_file(f)
    return problems


@dataclass(frozen=True, slots=True)
class Verdict:
    """What :func:`inspect` found: problems with the index, and each segment's keys."""

    index: Index | None
    problems: tuple[Finding, ...]  # errors, each naming the index or a segment
    keys: Mapping[str, tuple[str, ...]]  # segment path -> keys linked into it

    @property
    def segment_paths(self) -> list[str]:
        if self.index is None:
            return []
        return [self.index.segment_path(s.name) for s in self.index.segments]


def inspect(path: str) -> Verdict:
    """Check an index itself: root attributes, every link, every segment's presence.

    Every link must be an external link to ``/key`` of one of the index's listed
    segments through the segment directory; each listed segment must be a regular file
    (not a link) of the recorded size; no other object may be at the root. The
    segments' own contents are checked as outputs by the caller, who then compares
    them with :attr:`Verdict.keys` (:func:`compare`).
    """
    try:
        f = h5py.File(path, "r", locking=False)
    except Exception as err:
        return Verdict(
            None, (_error(path, "/", Code.UNREADABLE, f"index could not be opened ({err})"),), {}
        )
    with f:
        return _inspect_open(f, path)


def _inspect_open(f: h5py.File, path: str) -> Verdict:
    """:func:`inspect` of the index open as ``f``."""
    problems: list[Finding] = []
    keys: dict[str, list[str]] = {}
    try:
        index = open_index(f, path)
    except UnreadableOutputError as err:
        return Verdict(
            None, (_error(path, "/", Code.UNEXPECTED_OBJECT, str(err).split(": ", 1)[-1]),), {}
        )
    try:
        st = os.lstat(index.directory)
        if not stat.S_ISDIR(st.st_mode):
            problems.append(
                _error(
                    path,
                    "/",
                    Code.UNEXPECTED_OBJECT,
                    f"{index.directory} is a link or no directory",
                )
            )
            return Verdict(index, tuple(problems), {})
    except OSError as err:
        problems.append(
            _error(
                path,
                "/",
                Code.NOT_FOUND,
                f"segment directory {index.directory} missing ({err})",
            )
        )
        return Verdict(index, tuple(problems), {})
    for seg in index.segments:
        seg_path = index.segment_path(seg.name)
        keys[seg_path] = []
        try:
            st = os.lstat(seg_path)
        except OSError:
            problems.append(
                _error(seg_path, "/", Code.NOT_FOUND, "segment listed by the index is missing")
            )
            continue
        if not stat.S_ISREG(st.st_mode):
            problems.append(
                _error(
                    seg_path,
                    "/",
                    Code.UNEXPECTED_OBJECT,
                    "segment is a link or no regular file",
                )
            )
        elif st.st_size != seg.size:
            problems.append(
                _error(
                    seg_path,
                    "/",
                    Code.UNEXPECTED_OBJECT,
                    f"segment is {st.st_size} bytes, the index says {seg.size}",
                )
            )
    try:
        count = _links_by_segment(f, index, keys, problems)
    except (RuntimeError, OSError, KeyError, ValueError) as err:
        # Damaged metadata (a checksum, a B-tree node): the links cannot be listed,
        # so nothing can be said of which segment holds which key. The results are
        # in the segments, which salvage reads as outputs of their own.
        problems.append(
            _error(
                path,
                "/",
                Code.UNREADABLE,
                f"index could not be read, damaged ({err}); the results are in its "
                f"segments: h5guard compact {path} rewrites the output as one file "
                f"from them (or {salvage_recipe(index.directory)})",
            )
        )
        return Verdict(None, tuple(problems), {})
    if count != index.groups:
        problems.append(
            _error(
                path,
                "/",
                Code.UNEXPECTED_OBJECT,
                f"index has {count} links, its root says {index.groups}",
            )
        )
    return Verdict(index, tuple(problems), {p: tuple(k) for p, k in keys.items()})


def _links_by_segment(
    f: h5py.File,
    index: Index,
    keys: dict[str, list[str]],
    problems: list[Finding],
) -> int:
    """Sort the index's links into ``keys`` by segment; return how many are well-formed."""
    count = 0
    for key in reader.member_names(f.id):
        value = _external_value(f, key.encode("utf-8"))
        if value is None:
            problems.append(
                _error(
                    index.path,
                    f"/{key}",
                    Code.UNEXPECTED_OBJECT,
                    "expected an external link into a segment",
                )
            )
            continue
        try:
            seg_name = link_target(index, key, value)
        except UnreadableOutputError as err:
            problems.append(
                _error(index.path, f"/{key}", Code.UNEXPECTED_OBJECT, str(err).split(": ", 2)[-1])
            )
            continue
        keys[index.segment_path(seg_name)].append(key)
        count += 1
    return count


def salvage_recipe(segdir: str) -> str:
    """What brings every result of a segmented output back from its segments alone."""
    return f"h5guard salvage {segdir}/seg-*.h5 -o DIR, then h5guard merge DIR -o NEW.h5"


def inspect_if_index(path: str) -> Verdict | None:
    """:func:`inspect` of ``path`` if it is an index; None if it is none, or if libhdf5
    cannot open it (its own check as a file then says what it is).

    What :func:`h5guard.check` runs in its sandbox for each file that has a segment
    directory beside it: libhdf5 may crash or hang on a damaged index as on any file.
    """
    try:
        f = h5py.File(path, "r", locking=False)
    except Exception:
        return None
    with f:
        try:
            if not is_index(f):
                return None
        except Exception:
            return None
        return _inspect_open(f, path)


def compare(
    verdict: Verdict, found: Mapping[str, Mapping[str, str | None] | None]
) -> list[Finding]:
    """Match each segment's valid groups (``found``: segment path -> its groups, None
    when it is not an h5guard output) against the index's links and listing digests."""
    problems: list[Finding] = []
    if verdict.index is None:
        return problems
    for seg in verdict.index.segments:
        seg_path = verdict.index.segment_path(seg.name)
        groups = found.get(seg_path)
        if groups is None:
            continue  # missing or not an output: already reported
        linked = set(verdict.keys.get(seg_path, ()))
        for key in sorted(linked - set(groups)):
            problems.append(
                _error(
                    verdict.index.path,
                    f"/{key}",
                    Code.UNEXPECTED_OBJECT,
                    f"links to {seg_path}, which lacks it",
                )
            )
        for key in sorted(set(groups) - linked):
            problems.append(
                _error(
                    seg_path,
                    f"/{key}",
                    Code.UNEXPECTED_OBJECT,
                    f"group not linked from the index {verdict.index.path}",
                )
            )
        if listing_digest(groups) != seg.digest and linked == set(groups):
            problems.append(
                _error(
                    seg_path,
                    "/",
                    Code.DIGEST_MISMATCH,
                    f"its groups' digests do not match the index's listing {seg.digest}",
                )
            )
    return problems


def locate(f: h5py.File, path: str, key: str) -> str | None:
    """For :func:`h5guard.read`: the segment holding ``key`` when ``f`` is an index,
    resolved here (never through libhdf5's external-link search); None when ``f`` is
    no index.

    Raises
    ------
    ResultNotFoundError
        ``f`` is an index without ``key``.
    UnreadableOutputError
        The index or its link is malformed.
    """
    if not is_index(f):
        return None
    seg = target(f, open_index(f, path), key)
    if seg is None:
        raise ResultNotFoundError(path, key)
    return seg


def expand_indexes(
    files: Sequence[str], verdicts: Mapping[str, Verdict | None]
) -> tuple[list[str], list[Finding], list[Verdict]]:
    """For :func:`h5guard.check`: each index among ``files`` stands for its segments.

    Parameters
    ----------
    files
        The files to check.
    verdicts
        :func:`inspect_if_index` of some of them; a file missing from it, or None,
        is no index.

    Returns
    -------
    tuple
        The files to validate (each index replaced by its listed, present segments), the
        findings about the indexes themselves, and their verdicts for :func:`findings_after`.
    """
    out: list[str] = []
    findings: list[Finding] = []
    found: list[Verdict] = []
    for path in files:
        verdict = verdicts.get(path)
        if verdict is None:
            out.append(path)
            continue
        findings.extend(verdict.problems)
        found.append(verdict)
        out.extend(p for p in verdict.segment_paths if os.path.isfile(p) and not os.path.islink(p))
    return out, findings, found


def findings_after(
    verdicts: Sequence[Verdict], report: Report
) -> tuple[list[Finding], list[FileSummary]]:
    """For :func:`h5guard.check`: match each index against its checked segments.

    Returns
    -------
    tuple
        Findings (a segment that is no h5guard output, links and listings that do not
        match the segments' groups) and every summary: each index's with its
        segments' groups, each segment's with none (so no group counts twice).
    """
    findings: list[Finding] = []
    summaries: list[FileSummary] = []
    moved: set[str] = set()
    for verdict in verdicts:
        found: dict[str, Mapping[str, str | None] | None] = {}
        groups: dict[str, str | None] = {}
        invalid: list[str] = []
        schema: str | None = None
        for seg_path in verdict.segment_paths:
            summary = report.summary(seg_path)
            if summary is None or summary.kind is FileKind.UNOPENED:
                continue  # check --quick: the quick layer found nothing, groups unknown
            if summary.kind is not FileKind.OUTPUT:
                findings.append(
                    Finding(
                        seg_path,
                        "/",
                        Code.UNEXPECTED_OBJECT,
                        Severity.ERROR,
                        f"segment of {verdict.index.path if verdict.index else ''} is not an "
                        f"h5guard output ({summary.kind})",
                    )
                )
                found[seg_path] = None
                continue
            found[seg_path] = {**summary.groups, **dict.fromkeys(summary.invalid_groups)}
            groups.update(summary.groups)
            invalid.extend(summary.invalid_groups)
            moved.add(seg_path)
            schema = schema or summary.schema_json
        findings.extend(compare(verdict, found))
        if verdict.index is not None:
            size = os.path.getsize(verdict.index.path)
            summaries.append(
                FileSummary(
                    verdict.index.path, FileKind.OUTPUT, size, groups, schema, tuple(invalid)
                )
            )
    summaries += [
        replace(s, groups={}, invalid_groups=()) if s.path in moved else s for s in report.files
    ]
    return findings, summaries


def _error(path: str, obj: str, code: Code, message: str) -> Finding:
    return Finding(path, obj, code, Severity.ERROR, message)
