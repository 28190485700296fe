"""h5guard installed alone, into a fresh virtual environment, with its real dependencies.

The test copies what the sdist holds (pyproject.toml, README.md, h5guard/) to a temp
dir, creates a venv without system site-packages, and lets pip install it with its
dependencies from the package index (pip's cache makes repeated runs take seconds).
Then, with the repository off the path: only h5guard's own distributions are
installed, ``import h5guard`` imports nothing of the wind stack, ``h5guard --help``
works, and the library's examples from README.md and docs/ run.

If no package index can be reached at all, the test is skipped saying so; any other
install failure fails it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OWN = {"h5guard", "numpy", "h5py", "tqdm"}
BOOTSTRAP = {"pip", "setuptools", "wheel"}  # what venv itself puts there
WIND_STACK = ("py_wake", "scipy", "matplotlib", "pandas", "xarray", "optimizer", "distributed")
# The h5guard-only pages: their examples must run with h5guard's dependencies alone.
LIBRARY_PAGES = (
    "start-h5guard.md",
    "guarantee.md",
    "schemas.md",
    "merge.md",
    "salvage.md",
    "errors.md",
)
_NO_INDEX = re.compile(
    r"Failed to establish a new connection|Temporary failure in name resolution|"
    r"Network is unreachable|Could not fetch URL|ProxyError"
)
_FENCE = re.compile(r"^```python\n(?P<body>.*?)^```", re.M | re.S)

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.pop("VIRTUAL_ENV", None)
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.fixture(scope="module")
def minimal_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("install")
    src = root / "src"
    src.mkdir()
    shutil.copy(REPO / "pyproject.toml", src)
    shutil.copy(REPO / "README.md", src)
    shutil.copytree(REPO / "h5guard", src / "h5guard", ignore=shutil.ignore_patterns("__pycache__"))
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True, system_site_packages=False, clear=True)
    python = env_dir / "bin" / "python"
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(src)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=root,
        env=_env(),
    )
    if proc.returncode != 0 and _NO_INDEX.search(proc.stdout + proc.stderr):
        pytest.skip(f"no package index reachable: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return env_dir


def _run(env_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(env_dir / "bin" / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=_env(),
    )


def test_only_h5guards_own_dependencies_are_installed(minimal_venv: Path, tmp_path: Path) -> None:
    code = "import json, importlib.metadata as m; print(json.dumps(sorted({d.metadata['Name'].lower() for d in m.distributions()})))"
    proc = _run(minimal_venv, "python", "-c", code, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    installed = set(json.loads(proc.stdout)) - BOOTSTRAP
    assert installed == OWN, f"unexpected: {installed - OWN}, missing: {OWN - installed}"


def test_import_h5guard_pulls_in_no_wind_stack(minimal_venv: Path, tmp_path: Path) -> None:
    code = (
        "import sys, json, h5guard, h5guard.cli; "
        "print(json.dumps({'file': h5guard.__file__, "
        f"'loaded': sorted({{m.split('.')[0] for m in sys.modules}} & set({list(WIND_STACK)!r}))}}))"
    )
    proc = _run(minimal_venv, "python", "-c", code, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert Path(doc["file"]).is_relative_to(minimal_venv), doc["file"]  # not the checkout
    assert doc["loaded"] == []
    for module in WIND_STACK:
        probe = _run(minimal_venv, "python", "-c", f"import {module}", cwd=tmp_path)
        assert probe.returncode != 0, f"{module} is importable in the minimal venv"


def test_h5guard_command_works(minimal_venv: Path, tmp_path: Path) -> None:
    helped = _run(minimal_venv, "h5guard", "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "check" in helped.stdout and "merge" in helped.stdout
    version = _run(minimal_venv, "h5guard", "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("h5guard ")
    assert not (minimal_venv / "bin" / "layout-sweep").exists()


def _library_examples() -> list[tuple[str, str]]:
    sources = [REPO / "README.md", *(REPO / "docs" / name for name in LIBRARY_PAGES)]
    found = []
    for path in sources:
        for i, m in enumerate(_FENCE.finditer(path.read_text(encoding="utf-8"))):
            code = m.group("body")
            if "optimizer" not in code and "distributed" not in code:
                found.append((f"{path.name}#{i}", code))
    return found


EXAMPLES = _library_examples()


def test_library_examples_are_found() -> None:
    assert any(name.startswith("README.md") for name, _ in EXAMPLES)
    assert len(EXAMPLES) >= len(LIBRARY_PAGES)


@pytest.mark.parametrize(("name", "code"), EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_library_example_runs_in_the_minimal_venv(
    minimal_venv: Path, tmp_path: Path, name: str, code: str
) -> None:
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    proc = _run(minimal_venv, "python", str(script), cwd=work)
    assert proc.returncode == 0, f"{name}:\n{proc.stdout}\n{proc.stderr}"
