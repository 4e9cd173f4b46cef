"""The anti-forensic (AF) splitter of LUKS: low-level.

LUKS1 On-Disk Format Specification, section 2.4 ("AF-Splitter"); cryptsetup's
``lib/luks1/af.c``.  A key of ``n`` bytes is stored as ``stripes`` blocks of ``n`` bytes:
all but the last are random, and the last is the key XORed with the "diffusion" of the
running XOR of the others.  Destroying any one block destroys the key.

``diffuse`` hashes the block in digest-sized pieces: piece ``i`` becomes
``H(be32(i) || piece)`` (truncated for the last, shorter piece).

:func:`af_merge` (on the path of every unlock) runs in the optional C accelerator
:mod:`dmkit.luks._afevp` (libcrypto, one digest context for all pieces, the GIL released)
when it is built and libcrypto has the hash; otherwise in hashlib, with the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ..block import SECTOR_SIZE
from .hashes import hash_ctor

try:  # the optional C accelerator (setup.py)
    from . import _afevp
except ImportError:  # pragma: no cover - depends on the build
    _afevp = None

__all__ = ["af_merge", "af_split", "af_split_sectors", "diffuse"]

#: cryptsetup's hash name (lower case, as :mod:`.hashes` knows it) -> OpenSSL's digest name
_EVP_NAMES = {
    "sha1": "SHA1",
    "sha224": "SHA224",
    "sha256": "SHA256",
    "sha384": "SHA384",
    "sha512": "SHA512",
    "ripemd160": "RIPEMD160",
    "whirlpool": "whirlpool",
    "sm3": "SM3",
    "sha3-224": "SHA3-224",
    "sha3-256": "SHA3-256",
    "sha3-384": "SHA3-384",
    "sha3-512": "SHA3-512",
    "blake2b-512": "BLAKE2B-512",
    "blake2s-256": "BLAKE2S-256",
}


def af_split_sectors(key_size: int, stripes: int) -> int:
    """512-byte sectors taken by a split key (``AF_split_sectors``)."""
    return -(-key_size * stripes // SECTOR_SIZE)


def diffuse(block: bytes, hash_name: str) -> bytes:
    """The diffusion step: hash ``block`` in digest-sized pieces, each with its index."""
    new = hash_ctor(hash_name)
    return _diffuse(block, new, new().digest_size)


def _diffuse(block: bytes, new, ds: int) -> bytes:
    if len(block) <= ds:  # the usual case: a key no longer than one digest
        return new(b"\0\0\0\0" + block).digest()[:len(block)]
    out = []
    for i, pos in enumerate(range(0, len(block), ds)):
        piece = block[pos:pos + ds]
        out.append(new(i.to_bytes(4, "big") + piece).digest()[:len(piece)])
    return b"".join(out)


def _xor(a: bytes, b: bytes) -> bytes:
    n = len(a)
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(n, "little")


def af_split(material: bytes, stripes: int, hash_name: str,
             rng: Callable[[int], bytes] = os.urandom) -> bytearray:
    """Split ``material`` into ``stripes`` blocks, padded with zeros to whole sectors."""
    if stripes < 1:
        raise ValueError("stripes must be at least 1")
    n = len(material)
    out = bytearray(af_split_sectors(n, stripes) * SECTOR_SIZE)
    new = hash_ctor(hash_name)
    ds = new().digest_size
    acc = bytes(n)
    for i in range(stripes - 1):
        block = rng(n)
        if len(block) != n:
            raise ValueError("rng returned the wrong number of bytes")
        out[i * n:(i + 1) * n] = block
        acc = _diffuse(_xor(block, acc), new, ds)
    out[(stripes - 1) * n:stripes * n] = _xor(bytes(material), acc)
    return out


def af_merge(split: bytes, key_size: int, stripes: int, hash_name: str) -> bytearray:
    """Recover the ``key_size``-byte key from its ``stripes`` split blocks."""
    if stripes < 1:
        raise ValueError("stripes must be at least 1")
    if len(split) < key_size * stripes:
        raise ValueError(f"split material is {len(split)} bytes, needs {key_size * stripes}")
    md = _EVP_NAMES.get(hash_name.lower()) if _afevp is not None and key_size > 0 else None
    if md is not None:
        try:
            return _afevp.merge(split, key_size, stripes, md)
        except ValueError:  # the sizes are checked above: libcrypto lacks the digest
            pass  # (e.g. whirlpool without OpenSSL 3's legacy provider)
    return _af_merge_py(split, key_size, stripes, hash_name)


def _af_merge_py(split: bytes, key_size: int, stripes: int, hash_name: str) -> bytearray:
    """:func:`af_merge` in hashlib (arguments already checked)."""
    new = hash_ctor(hash_name)
    ds = new().digest_size
    mv = memoryview(split)
    acc = bytes(key_size)
    for i in range(stripes - 1):
        acc = _diffuse(_xor(mv[i * key_size:(i + 1) * key_size].tobytes(), acc), new, ds)
    last = mv[(stripes - 1) * key_size:stripes * key_size].tobytes()
    return bytearray(_xor(last, acc))
