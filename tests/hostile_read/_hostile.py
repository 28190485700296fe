"""Functions that misbehave inside a sandbox child, run there by name
(``tests.hostile_read._hostile:behave``): what a filter plugin or a damaged heap does
to the descriptors of the process it runs in."""

from __future__ import annotations

import os
import sys
import time


def _result_fd() -> int:
    # The bootstrap's argv: ['-c', ROOT, FD, LIMIT].
    return int(sys.argv[2])


def behave(kind: str) -> int:
    """Misbehave as ``kind`` says, then answer 42 (if still alive)."""
    if kind == "stdout":
        # What the LZ4 plugin does on damaged data: text on the C-level stdout.
        os.write(1, b"lz4: decompression failed, 12345678 bytes expected\n")
        print("and Python's print too")
    elif kind == "huge":
        # A frame header announcing 4 EiB, then nothing.
        os.write(_result_fd(), b"H5GF" + (2**62).to_bytes(8, "little"))
        time.sleep(60)
    elif kind == "garbage":
        os.write(_result_fd(), b"this is not a frame at all\n")
        time.sleep(60)
    elif kind == "raw-length":
        # What today's protocol reads as a frame: 8 bytes of text taken as a length.
        os.write(_result_fd(), b"Warning!" + b" " * 32)
        time.sleep(60)
    return 42
