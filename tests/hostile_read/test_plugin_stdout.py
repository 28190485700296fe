"""A real HDF5 filter plugin printing to the C-level stdout inside the sandbox child
(issue #23: the LZ4 plugin does on damaged data). Before, the text was read as a frame
length: the parent died with MemoryError and every file of the call lost its verdict."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCE = Path(__file__).with_name("noisy_filter.c")

_WRITE = r"""
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "w") as f:
    f.create_dataset("run/x", data=np.arange(4096.0), chunks=(512,), compression=32999)
"""


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_a_plugin_printing_to_stdout_corrupts_no_verdict(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    subprocess.run(
        ["cc", "-shared", "-fPIC", "-o", str(plugins / "libnoisy.so"), str(SOURCE)],
        check=True,
        timeout=120,
    )
    env = dict(os.environ, HDF5_PLUGIN_PATH=str(plugins), PYTHONPATH=str(REPO))
    noisy = tmp_path / "noisy.h5"
    subprocess.run([sys.executable, "-c", _WRITE, str(noisy)], check=True, env=env, timeout=120)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["run/y"] = np.arange(5.0)
    done = subprocess.run(
        [
            *(
                sys.executable,
                "-P",
                "-c",
                "import sys; from h5guard.cli import main; sys.exit(main())",
            ),
            *("check", "--timeout", "60", str(noisy), str(plain)),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: 2 file(s), 2 group(s) checked; 0 error(s)" in done.stderr, done.stderr
    assert "noisy filter" not in done.stdout  # the plugin's text went to the child's stderr
