"""lookup3, the checksum HDF5 puts on its metadata (pure Python: the quick layer uses it).

The quick layer checksums one superblock per file, tens of thousands of files per
second, so the mixing rounds are written out with their rotations inline and the input
words are unpacked in one call. Files of one directory have superblocks that differ
only from their end-of-file address on (byte 28), so the state after the blocks before
the last one is remembered, keyed by those bytes: most superblocks then cost one mixing
round and the final one instead of three and the final one.
"""

from __future__ import annotations

import struct

_MASK = 0xFFFFFFFF
_PREFIX_LIMIT = 64  # bytes of leading blocks worth a cache entry (superblocks: 24)
_CACHE_LIMIT = 256
# (initval, length, leading blocks) -> (a, b, c) after mixing them
_PREFIXES: dict[tuple[int, int, bytes], tuple[int, int, int]] = {}


def lookup3(data: bytes | bytearray | memoryview, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``, the checksum HDF5 puts on its metadata."""
    length = len(data)
    m = _MASK
    a = b = c = (0xDEADBEEF + length + initval) & m
    if length == 0:
        return c
    # Every full 12-byte block but the last goes through the mixing rounds; the last
    # 1-12 bytes through the final rounds.
    blocks = (length - 1) // 12
    first = 0
    key = None
    if blocks > 1 and 12 * (blocks - 1) <= _PREFIX_LIMIT:
        key = (initval, length, bytes(data[: 12 * (blocks - 1)]))
        state = _PREFIXES.get(key)
        if state is not None:
            a, b, c = state
            first = 3 * (blocks - 1)
            key = None
    words = struct.unpack_from(f"<{3 * blocks}I", data) if blocks else ()
    for i in range(first, 3 * blocks, 3):
        if key is not None and i == 3 * (blocks - 1):
            if len(_PREFIXES) >= _CACHE_LIMIT:
                _PREFIXES.clear()
            _PREFIXES[key] = (a, b, c)
        a = (a + words[i]) & m
        b = (b + words[i + 1]) & m
        c = (c + words[i + 2]) & m
        a = (a - c) & m
        a ^= ((c << 4) | (c >> 28)) & m
        c = (c + b) & m
        b = (b - a) & m
        b ^= ((a << 6) | (a >> 26)) & m
        a = (a + c) & m
        c = (c - b) & m
        c ^= ((b << 8) | (b >> 24)) & m
        b = (b + a) & m
        a = (a - c) & m
        a ^= ((c << 16) | (c >> 16)) & m
        c = (c + b) & m
        b = (b - a) & m
        b ^= ((a << 19) | (a >> 13)) & m
        a = (a + c) & m
        c = (c - b) & m
        c ^= ((b << 4) | (b >> 28)) & m
        b = (b + a) & m
    x, y, z = struct.unpack("<3I", bytes(data[12 * blocks :]).ljust(12, b"\0"))
    a = (a + x) & m
    b = (b + y) & m
    c = (c + z) & m
    c ^= b
    c = (c - (((b << 14) | (b >> 18)) & m)) & m
    a ^= c
    a = (a - (((c << 11) | (c >> 21)) & m)) & m
    b ^= a
    b = (b - (((a << 25) | (a >> 7)) & m)) & m
    c ^= b
    c = (c - (((b << 16) | (b >> 16)) & m)) & m
    a ^= c
    a = (a - (((c << 4) | (c >> 28)) & m)) & m
    b ^= a
    b = (b - (((a << 14) | (a >> 18)) & m)) & m
    c ^= b
    c = (c - (((b << 24) | (b >> 8)) & m)) & m
    return int(c)
