"""Label each byte of an intact HDF5 file with the structure that holds it.

Object headers and raw data are located through libhdf5 (object addresses, chunk and
contiguous storage offsets); the other structures by their signatures (``TREE``,
``BTHD``/``BTLF``/``BTIN``, ``HEAP``, ``GCOL``, ``FRHP``/``FHDB``/``FHIB``,
``FSHD``/``FSSE``, ``SNOD``, ``EA*``/``FA*``) and the sizes their headers record.
Where a size is not recorded in the structure itself the extent is cut at the next
known structure. Bytes nobody claims are ``unlabeled``: free space, padding, or a
structure this map does not know. Only ever run this on files we just wrote.
"""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

LABELS = (
    "unlabeled",
    "superblock",
    "object header",
    "B-tree/chunk index",
    "local heap",
    "global heap",
    "fractal heap",
    "symbol table node",
    "free-space manager",
    "raw data",
)
UNLABELED, SUPERBLOCK, OHDR, BTREE, LHEAP, GHEAP, FHEAP, SNOD, FSPACE, RAW = range(len(LABELS))

_APPROX_CAP = 4096


def _u(data: bytes, pos: int, n: int) -> int:
    return int.from_bytes(data[pos : pos + n], "little")


def _find_all(data: bytes, sig: bytes) -> list[int]:
    out, pos = [], data.find(sig)
    while pos >= 0:
        out.append(pos)
        pos = data.find(sig, pos + 1)
    return out


