"""IV generators of dm-crypt, computed for a whole request at once.

Kernel: drivers/md/dm-crypt.c (``crypt_iv_*_gen``) and Documentation/admin-guide/
device-mapper/dm-crypt.rst.  Every generator maps the IV sector numbers of the units of a
request (``uint64``; 512-byte sectors, or ``sector_size`` units with ``iv_large_sectors``)
to a ``(n, iv_size)`` uint8 array:

- ``plain``: ``le32(sector mod 2^32)``, zero padded;
- ``plain64``: ``le64(sector)``, zero padded;
- ``plain64be``: ``be64(sector)`` in the last 8 bytes;
- ``essiv:<hash>``: ``E_salt(le64(sector) || 0...)`` with ``salt = hash(key)`` as the key of
  the cipher's block cipher (the kernel's ``essiv(<mode>(<cipher>),<hash>)`` template); one
  salt per key when the table has several keys;
- ``benbi``: ``be64((sector << (9 - log2(block_size))) + 1)`` in the last 8 bytes (the
  count of narrow blocks, starting at 1);
- ``null``: zeros;
- ``random``: random bytes, kept in the integrity metadata by the caller (for reads it
  uses the stored IV instead of generating one);
- ``eboiv``: the volume cipher (first key) encrypting one zero block with IV
  ``le64(sector * sector_size)`` (BitLocker's encrypted byte-offset IV).

``lmk``, ``tcw`` and ``elephant`` (loop-AES, TrueCrypt, BitLocker-with-diffuser) are not
implemented; :data:`UNSUPPORTED` lists them for a clear error.
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable, Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ._buf import mv
from .ivmodes import IV_MODES, UNSUPPORTED
from .skcipher import AES_KEY_SIZES, SectorCipher

__all__ = ["IvGenerator", "PlainIv", "Plain64Iv", "Plain64BeIv", "EssivIv", "BenbiIv",
           "NullIv", "RandomIv", "EboivIv", "IV_MODES", "UNSUPPORTED"]


class IvGenerator:
    """Base.  ``generate(iv_sectors, key_index=None)``; ``stores_iv`` for ``random``."""

    name = "?"
    stores_iv = False

    def __init__(self, iv_size: int):
        if iv_size < 8:
            raise ValueError(f"IV mode {self.name}: IV size {iv_size} is below 8 bytes")
        self.iv_size = iv_size

    def _zeros(self, n: int) -> np.ndarray:
        return np.zeros((n, self.iv_size), np.uint8)

    def generate(self, iv_sectors: np.ndarray, key_index: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def wipe(self) -> None:
        """Forget key-derived state (the ``key wipe`` message)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} iv_size={self.iv_size}>"


def _le64_into(iv: np.ndarray, values: np.ndarray, at: int = 0) -> None:
    iv[:, at:at + 8] = values.astype("<u8").view(np.uint8).reshape(-1, 8)


def _be64_into(iv: np.ndarray, values: np.ndarray, at: int) -> None:
    iv[:, at:at + 8] = values.astype(">u8").view(np.uint8).reshape(-1, 8)


class PlainIv(IvGenerator):
    name = "plain"

    def generate(self, iv_sectors, key_index=None):
        iv = self._zeros(len(iv_sectors))
        iv[:, 0:4] = (iv_sectors & np.uint64(0xFFFFFFFF)).astype("<u4").view(np.uint8).reshape(-1, 4)
        return iv


class Plain64Iv(IvGenerator):
    name = "plain64"

    def generate(self, iv_sectors, key_index=None):
        iv = self._zeros(len(iv_sectors))
        _le64_into(iv, iv_sectors)
        return iv


class Plain64BeIv(IvGenerator):
    name = "plain64be"

    def generate(self, iv_sectors, key_index=None):
        iv = self._zeros(len(iv_sectors))
        _be64_into(iv, iv_sectors, self.iv_size - 8)
        return iv


