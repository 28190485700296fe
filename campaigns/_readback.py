"""Read every value of an HDF5 file back, as a comparable fingerprint.

Runs inside an :class:`h5guard.Sandbox` child (``campaigns._readback:fingerprint``):
a damaged file may hang or crash libhdf5, and the campaign process must survive it.
The fingerprint maps each object path (``/g/d``, ``/g@attr``, ``/g/`` for a group's
member list) to a SHA-256 over its type, shape and values, so two files compare
equal exactly when every dataset, attribute and link reads back the same.
"""

from __future__ import annotations

import hashlib
from typing import Any

import h5py
import numpy as np


def _hash_value(value: Any) -> str:
    h = hashlib.sha256()
    if isinstance(value, np.ndarray):
        h.update(f"{value.dtype.str}|{value.shape}|".encode())
        if value.dtype.kind == "O":
            h.update(repr(value.tolist()).encode())
        else:
            h.update(np.ascontiguousarray(value).tobytes())
    else:
        h.update(f"{type(value).__name__}|{value!r}".encode())
    return h.hexdigest()


def _walk(group: h5py.Group, where: str, out: dict[str, str]) -> None:
    for name in sorted(group.attrs):
        out[f"{where}@{name}"] = _hash_value(group.attrs[name])
    names = sorted(group)
    out[f"{where}/"] = hashlib.sha256("\0".join(names).encode()).hexdigest()
    for name in names:
        path = f"{where}/{name}" if where != "/" else f"/{name}"
        link = group.get(name, getlink=True)
        if isinstance(link, h5py.SoftLink):
            out[path] = "soft:" + link.path
            continue
        if isinstance(link, h5py.ExternalLink):
            out[path] = f"external:{link.filename}:{link.path}"
            continue
        obj = group[name]
        if isinstance(obj, h5py.Group):
            _walk(obj, path, out)
        elif isinstance(obj, h5py.Dataset):
            out[path] = _hash_value(np.asarray(obj[()]))
            for attr in sorted(obj.attrs):
                out[f"{path}@{attr}"] = _hash_value(obj.attrs[attr])
        else:
            out[path] = f"other:{type(obj).__name__}"


def fingerprint(path: str) -> dict[str, str]:
    """Every value of ``path`` read back; raises if anything cannot be read."""
    out: dict[str, str] = {}
    with h5py.File(path, "r", locking=False) as f:
        _walk(f, "/", out)
    return out


def differences(a: dict[str, str], b: dict[str, str], limit: int = 3) -> list[str]:
    """Object paths whose fingerprints differ (missing on either side included)."""
    diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return diff[:limit] + ([f"... {len(diff) - limit} more"] if len(diff) > limit else [])
