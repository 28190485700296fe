"""The output lock on simulated cluster file systems (see ``_sim.py``).

Each test runs real processes: holders and takers of ``exclusive(TARGET)``, with the
``flock`` shim in the mode of the file system, and (for another node) in their own
UTS + PID namespaces.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from h5guard import _liveness, _lock
from h5guard.errors import LockTimeoutError
from tests.cluster._sim import Node

NO_FLOCK = ["enosys", "enolck"]


def take(node: Node, target: Path, *extra: str) -> dict[str, object]:
    proc = node.run("take", str(target), *extra, timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    result: dict[str, object] = json.loads(line.split(" ", 1)[1])
    result["stderr"] = proc.stderr
    return result


@pytest.mark.parametrize("locks", NO_FLOCK)
def test_lock_works_without_flock_and_notes_it_once(tmp_path: Path, locks: str) -> None:
    target = tmp_path / "out.h5"
    result = take(Node(locks=locks), target, "--timeout", "0")
    assert result["ok"], result
    err = str(result["stderr"])
    assert "UserWarning" not in err and "Traceback" not in err, err
    notes = [x for x in err.splitlines() if "refuses flock" in x]
    assert len(notes) == 1, err
    # Nothing but the lock file and the human-readable holder record stays behind.
    assert sorted(os.listdir(tmp_path)) == ["out.h5.lock", "out.h5.lock.info"]


@pytest.mark.parametrize("locks", NO_FLOCK)
def test_soft_lock_excludes_and_names_the_holder(tmp_path: Path, locks: str) -> None:
    target = tmp_path / "out.h5"
    holder = Node(locks=locks).start("hold", str(target))
    try:
        holder.expect("HELD")
        result = take(Node(locks=locks), target, "--timeout", "0.5")
        assert not result["ok"], result
        assert "LockTimeoutError" in str(result["error"])
        assert f"pid {holder.popen.pid}" in str(result["error"]), result["error"]
        assert "still runs" in str(result["error"])
    finally:
        code, _, err = holder.finish(kill=False)
    assert code == 0, err
    assert take(Node(locks=locks), target, "--timeout", "0")["ok"]


@pytest.mark.parametrize("locks", [*NO_FLOCK, None])
def test_a_dead_holder_on_this_host_is_taken_over_at_once(
    tmp_path: Path, locks: str | None
) -> None:
    target = tmp_path / "out.h5"
    holder = Node(locks=locks).start("hold", str(target))
    holder.expect("HELD")
    holder.finish(kill=True)  # SIGKILL: its owner file stays behind
    assert (tmp_path / "out.h5.lock.owner").exists()
    result = take(Node(locks=locks), target, "--timeout", "0")
    assert result["ok"], result
    assert "taking over the lock" in str(result["stderr"])
    assert not (tmp_path / "out.h5.lock.owner").exists()


def test_in_process_lock_is_reentrant_across_uses(tmp_path: Path) -> None:
    target = tmp_path / "out.h5"
    for _ in range(3):
        with _lock.exclusive(target, timeout=0):
            assert (tmp_path / "out.h5.lock.owner").exists()
            # Another open of the lock file in this very process: excluded too.
            with pytest.raises(LockTimeoutError), _lock.exclusive(target, timeout=0):
                pass
    assert not (tmp_path / "out.h5.lock.owner").exists()


# -- another node ------------------------------------------------------------------------


@pytest.mark.parametrize("locks", ["local", "enosys"])
def test_another_nodes_live_holder_excludes(tmp_path: Path, locks: str) -> None:
    """Node-local locks (node B's flock is granted at once) or none: the owner file
    still keeps node B out while node A's holder runs, whatever its age."""
    target = tmp_path / "out.h5"
    holder = Node(host="nodeA").start("hold", str(target), "--lease", "2")
    try:
        holder.expect("HELD")
        result = take(Node(host="nodeB", locks=locks), target, "--timeout", "4")
        assert not result["ok"], result
        assert "on nodeA" in str(result["error"]), result["error"]
        assert "cannot be shown gone" in str(result["error"])
    finally:
        holder.finish(kill=False)


@pytest.mark.parametrize("locks", ["local", "enosys"])
def test_another_nodes_dead_holder_by_lease_or_word(tmp_path: Path, locks: str) -> None:
    target = tmp_path / "out.h5"
    holder = Node(host="nodeA").start("hold", str(target), "--lease", "3")
    ident = json.loads(holder.expect("HELD"))
    holder.finish(kill=True)
    node_b = Node(host="nodeB", locks=locks)
    # Within the lease: pending, naming who and where.
    early = take(node_b, target, "--timeout", "0")
    assert not early["ok"] and "nodeA" in str(early["error"]), early
    # The user's word takes it at once.
    assert take(node_b, target, "--timeout", "0", "--gone", f"nodeA:{ident['pid']}")["ok"]
    # And, for another dead holder, the lease.
    holder = Node(host="nodeA").start("hold", str(target), "--lease", "2")
    holder.expect("HELD")
    holder.finish(kill=True)
    late = take(node_b, target, "--timeout", "15")
    assert late["ok"], late
    assert "longer than the lease" in str(late["stderr"])


def test_owner_file_records_identity_and_lease(tmp_path: Path) -> None:
    target = tmp_path / "out.h5"
    with _lock.exclusive(target, timeout=0, lease=42):
        info = json.loads((tmp_path / "out.h5.lock.owner").read_text())
    me = _liveness.current()
    assert _liveness.WriterIdentity.from_json(info) == me
    assert info["lease"] == 42 and info["flock"] is True
