"""Hash names as cryptsetup spells them, mapped to :mod:`hashlib`.

LUKS headers name hashes the way cryptsetup's crypto backend does (``sha256``,
``ripemd160``, ``sha3-256``, ``blake2b-512``).  This module is the one place that turns
such a name into a hashlib constructor; an unknown or unavailable hash is a
:class:`~dmkit.errors.NotSupportedError` naming it.
"""

from __future__ import annotations

import hashlib
from typing import Callable

from ..errors import NotSupportedError

__all__ = ["hash_ctor", "hash_size", "hashlib_name", "is_supported"]

_ALIASES = {
    "sha1": "sha1",
    "sha224": "sha224",
    "sha256": "sha256",
    "sha384": "sha384",
    "sha512": "sha512",
    "ripemd160": "ripemd160",
    "whirlpool": "whirlpool",
    "sm3": "sm3",
    "sha3-224": "sha3_224",
    "sha3-256": "sha3_256",
    "sha3-384": "sha3_384",
    "sha3-512": "sha3_512",
    "blake2b-512": "blake2b",
    "blake2s-256": "blake2s",
}


def hashlib_name(name: str) -> str:
    """The hashlib name of cryptsetup's hash ``name`` (case-insensitive, as LUKS1 allows)."""
    key = name.lower()
    if key not in _ALIASES:
        raise NotSupportedError(f"luks: hash {name!r} is not supported")
    return _ALIASES[key]


def hash_ctor(name: str) -> Callable[..., "hashlib._Hash"]:
    """A constructor for hash ``name``; raises NotSupportedError if unavailable here."""
    hl = hashlib_name(name)
    fast = getattr(hashlib, hl, None)
    if fast is not None:
        return fast
    try:
        hashlib.new(hl)
    except ValueError:
        raise NotSupportedError(f"luks: hash {name!r} is not available in this Python "
                                "(OpenSSL build)") from None
    return lambda data=b"": hashlib.new(hl, data)


def hash_size(name: str) -> int:
    return hash_ctor(name)().digest_size


def is_supported(name: str) -> bool:
    try:
        hash_ctor(name)
    except NotSupportedError:
        return False
    return True
