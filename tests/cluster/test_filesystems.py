"""The guarantee on simulated cluster file systems, in the lifecycle matrix's style.

Each cell: a writer (a real process, on its simulated node and file system) adds
results; a merge and a ``status`` run *while it runs*, from the merging node; the writer
adds more, then ends the way the cell says; the final merge runs. Asserted every time:
no merge or status exits 0 while a returned result is missing from the output, every
key whose ``add()`` returned is in the output after the documented steps, the output
passes ``check``, and no traceback reaches stderr.

File systems (see ``_sim.py``):

=============== ====================== ==========================================
cell            writer                 merger
=============== ====================== ==========================================
local           this machine           this machine                  (the baseline)
enosys          this machine, ENOSYS   this machine, ENOSYS  (Lustre without flock)
enolck          this machine, ENOLCK   this machine, ENOLCK  (NFS without lockd)
nodelocal       node A, real locks     node B, locks granted at once (BeeGFS, nolock)
nodes-enosys    node A, ENOSYS         node B, ENOSYS
=============== ====================== ==========================================
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import h5py
import pytest

from h5guard import check
from tests.cluster._sim import Node, Proc, need_namespaces
from tests.procs import descendants

LEASE_60 = {"H5GUARD_LEASE": "60"}
FILE_SYSTEMS: dict[str, tuple[Node, Node]] = {
    "local": (Node(), Node()),
    "enosys": (Node(locks="enosys"), Node(locks="enosys")),
    "enolck": (Node(locks="enolck"), Node(locks="enolck")),
    # Writers elsewhere with a 60 s lease: a merge that takes a killed one's batch on the
    # user's word waits a tenth of it (6 s) before reading it (see _liveness.grace).
    "nodelocal": (Node(host="nodeA", env=LEASE_60), Node(host="nodeB", locks="local")),
    "nodes-enosys": (
        Node(host="nodeA", locks="enosys", env=LEASE_60),
        Node(host="nodeB", locks="enosys"),
    ),
}
ENDINGS = ("close", "unclosed", "sigkill")


def cli(node: Node, *args: str) -> tuple[int, str]:
    proc = node.run("cli", *args, timeout=180)
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text and "UserWarning" not in text, text
    return proc.returncode, text


def added(proc: Proc, n: int) -> list[str]:
    return [proc.expect("ADDED ").strip('"') for _ in range(n)]


def stored(out: Path) -> set[str]:
    if not out.exists():
        return set()
    with h5py.File(out, "r") as f:
        return {k for k in f if not k.startswith("h5guard_")}  # not the summary


def assert_truthful(code: int, text: str, out: Path, promised: set[str]) -> None:
    """A merge or status exits 0 only when every returned result is in the output."""
    missing = promised - stored(out)
    if missing:
        assert code != 0, f"exit 0 while {sorted(missing)} are missing:\n{text}"


def writer_python(proc: Proc, node: Node) -> int:
    """The writer's own pid as this machine sees it (under unshare: a descendant)."""
    if node.host is None:
        return proc.popen.pid
    pythons = [
        p
        for p in descendants(proc.popen.pid)
        if "_node.py" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
    ]
    assert len(pythons) == 1, pythons
    return pythons[0]


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize("fs", list(FILE_SYSTEMS))
def test_every_returned_add_is_merged(tmp_path: Path, fs: str, ending: str) -> None:
    writer_node, merge_node = FILE_SYSTEMS[fs]
    if writer_node.host or merge_node.host:
        need_namespaces()
    directory, out = tmp_path / "tmp", tmp_path / "out.h5"
    writer = writer_node.start("write", str(directory), "5", "--commit-every", "100")
    try:
        promised = set(added(writer, 5))
        writer.expect("WAITING")
        # While the writer runs: nothing of its batch is taken, and nothing exits 0.
        for command in ("status", "merge"):
            code, text = cli(merge_node, command, str(directory), "-o", str(out))
            assert code == 1, text
            assert "5 result(s)" in text and "pending" in text.lower(), text
            assert_truthful(code, text, out, promised)
        assert len(list(directory.glob("*.journal"))) == 1
        for _ in range(5):
            writer.send("add")
        promised |= set(added(writer, 5))
        if ending == "close":
            writer.send("close")
            writer.expect("CLOSED")
        code, _, err = writer.finish(kill=ending == "sigkill")
        assert "Traceback" not in err and "UserWarning" not in err, err
    finally:
        if writer.popen.poll() is None:
            writer.finish(kill=True)
    code, text = cli(merge_node, "merge", str(directory), "-o", str(out))
    assert_truthful(code, text, out, promised)
    if code != 0:
        # Only a writer on another node, killed, cannot be shown gone from here: the
        # merge names it and where it ran, and the user's word settles it.
        assert fs.startswith("node") and ending == "sigkill", text
        assert "nodeA" in text and "--gone" in text, text
        code, text = cli(merge_node, "merge", str(directory), "-o", str(out), "--gone", "nodeA")
    assert code == 0, text
    assert promised <= stored(out), sorted(promised - stored(out))
    assert check([out]).ok
    assert not list(directory.glob("*.journal"))


