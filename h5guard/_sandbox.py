"""Run risky reads in child processes with a time and a memory limit.

libhdf5 can loop forever, allocate gigabytes or segfault on a damaged file, and no
Python code in the same process can stop it. :class:`Sandbox` keeps a small pool of
long-lived child interpreters (so checking many files is not dominated by start-up)
and runs top-level functions in them. A call that overruns its time is answered by
killing the child; a child that dies is replaced. Either way the caller gets a
:class:`SandboxResult`, never a hang or a crash of its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pickle
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from h5guard.errors import SandboxError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 120.0
DEFAULT_MEMORY_LIMIT = 1024**3
STARTUP_ALLOWANCE = 60.0  # seconds a new child may take to start before its first call
_HEADER = 8


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """The outcome of one sandboxed call.

    Parameters
    ----------
    value
        What the function returned (None on failure).
    failure
        None on success, else one of ``"timeout"``, ``"memory"``, ``"crashed"`` (the
        child died, e.g. a segfault in libhdf5) or ``"error"`` (the function raised).
    detail
        The exception's one-line description, or how the child died.
    """

    value: Any = None
    failure: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        """The call returned a value."""
        return self.failure is None


_PR_SET_PDEATHSIG = 1
_retire_requested = False


def retire_after_call() -> None:
    """Called inside a sandboxed function: this child must not run another call.

    For a function that saw libhdf5 fail on damaged metadata (or read data that makes
    libhdf5 allocate library-owned objects): the process's heap may be damaged without
    having crashed yet, and the next file's verdict must not depend on it. Outside a
    sandbox child it does nothing.
    """
    global _retire_requested
    _retire_requested = True


def take_retirement() -> bool:
    """For the child's main loop: was retirement requested during the last call?"""
    global _retire_requested
    requested, _retire_requested = _retire_requested, False
    return requested


