"""MkDocs hooks: the CLI reference, generated from the argparse parsers at build time.

A page that holds a line ``<!-- cli: h5guard -->`` (or ``layout-sweep``) gets that
line replaced by the ``--help`` text of the command and of each of its subcommands, as
the parsers in ``h5guard.cli`` and ``optimizer.cli`` print it, so the reference cannot
drift from the code. Rendering is fixed at 88 columns so the output does not depend on
the terminal of whoever builds the docs.

The docstrings use Sphinx roles (``:class:`~h5guard.Report```); mkdocstrings renders
them as text, so :func:`on_page_content` drops the role and keeps the name as code.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 88
_PLACEHOLDER = re.compile(r"^<!-- cli: (?P<name>[\w-]+) -->$", re.MULTILINE)
_ROLE = re.compile(
    r":(?:class|func|meth|exc|attr|data|mod|obj):<code>(?P<tilde>~?)(?P<name>[^<]+)</code>"
)


def _parser(name: str) -> argparse.ArgumentParser:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    if name == "h5guard":
        from h5guard.cli import build_parser
    elif name == "layout-sweep":
        from optimizer.cli import build_parser
    else:
        raise ValueError(
            f"<!-- cli: {name} -->: unknown command (expected h5guard or layout-sweep)"
        )
    return build_parser()


def _fixed_width(parser: argparse.ArgumentParser) -> None:
    # argparse builds its formatter from formatter_class(prog=...); a partial pins the width.
    parser.formatter_class = functools.partial(
        argparse.HelpFormatter, width=WIDTH, max_help_position=30
    )


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def cli_reference(name: str) -> str:
    """Markdown for one command: its help, then one section per subcommand."""
    parser = _parser(name)
    _fixed_width(parser)
    parts = [f"## `{name}`", "", "```text", parser.format_help().rstrip(), "```", ""]
    for sub_name, sub in _subcommands(parser).items():
        _fixed_width(sub)
        parts += [f"### `{name} {sub_name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return _PLACEHOLDER.sub(lambda m: cli_reference(m.group("name")), markdown)


def _role(match: re.Match[str]) -> str:
    name = match.group("name")
    return f"<code>{name.rsplit('.', 1)[-1] if match.group('tilde') else name}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    # A reST literal-block marker ("Use it like this::") reads as one colon in HTML.
    return _ROLE.sub(_role, html).replace("::</p>", ":</p>")