def test_lease_expiry_recovers_a_dead_writer_on_another_node(tmp_path: Path) -> None:
    need_namespaces()
    directory, out = tmp_path / "tmp", tmp_path / "out.h5"
    node_a = Node(host="nodeA", env={"H5GUARD_LEASE": "2"})
    writer = node_a.start("write", str(directory), "4")
    promised = set(added(writer, 4))
    writer.expect("WAITING")
    writer.finish(kill=True)
    node_b = Node(host="nodeB", locks="local")
    code, text = cli(node_b, "merge", str(directory), "-o", str(out))
    assert code == 1 and "nodeA" in text, text
    time.sleep(2.5)
    code, text = cli(node_b, "merge", str(directory), "-o", str(out))
    assert code == 0, text
    assert "longer than the lease" in text or "recovered 4" in text, text
    assert promised <= stored(out)


def test_a_live_writer_computing_longer_than_the_lease_is_kept(tmp_path: Path) -> None:
    """The heartbeat, not add(), keeps the journal fresh: an hour of computing between
    two add() calls (here: 3 leases) does not make a live writer look gone."""
    need_namespaces()
    directory, out = tmp_path / "tmp", tmp_path / "out.h5"
    node_a = Node(host="nodeA", env={"H5GUARD_LEASE": "1"})
    writer = node_a.start("write", str(directory), "3")
    try:
        promised = set(added(writer, 3))
        writer.expect("WAITING")
        time.sleep(3.0)
        code, text = cli(Node(host="nodeB", locks="local"), "merge", str(directory), "-o", str(out))
        assert code == 1 and "pending" in text.lower(), text
        writer.send("add")
        promised |= set(added(writer, 1))
        writer.send("close")
        writer.expect("CLOSED")
    finally:
        writer.finish(kill=False)
    code, text = cli(Node(host="nodeB", locks="local"), "merge", str(directory), "-o", str(out))
    assert code == 0, text
    assert promised <= stored(out)


def test_a_suspended_writer_whose_batch_was_taken_journals_again(tmp_path: Path) -> None:
    """A writer stopped for longer than the lease (a suspended job) is taken as gone; when
    it resumes, its next add() sees that its journal was claimed and starts a new one:
    nothing it adds afterwards goes into the recovered, deleted journal."""
    need_namespaces()
    directory, out = tmp_path / "tmp", tmp_path / "out.h5"
    node_a = Node(host="nodeA", env={"H5GUARD_LEASE": "1"})
    node_b = Node(host="nodeB", locks="local")
    writer = node_a.start("write", str(directory), "5")
    try:
        promised = set(added(writer, 5))
        writer.expect("WAITING")
        pid = writer_python(writer, node_a)
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(2.0)
            code, text = cli(node_b, "merge", str(directory), "-o", str(out))
            assert code == 0, text
            assert promised <= stored(out)
        finally:
            os.kill(pid, signal.SIGCONT)
        for _ in range(5):
            writer.send("add")
        promised |= set(added(writer, 5))
        writer.send("close")
        writer.expect("CLOSED")
    finally:
        writer.finish(kill=False)
    code, text = cli(node_b, "merge", str(directory), "-o", str(out))
    assert code == 0, text
    assert promised <= stored(out), sorted(promised - stored(out))


@pytest.mark.parametrize("locks", ["enosys", "enolck"])
def test_writer_without_flock_writes_and_notes_it_once(tmp_path: Path, locks: str) -> None:
    directory = tmp_path / "tmp"
    proc = Node(locks=locks).run("write", str(directory), "3", "--commit-every", "2")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "AttributeError" not in proc.stderr
    assert len([x for x in proc.stderr.splitlines() if "refuses flock" in x]) == 1, proc.stderr


def test_a_failed_journal_open_raises_once(tmp_path: Path) -> None:
    """The journal cannot be created: one WriteError, no second traceback from __del__."""
    script = (
        "import os, shutil, sys\n"
        "from h5guard import ShardWriter, WriteError\n"
        f"d = {str(tmp_path / 'tmp')!r}\n"
        "w = ShardWriter(d)\n"
        "shutil.rmtree(d); open(d, 'w').close()\n"
        "try:\n"
        "    w.add('k', {'x': [1.0]})\n"
        "except WriteError as err:\n"
        "    print('WriteError', err)\n"
        "del w\n"
        "import gc; gc.collect()\n"
    )
    import subprocess
    import sys

    env = Node().environ()
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "WriteError" in proc.stdout, proc.stdout + proc.stderr
    assert "Exception ignored" not in proc.stderr and "AttributeError" not in proc.stderr