def _objects(path: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Object header addresses, and raw data extents ``(offset, size)``."""
    addrs: list[int] = []
    raw: list[tuple[int, int]] = []
    with h5py.File(path, "r", locking=False) as f:
        addrs.append(h5py.h5o.get_info(f.id).addr)

        def visit(_name: str, obj: Any) -> None:
            addrs.append(h5py.h5o.get_info(obj.id).addr)
            if isinstance(obj, h5py.Dataset):
                layout = obj.id.get_create_plist().get_layout()
                if layout == h5py.h5d.CONTIGUOUS:
                    off = obj.id.get_offset()
                    if off is not None:
                        raw.append((off, obj.id.get_storage_size()))
                elif layout == h5py.h5d.CHUNKED:
                    for i in range(obj.id.get_num_chunks()):
                        info = obj.id.get_chunk_info(i)
                        raw.append((info.byte_offset, info.size))

        f.visititems(visit)
    return sorted(set(addrs)), raw


def _v1_messages(data: bytes, start: int, end: int) -> list[tuple[int, int]]:
    """Continuation chunks ``(addr, length)`` named by v1 object header messages."""
    out = []
    pos = start
    while pos + 8 <= end:
        mtype, size = _u(data, pos, 2), _u(data, pos + 2, 2)
        if mtype == 0x10 and size >= 16:
            out.append((_u(data, pos + 8, 8), _u(data, pos + 16, 8)))
        pos += 8 + size
    return out


def _v2_messages(data: bytes, start: int, end: int, order: bool) -> list[tuple[int, int]]:
    out = []
    pos = start
    head = 6 if order else 4
    while pos + head <= end:
        mtype, size = data[pos], _u(data, pos + 1, 2)
        if mtype == 0x10 and size >= 16:
            out.append((_u(data, pos + head, 8), _u(data, pos + head + 8, 8)))
        pos += head + size
    return out


def _object_header(data: bytes, addr: int) -> list[tuple[int, int]]:
    """Extents ``(start, end)`` of one object header and its continuation chunks."""
    extents: list[tuple[int, int]] = []
    if data[addr : addr + 4] == b"OHDR":
        flags = data[addr + 5]
        pos = addr + 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
        width = 1 << (flags & 0x03)
        chunk0 = _u(data, pos, width)
        pos += width
        extents.append((addr, pos + chunk0 + 4))
        todo = _v2_messages(data, pos, pos + chunk0, bool(flags & 0x04))
        seen = set()
        while todo:
            caddr, clen = todo.pop()
            if caddr in seen or caddr + clen > len(data) or data[caddr : caddr + 4] != b"OCHK":
                continue
            seen.add(caddr)
            extents.append((caddr, caddr + clen))
            todo += _v2_messages(data, caddr + 4, caddr + clen - 4, bool(flags & 0x04))
    elif data[addr : addr + 1] == b"\x01":
        size = _u(data, addr + 8, 4)
        extents.append((addr, addr + 16 + size))
        todo = _v1_messages(data, addr + 16, addr + 16 + size)
        seen = set()
        while todo:
            caddr, clen = todo.pop()
            if caddr in seen or caddr + clen > len(data):
                continue
            seen.add(caddr)
            extents.append((caddr, caddr + clen))
            todo += _v1_messages(data, caddr, caddr + clen)
    return extents


def label_bytes(path: str) -> npt.NDArray[np.uint8]:
    """One label index (into :data:`LABELS`) per byte of the file at ``path``."""
    with open(path, "rb") as fh:
        data = fh.read()
    size = len(data)
    labels = np.zeros(size, dtype=np.uint8)
    exact: list[tuple[int, int, int]] = []  # (start, end, label)
    approx: list[tuple[int, int]] = []  # (start, label), extent cut at the next structure

    version = data[8] if size > 8 else 0
    leaf_k = _u(data, 16, 2) if version in (0, 1) else 4
    internal_k = _u(data, 18, 2) if version in (0, 1) else 16
    exact.append((0, {0: 96, 1: 100}.get(version, 48), SUPERBLOCK))

    addrs, raw = _objects(path)
    for addr in addrs:
        exact += [(s, e, OHDR) for s, e in _object_header(data, addr)]
    exact += [(off, off + n, RAW) for off, n in raw]

    for p in _find_all(data, b"TREE"):
        if data[p + 4] == 0:
            exact.append((p, p + 24 + 2 * internal_k * 8 + (2 * internal_k + 1) * 8, BTREE))
        elif data[p + 4] == 1:
            approx.append((p, BTREE))
    node_sizes = {}
    for p in _find_all(data, b"BTHD"):
        if data[p + 4] == 0:
            exact.append((p, p + 38, BTREE))
            node_sizes[_u(data, p + 16, 8)] = _u(data, p + 6, 4)
    for sig in (b"BTLF", b"BTIN"):
        for p in _find_all(data, sig):
            if p in node_sizes:
                exact.append((p, p + node_sizes[p], BTREE))
            else:
                approx.append((p, BTREE))
    for sig in (b"EAHD", b"EAIB", b"EASB", b"EADB", b"FAHD", b"FADB"):
        approx += [(p, BTREE) for p in _find_all(data, sig)]
    for p in _find_all(data, b"HEAP"):
        if data[p + 4] == 0:
            exact.append((p, p + 32, LHEAP))
            seg, seg_size = _u(data, p + 24, 8), _u(data, p + 8, 8)
            if seg + seg_size <= size:
                exact.append((seg, seg + seg_size, LHEAP))
    for p in _find_all(data, b"GCOL"):
        if data[p + 4] == 1:
            exact.append((p, min(size, p + _u(data, p + 8, 8)), GHEAP))
    for p in _find_all(data, b"FRHP"):
        if data[p + 4] == 0:
            filter_len = _u(data, p + 7, 2)
            exact.append((p, p + 146 + (12 + filter_len if filter_len else 0), FHEAP))
    for sig in (b"FHDB", b"FHIB"):
        approx += [(p, FHEAP) for p in _find_all(data, sig)]
    for p in _find_all(data, b"FSHD"):
        exact.append((p, p + 82, FSPACE))
    approx += [(p, FSPACE) for p in _find_all(data, b"FSSE")]
    for p in _find_all(data, b"SNOD"):
        if data[p + 4] == 1:
            exact.append((p, p + 8 + 2 * leaf_k * 40, SNOD))

    starts = sorted({s for s, _, _ in exact} | {s for s, _ in approx} | {size})
    for p, label in approx:
        nxt = next((s for s in starts if s > p), size)
        labels[p : min(nxt, p + _APPROX_CAP)] = label
    for s, e, label in exact:
        labels[max(0, s) : min(size, e)] = label
    return labels


def regions(labels: npt.NDArray[np.uint8]) -> dict[str, npt.NDArray[np.int64]]:
    """Byte offsets per label name (labels with no byte are left out)."""
    out = {}
    for i, name in enumerate(LABELS):
        where = np.flatnonzero(labels == i)
        if where.size:
            out[name] = where.astype(np.int64)
    return out