class NullIv(IvGenerator):
    name = "null"

    def generate(self, iv_sectors, key_index=None):
        return self._zeros(len(iv_sectors))


class BenbiIv(IvGenerator):
    name = "benbi"

    def __init__(self, iv_size: int, block_size: int):
        super().__init__(iv_size)
        log = block_size.bit_length() - 1
        if 1 << log != block_size:
            raise ValueError("IV mode benbi: cipher block size is not a power of 2")
        if log > 9:
            raise ValueError("IV mode benbi: cipher block size is > 512")
        self.shift = np.uint64(9 - log)

    def generate(self, iv_sectors, key_index=None):
        iv = self._zeros(len(iv_sectors))
        _be64_into(iv, (iv_sectors << self.shift) + np.uint64(1), self.iv_size - 8)
        return iv


class RandomIv(IvGenerator):
    """Random IVs from ``rng(nbytes)`` (injectable; ``os.urandom`` by default)."""

    name = "random"
    stores_iv = True

    def __init__(self, iv_size: int, rng: Callable[[int], bytes] = os.urandom):
        super().__init__(iv_size)
        self.rng = rng

    def generate(self, iv_sectors, key_index=None):
        n = len(iv_sectors)
        data = self.rng(n * self.iv_size)
        if len(data) != n * self.iv_size:
            raise ValueError("IV mode random: the random source returned too few bytes")
        return np.frombuffer(bytes(data), np.uint8).reshape(n, self.iv_size).copy()


class EssivIv(IvGenerator):
    """``essiv:<hash>``; ``subkeys`` are the keys of the table's cipher instances."""

    name = "essiv"

    def __init__(self, iv_size: int, hash_name: str, subkeys: Sequence[bytes], block_size: int):
        super().__init__(iv_size)
        if block_size != iv_size:
            raise ValueError("IV mode essiv: the cipher's block size must equal its IV size")
        try:
            hashlib.new(hash_name)
        except ValueError:
            raise ValueError(f"IV mode essiv: unknown hash {hash_name!r}") from None
        self.hash_name = hash_name
        self._salts = []
        for k in subkeys:
            salt = hashlib.new(hash_name, bytes(k)).digest()
            if len(salt) not in AES_KEY_SIZES:
                raise ValueError(f"IV mode essiv: a {hash_name} digest ({len(salt)} bytes) is "
                                 "not an AES key size")
            self._salts.append(Cipher(algorithms.AES(salt), modes.ECB()))

    def generate(self, iv_sectors, key_index=None):
        iv = self._zeros(len(iv_sectors))
        _le64_into(iv, iv_sectors)
        if len(self._salts) == 1 or key_index is None:
            groups = [(self._salts[0], slice(None))]
        else:
            groups = [(c, np.nonzero(key_index == i)[0]) for i, c in enumerate(self._salts)]
        for cipher, sel in groups:
            part = np.ascontiguousarray(iv[sel])
            if len(part):
                iv[sel] = np.frombuffer(cipher.encryptor().update(mv(part)),
                                        np.uint8).reshape(-1, self.iv_size)
        return iv

    def wipe(self):
        self._salts = []


class EboivIv(IvGenerator):
    """``eboiv``: ``cipher`` is the volume cipher instance with the first key."""

    name = "eboiv"

    def __init__(self, iv_size: int, cipher: SectorCipher, sector_size: int):
        super().__init__(iv_size)
        if cipher.block_size != iv_size:
            raise ValueError("IV mode eboiv: block size of the cipher does not match its IV size")
        self.cipher = cipher
        self.sector_size = np.uint64(sector_size)

    def generate(self, iv_sectors, key_index=None):
        n = len(iv_sectors)
        buf = self._zeros(n)
        _le64_into(buf, iv_sectors * self.sector_size)
        out = np.empty(n * self.iv_size, np.uint8)
        self.cipher.encrypt(np.zeros(n * self.iv_size, np.uint8), out, buf, self.iv_size)
        return out.reshape(n, self.iv_size)