def die_with_parent() -> None:
    """Ask the kernel (Linux) to SIGKILL this process when its parent dies.

    A child spinning inside libhdf5 never reads its pipe again, so it would not notice
    its parent dying on its own.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _write_frame(stream: IO[bytes], obj: Any) -> None:
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(len(body).to_bytes(_HEADER, "little") + body)
    stream.flush()


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    chunks = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _read_frame(stream: IO[bytes]) -> Any:
    size = int.from_bytes(_read_exact(stream, _HEADER), "little")
    return pickle.loads(_read_exact(stream, size))


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # One BLAS thread: the children do I/O, and thread pools inflate the address
    # space that the memory limit is measured against.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    env["HDF5_USE_FILE_LOCKING"] = "FALSE"
    package_parent = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    return env


class _Child:
    def __init__(self, memory_limit: int) -> None:
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "h5guard._check.child", str(memory_limit)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.stderr,
                env=_child_env(),
                close_fds=True,
            )
        except OSError as err:
            self.stderr.close()
            raise SandboxError(f"cannot start the checker process {sys.executable}: {err}") from err
        self.task: int | None = None
        self.deadline = 0.0
        self.timeout = 0.0
        # Until the child says it is ready (interpreter, h5py and numpy imported), a call's
        # clock does not run: start-up, slow on a loaded machine, is not the file's time.
        self.ready = False

    @property
    def fd(self) -> int:
        assert self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def send(self, task: int, payload: tuple[Any, ...], timeout: float) -> None:
        assert self.proc.stdin is not None
        self.task = task
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout + (0.0 if self.ready else STARTUP_ALLOWANCE)
        _write_frame(self.proc.stdin, payload)

    def receive(self) -> Any:
        """The next frame. Read with os.read, never through a buffered reader: a
        read-ahead would hide the answer that follows the ready frame from select()."""
        size = int.from_bytes(self._read_exact(_HEADER), "little")
        return pickle.loads(self._read_exact(size))

    def _read_exact(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = os.read(self.fd, n)
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def death_note(self) -> str:
        code = self.proc.wait()
        if code < 0:
            try:
                what = signal.Signals(-code).name
            except ValueError:
                what = f"signal {-code}"
        else:
            what = f"exit code {code}"
        self.stderr.seek(0)
        tail = self.stderr.read()[-2000:].decode("utf-8", "replace").strip().splitlines()
        last = tail[-1].strip() if tail else ""
        return f"the checker process died ({what})" + (f": {last}" if last else "")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()
        self.close()

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


class Sandbox:
    """A pool of checker processes; use as a context manager.

    Each call runs in a child process (``python -m h5guard._check.child``) that may hang
    or crash on a damaged file without harming the caller: this is the one child-process
    protocol of h5guard (check, salvage and the merge's verification use it).

    Parameters
    ----------
    workers
        Children to run at most at once (default: one per CPU).
    timeout
        Seconds per call; a child past it is killed.
    memory_limit
        Bytes of address space a child may add on top of what it had after start-up.
    retire_on_request
        False: a child that asked to be retired is reused anyway (fault-injection
        campaigns); a child that crashed, timed out or raised is never reused.

    Raises
    ------
    ValueError
        ``timeout`` not positive, or ``memory_limit`` under 16 MiB.
    """

    def __init__(
        self,
        *,
        workers: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        retire_on_request: bool = True,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout: expected seconds > 0, got {timeout}")
        if memory_limit < 16 * 1024 * 1024:
            raise ValueError(f"memory_limit: expected at least 16 MiB, got {memory_limit} bytes")
        self.workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
        self.timeout = timeout
        self.memory_limit = memory_limit
        self._idle: list[_Child] = []
        self._owns_children = True
        self.retired = 0  # children not reused after a call (see retire_after_call)
        # False: a child that asked to be retired (retire_after_call) is reused anyway;
        # for fault-injection campaigns that check thousands of damaged files and want
        # the old speed. A child that crashed, timed out or raised is never reused.
        self.retire_on_request = retire_on_request

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if not self._owns_children:
            return
        while self._idle:
            self._idle.pop().close()

    def start(self, children: int = 1) -> None:
        """Start up to ``children`` children now, without waiting for them to be ready.

        A caller that will need a child later (the merge's verification helper) starts
        it early, so its interpreter start-up overlaps other work; the next
        :meth:`call` or :meth:`map` uses it. Children are started in the calling
        thread, so their parent-death signal follows this process.

        Parameters
        ----------
        children
            How many children to have idle at most (capped at ``workers``).
        """
        while len(self._idle) < min(children, self.workers):
            self._idle.append(_Child(self.memory_limit))

    def share(self, *, timeout: float) -> Sandbox:
        """A sandbox that runs its calls in this one's child processes, with its own
        per-call ``timeout``: an application that already keeps a pool of children (a
        sweep's workers) checks files without starting new interpreters. The children
        keep the memory limit they were started with; closing the view leaves them to
        this sandbox, and the two must not run calls at the same time.
        """
        view = Sandbox(workers=self.workers, timeout=timeout, memory_limit=self.memory_limit)
        view._idle = self._idle
        view._owns_children = False
        return view

    def call(self, target: str, *args: Any) -> SandboxResult:
        """Run ``module:function(*args)`` in a child and return its outcome.

        Parameters
        ----------
        target
            ``"module:function"``; the function and its arguments must pickle.
        *args
            Its arguments.

        Returns
        -------
        SandboxResult
            The value returned, or why there is none.
        """
        for _, result in self.map(target, [args]):
            return result
        raise AssertionError("unreachable")

    def map(
        self, target: str, calls: Iterable[tuple[Any, ...]]
    ) -> Iterator[tuple[int, SandboxResult]]:
        """Run ``target`` once per argument tuple, in parallel.

        Parameters
        ----------
        target
            ``"module:function"``.
        calls
            One argument tuple per call.

        Yields
        ------
        tuple[int, SandboxResult]
            The call's index in ``calls`` and its outcome, as calls finish.

        Raises
        ------
        ValueError
            ``target`` is not ``"module:function"``.
        """
        module, _, func = target.partition(":")
        if not module or not func:
            raise ValueError(f"target: expected 'module:function', got {target!r}")
        pending: deque[tuple[int, tuple[Any, ...]]] = deque(enumerate(calls))
        running: dict[int, _Child] = {}
        try:
            while pending or running:
                while pending and len(running) < self.workers:
                    index, args = pending.popleft()
                    child = self._idle.pop() if self._idle else _Child(self.memory_limit)
                    try:
                        child.send(index, (module, func, args), self.timeout)
                    except (BrokenPipeError, OSError):
                        # A pooled child that died while idle: start over with a new one.
                        child.kill()
                        child = _Child(self.memory_limit)
                        child.send(index, (module, func, args), self.timeout)
                    running[child.fd] = child
                yield from self._collect(running, spare=bool(pending))
        finally:
            for child in running.values():
                child.kill()

    def _collect(
        self, running: dict[int, _Child], *, spare: bool
    ) -> Iterator[tuple[int, SandboxResult]]:
        now = time.monotonic()
        wait = max(0.0, min(c.deadline for c in running.values()) - now)
        ready, _, _ = select.select(list(running), [], [], wait)
        for fd in ready:
            child = running.pop(fd)
            assert child.task is not None
            task = child.task
            try:
                status, payload, retire = child.receive()
                if status == "ready":
                    child.ready = True
                    child.deadline = time.monotonic() + child.timeout
                    running[fd] = child
                    continue
            except (EOFError, OSError, pickle.UnpicklingError, ValueError):
                note = child.death_note()
                child.close()
                yield task, SandboxResult(failure="crashed", detail=note)
                continue
            if (retire and self.retire_on_request) or status != "ok":
                # Its heap may be damaged: never reuse it. It has answered and has
                # nothing left to do, so it is killed rather than waited for. Its successor starts now, so that its interpreter start-up overlaps
                # the other children's work.
                child.kill()
                self.retired += 1
                if spare:
                    self._idle.append(_Child(self.memory_limit))
            else:
                self._idle.append(child)
            if status == "ok":
                yield task, SandboxResult(value=payload)
            else:
                yield task, SandboxResult(failure=status, detail=str(payload))
        now = time.monotonic()
        for fd, child in list(running.items()):
            if child.deadline <= now:
                del running[fd]
                overran = child.task
                assert overran is not None
                child.kill()
                log.warning("sandboxed call %d overran %.3g s; child killed", overran, self.timeout)
                yield (
                    overran,
                    SandboxResult(
                        failure="timeout", detail=f"did not finish within {self.timeout:g} s"
                    ),
                )
