"""The layout-sweep wheel ships the files its code reads at run time.

Builds the wheel of ``sweep/pyproject.toml`` from a copy of the tree (so no stale
``build/`` directory can hide a missing file), in pip's build isolation (the build backend
comes from the package index, or pip's cache; without either the test is skipped), checks the package data is in it, then
unpacks it into a directory of its own and, with the checkout off the path, loads the
published layouts and renders the report template from there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DATA = (
    "optimizer/py.typed",
    "optimizer/data/iea37_cs1_published.json",
    "optimizer/data/iea37-cs3.toml",
    "optimizer/data/iea37-cs4.toml",
    "optimizer/_report/templates/report.html.j2",
    "optimizer/_report/templates/report.css",
)

_NO_INDEX = re.compile(
    r"Failed to establish a new connection|Temporary failure in name resolution|"
    r"Network is unreachable|Could not fetch URL|ProxyError"
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    ignore = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    shutil.copytree(REPO / "sweep", src / "sweep", ignore=ignore)
    shutil.copytree(REPO / "optimizer", src / "optimizer", ignore=ignore)
    out = root / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), src / "sweep"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0 and _NO_INDEX.search(proc.stdout + proc.stderr):
        pytest.skip("no package index reachable for the build backend (setuptools)")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (found,) = out.glob("layout_sweep-*.whl")
    return found


def test_the_wheel_holds_the_package_data(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = [
            line.split(":", 1)[1].strip()
            for line in zf.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
    missing = [p for p in PACKAGE_DATA if p not in names]
    assert not missing, f"not in {wheel.name}: {missing}"
    source = {
        p.relative_to(REPO).as_posix()
        for p in (REPO / "optimizer").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert source <= names, f"modules missing from the wheel: {sorted(source - names)}"
    shipped_toml = {n for n in names if n.startswith("optimizer/") and n.endswith(".toml")}
    assert shipped_toml == {"optimizer/data/iea37-cs3.toml", "optimizer/data/iea37-cs4.toml"}
    assert any(r.lower().startswith("jinja2") for r in requires), requires


def test_the_installed_package_reads_its_data(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    code = (
        "import optimizer, optimizer.published as p, optimizer._report.html as h; "
        f"assert optimizer.__file__.startswith({str(target)!r}), optimizer.__file__; "
        "assert p.published_layout('par12', 64).shape == (64, 2); "
        "from optimizer.sites import get_site; "
        "assert len(get_site('iea37-cs4').outline(81).regions) == 5; "
        "h._environment().get_template(h.TEMPLATE); "
        "assert 'font-family' in h._environment().globals['css']; print('ok')"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = str(target)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr
