"""Simulated cluster file systems and nodes, for the cluster tests.

* **Lock behaviour** of a file system: ``flockshim.c`` preloaded (``LD_PRELOAD``), mode
  from ``H5GUARD_SHIM_LOCKS``: ``enosys`` (Lustre without ``-o flock``, FUSE), ``enolck``
  (NFS without a lock daemon), ``local`` (every lock granted at once and locking
  nothing: what a process on node B sees of a lock held on node A where locks are
  node-local: BeeGFS's default, NFS ``nolock`` / ``local_lock=flock``).
* **Another node**: its own UTS and PID namespaces (``unshare --uts --pid --fork
  --mount-proc``), so its host name and pids differ from this machine's (the boot id
  is the same: the kernel is). Needs root and ``unshare(1)``.

Every process runs ``_node.py`` with this worktree first on ``PYTHONPATH``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
NODE = HERE / "_node.py"
SHIM_SOURCE = HERE / "flockshim.c"


@functools.cache
def _shim() -> Path | None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    out = Path(tempfile.mkdtemp(prefix="h5guard-flockshim-")) / "flockshim.so"
    proc = subprocess.run(
        [cc, "-shared", "-fPIC", "-O2", "-o", str(out), str(SHIM_SOURCE), "-ldl"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out if proc.returncode == 0 else None


def shim() -> Path:
    """The built shim; skips the test where no C compiler can build it."""
    path = _shim()
    if path is None:
        pytest.skip("needs a C compiler (cc) to build tests/cluster/flockshim.c")
    return path


@functools.cache
def _namespaces_work() -> str:
    if os.geteuid() != 0:
        return "needs root to simulate another node with unshare(1)"
    if shutil.which("unshare") is None:
        return "needs unshare(1) (util-linux) to simulate another node"
    proc = subprocess.run(
        ["unshare", "--uts", "--pid", "--fork", "--mount-proc", "sh", "-c", "hostname probe"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if proc.returncode != 0:
        return f"unshare --uts --pid cannot run here: {proc.stderr.strip()[:200]}"
    return ""


def need_namespaces() -> None:
    """Skip unless UTS + PID namespaces can be made (root, unshare)."""
    why = _namespaces_work()
    if why:
        pytest.skip(why)


@dataclass(frozen=True)
class Node:
    """Where a simulated process runs and what its file system's locks do.

    ``host``: None for this machine, else the host name of a simulated node.
    ``locks``: None (real locks), "enosys", "enolck" or "local".
    """

    host: str | None = None
    locks: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def argv(self, *args: str, raw: bool = False) -> list[str]:
        """The command line running ``_node.py ARGS`` (``raw``: ARGS itself) on this node."""
        base = list(args) if raw else [sys.executable, str(NODE), *args]
        if self.host is None:
            return base
        need_namespaces()
        script = f'hostname {self.host} && exec "$0" "$@"'
        return [
            "unshare",
            "--uts",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            "sh",
            "-c",
            script,
            *base,
        ]

    def environ(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH", "")])])
        env.pop("H5GUARD_SHIM_LOCKS", None)
        if self.locks is not None:
            env["LD_PRELOAD"] = str(shim())
            env["H5GUARD_SHIM_LOCKS"] = self.locks
        env.update(self.env)
        return env

    def start(self, *args: str, raw: bool = False, cwd: Path | None = None) -> Proc:
        """Start ``_node.py ARGS`` (``raw``: ARGS) on this node; stdout lines are collected."""
        return Proc(
            subprocess.Popen(
                self.argv(*args, raw=raw),
                env=self.environ(),
                cwd=cwd or REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )

    def run(
        self, *args: str, timeout: float = 120, raw: bool = False, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``_node.py ARGS`` (``raw``: ARGS) on this node to the end."""
        return subprocess.run(
            self.argv(*args, raw=raw),
            env=self.environ(),
            cwd=cwd or REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


class Proc:
    """A started node process whose stdout lines a thread collects."""

    def __init__(self, popen: subprocess.Popen[str]) -> None:
        self.popen = popen
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def expect(self, prefix: str, timeout: float = 60) -> str:
        """The rest of the first new stdout line starting with ``prefix``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        self.popen.poll()
        err = ""
        if self.popen.returncode is not None and self.popen.stderr is not None:
            err = self.popen.stderr.read()
        raise AssertionError(
            f"no {prefix!r} line from {self.popen.args!r}: {self.seen} {err[-2000:]}"
        )

    def send(self, text: str) -> None:
        """Write one line to the process's stdin."""
        assert self.popen.stdin is not None
        self.popen.stdin.write(text + "\n")
        self.popen.stdin.flush()

    def finish(self, *, kill: bool) -> tuple[int, str, str]:
        """SIGKILL it, or close its stdin and let it end; (returncode, stdout, stderr)."""
        if kill:
            self.popen.kill()
        elif self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        try:
            self.popen.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=30)
        self._thread.join(timeout=30)
        rest: list[str] = []
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                rest.append(line)
        err = self.popen.stderr.read() if self.popen.stderr is not None else ""
        for pipe in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        return self.popen.returncode, "".join(self.seen + rest), err
