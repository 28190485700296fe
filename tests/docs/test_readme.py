"""The README is the front page: two commands first, CI runs the second, it stays short."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")


def quick_start() -> list[str]:
    section = README.split("## Quick start", 1)[1]
    block = re.search(r"```sh\n(?P<body>.*?)```", section, re.S)
    assert block, "no sh block in the quick start"
    return block.group("body").strip().splitlines()


def test_quick_start_is_two_commands() -> None:
    install_and_demo, install_and_test = quick_start()
    assert install_and_demo.endswith("&& layout-sweep run")
    assert install_and_test.startswith("pip install -e ") and install_and_test.endswith("&& pytest")


def test_ci_runs_the_readme_test_command_exactly() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    commands = [line for line in ci if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-1] == quick_start()[1]
    assert "set -euo pipefail" in commands


def test_readme_fits_on_a_few_screens() -> None:
    lines = README.splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into docs/"


def test_readme_links_resolve() -> None:
    for target in re.findall(r"\]\(((?:docs|examples)/[^)#]+)", README):
        assert (REPO / target).is_file(), target
