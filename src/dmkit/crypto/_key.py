"""Key helpers shared by the sector ciphers (private).  No numpy: the numpy-free data path
(:mod:`dmkit.crypto.fastxts`) and the crypt target's table parsing import only this."""

from __future__ import annotations

import ctypes

__all__ = ["wipe_bytearray", "check_key", "KeyHolder", "AuthenticationFailed"]


class AuthenticationFailed(Exception):
    """Unit ``index`` of a request failed authentication (the kernel's -EBADMSG)."""

    def __init__(self, index: int):
        super().__init__(f"authentication failed in unit {index}")
        self.index = index


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
