"""Untrusted files are read only where they are (issue #23): a dataset whose raw data
is "stored" in another file (HDF5 external storage, a virtual dataset's source) must
not make salvage or check read that file unless the user asks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

from h5guard import check, merge, salvage
from h5guard.report import Code

SECRET = b"-----BEGIN OPENSSH PRIVATE KEY----- b3BlbnNzaC1rZXktdjEAAAAA -----END-----"
REPO = Path(__file__).resolve().parents[2]


def _hostile(tmp: Path) -> tuple[Path, Path]:
    """A plain h5py file: an honest group, and one whose dataset is the secret file."""
    secret = tmp / "id_ed25519"
    secret.write_bytes(SECRET)
    src = tmp / "in"
    src.mkdir()
    path = src / "worker_1.h5"
    with h5py.File(path, "w") as f:
        f["honest/x"] = np.arange(5.0)
        f.create_group("thief").create_dataset(
            "x", shape=(len(SECRET),), dtype="u1", external=[(str(secret), 0, len(SECRET))]
        )
    return path, secret


def _virtual(tmp: Path, secret: Path) -> Path:
    src = tmp / "vin"
    src.mkdir()
    path = src / "worker_2.h5"
    layout = h5py.VirtualLayout(shape=(len(SECRET),), dtype="u1")
    with h5py.File(tmp / "secret.h5", "w") as s:
        s["key"] = np.frombuffer(SECRET, dtype="u1")
    layout[:] = h5py.VirtualSource(str(tmp / "secret.h5"), "key", shape=(len(SECRET),))
    with h5py.File(path, "w") as f:
        f["honest/x"] = np.arange(3.0)
        f.create_group("thief").create_virtual_dataset("x", layout)
    return path


def _everything_under(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


def test_salvage_never_copies_external_storage(tmp_path: Path) -> None:
    path, secret = _hostile(tmp_path)
    out = tmp_path / "out"
    report = salvage([path.parent], out, timeout=60)
    [fs] = report.files
    assert fs.recovered == ("honest",), fs.render_text()
    [(key, reason)] = fs.lost
    assert key == "thief" and str(secret) in reason and "allow" in reason
    assert SECRET not in _everything_under(out)
    merged = tmp_path / "merged.h5"
    merge(out, merged)
    assert SECRET not in merged.read_bytes()


def test_salvage_never_reads_virtual_sources_elsewhere(tmp_path: Path) -> None:
    _, secret = _hostile(tmp_path)
    path = _virtual(tmp_path, secret)
    out = tmp_path / "out"
    [fs] = salvage([path], out, timeout=60).files
    assert fs.recovered == ("honest",), fs.render_text()
    assert "secret.h5" in dict(fs.lost)["thief"]
    assert SECRET not in _everything_under(out)


def test_salvage_copies_external_data_when_allowed(tmp_path: Path) -> None:
    path, _ = _hostile(tmp_path)
    out = tmp_path / "out"
    [fs] = salvage([path], out, timeout=60, allow_external=True).files
    assert sorted(fs.recovered) == ["honest", "thief"], fs.render_text()


def test_salvage_cli_refuses_and_allows(tmp_path: Path) -> None:
    path, secret = _hostile(tmp_path)
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-P", "-c", "import sys; from h5guard.cli import main; sys.exit(main())"]
    refused = subprocess.run(
        [*cmd, "salvage", str(path), "-o", str(tmp_path / "a"), "--timeout", "60"],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert refused.returncode == 1 and f"{path}:/thief: LOST" in refused.stdout, refused.stdout
    assert str(secret) in refused.stdout
    assert SECRET not in _everything_under(tmp_path / "a")
    allowed = subprocess.run(
        [
            *cmd,
            "salvage",
            str(path),
            "-o",
            str(tmp_path / "b"),
            "--allow-external",
            "--timeout",
            "60",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr


def test_check_names_external_files_and_reads_them_only_when_allowed(tmp_path: Path) -> None:
    path, secret = _hostile(tmp_path)
    vpath = _virtual(tmp_path, secret)
    report = check([path, vpath], timeout=60)
    notes = {(f.path, f.obj): f.message for f in report.findings if f.code is Code.EXTERNAL_DATA}
    assert (
        str(secret) in notes[(str(path), "/thief/x")]
        and "not read" in notes[(str(path), "/thief/x")]
    )
    assert "secret.h5" in notes[(str(vpath), "/thief/x")]
    assert report.ok
    # Allowed: the external file is read (libhdf5 reads what it names), and said so.
    allowed = check([path], timeout=60, allow_external=True)
    [note] = [f.message for f in allowed.findings if f.code is Code.EXTERNAL_DATA]
    assert "read (external data allowed)" in note and allowed.ok
