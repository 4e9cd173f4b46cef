"""Sector ciphers without authentication: AES-XTS, AES-CBC, AES-ECB and the null cipher.

Low-level API (as pyca/cryptography's hazmat layer): a cipher object holds a validated key
and transforms many *data units* of ``unit_bytes`` each, every unit with its own IV, in one
call.  Nothing here knows about sectors or devices; :mod:`dmkit.targets.crypt` maps
sectors to units and IVs.  These are the kernel crypto API's ``xts(aes)``, ``cbc(aes)``,
``ecb(aes)`` and ``ecb(cipher_null)`` skciphers as dm-crypt uses them
(drivers/md/dm-crypt.c, ``crypt_convert_block_skcipher``: one request per unit).

Batching (DESIGN.md, "Speed"): a request is never one cipher context per unit.

- XTS, first choice: the optional C accelerator :mod:`dmkit.crypto._xtsevp` runs OpenSSL's
  XTS unit by unit in one call per request (one EVP context, a new IV per unit, the GIL
  released), for 32- and 64-byte keys with different halves.
- XTS, otherwise: one OpenSSL XTS call over the whole request.  That call chains tweaks across unit
  boundaries (block ``k`` gets ``U * x^k``) where each unit must restart from its own tweak
  ``T_s = AES_k2(IV_s)``; the difference is ``D[s, j] = (T_s ^ U * x^(B s)) * x^j``, so
  ``P = XTS_big(C ^ D) ^ D``.  The ``T_s`` come from one ECB call, ``U * x^(B s)`` is a
  per-key table, and ``D`` is built with numpy (:func:`dmkit.crypto.gf128.tweak_chains`).
  Measured on 1 MiB requests (benchmarks/cases/crypt.py): about 5x faster than one XTS
  context per 512-byte unit.  Keys whose halves are equal (allowed by the kernel outside
  FIPS mode, refused by OpenSSL) and 48-byte (AES-192) keys use ECB with the full masks.
- CBC decryption is one CBC call over the request, then the first block of each unit is
  corrected by ``C_prev_last ^ IV_s`` (CBC decryption only looks one block back).  CBC
  encryption is serial inside a unit: with many short units, block ``j`` of every unit is
  encrypted in one ECB call (``B`` calls per request); with few long units, one context per
  unit.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ._buf import KeyHolder, as_ivs, check_key, mv, u8, u64
from .gf128 import mul_x_pow_int, scratch, tweak_chains

try:  # the optional C pass (setup.py); the numpy path below gives the same bytes
    from . import _xtsfix
except ImportError:  # pragma: no cover - depends on the build
    _xtsfix = None
try:  # the optional libcrypto XTS over many units (setup.py); first choice when built
    from . import _xtsevp
except ImportError:  # pragma: no cover - depends on the build
    _xtsevp = None

__all__ = ["CHUNK_BYTES", "SectorCipher", "AesXts", "AesCbc", "AesEcb", "NullCipher",
           "AES_KEY_SIZES"]

#: requests are processed in pieces of at most this many bytes (cache-sized work)
CHUNK_BYTES = 1 << 20
AES_KEY_SIZES = (16, 24, 32)
_ZERO16 = bytes(16)


class SectorCipher(KeyHolder):
    """Base: ``encrypt``/``decrypt`` ``len(src) // unit_bytes`` units from ``src`` into ``dst``.

    ``ivs`` is ``(n, iv_size)`` uint8 (or the IVs concatenated); ignored when ``iv_size``
    is 0.  ``src`` and ``dst`` are distinct buffers of equal length, a whole number of units;
    ``unit_bytes`` is a multiple of ``block_size``.
    """

    name: str = "?"
    iv_size: int = 0
    block_size: int = 16

    def encrypt(self, src, dst, ivs, unit_bytes: int) -> None:
        self._run(False, src, dst, ivs, unit_bytes)

    def decrypt(self, src, dst, ivs, unit_bytes: int) -> None:
        self._run(True, src, dst, ivs, unit_bytes)

    def _run(self, decrypt: bool, src, dst, ivs, unit_bytes: int) -> None:
        self._check_live()
        s8, d8 = u8(src), u8(dst)
        if len(s8) != len(d8) or len(s8) % unit_bytes or unit_bytes % self.block_size:
            raise ValueError(f"{self.name}: {len(s8)} bytes in, {len(d8)} out, is not a whole "
                             f"number of {unit_bytes}-byte units")
        n = len(s8) // unit_bytes
        iv = as_ivs(ivs, n, self.iv_size) if self.iv_size else None
        step = max(1, CHUNK_BYTES // unit_bytes)
        for a in range(0, n, step):
            b = min(n, a + step)
            self._units(decrypt, s8[a * unit_bytes:b * unit_bytes], d8[a * unit_bytes:b * unit_bytes],
                        None if iv is None else iv[a:b], unit_bytes)

    def _units(self, decrypt, src: np.ndarray, dst: np.ndarray, ivs, unit_bytes: int) -> None:
        raise NotImplementedError


class NullCipher(SectorCipher):
    """``ecb(cipher_null)``: the identity, with an empty key (cryptsetup's ``cipher_null``)."""

    name = "ecb(cipher_null)"
    block_size = 1

    def __init__(self, key=b""):
        self._hold(check_key(self.name, key, (0,)))

    def _units(self, decrypt, src, dst, ivs, unit_bytes):
        dst[:] = src


class AesEcb(SectorCipher):
    """``ecb(aes)``: no IV; every block on its own."""

    name = "ecb(aes)"

    def __init__(self, key):
        key = check_key(self.name, key, AES_KEY_SIZES)
        self._hold(key)
        self._ecb = Cipher(algorithms.AES(key), modes.ECB())

    def _drop(self):
        self._ecb = None

    def _units(self, decrypt, src, dst, ivs, unit_bytes):
        ctx = self._ecb.decryptor() if decrypt else self._ecb.encryptor()
        dst[:] = np.frombuffer(ctx.update(mv(src)), np.uint8)


class AesCbc(SectorCipher):
    """``cbc(aes)``: each unit chained from its own IV."""

    name = "cbc(aes)"
    iv_size = 16

    def __init__(self, key):
        key = check_key(self.name, key, AES_KEY_SIZES)
        self._hold(key)
        self._alg = algorithms.AES(key)
        self._ecb = Cipher(self._alg, modes.ECB())

    def _drop(self):
        self._alg = self._ecb = None

    def _units(self, decrypt, src, dst, ivs, unit_bytes):
        if decrypt:
            self._decrypt(src, dst, ivs, unit_bytes)
        elif unit_bytes // 16 * 8 < len(ivs):
            self._encrypt_by_column(src, dst, ivs, unit_bytes)
        else:
            self._encrypt_by_unit(src, dst, ivs, unit_bytes)

    def _decrypt(self, src, dst, ivs, unit_bytes):
        n, blocks = len(ivs), unit_bytes // 16
        ctx = Cipher(self._alg, modes.CBC(ivs[0].tobytes())).decryptor()
        dst[:] = np.frombuffer(ctx.update(mv(src)), np.uint8)
        if n > 1:
            c = src.reshape(n, blocks, 16)
            d = dst.reshape(n, blocks, 16)
            # the big call XORed block 0 of unit s with the last block of unit s-1
            d[1:, 0] ^= c[:-1, blocks - 1] ^ ivs[1:]

    def _encrypt_by_column(self, src, dst, ivs, unit_bytes):
        n, blocks = len(ivs), unit_bytes // 16
        p = src.reshape(n, blocks, 16)
        d = dst.reshape(n, blocks, 16)
        enc = self._ecb.encryptor()
        prev = ivs
        x = np.empty((n, 16), np.uint8)
        for j in range(blocks):
            np.bitwise_xor(p[:, j], prev, out=x)
            prev = np.frombuffer(enc.update(mv(x)), np.uint8).reshape(n, 16)
            d[:, j] = prev

    def _encrypt_by_unit(self, src, dst, ivs, unit_bytes):
        for s in range(len(ivs)):
            lo = s * unit_bytes
            ctx = Cipher(self._alg, modes.CBC(ivs[s].tobytes())).encryptor()
            dst[lo:lo + unit_bytes] = np.frombuffer(ctx.update(mv(src[lo:lo + unit_bytes])), np.uint8)


class AesXts(SectorCipher):
    """``xts(aes)``: IEEE 1619 XTS-AES; the key is ``key1 || key2`` (32, 48 or 64 bytes)."""

    name = "xts(aes)"
    iv_size = 16

    def __init__(self, key):
        key = check_key(self.name, key, (32, 48, 64))
        self._hold(key)
        half = len(key) // 2
        k1, k2 = key[:half], key[half:]
        self._ecb1 = Cipher(algorithms.AES(k1), modes.ECB())
        self._ecb2 = Cipher(algorithms.AES(k2), modes.ECB())
        self._bulk = None
        self._u = 0
        self._w: dict[int, np.ndarray] = {}
        if half in (16, 32):
            # The big call's tweak key only sets the chain U * x^k we correct for; any key
            # OpenSSL accepts will do, so equal halves get a different one.
            kx = k2 if k2 != k1 else bytes(b ^ 0xFF for b in k2)
            self._bulk = algorithms.AES(k1 + kx)
            u = Cipher(algorithms.AES(kx), modes.ECB()).encryptor().update(_ZERO16)
            self._u = int.from_bytes(u, "little")

    def _drop(self):
        self._ecb1 = self._ecb2 = self._bulk = None
        self._w.clear()
        self._u = 0

    def tweaks(self, ivs: np.ndarray) -> np.ndarray:
        """``AES_k2(IV)`` for each IV, as ``(n, 2)`` uint64 (lo, hi)."""
        t = self._ecb2.encryptor().update(mv(ivs))
        return np.frombuffer(t, np.uint64).reshape(-1, 2)

    def _chain_table(self, blocks: int, n: int) -> np.ndarray:
        """``U * x^(blocks * s)`` for ``s < n``: where the big call's chain starts unit s."""
        w = self._w.get(blocks)
        if w is None or len(w) < n:
            size = max(n, CHUNK_BYTES // (blocks * 16))
            w = np.empty((size, 2), np.uint64)
            v = self._u
            for s in range(size):
                w[s, 0] = v & 0xFFFF_FFFF_FFFF_FFFF
                w[s, 1] = v >> 64
                v = mul_x_pow_int(v, blocks)
            self._w[blocks] = w
        return w[:n]

    @property
    def _evp(self) -> bool:
        """Whether :mod:`dmkit.crypto._xtsevp` can take this key (built; 32 or 64 bytes
        with different halves: OpenSSL refuses equal halves for encryption)."""
        k = self._key
        return (_xtsevp is not None and len(k) in (32, 64)
                and k[:len(k) // 2] != k[len(k) // 2:])

    def _units(self, decrypt, src, dst, ivs, unit_bytes):
        if self._evp:
            _xtsevp.crypt_ivs(self._key, dst, src, unit_bytes, mv(ivs), decrypt)
            return
        n, blocks = len(ivs), unit_bytes // 16
        t = self.tweaks(ivs)
        if _xtsfix is not None:
            self._units_c(decrypt, src, dst, t, n, blocks)
            return
        out = u64(dst).reshape(n, blocks, 2)
        if self._bulk is not None:
            d = tweak_chains(t ^ self._chain_table(blocks, n), blocks)
            x = np.bitwise_xor(u64(src).reshape(n, blocks, 2), d,
                               out=scratch("xts.x", (n, blocks, 2)))
            c = Cipher(self._bulk, modes.XTS(_ZERO16))
            ctx = c.decryptor() if decrypt else c.encryptor()
        else:
            d = tweak_chains(t, blocks)
            x = np.bitwise_xor(u64(src).reshape(n, blocks, 2), d,
                               out=scratch("xts.x", (n, blocks, 2)))
            ctx = self._ecb1.decryptor() if decrypt else self._ecb1.encryptor()
        y = np.frombuffer(ctx.update(mv(x)), np.uint64).reshape(n, blocks, 2)
        np.bitwise_xor(y, d, out=out)

    def _units_c(self, decrypt, src, dst, t, n, blocks):
        """The same computation with the mask pass in C: ``x = src ^ D`` in one sweep that
        also keeps ``D``, then ``dst = E(x) ^ D`` as a plain numpy XOR."""
        size = n * blocks * 16
        x = scratch("xts.cx", (size // 8,))
        y = scratch("xts.cy", (size // 8 + 2,))  # update_into wants block_size - 1 spare
        if self._bulk is not None:
            starts = np.ascontiguousarray(t ^ self._chain_table(blocks, n))
            c = Cipher(self._bulk, modes.XTS(_ZERO16))
            ctx = c.decryptor() if decrypt else c.encryptor()
        else:
            starts = np.ascontiguousarray(t)
            ctx = self._ecb1.decryptor() if decrypt else self._ecb1.encryptor()
        masks = scratch("xts.cm", (size // 8,))
        _xtsfix.mask_xor(x, src, starts, blocks, masks)
        done = ctx.update_into(mv(x), memoryview(y).cast("B"))
        assert done == size
        np.bitwise_xor(y[:size // 8], masks, out=u64(dst))
