"""Buffer helpers shared by the sector ciphers (private)."""

from __future__ import annotations

import ctypes

import numpy as np

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


def wipe_bytearray(b: bytearray) -> None:
    n = len(b)
    if n:
        window = (ctypes.c_char * n).from_buffer(b)
        ctypes.memset(window, 0, n)
        del window


def check_key(name: str, key, sizes) -> bytes:
    key = bytes(key)
    if len(key) not in sizes:
        allowed = ", ".join(str(s) for s in sizes)
        raise ValueError(f"{name}: key of {len(key)} bytes; expected {allowed}")
    return key


class KeyHolder:
    """Mixin: the one dmkit-owned copy of the key, wiped by :meth:`wipe`.

    Copies inside OpenSSL's key schedules are released with the cipher objects; Python
    cannot promise more (see dmkit.keys.secret).
    """

    _key: bytearray
    _wiped: bool = False

    def _hold(self, key: bytes) -> None:
        self._key = bytearray(key)
        self._wiped = False

    @property
    def key_size(self) -> int:
        return len(self._key)

    def _check_live(self) -> None:
        if self._wiped:
            raise ValueError(f"{self.name}: the key was wiped")

    def wipe(self) -> None:
        """Zero the key copy and drop the cipher contexts; the object is unusable after."""
        wipe_bytearray(self._key)
        self._wiped = True
        self._drop()

    def _drop(self) -> None:  # subclasses release their contexts
        pass

    def __repr__(self) -> str:  # never the key
        state = "wiped" if self._wiped else f"{len(self._key)}-byte key"
        return f"<{type(self).__name__} {self.name} {state}>"


def mv(a: np.ndarray) -> memoryview:
    """A flat byte memoryview of a C-contiguous array, as cryptography accepts."""
    return memoryview(np.ascontiguousarray(a).reshape(-1).view(np.uint8))
