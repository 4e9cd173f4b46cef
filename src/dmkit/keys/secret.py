"""Key material in memory: a byte string that cannot be shown, changed or pickled, and can be wiped.

Python copies bytes freely (slicing, hashing libraries, the interpreter's own buffers), so
wiping is best effort: it clears the one buffer dmkit owns, which is the copy that lives
longest.  What it guarantees is that key material never reaches a log, a traceback or a
terminal through ``repr``/``str``/``format``, and that comparisons take constant time.
"""

from __future__ import annotations

import ctypes
import hmac

__all__ = ["SecretBytes"]


class SecretBytes:
    """Immutable, wipeable key bytes.

    Invariants: the content never changes except to become all zeros on :meth:`wipe`,
    after which every access raises :class:`ValueError`; ``repr`` and ``str`` show the
    length only; equality is constant-time; instances are unhashable and unpicklable.
    """

    __slots__ = ("_buf", "_wiped")

    def __init__(self, data: bytes | bytearray | memoryview | SecretBytes):
        if isinstance(data, SecretBytes):
            data = data.view()
        self._buf = bytearray(data)
        self._wiped = False

    def __len__(self) -> int:
        return len(self._buf)

    def __repr__(self) -> str:
        return "<SecretBytes wiped>" if self._wiped else f"<SecretBytes {len(self._buf)} bytes>"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def _check(self) -> None:
        if self._wiped:
            raise ValueError("key material was wiped")

    def view(self) -> memoryview:
        """A read-only view of the bytes, valid until :meth:`wipe`."""
        self._check()
        return memoryview(self._buf).toreadonly()

    def reveal(self) -> bytes:
        """A copy of the bytes, for an API that needs ``bytes`` (a cipher, a syscall)."""
        self._check()
        return bytes(self._buf)

    @property
    def wiped(self) -> bool:
        return self._wiped

    def wipe(self) -> None:
        """Overwrite the bytes with zeros; the object is unusable afterwards."""
        n = len(self._buf)
        if n:
            # memset in place: a slice assignment could reallocate and leave the old copy
            window = (ctypes.c_char * n).from_buffer(self._buf)
            ctypes.memset(window, 0, n)
            del window
        self._wiped = True

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SecretBytes):
            other = other.view()
        elif not isinstance(other, (bytes, bytearray, memoryview)):
            return NotImplemented
        return hmac.compare_digest(self.view(), other)

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self):
        raise TypeError("SecretBytes cannot be pickled")

    def __enter__(self) -> SecretBytes:
        return self

    def __exit__(self, *exc) -> None:
        self.wipe()
