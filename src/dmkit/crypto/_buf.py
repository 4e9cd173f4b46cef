"""Buffer helpers shared by the sector ciphers (private; numpy).  The numpy-free key
helpers are in :mod:`dmkit.crypto._key` (re-exported here)."""

from __future__ import annotations

import numpy as np

from ._key import KeyHolder, check_key, wipe_bytearray

__all__ = ["u8", "u64", "mv", "as_ivs", "wipe_bytearray", "check_key", "KeyHolder"]


def u8(buf) -> np.ndarray:
    """A flat uint8 numpy view of any buffer (no copy)."""
    if isinstance(buf, np.ndarray):
        return buf.reshape(-1).view(np.uint8)
    return np.frombuffer(buf, dtype=np.uint8)


def u64(buf) -> np.ndarray:
    return u8(buf).view(np.uint64)


def as_ivs(ivs, n: int, iv_size: int) -> np.ndarray:
    """IVs as a ``(n, iv_size)`` uint8 array; accepts an array or concatenated bytes."""
    a = ivs if isinstance(ivs, np.ndarray) else np.frombuffer(bytes(ivs), dtype=np.uint8)
    a = a.reshape(-1, iv_size) if a.ndim == 1 else a
    if a.shape != (n, iv_size):
        raise ValueError(f"expected {n} IVs of {iv_size} bytes, got shape {a.shape}")
    return a


def mv(a: np.ndarray) -> memoryview:
    """A flat byte memoryview of a C-contiguous array, as cryptography accepts."""
    return memoryview(np.ascontiguousarray(a).reshape(-1).view(np.uint8))
