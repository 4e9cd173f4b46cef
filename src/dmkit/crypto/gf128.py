"""GF(2^128) arithmetic of XTS tweaks, vectorised with numpy.

IEEE 1619 (XTS-AES), section 5.2: the tweak of block ``j`` of a data unit is
``T * x^j`` in GF(2^128) modulo ``x^128 + x^7 + x^2 + x + 1``, with the 16 tweak bytes read
as a little-endian integer.  Here a tweak is two little-endian ``uint64`` words (lo, hi).

Multiplying by ``x^m`` (``m <= 32``) is a 128-bit shift left by ``m`` whose overflow ``o``
(``m`` bits) is folded back as the carry-less product ``o * 0x87``; with ``m <= 32`` that
product fits in the low word, so one formula covers every step.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["MASK128", "mul_x_pow_int", "tweak_chains", "scratch"]

MASK128 = (1 << 128) - 1
_U1, _U2, _U7 = np.uint64(1), np.uint64(2), np.uint64(7)


_local = threading.local()


def scratch(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A per-thread uint64 work array, reused between calls.

    Fresh megabyte arrays cost more in page faults than the arithmetic done in them, so
    hot paths keep theirs.  The content is valid until the next call with the same name on
    the same thread.
    """
    cache = getattr(_local, "arrays", None)
    if cache is None:
        cache = _local.arrays = {}
    a = cache.get(name)
    if a is None or a.shape != shape:
        a = cache[name] = np.empty(shape, np.uint64)
    return a


def _clmul87(o: int) -> int:
    return o ^ (o << 1) ^ (o << 2) ^ (o << 7)


def mul_x_pow_int(v: int, k: int) -> int:
    """``v * x^k`` for a tweak held as a Python int (any ``k >= 0``)."""
    v <<= k
    while v >> 128:
        v = (v & MASK128) ^ _clmul87(v >> 128)
    return v


def _mul_x_pow(lo: np.ndarray, hi: np.ndarray, m: int, out_lo: np.ndarray, out_hi: np.ndarray,
               tmp: np.ndarray, tmp2: np.ndarray) -> None:
    """``(out_lo, out_hi) = (lo, hi) * x^m`` elementwise, for ``1 <= m <= 32``."""
    s, r = np.uint64(m), np.uint64(64 - m)
    o = np.right_shift(hi, r, out=tmp)
    np.left_shift(hi, s, out=out_hi)
    np.right_shift(lo, r, out=tmp2)
    out_hi |= tmp2
    np.left_shift(lo, s, out=out_lo)
    out_lo ^= o
    np.left_shift(o, _U1, out=tmp2)
    out_lo ^= tmp2
    np.left_shift(o, _U2, out=tmp2)
    out_lo ^= tmp2
    np.left_shift(o, _U7, out=tmp2)
    out_lo ^= tmp2


def tweak_chains(start: np.ndarray, blocks: int) -> np.ndarray:
    """The masks ``start[s] * x^j`` for ``j < blocks``, shape ``(n, blocks, 2)`` uint64.

    ``start`` is ``(n, 2)`` uint64 (lo, hi).  The work is done in planes of shape
    ``(blocks, n)`` so every numpy operation runs over long contiguous rows: columns
    ``[m, 2m)`` are columns ``[0, m)`` times ``x^m`` (doubling up to 32), then each further
    group of 32 columns is the previous group times ``x^32``.

    The result is a per-thread scratch array (see :func:`scratch`): use it before the next
    call.
    """
    n = start.shape[0]
    lo = scratch("gf.lo", (blocks, n))
    hi = scratch("gf.hi", (blocks, n))
    lo[0] = start[:, 0]
    hi[0] = start[:, 1]
    width = min(blocks, 32)
    tmp = scratch("gf.tmp", (width, n))
    tmp2 = scratch("gf.tmp2", (width, n))
    m = 1
    while m < width:
        k = min(m, width - m)
        _mul_x_pow(lo[:k], hi[:k], m, lo[m:m + k], hi[m:m + k], tmp[:k], tmp2[:k])
        m += k
    for c in range(32, blocks, 32):
        k = min(32, blocks - c)
        _mul_x_pow(lo[c - 32:c - 32 + k], hi[c - 32:c - 32 + k], 32, lo[c:c + k], hi[c:c + k],
                   tmp[:k], tmp2[:k])
    out = scratch("gf.out", (n, blocks, 2))
    out[:, :, 0] = lo.T
    out[:, :, 1] = hi.T
    return out
