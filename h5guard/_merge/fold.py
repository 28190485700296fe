"""Folding: small segments copied together, so an output's segments stay few.

Each segmented merge adds one segment. Left alone, an output merged a thousand times
holds a thousand segment files: every merge reads and rewrites their list, ``check``
and ``iter_results`` open each one, and a reader of all of them runs into the limit of
open files. So segments carry a *level*: a merge's new segment is level 0, and once
the last :func:`fanout` segments of the output are level 0, the next merge copies
their groups into one new segment of level 1 in the same step that adds its own (its
index lists the new segment in their place and re-points their keys). Folding
cascades: when that fold completes a run of :func:`fanout` level-1 segments at the
end, they are folded with it into one level-2 segment, and so on, in one copy.

An output of ``m`` merges then holds about ``(fanout - 1) * log_fanout(m)`` segments,
and each group is copied about once per level (3 times over 4,096 merges at fanout
16). No fold takes more than :data:`FOLD_MAX_BYTES`: segments that big (a merge of
many or big results) stay as they are, and their number stays small because each is
big.

A fold is the merge's housekeeping, never its purpose: the groups are copied by the
function that builds every output (:func:`h5guard._merge.output.write_partial`) and
every copied group's digest is recomputed from the new file before the index lists it.
If the copy fails for any reason but an interruption (a segment that does not verify,
a full disk), the merge goes on without the fold and says so in the log.

The folded segments are not removed by the merge that folds them: the index it
replaces still lists them, and a reader that opened the output before the merge reads
on. The next merge removes them, as any segment no index lists.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from h5guard import _atomic, _env
from h5guard._format import segments as _segments
from h5guard._merge import output as _output
from h5guard._merge import verify as _verify
from h5guard.errors import H5GuardError
from h5guard.report import FileKind, FileSummary
from h5guard.schema import Schema

log = logging.getLogger(__name__)

DEFAULT_FANOUT = 16
FANOUT_ENV = "H5GUARD_SEGMENT_FANOUT"
# The most bytes one fold copies. A fold of that size costs about a second on the
# shared 2-core machine, once per thousands of small merges; bigger segments are left
# as they are (each is then a merge's worth of big results, and they are few).
FOLD_MAX_BYTES = 256 * 1024 * 1024


def fanout() -> int:
    """How many segments of one level fold into one of the next (``$H5GUARD_SEGMENT_FANOUT``,
    default 16; 0 switches folding off)."""
    return _env.whole_number(
        FANOUT_ENV,
        DEFAULT_FANOUT,
        valid=lambda n: n == 0 or n >= 2,
        expected="a whole number >= 2 (0: off)",
    )


@dataclass(frozen=True, slots=True)
class FoldPlan:
    """Which segments a merge folds: ``segments[start:]`` into one of ``level``."""

    start: int
    level: int


def plan(segments: Sequence[_segments.Segment], width: int, max_bytes: int) -> FoldPlan | None:
    """The fold due on an output's ``segments`` (merge order), or None.

    Due when the last ``width`` segments are level 0 and hold at most ``max_bytes``
    together; it extends over each run of ``width - 1`` segments of the next level
    just before it (which the fold completes to ``width``), as far as ``max_bytes``
    allows.
    """
    if width < 2 or len(segments) < width:
        return None
    start = len(segments) - width
    tail = segments[start:]
    if any(s.level != 0 for s in tail):
        return None
    size = sum(s.size for s in tail)
    if size > max_bytes:
        return None
    level = 1
    while start >= width - 1:
        run = segments[start - (width - 1) : start]
        more = sum(s.size for s in run)
        if any(s.level != level for s in run) or size + more > max_bytes:
            break
        start -= width - 1
        size += more
        level += 1
    return FoldPlan(start, level)


@dataclass(frozen=True, slots=True)
class Folded:
    """A fold's new segment, written and verified under its partial name."""

    partial: str
    final: str
    segment: _segments.Segment
    keys: list[str]  # every key of the folded segments, all now in this one
    replaced: tuple[_segments.Segment, ...]


def fold(
    index: _segments.Index,
    due: FoldPlan,
    *,
    number: int,
    schema: Schema | None,
) -> Folded | None:
    """Copy the groups of ``index.segments[due.start:]`` into one new segment, verified.

    Parameters
    ----------
    index
        The output's index.
    due
        What to fold (:func:`plan`).
    number
        The new segment's number (its name's merge order).
    schema
        The schema the output embeds.

    Returns
    -------
    Folded or None
        The new segment under its partial name (the caller makes it durable), or None
        when the fold could not be made; the output is unchanged either way.
    """
    replaced = tuple(index.segments[due.start :])
    paths = [index.segment_path(s.name) for s in replaced]
    name = _segments.new_segment_name(number)
    final = index.segment_path(name)
    partial = final + _atomic.PARTIAL_SUFFIX
    try:
        summaries: dict[str, FileSummary] = {}
        digests: dict[str, str | None] = {}
        for path in paths:
            keys = _segments.segment_keys_at(path)
            with _segments.open_segment(path) as f:
                found = _segments.group_digests(f, keys)
            if any(d is None for d in found.values()):
                raise _NotFolded(f"{path}: a group has no digest")
            summaries[path] = FileSummary(path, FileKind.OUTPUT, os.path.getsize(path), found)
            digests.update(found)
        size = sum(s.size for s in replaced)
        added = _output.write_partial(
            "",
            partial,
            shards=paths,
            summaries=summaries,
            new=digests,
            existing_groups=0,
            schema=schema,
            root_attrs={},
            reserve=int(size * 1.1) + 1024 * 1024,
            inherit_sources=True,
        )
        if len(added) != len(digests):
            raise _NotFolded(f"{partial}: {len(added)} groups copied, expected {len(digests)}")
        problems = _verify.verify_copy(partial, added, helper=None)
        if problems:
            raise _NotFolded(str(problems[0]))
    except (H5GuardError, OSError, RuntimeError, ValueError, KeyError, _NotFolded) as err:
        _atomic.remove_quietly(partial)
        log.warning(
            "%s: %d segment(s) not folded, the merge goes on without (%s)",
            index.path,
            len(replaced),
            err,
        )
        return None
    except BaseException:
        _atomic.remove_quietly(partial)
        raise
    listing = {k: d for k, (_, d) in added.items()}
    segment = _segments.Segment(
        name, os.path.getsize(partial), len(added), _segments.listing_digest(listing), due.level
    )
    return Folded(partial, final, segment, sorted(added), replaced)


class _NotFolded(Exception):
    """Why a fold was given up (logged; the merge goes on)."""
