"""I/O-error campaign: fail each step of the commit and merge protocols, and fill a disk.

Injected failures (in a forked child, with ``unittest.mock.patch``; the parent checks
the files afterwards), each with ENOSPC, EIO and EACCES, at the first or second call:

* ShardWriter commit protocol (each once as a one-off fault and once as a lasting one,
  where every call fails): ``write`` (``h5guard._format.write.write_dataset`` raises the
  OSError h5py raises for a failed HDF5 write, whose message names the file), ``close``
  (``h5py.File.close`` of the batch file closes, then raises libhdf5's RuntimeError for
  a failed flush), ``fsync`` of the partial file, ``replace`` (``os.replace`` to the
  final name) and ``dirfsync`` (fsync of the shard directory). Also ``write, caller
  continues``: the add fails and the caller records it and goes on, as a sweep worker
  does.
* merge protocol: ``copy`` (byte copy of the old output), ``write`` (``h5o.copy`` into
  the partial), ``close``, ``fsync``, ``replace``, ``dirfsync`` of the output's directory,
  and ``quarantine`` (the move of a bad shard into ``quarantine/``).
* a real full file system: a small tmpfs mounted inside the work dir (needs root),
  filled before the operation and, separately, right after h5guard's free-space check.

Checks: the operation raises a clear error (an H5GuardError or OSError whose message
names the file), the previous output and committed shards are intact and validate, no
``*.partial`` or temporary file is left (while the writer process is still alive), the
shard dir is unchanged except for quarantine moves, and a clean re-run merges every
group exactly once with the right digest.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import select
import shutil
import signal
import stat
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from campaigns import _samples
from campaigns._common import (
    CampaignResult,
    Deadline,
    Row,
    fill_file_system,
    sha256_file,
    small_tmpfs,
)
from h5guard import H5GuardError, Sandbox, Severity, ShardWriter, merge, validate_many

NAME = "ioerror"
ERRNOS = (errno.ENOSPC, errno.EIO, errno.EACCES)
WRITER_STEPS = ("write", "close", "fsync", "replace", "dirfsync", "write, caller continues")
MERGE_STEPS = ("copy", "write", "close", "fsync", "replace", "dirfsync", "quarantine")
PRIOR = range(100, 106)  # groups in shards committed before the faulty writer runs
WRITER_KEYS = range(0, 6)
OLD = range(0, 8)
NEW = range(8, 20)
LEGEND = (
    "runs = injected failures that fired; flagged = the operation raised a clear error "
    "(H5GuardError/OSError naming the file); passed-unchanged = every state check held "
    "(prior output intact and valid, no leftovers, dir unchanged but for quarantine moves, "
    "clean re-run), however the error was reported; silent = the error was swallowed (the "
    "operation reported success); crashes = the process died, or the error was not an "
    "H5GuardError/OSError naming the file; lost = committed results missing."
)


@dataclass
class Fault:
    step: str
    errno_: int
    nth: int
    calls: int = 0
    where: str = ""

    def fire(self, where: str) -> bool:
        """Fail the ``nth`` call (``nth == 0``: every call, a fault that does not go away)."""
        self.calls += 1
        if self.nth == 0 or self.calls == self.nth:
            self.where = where
            return True
        return False

    @property
    def strerror(self) -> str:
        return os.strerror(self.errno_)

    def hdf5_text(self, filename: str) -> str:
        return (
            f"file write failed: time = {time.ctime()}, filename = '{filename}', "
            f"file descriptor = 7, errno = {self.errno_}, error message = '{self.strerror}'"
        )


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


@contextlib.contextmanager
def _inject(fault: Fault, protocol: str, ctx: dict[str, str]) -> Iterator[None]:
    """Patch the one function whose failure ``fault`` describes (in this process only)."""
    import h5py

    from h5guard import _atomic
    from h5guard._format import write as _layout

    real_fsync, real_replace = os.fsync, os.replace
    step = fault.step.split(",")[0]
    patches: list[Any] = []
    if step == "write" and protocol == "writer":
        real_write = _layout.write_dataset

        def write_dataset(group: Any, name: str, arr: Any) -> None:
            if fault.fire(f"write_dataset {name}"):
                raise OSError(
                    fault.errno_,
                    f"Can't synchronously write data ({fault.hdf5_text(group.file.filename)})",
                )
            real_write(group, name, arr)

        patches.append(mock.patch.object(_layout, "write_dataset", write_dataset))
    elif step == "write":
        real_copy = h5py.h5o.copy

        def copy(
            src_loc: Any, src_name: bytes, dst_loc: Any, dst_name: bytes, *a: Any, **k: Any
        ) -> Any:
            if fault.fire(f"copy {dst_name!r}"):
                target = h5py.h5f.get_name(dst_loc).decode()
                raise OSError(fault.errno_, f"Unable to copy object ({fault.hdf5_text(target)})")
            return real_copy(src_loc, src_name, dst_loc, dst_name, *a, **k)

        patches.append(mock.patch.object(h5py.h5o, "copy", copy))
    elif step == "close":
        from h5guard._format import reader as _reader

        def failing(real_close: Callable[[Any], None]) -> Callable[[Any], None]:
            def close(self: Any) -> None:
                try:
                    name = self.filename
                except Exception:
                    name = ""
                real_close(self)
                if name.endswith(".partial") and fault.fire(f"close {name}"):
                    raise RuntimeError(f"Problems closing file ({fault.hdf5_text(name)})")

            return close

        # h5py's close, and h5guard's own (the index's partial is closed by it).
        patches.append(mock.patch.object(h5py.File, "close", failing(h5py.File.close)))
        patches.append(mock.patch.object(_reader, "close_file", failing(_reader.close_file)))
    elif step in ("fsync", "dirfsync"):
        want = ctx["fsync_file"] if step == "fsync" else ctx["fsync_dir"]

        def fsync(fd: int) -> None:
            path = _fd_path(fd)
            is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
            match = is_dir == (step == "dirfsync") and (
                path.endswith(want) if step == "fsync" else path == want
            )
            if match and fault.fire(f"fsync {path}"):
                raise OSError(fault.errno_, fault.strerror)
            real_fsync(fd)

        patches.append(mock.patch("h5guard._atomic.os.fsync", fsync))
    elif step in ("replace", "quarantine"):
        want = ctx["replace_src"] if step == "replace" else ctx["quarantine_src"]

        def replace(src: Any, dst: Any, **kwargs: Any) -> None:
            if os.fspath(src).endswith(want) and fault.fire(f"replace {src}"):
                raise OSError(fault.errno_, fault.strerror, os.fspath(src), None, os.fspath(dst))
            real_replace(src, dst, **kwargs)

        patches.append(mock.patch("h5guard._atomic.os.replace", replace))
    elif step == "copy":
        real_copyfile = _atomic.copy_file

        def copy_file(src: Any, dst: Any) -> None:
            if fault.fire(f"copy_file {dst}"):
                raise OSError(fault.errno_, fault.strerror, os.fspath(src), None, os.fspath(dst))
            real_copyfile(src, dst)

        patches.append(mock.patch.object(_atomic, "copy_file", copy_file))
    else:
        raise ValueError(f"unknown step {fault.step!r}")
    with contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p)
        yield


# -- running an operation in a forked child ------------------------------------------------
def _forked(fn: Callable[[], dict[str, Any]], timeout: float) -> tuple[str, dict[str, Any]]:
    """Run ``fn`` in a forked child: ``("ok", its dict)``, ``("died", ...)`` or ``("hang", ...)``."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        try:
            out = fn()
        except BaseException:
            out = {"child_error": traceback.format_exc()}
        data = json.dumps(out, default=str).encode()
        view = memoryview(data)
        while view:
            n = os.write(w, view)
            view = view[n:]
        os._exit(0)
    os.close(w)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return "hang", {}
            ready, _, _ = select.select([r], [], [], left)
            if ready:
                chunk = os.read(r, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    if not chunks or status != 0:
        return "died", {"status": status}
    return "ok", json.loads(b"".join(chunks))


def _describe_error(err: BaseException) -> dict[str, Any]:
    return {
        "type": type(err).__name__,
        "h5guard": isinstance(err, H5GuardError),
        "oserror": isinstance(err, OSError),
        "errno": getattr(err, "errno", None),
        "text": f"{err} {getattr(err, 'filename', '') or ''} {getattr(err, 'filename2', '') or ''}",
    }


def _clear(error: dict[str, Any] | None, names: list[str]) -> bool:
    if not error:
        return False
    kind_ok = bool(error["h5guard"] or error["oserror"])
    return kind_ok and any(n and n in error["text"] for n in names)


# -- the ShardWriter protocol --------------------------------------------------------------
def _writer_op(directory: Path, fault: Fault | None) -> dict[str, Any]:
    out: dict[str, Any] = {"error": None, "errors": [], "added": []}
    ctx = {"fsync_file": ".h5.partial", "fsync_dir": str(directory), "replace_src": ".h5.partial"}
    writer: ShardWriter | None = None
    with _inject(fault, "writer", ctx) if fault else contextlib.nullcontext():
        try:
            if fault is not None and fault.step == "write, caller continues":
                writer = ShardWriter(directory, schema=_samples.SCHEMA, commit_every=3, min_free=0)
                for i in WRITER_KEYS:
                    try:
                        writer.add(f"g{i}", *_samples.group(i))
                        out["added"].append(f"g{i}")
                    except OSError as err:  # what a sweep worker does: record, go on
                        out["errors"].append(_describe_error(err))
                try:
                    writer.close()
                except OSError as err:
                    out["errors"].append(_describe_error(err))
            else:
                with ShardWriter(
                    directory, schema=_samples.SCHEMA, commit_every=3, min_free=0
                ) as writer:
                    for i in WRITER_KEYS:
                        writer.add(f"g{i}", *_samples.group(i))
                        out["added"].append(f"g{i}")
        except BaseException as err:
            out["error"] = _describe_error(err)
    out["committed"] = list(writer.committed_keys) if writer else []
    out["fired"] = bool(fault and fault.where)
    out["where"] = fault.where if fault else ""
    # A failed commit leaves its results in the journal, for the next merge: not a leftover.
    out["leftovers"] = sorted(
        p.name for p in directory.iterdir() if not p.name.endswith((".h5", ".journal"))
    )
    return out


def _shards(
    directory: Path, box: Sandbox
) -> tuple[dict[str, str], dict[str, list[str]], list[str]]:
    finals = sorted(str(p) for p in directory.glob("*.h5"))
    report = validate_many(finals, sandbox=box)
    digests: dict[str, str] = {}
    where: dict[str, list[str]] = {}
    for s in report.files:
        for k, d in s.groups.items():
            digests[k] = d or ""
            where.setdefault(k, []).append(Path(s.path).name)
    problems = [str(f) for f in report.findings if f.severity >= Severity.WARNING]
    return digests, where, problems


def writer_case(
    result: CampaignResult, work: Path, fault: Fault, box: Sandbox, *, directory: Path | None = None
) -> None:
    directory = directory or work / "shards"
    directory.mkdir(parents=True, exist_ok=True)
    _samples.write_shards(directory, PRIOR, per_shard=3)
    prior = {p.name: sha256_file(p) for p in directory.glob("*.h5")}
    status, out = _forked(lambda: _writer_op(directory, fault), timeout=120)
    _judge_writer(
        result, result.row(f"writer: {fault.step}"), directory, prior, status, out, box, fault
    )


def _judge_writer(
    result: CampaignResult,
    row: Row,
    directory: Path,
    prior: dict[str, str],
    status: str,
    out: dict[str, Any],
    box: Sandbox,
    fault: Fault | None,
) -> None:
    what = (
        f"{fault.step} {errno.errorcode[fault.errno_]} at call {fault.nth}"
        if fault
        else "disk full"
    )
    if status != "ok" or "child_error" in out:
        row.runs += 1
        if status == "hang":
            row.hangs += 1
        else:
            row.crashes += 1
        result.violate(row, f"{what}: the writer process {status}: {out}")
        return
    if fault is not None and not out["fired"]:
        return  # the injection point was never reached (e.g. a second commit that never came)
    row.runs += 1
    ok = True
    error = out["error"]
    if fault is not None and fault.step == "write, caller continues":
        error = out["errors"][0] if out["errors"] else None
    names = [str(directory), ".partial", ".h5"]
    healed = error is None and set(out["added"]) <= set(out["committed"])
    # ``ok`` is about the files; how the error reached the caller is counted apart.
    if healed:
        # A failed automatic commit inside add() is retried at the next one (the results
        # are safe in the journal meanwhile): a fault that went away did no harm.
        pass
    elif error is None:
        row.silent = (row.silent or 0) + 1
        result.violate(
            row,
            f"{what}: no error reached the caller (the failure was swallowed)",
            kind="swallowed",
        )
    elif _clear(error, names):
        row.flagged = (row.flagged or 0) + 1
    else:
        row.crashes += 1
        result.violate(
            row,
            f"{what}: unclear error {error['type']}: {error['text'][:300]}",
            kind=f"unclear {error['type']}",
        )
    for name, digest in prior.items():
        p = directory / name
        if not p.exists() or sha256_file(p) != digest:
            ok = False
            result.violate(row, f"{what}: earlier shard {name} changed or vanished")
    if out["leftovers"]:
        ok = False
        result.violate(
            row, f"{what}: left {out['leftovers']} behind (the writer process still alive)"
        )
    digests, where, problems = _shards(directory, box)
    if problems:
        ok = False
        result.violate(
            row, f"{what}: a committed shard fails validation: {problems[0]}", kind="invalid shard"
        )
    lost = [k for k in out["committed"] if k not in digests]
    if lost:
        ok = False
        row.lost = (row.lost or 0) + len(lost)
        result.violate(row, f"{what}: keys reported committed are missing: {lost}")
    # Every add() that returned is in the output of a merge (journals recovered).
    merged_out = directory.parent / f"{directory.name}-judged.h5"
    try:
        merge(directory, merged_out, keep_shards=True, sandbox=box)
        merged = dict(validate_many([str(merged_out)], sandbox=box).files[0].groups)
    except (H5GuardError, OSError) as err:
        merged = {}
        result.violate(row, f"{what}: merging the directory afterwards failed: {err}")
    finally:
        with contextlib.suppress(OSError):
            merged_out.unlink()
    missing = [k for k in out["added"] if k not in merged]
    if missing:
        ok = False
        row.lost = (row.lost or 0) + len(missing)
        result.violate(row, f"{what}: add() returned but the merge lacks {missing}")
    wrong = [
        k
        for k, d in digests.items()
        if k.startswith("g") and d != _samples.expected_digest(int(k[1:]))
    ]
    if wrong or any(len(v) > 1 for v in where.values()):
        ok = False
        result.violate(row, f"{what}: wrong or duplicated groups {wrong[:3]}")
    if ok:
        row.passed = (row.passed or 0) + 1


# -- the merge protocol --------------------------------------------------------------------
def _merge_setup(work: Path, template: Path | None = None) -> tuple[Path, Path]:
    """An output holding OLD, shards of NEW and a non-HDF5 ``bad.h5`` in ``work``.

    With ``template`` (a directory made by an earlier call), a copy of it: faster.
    """
    tmp, out = work / "tmp", work / "out.h5"
    if template is not None:
        shutil.copytree(template, work, dirs_exist_ok=True)
        return tmp, out
    _samples.write_shards(tmp, OLD, per_shard=4, wake_every=3)
    merge(tmp, out, workers=1)
    _samples.write_shards(tmp, NEW, per_shard=4, wake_every=3)
    (tmp / "bad.h5").write_bytes(b"a worker's log, not HDF5\n" * 100)
    return tmp, out


def _merge_op(
    tmp: Path, out: Path, fault: Fault | None, before: Callable[[], None] | None = None
) -> dict[str, Any]:
    res: dict[str, Any] = {"error": None}
    ctx = {
        "fsync_file": out.name + ".partial",
        "fsync_dir": str(out.parent),
        "replace_src": out.name + ".partial",
        "quarantine_src": "bad.h5",
    }
    with contextlib.ExitStack() as stack:
        if fault is not None:
            stack.enter_context(_inject(fault, "merge", ctx))
        if before is not None:
            before()
        try:
            report = merge(tmp, out, workers=1, lock_timeout=10)
            res["exit"] = report.exit_code
        except BaseException as err:
            res["error"] = _describe_error(err)
    res["fired"] = bool(fault and fault.where)
    res["where"] = fault.where if fault else ""
    return res


def merge_case(
    result: CampaignResult,
    work: Path,
    fault: Fault | None,
    box: Sandbox,
    *,
    row: Row | None = None,
    setup: tuple[Path, Path] | None = None,
    before: Callable[[], None] | None = None,
    before_rerun: Callable[[], None] | None = None,
    expect_error: bool = True,
    template: Path | None = None,
) -> None:
    tmp, out = setup or _merge_setup(work, template)
    row = row or result.row(f"merge: {fault.step if fault else '?'}")
    old_sha = sha256_file(out)
    shard_names = {p.name for p in tmp.glob("*.h5")}
    status, res = _forked(lambda: _merge_op(tmp, out, fault, before), timeout=300)
    what = (
        f"{fault.step} {errno.errorcode[fault.errno_]} at call {fault.nth}"
        if fault
        else row.scenario
    )
    if status != "ok" or "child_error" in res:
        row.runs += 1
        row.crashes += status == "died" or "child_error" in res
        row.hangs += status == "hang"
        result.violate(row, f"{what}: the merge process {status}: {res}")
        return
    if fault is not None and not res["fired"]:
        return
    row.runs += 1
    ok = True
    error = res["error"]
    names = [str(out), str(tmp), out.name, "bad.h5", str(out.parent)]
    if error is None:
        if expect_error:
            row.silent = (row.silent or 0) + 1
            ok = False
            result.violate(
                row,
                f"{what}: merge succeeded (exit {res.get('exit')}); the failure was swallowed",
                kind="swallowed",
            )
    elif _clear(error, names):
        row.flagged = (row.flagged or 0) + 1
    else:
        row.crashes += 1
        ok = False
        result.violate(
            row,
            f"{what}: unclear error {error['type']}: {error['text'][:300]}",
            kind=f"unclear {error['type']}",
        )
    old_keys = {f"g{i}" for i in OLD}
    all_keys = {f"g{i}" for i in (*OLD, *NEW)}
    replaced = sha256_file(out) != old_sha
    report = validate_many([str(out)], sandbox=box)
    keys = set(report.files[0].groups)
    if (
        not report.ok
        or keys not in (old_keys, all_keys)
        or (replaced and keys == old_keys and error)
    ):
        ok = False
        result.violate(
            row,
            f"{what}: the output is not the old or the new one: {report.render_text()[:300]}, {len(keys)} groups",
        )
    leftovers = [p.name for p in out.parent.iterdir() if p.name.endswith((".partial", ".tmp"))]
    leftovers += (
        [p.name for p in (tmp / "quarantine").glob("*.tmp")]
        if (tmp / "quarantine").exists()
        else []
    )
    if leftovers:
        ok = False
        result.violate(row, f"{what}: temporary files left: {leftovers}")
    quarantined = (
        {p.name for p in (tmp / "quarantine").glob("*.h5")}
        if (tmp / "quarantine").exists()
        else set()
    )
    now = {p.name for p in tmp.glob("*.h5")}
    if quarantined - {"bad.h5"} or now - shard_names:
        ok = False
        result.violate(
            row,
            f"{what}: a good shard was quarantined or a file appeared: {quarantined}, {now - shard_names}",
        )
    if not replaced and now | quarantined != shard_names:
        ok = False
        result.violate(
            row,
            f"{what}: shards vanished while the output kept its old content: {shard_names - now - quarantined}",
        )
    # A clean re-run must complete the job.
    if before_rerun is not None:
        before_rerun()
    try:
        again = merge(tmp, out, workers=1, lock_timeout=10)
    except Exception as err:
        ok = False
        result.violate(row, f"{what}: the clean re-run raised {type(err).__name__}: {err}")
    else:
        report = validate_many([str(out)], sandbox=box)
        groups = report.files[0].groups
        missing = all_keys - set(groups)
        wrong = [k for k in all_keys & set(groups) if groups[k] != _expected_merge(int(k[1:]))]
        if not report.ok or missing or wrong or any(tmp.glob("*.h5")):
            ok = False
            row.lost = (row.lost or 0) + len(missing)
            result.violate(
                row,
                f"{what}: after the re-run (exit {again.exit_code}) missing {sorted(missing)[:5]} wrong {wrong[:3]} left {[p.name for p in tmp.glob('*.h5')]}",
            )
    if ok:
        row.passed = (row.passed or 0) + 1


def _expected_merge(i: int) -> str:
    return _samples.expected_digest(i, wake=_samples.wake_of(i, 3))


# -- a real full file system ----------------------------------------------------------------
def _tmpfs_cases(
    result: CampaignResult, work: Path, box: Sandbox, only: tuple[str, ...] | None = None
) -> None:
    cases: list[tuple[str, str, Callable[[Path], None]]] = [
        (
            "disk full: writer add (default min_free)",
            "24m",
            lambda m: _full_writer(result, m, box, race=False),
        ),
        (
            "disk full: writer, disk fills before commit",
            "40m",
            lambda m: _full_writer(result, m, box, race=True),
        ),
        (
            "disk full: merge (refused up front)",
            "24m",
            lambda m: _full_merge(result, m, box, race=False),
        ),
        (
            "disk full: merge, disk fills after the space check",
            "40m",
            lambda m: _full_merge(result, m, box, race=True),
        ),
    ]
    for n, (label, size, fn) in enumerate(cases):
        if only is not None and label not in only:
            continue
        row = result.row(label, lost=0)
        started = time.monotonic()
        with small_tmpfs(work / f"mnt{n}", size) as (mnt, reason):
            if mnt is None:
                result.notes.append(f"{label}: not run: {reason}")
                row.runs = 0
                continue
            fn(mnt)
        row.seconds += time.monotonic() - started


def _full_writer(result: CampaignResult, mnt: Path, box: Sandbox, *, race: bool) -> None:
    label = (
        "disk full: writer, disk fills before commit"
        if race
        else "disk full: writer add (default min_free)"
    )
    row = result.row(label)
    directory = mnt / "shards"
    directory.mkdir()
    _samples.write_shards(directory, PRIOR, per_shard=3)
    prior = {p.name: sha256_file(p) for p in directory.glob("*.h5")}

    def op() -> dict[str, Any]:
        out: dict[str, Any] = {"error": None, "errors": [], "fired": True, "where": "", "added": []}
        writer = None
        if not race:
            fill_file_system(mnt, leave=1 << 20)
        try:
            with ShardWriter(directory, schema=_samples.SCHEMA, commit_every=1000) as writer:
                for i in WRITER_KEYS:
                    writer.add(f"g{i}", *_samples.group(i))
                    out["added"].append(f"g{i}")
                if race:
                    fill_file_system(mnt, leave=0)
        except BaseException as err:
            out["error"] = _describe_error(err)
        out["committed"] = list(writer.committed_keys) if writer else []
        out["leftovers"] = sorted(
            p.name for p in directory.iterdir() if not p.name.endswith((".h5", ".journal"))
        )
        return out

    status, out = _forked(op, timeout=120)
    for p in mnt.glob("filler-*"):
        p.unlink()
    _judge_writer(result, row, directory, prior, status, out, box, None)


def _full_merge(result: CampaignResult, mnt: Path, box: Sandbox, *, race: bool) -> None:
    label = (
        "disk full: merge, disk fills after the space check"
        if race
        else "disk full: merge (refused up front)"
    )
    row = result.row(label)
    setup = _merge_setup(mnt)

    def before() -> None:
        from h5guard import _atomic

        if not race:
            fill_file_system(mnt, leave=2 << 20)
            return
        real = _atomic.require_free_space

        def check_then_fill(directory: Any, needed: int, **kwargs: Any) -> None:
            real(directory, needed, **kwargs)
            fill_file_system(mnt, leave=0)  # another process takes the space right now

        _atomic.require_free_space = check_then_fill

    def free_space() -> None:
        # The clean re-run (in this process) needs the space the child's filler took.
        for p in mnt.glob("filler-*"):
            p.unlink()

    merge_case(result, mnt, None, box, row=row, setup=setup, before=before, before_rerun=free_space)


# -- the campaign ---------------------------------------------------------------------------
@dataclass
class _Case:
    protocol: str
    fault: Fault
    order: tuple[int, float] = field(default=(0, 0.0))


def _cases(rng: random.Random) -> list[_Case]:
    cases: list[_Case] = []
    for protocol, steps in (("writer", WRITER_STEPS), ("merge", MERGE_STEPS)):
        for step in steps:
            for e in ERRNOS:
                # 0: a lasting fault (every call fails); 1, 2: a one-off fault, which the
                # writer's next automatic commit heals (the results wait in the journal).
                nths: tuple[int, ...] = (0, 1, 2) if protocol == "writer" else (1,)
                if step == "write, caller continues":
                    nths = (0, 1)
                if protocol == "merge" and step == "write":
                    nths = (1, 5)
                for nth in nths:
                    cases.append(_Case(protocol, Fault(step, e, nth)))
    # Cover every step once before repeating any (so a short budget still sees them all).
    firsts: set[tuple[str, str]] = set()
    for c in sorted(cases, key=lambda c: rng.random()):
        key = (c.protocol, c.fault.step)
        c.order = (0 if key not in firsts else 1, rng.random())
        firsts.add(key)
    return sorted(cases, key=lambda c: c.order)


def make_merge_template(directory: Path) -> Path:
    """The starting state of every merge case, made once (``run_case`` copies it)."""
    _merge_setup(directory)
    return directory


def run_case(
    result: CampaignResult,
    work: Path,
    protocol: str,
    fault: Fault,
    box: Sandbox,
    template: Path | None = None,
) -> Row:
    """Inject one failure into one protocol step and judge the outcome; returns its row."""
    started = time.monotonic()
    if protocol == "writer":
        writer_case(result, work, fault, box)
    else:
        merge_case(result, work, fault, box, template=template)
    row = result.row(f"{protocol}: {fault.step}")
    row.seconds += time.monotonic() - started
    return row


def run_full_disk(
    result: CampaignResult, work: Path, box: Sandbox, only: tuple[str, ...] | None = None
) -> None:
    """The real full-file-system rows (tmpfs; reported as not run without root)."""
    _tmpfs_cases(result, work, box, only)


def run(budget: float, seed: int = 0) -> CampaignResult:
    deadline = Deadline(budget)
    result = CampaignResult(NAME, legend=LEGEND)
    rng = random.Random(seed)
    with (
        tempfile.TemporaryDirectory(prefix="campaign-ioerror-") as tmp,
        Sandbox(workers=2, timeout=60) as box,
    ):
        work = Path(tmp)
        _tmpfs_cases(result, work / "tmpfs", box)
        template = make_merge_template(work / "template")
        for n, case in enumerate(_cases(rng)):
            if deadline.expired():
                break
            run_case(result, work / f"case{n}", case.protocol, case.fault, box, template)
    result.rows.sort(key=lambda r: (r.scenario.split(":")[0], r.scenario))
    result.seconds = deadline.elapsed()
    return result
