"""Finding the processes a test started, from /proc (Linux), to kill them for real."""

from __future__ import annotations

from pathlib import Path


def parent_map() -> dict[int, int]:
    """pid -> parent pid of every process visible now."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # The command name may hold spaces and parentheses: split after the last ')'.
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    return parents


def children(pid: int) -> list[int]:
    return [p for p, parent in parent_map().items() if parent == pid]


def descendants(pid: int) -> list[int]:
    parents = parent_map()
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        kids = [p for p, parent in parents.items() if parent == current]
        found.extend(kids)
        frontier.extend(kids)
    return found
