"""``xts(aes)`` with the IVs dm-crypt generates from sector numbers, without numpy.

The common LUKS case (``aes-xts-plain64``, one key, no integrity) done by the optional C
accelerator :mod:`dmkit.crypto._xtsevp` (OpenSSL's libcrypto, one EVP context per request,
one IV per unit, the GIL released): the crypt target uses it when :func:`fast_xts` returns
one, and otherwise :class:`dmkit.crypto.skcipher.AesXts` with an IV generator, which gives
the same bytes.  Nothing here imports numpy, so a process that only reads such a volume
(``dmkit luks export``) does not pay for loading it.

IV modes: ``plain64`` (``le64(sector)``), ``plain`` (``le32(sector mod 2^32)``), both zero
padded to 16 bytes, and ``plain64be`` (``be64(sector)`` in the last 8 bytes); the sector of
unit ``s`` of a request is ``first + s * step``.
"""

from __future__ import annotations

from ._key import KeyHolder, check_key

try:  # the optional C accelerator (setup.py)
    from . import _xtsevp
except ImportError:  # pragma: no cover - depends on the build
    _xtsevp = None

__all__ = ["FastXts", "fast_xts", "C_IV_MODES", "available"]

#: IV mode name -> the accelerator's code
C_IV_MODES = {"plain64": 0, "plain": 1, "plain64be": 2}


def available() -> bool:
    """Whether the accelerator was built."""
    return _xtsevp is not None


class FastXts(KeyHolder):
    """``xts(aes)`` (key ``key1 || key2``, 32 or 64 bytes, halves different) over whole
    requests, IVs generated in C.  Thread-safe: every call has its own OpenSSL context."""

    name = "xts(aes)"
    iv_size = 16
    block_size = 16

    def __init__(self, key, ivmode: str):
        if _xtsevp is None:
            raise ValueError("xts(aes): the C accelerator dmkit.crypto._xtsevp is not built")
        key = check_key(self.name, key, (32, 64))
        half = len(key) // 2
        if key[:half] == key[half:]:
            raise ValueError("xts(aes): the key halves are equal (OpenSSL refuses them)")
        if ivmode not in C_IV_MODES:
            raise ValueError(f"xts(aes): IV mode {ivmode!r} is not generated in C")
        self._hold(key)
        self.ivmode = ivmode
        self._code = C_IV_MODES[ivmode]

    def crypt(self, decrypt: bool, src, dst, unit_bytes: int, first: int, step: int) -> None:
        """Encrypt or decrypt ``len(src) // unit_bytes`` units from ``src`` into ``dst``
        (the same length; may be the same buffer); unit ``s`` has IV sector
        ``first + s * step``."""
        self._check_live()
        _xtsevp.crypt(self._key, dst, src, unit_bytes, first & 0xFFFF_FFFF_FFFF_FFFF,
                      step, self._code, decrypt)


def fast_xts(cipher_api: str, keycount: int, ivmode: str | None, key: bytes
             ) -> FastXts | None:
    """A :class:`FastXts` when the accelerator can do this cipher, else ``None``."""
    if (_xtsevp is None or cipher_api != "xts(aes)" or keycount != 1
            or ivmode not in C_IV_MODES or len(key) not in (32, 64)
            or key[:len(key) // 2] == key[len(key) // 2:]):
        return None
    return FastXts(key, ivmode)
