"""``layout-sweep run --engine dask`` with workers on two simulated nodes sharing TEMP_DIR.

A scheduler on this machine; one ``dask worker`` (with its nanny) on node A and one on
node B; the sweep's client on node C; ``h5guard merge``/``status`` from node D. Every
process off this machine sees locks as node-local (the shim's ``local`` mode for the
client and node D): a journal's free lock proves nothing to them, so the only way the
run can take a killed worker's batch is the engine's word (Dask saw the worker go).

The cell: once a worker's batch journal holds a result, that worker is SIGKILLed (its
nanny starts a new one; Dask reschedules the batch); node D merges and asks for the
status during the run (both exit 1: a batch is pending); the run finishes with every
config, its own merge exit 0 and nothing pending; a resume computes nothing; node D's
merge afterwards exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from h5guard import _journal, check
from optimizer import expand_spec, load_spec
from tests.cluster._sim import Node, Proc, need_namespaces
from tests.procs import descendants

pytest.importorskip("distributed", reason="the dask extra is not installed")

SPEC = """
[[sweep]]
site = "iea37"
n_turbines = 16
grid_size = [4, 5, 6]
random_pct = [25, 50]
seeds = [0, 1, 2, 3]

[optimizer]
maxiter = 20
"""


def start_scheduler(work: Path) -> tuple[subprocess.Popen[str], str]:
    sched_file = work / "scheduler.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(sched_file),
        ],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=Node().environ(),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            return proc, str(json.loads(sched_file.read_text())["address"])
        except (OSError, ValueError, KeyError):
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("the scheduler did not start")


def start_worker(node: Node, address: str, work: Path) -> Proc:
    return node.start(
        sys.executable,
        "-m",
        "distributed.cli.dask_worker",
        address,
        "--nthreads",
        "1",
        "--nworkers",
        "1",
        "--no-dashboard",
        raw=True,
        cwd=work,
    )


def wait_for_workers(address: str, n: int) -> None:
    from distributed import Client

    with Client(address, timeout="60s") as client:
        client.wait_for_workers(n, timeout=180)


def worker_process(nanny: Proc) -> int:
    """The worker process (the nanny's spawned child) under a node's ``unshare``."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = [
            p
            for p in descendants(nanny.popen.pid)
            if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()
        ]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError("no worker process under the nanny")


def journal_with_results(temp: Path, run: Proc, timeout: float = 300) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run.popen.poll() is not None:
            code, _, err = run.finish(kill=False)
            raise AssertionError(f"the run ended ({code}) before a batch was seen: {err[-3000:]}")
        for path in temp.glob("worker-*.journal"):
            try:
                scanned = _journal.scan(path)
            except FileNotFoundError:
                continue
            if scanned.meta is not None and scanned.records:
                return scanned.meta
        time.sleep(0.1)
    raise AssertionError("no journal with a result appeared")


def h5guard_cli(node: Node, *args: str) -> tuple[int, str]:
    proc = node.run("cli", *args, timeout=300)
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, text
    return proc.returncode, text


def sweep(node: Node, work: Path, address: str) -> Proc:
    return node.start(
        sys.executable,
        "-m",
        "optimizer.cli",
        "run",
        "spec.toml",
        "-o",
        "out.h5",
        "--engine",
        "dask",
        "--scheduler",
        address,
        "--json",
        raw=True,
        cwd=work,
    )


@pytest.mark.slow
def test_sweep_on_two_nodes_survives_a_killed_worker(tmp_path: Path) -> None:
    need_namespaces()
    (tmp_path / "spec.toml").write_text(SPEC)
    planned = {c.config_id for c in expand_spec(load_spec(str(tmp_path / "spec.toml")))}
    temp, out = tmp_path / "out.h5_temp", tmp_path / "out.h5"
    scheduler, address = start_scheduler(tmp_path)
    # A 60 s lease: the run's merge waits a tenth of it before reading the killed
    # worker's journal, taken on the engine's word (see _liveness.grace).
    nodes = {name: Node(host=name, env={"H5GUARD_LEASE": "60"}) for name in ("nodeA", "nodeB")}
    workers: dict[str, Proc] = {}
    client_node = Node(host="nodeC", locks="local")
    third = Node(host="nodeD", locks="local")
    try:
        for name, node in nodes.items():
            workers[name] = start_worker(node, address, tmp_path)
        wait_for_workers(address, 2)
        run = sweep(client_node, tmp_path, address)
        meta = journal_with_results(temp, run)
        victim_host = str(meta["host"])
        os.kill(worker_process(workers[victim_host]), signal.SIGKILL)
        # During the run, from a third node: the killed worker's batch cannot be shown
        # gone from there, so neither command exits 0 while its results are missing.
        for command in ("status", "merge"):
            code, text = h5guard_cli(third, command, str(temp), "-o", str(out))
            assert code == 1, text
            assert "pending" in text.lower(), text
        code, stdout, err = run.finish(kill=False)
        assert code == 0, stdout[-3000:] + err[-3000:]
        doc = json.loads(stdout[stdout.index("{") :])
        assert doc["counts"] == {"planned": 24, "done": 24, "failed": 0, "pending": 0}, doc
        with h5py.File(out, "r") as f:
            assert {k for k in f if not k.startswith("h5guard_")} == planned  # not the summary
        assert check([out]).ok
        assert not list(temp.glob("*.journal")), "the killed worker's batch was not recovered"
        # A resume computes nothing.
        code, stdout, err = sweep(client_node, tmp_path, address).finish(kill=False)
        assert code == 0, err[-3000:]
        doc = json.loads(stdout[stdout.index("{") :])
        assert doc["computed_ok"] == 0 and doc["skipped"] == 24, doc
        # And a merge from the third node after the run has nothing left to wait for.
        code, text = h5guard_cli(third, "merge", str(temp), "-o", str(out))
        assert code == 0, text
    finally:
        for proc in workers.values():
            if proc.popen.poll() is None:
                proc.finish(kill=True)
        scheduler.kill()
        scheduler.wait(timeout=30)
