"""The documentation builds in strict mode, offline, and every example in it runs.

* ``mkdocs build --strict`` (warnings fail) with every proxy pointed at a closed port,
  so a build that would fetch anything fails here rather than on a machine offline;
* every fenced ``python`` block of README.md and docs/**/*.md runs as written, as a
  script in a fresh empty directory, in its own process. A block whose first line is a
  comment starting with ``# no-run:`` (followed by the reason, e.g. it needs a Slurm
  cluster) is skipped with that reason; keep those rare;
* every fenced ``toml`` block is a sweep spec that expands (the sweep guide's specs).
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
NO_RUN = "# no-run:"
_FENCE = re.compile(
    r"^(?P<indent> *)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.M | re.S
)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def blocks(lang: str) -> list[Block]:
    found = []
    for path in markdown_files():
        text = path.read_text(encoding="utf-8")
        for m in _FENCE.finditer(text):
            if m.group("lang") != lang:
                continue
            indent = len(m.group("indent"))
            code = "\n".join(line[indent:] for line in m.group("body").splitlines())
            found.append(Block(path, text.count("\n", 0, m.start()) + 1, lang, code + "\n"))
    return found


PYTHON = blocks("python")
TOML = blocks("toml")


def test_the_examples_are_found() -> None:
    # Guards the collector itself: the README's library example and the docs' examples.
    readme = [b for b in PYTHON if b.path.name == "README.md"]
    assert readme, "no python block found in README.md"
    assert len({b.path for b in PYTHON}) >= 4
    skipped = [b.id for b in PYTHON if b.code.startswith(NO_RUN)]
    assert len(skipped) <= 2, f"too many examples excluded from the run: {skipped}"


@pytest.mark.parametrize("block", PYTHON, ids=[b.id for b in PYTHON])
def test_python_example_runs_as_written(block: Block, tmp_path: Path) -> None:
    if block.code.startswith(NO_RUN):
        pytest.skip(block.code.splitlines()[0].removeprefix(NO_RUN).strip())
    work = tmp_path / "work"
    work.mkdir()
    script = tmp_path / "example.py"
    script.write_text(block.code, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, f"{block.id} failed:\n{proc.stdout}\n{proc.stderr}"


def test_the_exception_tree_is_the_one_in_the_code() -> None:
    import h5guard.errors

    page = (REPO / "docs" / "errors.md").read_text(encoding="utf-8")
    drawn = re.search(r"```text\n(?P<tree>H5GuardError.*?)```", page, re.S)
    assert drawn, "docs/errors.md: no exception tree"
    doc = h5guard.errors.__doc__ or ""
    code_tree = [
        line.strip()
        for line in doc.splitlines()
        if line.strip().startswith(("H5GuardError", "├", "└"))
    ]
    assert [line.strip() for line in drawn.group("tree").splitlines()] == code_tree


@pytest.mark.parametrize("block", TOML, ids=[b.id for b in TOML])
def test_toml_example_is_a_valid_spec(block: Block) -> None:
    import tomllib

    from optimizer import expand_spec

    configs = expand_spec(tomllib.loads(block.code))
    assert configs, f"{block.id}: the spec expands to no config"


def _load_hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_docs_hooks", REPO / "docs" / "_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_build_strict_offline(tmp_path: Path) -> None:
    site = tmp_path / "site"
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens, any fetch fails
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "http_proxy": closed,
        "https_proxy": closed,
        "HTTP_PROXY": closed,
        "HTTPS_PROXY": closed,
        "no_proxy": "",
        "NO_PROXY": "",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr

    # The site works from disk: no script or style sheet is loaded from elsewhere.
    for page in site.rglob("*.html"):
        remote = re.findall(r'(?:src|href)="(https?://[^"]+\.(?:js|css)[^"]*)"', page.read_text())
        assert not remote, f"{page.relative_to(site)} loads {remote}"

    # The CLI reference holds every subcommand of both parsers, as --help prints it.
    _subcommands = _load_hooks()._subcommands
    from h5guard.cli import build_parser as h5guard_parser
    from optimizer.cli import build_parser as sweep_parser

    cli_page = html.unescape((site / "cli" / "index.html").read_text(encoding="utf-8"))
    for parser in (h5guard_parser(), sweep_parser()):
        for name, sub in _subcommands(parser).items():
            assert f"usage: {parser.prog} {name}" in cli_page, name
            for action in sub._actions:
                for flag in action.option_strings:
                    assert flag in cli_page, f"{parser.prog} {name} {flag}"

    # The API reference is generated from the docstrings of every public name.
    import h5guard

    api_page = (site / "api" / "index.html").read_text(encoding="utf-8")
    for name in h5guard.__all__:
        if name != "__version__":
            assert f'id="h5guard.{name}"' in api_page or f"h5guard.errors.{name}" in api_page, name
    assert ":class:" not in api_page
