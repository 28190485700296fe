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
STARTUP_ALLOWANCE = 60.0  # seconds a new child may take to become ready at most


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

# A frame: magic, 8-byte little-endian body length, pickled body. The magic makes
# stray bytes on the result descriptor (text a library printed, garbage) recognisable
# at once instead of being read as a length.
_MAGIC = b"H5GF"
_HEADER = len(_MAGIC) + 8
MAX_FRAME = 256 * 1024**2  # bytes; a longer announced frame is implausible
_READ_CHUNK = 1024**2
_STATUSES = frozenset({"ready", "ok", "memory", "error"})

# The child's environment: only what libhdf5, its filter plugins, numpy's BLAS and the
# C library need (docs/security.md). Everything else (PYTHON*, LD_PRELOAD, HDF5_VOL_*,
# HDF5_DRIVER, HDF5_EXTFILE_PREFIX, credentials, ...) stays in the parent.
ENV_KEPT = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TEMP",
        "TMP",
        "LD_LIBRARY_PATH",
        "DYLD_LIBRARY_PATH",
        "HDF5_PLUGIN_PATH",
        "SYSTEMROOT",
    }
)
ENV_KEPT_PREFIXES = ("LC_", "OMP_", "OPENBLAS_", "MKL_", "GOTO_", "BLIS_")

# How the child starts: isolated mode (-I: no PYTHON* variables, no user site-packages,
# neither the working directory nor a script directory on sys.path), then h5guard's own
# import root first on sys.path, explicitly.
_BOOTSTRAP = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from h5guard._check.child import main; main(sys.argv[2:])"
)


def import_root() -> str:
    """The directory the running h5guard package is imported from (its parent).

    Returns
    -------
    str
        A checkout, a ``PYTHONPATH`` entry or ``site-packages``: what the child puts
        first on its ``sys.path``.
    """
    return str(Path(__file__).resolve().parent.parent)


def _module_root(module: str) -> str | None:
    """Where the caller imported the top-level package of ``module`` from, if it did."""
    top = sys.modules.get(module.partition(".")[0])
    if top is None:
        return None
    where = getattr(top, "__file__", None)
    if where:
        path = Path(where).resolve()
        return str(path.parent.parent if path.name == "__init__.py" else path.parent)
    search = list(getattr(top, "__path__", None) or [])  # a namespace package
    return str(Path(search[0]).resolve().parent) if search else None


def child_command(result_fd: int, memory_limit: int) -> list[str]:
    """The command line of a sandbox child.

    Parameters
    ----------
    result_fd
        The descriptor (inherited) the child writes its frames to.
    memory_limit
        Bytes of address space the child may add after start-up.

    Returns
    -------
    list[str]
        ``python -I -c BOOTSTRAP ROOT FD LIMIT``.
    """
    return [
        sys.executable,
        "-I",
        "-c",
        _BOOTSTRAP,
        import_root(),
        str(result_fd),
        str(memory_limit),
    ]


def child_env(extra: Iterable[str] = ()) -> dict[str, str]:
    """The reduced environment of a sandbox child (see :data:`ENV_KEPT`).

    Parameters
    ----------
    extra
        Names of further variables to pass on unchanged.

    Returns
    -------
    dict[str, str]
        The kept variables, one BLAS thread, and HDF5 file locking off.
    """
    wanted = set(extra)
    env = {
        k: v
        for k, v in os.environ.items()
        if k in ENV_KEPT or k in wanted or k.startswith(ENV_KEPT_PREFIXES)
    }
    # One BLAS thread: the children do I/O, and thread pools inflate the address
    # space that the memory limit is measured against.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    env["HDF5_USE_FILE_LOCKING"] = "FALSE"
    return env


def retire_after_call() -> None:
    """Called inside a sandboxed function: this child must not run another call.

    For a function that saw libhdf5 fail on damaged metadata (or read data that makes
    libhdf5 allocate library-owned objects): the process's heap may be damaged without
    having crashed yet, and the next file's verdict must not depend on it. Outside a
    sandbox child it does nothing.
    """
    global _retire_requested
    _retire_requested = True


