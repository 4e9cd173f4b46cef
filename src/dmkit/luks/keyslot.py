"""Key slot cryptography shared by LUKS1 and LUKS2: low-level.

A key slot stores the volume key AF-split into 4000 stripes and encrypted with a key
derived from the passphrase; a digest of the volume key tells a right passphrase from a
wrong one (LUKS1 On-Disk Format Specification, sections 2.4-2.5; LUKS2 On-Disk Format
Specification, sections 3.2 and 3.4).  Digests are compared in constant time.
"""

from __future__ import annotations

import hmac
import os
from typing import Callable

from ..block import SECTOR_SIZE
from .af import af_merge, af_split, af_split_sectors
from .kdf import pbkdf2
from .storage import decrypt_area, encrypt_area

__all__ = ["material_bytes", "seal", "unseal", "digest", "digest_matches", "wipe_buffer"]


def material_bytes(key_size: int, stripes: int) -> int:
    """Bytes of a key slot's encrypted material (whole 512-byte sectors)."""
    return af_split_sectors(key_size, stripes) * SECTOR_SIZE


def seal(volume_key: bytes, derived_key: bytes, area_cipher: str, af_hash: str, stripes: int,
         rng: Callable[[int], bytes] = os.urandom) -> bytearray:
    """Split ``volume_key`` and encrypt it for the key slot area (IV sector 0 at its start)."""
    split = af_split(volume_key, stripes, af_hash, rng)
    try:
        return encrypt_area(area_cipher, derived_key, split)
    finally:
        wipe_buffer(split)


def unseal(material: bytes, derived_key: bytes, area_cipher: str, key_size: int, af_hash: str,
           stripes: int) -> bytearray:
    """Decrypt a key slot's material and merge the stripes: a candidate volume key."""
    split = decrypt_area(area_cipher, derived_key, material)
    try:
        return af_merge(split, key_size, stripes, af_hash)
    finally:
        wipe_buffer(split)


def digest(hash_name: str, volume_key: bytes, salt: bytes, iterations: int,
           length: int) -> bytes:
    """The PBKDF2 digest of a volume key (LUKS1 ``mkDigest``, LUKS2 ``pbkdf2`` digest)."""
    return bytes(pbkdf2(hash_name, volume_key, salt, iterations, length))


def digest_matches(hash_name: str, volume_key: bytes, salt: bytes, iterations: int,
                   expected: bytes) -> bool:
    return hmac.compare_digest(digest(hash_name, volume_key, salt, iterations, len(expected)),
                               bytes(expected))


def wipe_buffer(buf) -> None:
    """Zero a bytearray in place (best effort, as for every Python buffer)."""
    if isinstance(buf, bytearray):
        buf[:] = bytes(len(buf))
