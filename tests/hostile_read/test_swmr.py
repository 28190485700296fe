"""check on a file a live SWMR writer holds (issue #23): ``--swmr`` reads it as an
SWMR reader does instead of calling it OPEN_FOR_WRITE. A real writer process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from h5guard import check
from h5guard.report import Code, Severity

REPO = Path(__file__).resolve().parents[2]

_WRITER = r"""
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "w", libver="latest")
d = f.create_dataset("run/x", shape=(0,), maxshape=(None,), chunks=(16,), dtype="f8")
f["run/y"] = np.arange(3.0)
f.swmr_mode = True
for i in range(4):
    d.resize((d.shape[0] + 16,))
    d[-16:] = np.arange(16.0) + i
    d.flush()
print("ready", flush=True)
sys.stdin.read()  # hold the file until the test is done
f.close()
"""


@pytest.fixture
def live_swmr_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "live.h5"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield path
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=60)
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_live_swmr_writers_file_is_read_with_swmr(live_swmr_file: Path) -> None:
    plain = check([live_swmr_file], timeout=60)
    assert Code.OPEN_FOR_WRITE in {f.code for f in plain.findings if f.severity is Severity.ERROR}
    assert "--swmr" in plain.render_text()
    swmr = check([live_swmr_file], timeout=60, swmr=True)
    assert swmr.ok, swmr.render_text()
    [note] = [f for f in swmr.findings if f.code is Code.OPEN_FOR_WRITE]
    assert note.severity is Severity.INFO and "SWMR" in note.message
    assert list(swmr.files[0].groups) == ["run"]


def test_swmr_through_the_cli(live_swmr_file: Path) -> None:
    cmd = [sys.executable, "-P", "-c", "import sys; from h5guard.cli import main; sys.exit(main())"]
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [*cmd, "check", "--swmr", "--timeout", "60", str(live_swmr_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SWMR" in done.stdout