@contextlib.contextmanager
def more_memory(extra: int) -> Iterator[None]:
    """Inside a sandbox child: ``extra`` more bytes of address space while the block runs.

    The child's limit is set once, at its start (:func:`h5guard._check.child.main`); it
    guards against damaged sizes that make libhdf5 allocate without bound, not against
    a file's real size. A call on a big file needs room in proportion to it (the
    independent reader maps the file whole; a million groups' digests are some hundred
    MB of Python objects), so it asks for it here. A child whose address space is still
    above its own limit afterwards is retired (its next file would meet a limit it
    already exceeds). Where there is no limit (outside a child) nothing changes.
    """
    try:
        import resource
    except ImportError:  # no rlimits on this platform: nothing was limited
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or extra <= 0:
        yield
        return
    raised = soft + extra if hard == resource.RLIM_INFINITY else min(soft + extra, hard)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (raised, hard))
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        if address_space() > soft:
            retire_after_call()


def address_space() -> int:
    """This process's address space in bytes (Linux ``VmSize``; 0 where unknown)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


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


def encode_frame(obj: Any) -> bytes:
    """One frame: magic, body length, pickled ``obj``."""
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _MAGIC + len(body).to_bytes(8, "little") + body


def write_frame(fd: int, obj: Any) -> None:
    """Write one frame to descriptor ``fd`` (blocking, whole)."""
    view = memoryview(encode_frame(obj))
    while view:
        view = view[os.write(fd, view) :]


def read_frame(stream: IO[bytes]) -> Any:
    """Read one frame from a blocking stream (the child's requests); EOFError at the end."""
    head = _read_exact(stream, _HEADER)
    if head[: len(_MAGIC)] != _MAGIC:
        raise EOFError("not a frame")
    return pickle.loads(_read_exact(stream, int.from_bytes(head[len(_MAGIC) :], "little")))


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    chunks = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


class _Implausible(Exception):
    """The child sent something that is not a well-formed answer."""


def _answer(body: bytes) -> tuple[str, Any, bool]:
    try:
        answer = pickle.loads(body)
    except Exception as err:  # any garbage unpickles into any error
        raise _Implausible(f"an undecodable answer ({type(err).__name__})") from err
    if (
        not isinstance(answer, tuple)
        or len(answer) != 3
        or answer[0] not in _STATUSES
        or not isinstance(answer[2], bool)
    ):
        raise _Implausible(f"an answer of an unknown form ({type(answer).__name__})")
    return answer[0], answer[1], answer[2]


class _Child:
    def __init__(self, memory_limit: int, pass_env: Iterable[str] = ()) -> None:
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child
        read_fd, write_fd = os.pipe()
        try:
            # stdout goes to the same file as stderr: fd 1 of the child is never the
            # result pipe, whatever a library prints there.
            self.proc = subprocess.Popen(
                child_command(write_fd, memory_limit),
                stdin=subprocess.PIPE,
                stdout=self.stderr,
                stderr=self.stderr,
                env=child_env(pass_env),
                close_fds=True,
                pass_fds=(write_fd,),
                cwd=None,
            )
        except OSError as err:
            os.close(read_fd)
            self.stderr.close()
            raise SandboxError(f"cannot start the checker process {sys.executable}: {err}") from err
        finally:
            os.close(write_fd)
        self.fd = read_fd
        os.set_blocking(read_fd, False)
        self.buffer = bytearray()
        self.task: int | None = None
        self.deadline = 0.0
        self.timeout = 0.0
        self.sent = 0.0
        self.ready = False

    def started(self) -> None:
        """The child is ready (its first frame): the call's deadline is the timeout
        after it was sent, start-up included. Only a start-up slower than half the
        timeout (a loaded machine) leaves the call half its timeout from now: a slow
        start is not the file's fault, and the file has not been touched yet."""
        if not self.ready:
            self.ready = True
            self.deadline = max(self.sent + self.timeout, time.monotonic() + self.timeout / 2)

    def send(self, task: int, payload: tuple[Any, ...], timeout: float) -> None:
        """Give the child a call. Its clock starts now, start-up included (see
        :meth:`started`); a child still starting may take :data:`STARTUP_ALLOWANCE`."""
        assert self.proc.stdin is not None
        self.task = task
        self.timeout = timeout
        self.sent = time.monotonic()
        self.deadline = self.sent + (timeout if self.ready else max(timeout, STARTUP_ALLOWANCE))
        self.proc.stdin.write(encode_frame(payload))
        self.proc.stdin.flush()

    def receive(self) -> list[tuple[str, Any, bool]]:
        """The frames that arrived complete (non-blocking).

        Raises
        ------
        EOFError
            The child closed its end (it died).
        _Implausible
            A frame without the magic, announcing more than :data:`MAX_FRAME` bytes,
            or not decoding to an answer.
        """
        try:
            chunk = os.read(self.fd, _READ_CHUNK)
        except BlockingIOError:
            return []
        if not chunk:
            raise EOFError
        self.buffer += chunk
        out = []
        while len(self.buffer) >= _HEADER:
            if bytes(self.buffer[: len(_MAGIC)]) != _MAGIC:
                shown = bytes(self.buffer[:16])
                raise _Implausible(f"bytes that are not a frame ({shown!r})")
            size = int.from_bytes(self.buffer[len(_MAGIC) : _HEADER], "little")
            if size > MAX_FRAME:
                raise _Implausible(f"a frame announcing {size} bytes (at most {MAX_FRAME})")
            if len(self.buffer) < _HEADER + size:
                break
            body = bytes(self.buffer[_HEADER : _HEADER + size])
            del self.buffer[: _HEADER + size]
            out.append(_answer(body))
        return out

    def death_note(self) -> str:
        code = self.proc.wait()
        if code < 0:
            try:
                what = signal.Signals(-code).name
            except ValueError:
                what = f"signal {-code}"
        else:
            what = f"exit code {code}"
        return f"the checker process died ({what})" + self._last_words()

    def _last_words(self) -> str:
        self.stderr.seek(0)
        tail = self.stderr.read()[-2000:].decode("utf-8", "replace").strip().splitlines()
        last = tail[-1].strip() if tail else ""
        return f": {last}" if last else ""

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()
        self.close()

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        self.stderr.close()


class Sandbox:
    """A pool of checker processes; use as a context manager.

    Each call runs in a child process that may hang or crash on a damaged file without
    harming the caller: this is the one child-process protocol of h5guard (check,
    salvage and the merge's verification use it). A child is started isolated
    (``python -I``: nothing from the working directory, ``PYTHON*`` variables or the
    user's site-packages), with h5guard's own import root first on its ``sys.path``
    and a reduced environment (:func:`child_env`); it answers on a pipe of its own,
    never on its standard output, and its time limit runs from the moment a call is
    given to it, start-up included (a start-up slower than half the timeout leaves the
    call half its timeout after the child is ready).

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
    pass_env
        Names of environment variables to pass to the children on top of the
        reduced environment (:func:`child_env`), e.g. an application's own settings.
    path
        Directories appended to each child's ``sys.path`` (after its site-packages, so
        they cannot shadow numpy or h5py): where an application's own code that the
        targets import lives. Empty for the checks of untrusted files, whose children
        import h5guard and what is installed, and nothing else.

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
        pass_env: Iterable[str] = (),
        path: Iterable[str] = (),
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
        self.pass_env = tuple(pass_env)
        self.path = tuple(os.fspath(p) for p in path)

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
        """Stop the idle children (a view leaves them to the sandbox it shares)."""
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
            self._idle.append(self._new_child())

    def share(self, *, timeout: float) -> Sandbox:
        """A sandbox that runs its calls in this one's child processes, with its own
        per-call ``timeout``: an application that already keeps a pool of children (a
        sweep's workers) checks files without starting new interpreters. The children
        keep the memory limit and environment they were started with; closing the view
        leaves them to this sandbox, and the two must not run calls at the same time.

        Parameters
        ----------
        timeout
            Seconds per call in the view.

        Returns
        -------
        Sandbox
            The view.
        """
        view = Sandbox(
            workers=self.workers,
            timeout=timeout,
            memory_limit=self.memory_limit,
            pass_env=self.pass_env,
            path=self.path,
        )
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
            ``"module:function"``. A module of h5guard, of the standard library or of
            ``site-packages`` is found by the child as is; for one of another package
            that this process imported (a checkout's ``campaigns``), the child appends
            that package's import root to its ``sys.path``.
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
        root = _module_root(module)
        roots = (*((root,) if root is not None and root != import_root() else ()), *self.path)
        pending: deque[tuple[int, tuple[Any, ...]]] = deque(enumerate(calls))
        running: dict[int, _Child] = {}
        try:
            while pending or running:
                while pending and len(running) < self.workers:
                    index, args = pending.popleft()
                    child = self._idle.pop() if self._idle else self._new_child()
                    try:
                        child.send(index, (module, func, args, roots), self.timeout)
                    except (BrokenPipeError, OSError):
                        # A pooled child that died while idle: start over with a new one.
                        child.kill()
                        child = self._new_child()
                        child.send(index, (module, func, args, roots), self.timeout)
                    running[child.fd] = child
                yield from self._collect(running, spare=bool(pending))
        finally:
            for child in running.values():
                child.kill()

    def _new_child(self) -> _Child:
        return _Child(self.memory_limit, self.pass_env)

    def _collect(
        self, running: dict[int, _Child], *, spare: bool
    ) -> Iterator[tuple[int, SandboxResult]]:
        now = time.monotonic()
        wait = max(0.0, min(c.deadline for c in running.values()) - now)
        ready, _, _ = select.select(list(running), [], [], wait)
        for fd in ready:
            child = running[fd]
            assert child.task is not None
            task = child.task
            try:
                frames = child.receive()
            except EOFError:
                del running[fd]
                note = child.death_note()
                child.close()
                yield task, SandboxResult(failure="crashed", detail=note)
                continue
            except (_Implausible, OSError) as err:
                # Whatever wrote it (a plugin writing to a descriptor it does not own,
                # a heap gone wrong), this child's answers cannot be trusted any more.
                del running[fd]
                child.kill()
                self.retired += 1
                if spare:
                    self._idle.append(self._new_child())
                yield (
                    task,
                    SandboxResult(failure="crashed", detail=f"the checker process sent {err}"),
                )
                continue
            if any(f[0] == "ready" for f in frames):
                child.started()
            frames = [f for f in frames if f[0] != "ready"]
            if not frames:
                continue
            if len(frames) > 1 or child.buffer:
                del running[fd]
                child.kill()
                self.retired += 1
                yield (
                    task,
                    SandboxResult(
                        failure="crashed", detail="the checker process sent more than one answer"
                    ),
                )
                continue
            del running[fd]
            status, payload, retire = frames[0]
            if (retire and self.retire_on_request) or status != "ok":
                # Its heap may be damaged: never reuse it. It has answered and has
                # nothing left to do, so it is killed rather than waited for. Its
                # successor starts now, so that its interpreter start-up overlaps the
                # other children's work.
                child.kill()
                self.retired += 1
                if spare:
                    self._idle.append(self._new_child())
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
                late = "" if child.ready else " (the checker process never became ready)"
                child.kill()
                log.warning("sandboxed call %d overran %.3g s; child killed", overran, self.timeout)
                yield (
                    overran,
                    SandboxResult(
                        failure="timeout", detail=f"did not finish within {self.timeout:g} s{late}"
                    ),
                )
