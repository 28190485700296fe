"""A sandbox target for tests/unit/test_sandbox_memory.py (imported by the child)."""

from __future__ import annotations

from h5guard._sandbox import more_memory

MIB = 1024 * 1024


def allocate(mib: int, extra_mib: int) -> int:
    """Take ``mib`` MiB inside ``more_memory(extra_mib MiB)``; the bytes taken."""
    with more_memory(extra_mib * MIB):
        block = bytearray(mib * MIB)
        return len(block)
