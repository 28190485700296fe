"""Threads: one ShardWriter shared by threads loses nothing (its calls are serialised),
and Ctrl-C in the main thread while threads add never kills the process with a signal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import h5py
import pytest

from h5guard import ShardWriter, merge
from tests.hostile._helpers import REPO, values


@pytest.fixture
def tiny_switch_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def test_eight_threads_sharing_a_writer_lose_nothing(
    tmp_path: Path, tiny_switch_interval: None
) -> None:
    tmp = tmp_path / "tmp"
    returned: list[str] = []
    lock = threading.Lock()
    w = ShardWriter(tmp, commit_every=7)

    def work(t: int) -> None:
        for i in range(40):
            key = f"t{t}-{i:03d}"
            w.add(key, *values(i, 64))
            with lock:
                returned.append(key)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    w.close()
    report = merge(tmp, tmp_path / "out.h5", workers=1)
    assert report.exit_code == 0 and not report.lost, report.render_text()
    with h5py.File(tmp_path / "out.h5", "r") as f:
        assert {k for k in f if not k.startswith("h5guard_")} == set(returned) and len(
            returned
        ) == 320


def test_threads_adding_while_the_batch_is_left_uncommitted_are_all_recovered(
    tmp_path: Path, tiny_switch_interval: None
) -> None:
    """No close(): the journal alone must hold every returned add(), each record whole."""
    tmp = tmp_path / "tmp"
    w = ShardWriter(tmp, commit_every=10_000)

    def work(t: int) -> None:
        for i in range(30):
            w.add(f"t{t}-{i:03d}", *values(i, 200))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert w._journal is not None
    w._journal.close()  # the writer is gone
    report = merge(tmp, tmp_path / "out.h5", workers=1)
    assert report.exit_code == 0 and not report.lost and not report.interrupted
    assert report.groups_total == 240


CTRL_C_CHILD = """
import json, sys, threading, time, numpy as np
sys.setswitchinterval(1e-6)
from h5guard import ShardWriter, WriterClosedError
returned, lock = [], threading.Lock()
stop = threading.Event()
def work(t):
    i = 0
    while not stop.is_set():
        key = f"t{t}-{i:05d}"
        try:
            w.add(key, {"x": np.arange(50.0) + i})
        except WriterClosedError:
            return
        with lock:
            returned.append(key)
        i += 1
w = ShardWriter(sys.argv[1], commit_every=25)
threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
try:
    with w:
        for th in threads:
            th.start()
        print("ready", flush=True)
        while True:
            time.sleep(0.001)
except KeyboardInterrupt:
    stop.set()
    for th in threads:
        th.join()
    with lock:
        json.dump(returned, open(sys.argv[2], "w"))
    sys.exit(130)
"""


def test_ctrl_c_while_threads_add_kills_no_process(tmp_path: Path) -> None:
    tmp, keys = tmp_path / "tmp", tmp_path / "returned.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for _ in range(3):
        with subprocess.Popen(
            [sys.executable, "-c", CTRL_C_CHILD, str(tmp), str(keys)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        ) as proc:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            threading.Event().wait(0.5)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 130, (proc.returncode, err[-2000:])
        returned = json.loads(keys.read_text())
        report = merge(tmp, tmp_path / "out.h5", workers=1)
        assert report.exit_code == 0 and not report.lost, report.render_text()
        with h5py.File(tmp_path / "out.h5", "r") as f:
            assert set(returned) <= {k for k in f if not k.startswith("h5guard_")}
