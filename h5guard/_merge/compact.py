"""``h5guard compact``: a segmented output rewritten as one self-contained file.

Under the output's lock: every group of every segment is copied into ``OUTPUT.partial``
(by :func:`~h5guard._merge.output.write_partial`, as a merge builds its output), each
copied group's digest is recomputed from the new file's bytes and matched, the new file
is renamed over the index, and only then are the segments removed. A crash leaves the
index (and its segments) or the new file (and segments no index lists, which the next
merge or compaction removes).
"""

from __future__ import annotations

import contextlib
import logging
import os

from h5guard import _atomic, _lock
from h5guard._format import names, reader
from h5guard._format import segments as _segments
from h5guard._merge import output as _output
from h5guard._merge import verify as _verify
from h5guard._merge.run import DEFAULT_LOCK_TIMEOUT, clean_segment_dir
from h5guard._sandbox import DEFAULT_MEMORY_LIMIT, DEFAULT_TIMEOUT
from h5guard.errors import MergeSourceError, UnreadableOutputError
from h5guard.report import FileKind, FileSummary
from h5guard.schema import Schema

log = logging.getLogger(__name__)


def compact(
    output: str | os.PathLike[str],
    *,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    timeout: float = DEFAULT_TIMEOUT,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
) -> int:
    """Rewrite a segmented output as one self-contained file, atomically.

    Parameters
    ----------
    output : str or os.PathLike
        The output (an index of segments; a self-contained output is left as it is,
        and leftovers of an interrupted compaction beside it are removed).
    lock_timeout : float
        Seconds to wait for a merge into the same output.
    timeout, memory_limit : float, int
        Limits of the verification helper, as for :func:`h5guard.merge`.

    Returns
    -------
    int
        Groups in the output.

    Raises
    ------
    LockTimeoutError
        A merge holds the output's lock; nothing was touched.
    UnreadableOutputError
        The output or a segment is damaged, or the new file did not verify; the
        segmented output is untouched.
    InsufficientSpaceError
        Not enough free space for the new file.
    MergeSourceError
        The output is a symbolic link or missing.

    Notes
    -----
    The new file is as big as the segments together; while it is written both exist.
    A reader that opened the index before the rename loses its segments when they are
    removed.
    """
    out = os.path.abspath(os.fspath(output))
    if os.path.islink(out) or not os.path.isfile(out):
        raise MergeSourceError(f"{out}: expected an output file (not a link), found none")
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            _lock.exclusive(out, timeout=lock_timeout, purpose=f"h5guard compact {out}")
        )
        existing = stack.enter_context(contextlib.closing(_output.Output(out)))
        index = existing.index
        if index is None:
            # A segment directory beside a self-contained output may be another output's
            # (one renamed away without it): never removed from here.
            return existing.count
        assert existing.file is not None
        schema_json = existing.schema_json
        user_attrs = {
            name: reader.read_attr(existing.file, name)
            for name in existing.file.attrs
            if not name.startswith(names.RESERVED_PREFIX)
        }
        existing.close()
        parts = _segments.resolve(out) or []
        summaries: dict[str, FileSummary] = {}
        new: dict[str, str | None] = {}
        for seg_path, keys in parts:
            with _segments.open_segment(seg_path) as f:
                digests = _segments.group_digests(f, keys)
            missing = [k for k, d in digests.items() if d is None]
            if missing:
                raise UnreadableOutputError(
                    f"{seg_path}:/{missing[0]}: group has no digest; {out} left segmented"
                )
            summaries[seg_path] = FileSummary(
                seg_path, FileKind.OUTPUT, os.path.getsize(seg_path), digests
            )
            new.update(digests)
        size = sum(s.size for s in summaries.values())
        needed = int(size * 1.1) + 1024 * 1024
        _atomic.require_free_space(
            os.path.dirname(out), needed, waiting=f"{out} is unchanged (still segmented)"
        )
        partial = out + _atomic.PARTIAL_SUFFIX
        schema = (
            Schema.from_json(schema_json, source=f"{out} embedded schema") if schema_json else None
        )
        try:
            added = _output.write_partial(
                "",
                partial,
                shards=[p for p, _ in parts],
                summaries=summaries,
                new=new,
                existing_groups=0,
                schema=schema,
                root_attrs=user_attrs,
                reserve=needed,
                inherit_sources=True,
            )
            with _verify.helper(
                len(added), timeout=timeout, memory_limit=memory_limit + needed
            ) as helper:
                problems = _verify.verify_copy(partial, added, helper=helper)
            if problems:
                raise UnreadableOutputError(
                    f"{partial}: verification of the compacted output failed, {out} left "
                    f"segmented: {problems[0]}"
                )
        except BaseException:
            _atomic.remove_quietly(partial)
            raise
        _atomic.commit_file(partial, out)
        _remove_segment_dir(index.directory)
        log.info("compacted %s: %d group(s) from %d segment(s)", out, len(added), len(parts))
        return len(added)


def _remove_segment_dir(segdir: str) -> None:
    """Remove the segments no index lists any more, then the directory if it is empty."""
    if not os.path.isdir(segdir) or os.path.islink(segdir):
        return
    clean_segment_dir(segdir, keep=())
    with contextlib.suppress(OSError):
        os.rmdir(segdir)  # anything else in it is not h5guard's to remove
        _atomic.fsync_dir(os.path.dirname(segdir))
