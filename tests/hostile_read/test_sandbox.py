"""The sandbox child as an attacker or a misbehaving library would meet it (issue #23).

Real child processes throughout: modules planted in the working directory, text on
the C-level stdout, garbage and implausible frames on the result descriptor, a
hanging file against the whole-call timeout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from h5guard import Sandbox, ShardWriter, validate
from h5guard.report import Code

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"
TARGET = "tests.hostile_read._hostile:behave"


def _cli(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``h5guard ARGS`` in a fresh interpreter whose own sys.path holds no ``cwd``
    (-P): only the sandbox children could import what is planted there."""
    full = dict(os.environ if env is None else env)
    full["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [
            sys.executable,
            "-P",
            "-c",
            "import sys; from h5guard.cli import main; sys.exit(main())",
            *args,
        ],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _plant(where: Path, marker: Path) -> None:
    for name in ("h5py", "numpy"):
        (where / f"{name}.py").write_text(
            f"open({str(marker)!r}, 'a').write('{name} planted in the working directory ran\\n')\n"
            f"raise ImportError('planted {name}')\n"
        )


def _foreign(path: Path) -> Path:
    with h5py.File(path, "w") as f:
        for key in ("a", "b"):
            f[f"{key}/x"] = np.arange(4.0)
    return path


def test_planted_modules_are_not_run_by_check(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    work = tmp_path / "work"
    work.mkdir()
    _plant(work, marker)
    target = _foreign(work / "data.h5")
    done = _cli(work, "check", "--timeout", "60", str(target))
    assert not marker.exists(), marker.read_text()
    assert done.returncode == 0, done.stdout + done.stderr


def test_planted_modules_are_not_run_by_salvage(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    work = tmp_path / "work"
    work.mkdir()
    _plant(work, marker)
    src = work / "in"
    src.mkdir()
    _foreign(src / "worker_1.h5")
    done = _cli(work, "salvage", "--timeout", "60", str(src), "--out", str(work / "out"))
    assert not marker.exists(), marker.read_text()
    assert done.returncode == 0, done.stdout + done.stderr
    assert list((work / "out").glob("salvaged-*.h5"))


def test_planted_modules_are_not_run_by_merge(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    work = tmp_path / "work"
    work.mkdir()
    temp = work / "temp"
    with ShardWriter(temp) as writer:
        for i in range(3):
            writer.add(f"g{i}", {"x": np.arange(3.0) + i})
    # A shard whose seal no longer matches is read fully, in a sandbox child.
    [shard] = temp.glob("*.h5")
    data = bytearray(shard.read_bytes())
    at = data.index(b"sha256:") + len("sha256:")
    data[at : at + 64] = b"0" * 64
    shard.write_bytes(bytes(data))
    _plant(work, marker)
    done = _cli(work, "merge", str(temp), "-o", str(work / "out.h5"), "--timeout", "60")
    assert not marker.exists(), marker.read_text()
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_child_gets_a_reduced_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from h5guard._sandbox import ENV_KEPT, child_env

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("PYTHONSTARTUP", "/nonexistent/evil.py")
    monkeypatch.setenv("HDF5_PLUGIN_PATH", "/opt/plugins")
    monkeypatch.setenv("OMP_SCHEDULE", "static")
    env = child_env()
    assert "AWS_SECRET_ACCESS_KEY" not in env and "PYTHONSTARTUP" not in env
    assert env["HDF5_PLUGIN_PATH"] == "/opt/plugins" and env["OMP_SCHEDULE"] == "static"
    assert set(env) <= ENV_KEPT | {"HDF5_USE_FILE_LOCKING", "OMP_SCHEDULE"} | {
        k for k in env if k.startswith(("LC_", "OMP_", "OPENBLAS_", "MKL_"))
    }
    with Sandbox(workers=1, timeout=60) as box:
        seen = box.call("os:getenv", "AWS_SECRET_ACCESS_KEY")
        flags = box.call("sys:getrecursionlimit")  # the child works at all
    assert seen.ok and seen.value is None
    assert flags.ok
    with Sandbox(workers=1, timeout=60, pass_env=["AWS_SECRET_ACCESS_KEY"]) as box:
        assert box.call("os:getenv", "AWS_SECRET_ACCESS_KEY").value == "s3cr3t"


def test_c_level_stdout_and_bad_frames_cost_only_their_own_call() -> None:
    kinds = ["stdout", "huge", "fine", "garbage", "raw-length", "fine"]
    started = time.monotonic()
    with Sandbox(workers=2, timeout=30) as box:
        results = dict(box.map(TARGET, [(k,) for k in kinds]))
    elapsed = time.monotonic() - started
    assert results[0].ok and results[0].value == 42, results[0]  # text went to stderr
    assert results[2].ok and results[5].ok
    for i in (1, 3, 4):
        assert results[i].failure == "crashed", (kinds[i], results[i])
        assert "sent" in results[i].detail
    # Recognised at once, not at the 30 s timeout.
    assert elapsed < 25, elapsed


@pytest.mark.skipif(not (FIXTURES / "hang.h5").exists(), reason="fixtures/hang.h5 not made")
def test_timeout_covers_the_whole_call_start_up_included(tmp_path: Path) -> None:
    src = tmp_path / "hang.h5"
    shutil.copyfile(FIXTURES / "hang.h5", src)
    timeout = 3.0
    started = time.monotonic()
    report = validate(src, timeout=timeout)  # a fresh sandbox: its child starts now
    elapsed = time.monotonic() - started
    assert Code.TIMEOUT in {f.code for f in report.findings}, report.render_text()
    # Before: the clock started once the child was ready, so start-up (0.4-1.2 s) came on top.
    assert elapsed < timeout + 0.35, elapsed
