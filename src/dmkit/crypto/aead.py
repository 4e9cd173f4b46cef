"""Authenticated sector ciphers: ``gcm(aes)``, ``rfc7539(chacha20,poly1305)`` and
``authenc(hmac(<hash>),<skcipher>)``.

Low-level API.  Each data unit is sealed on its own with its own nonce and additional data
(dm-crypt passes ``le64(sector) || IV`` as AAD; drivers/md/dm-crypt.c,
``crypt_convert_block_aead``).  ``seal`` returns the tags, one row per unit; ``open``
verifies every unit and raises :class:`AuthenticationFailed` naming the first unit that
fails; nothing is written to ``dst`` for a failed request beyond what the caller clears.

``authenc`` is the kernel's crypto/authenc.c: encrypt with the inner skcipher (its IV is
the request IV), then ``tag = HMAC(authkey, AAD || ciphertext)`` truncated to the tag
size.  Its key in the kernel's crypto API is the rtattr-framed blob of
:func:`authenc_key_blob`; dm-crypt's own table key is ``enckey || authkey``.  The inner
cipher runs batched over the whole request (AesXts/AesCbc); only the HMACs are per unit.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from ._buf import KeyHolder, as_ivs, check_key, u8
from ._key import AuthenticationFailed
from .skcipher import AES_KEY_SIZES, SectorCipher

__all__ = ["AuthenticationFailed", "AeadSectorCipher", "AesGcm", "ChaCha20Poly1305Rfc7539",
           "Authenc", "authenc_key_blob", "parse_authenc_key_blob", "CRYPTO_AUTHENC_KEYA_PARAM"]

#: rtattr type of the authenc key parameter (include/crypto/authenc.h)
CRYPTO_AUTHENC_KEYA_PARAM = 1
_RTA = struct.Struct("<HH")        # struct rtattr: rta_len, rta_type (host order: LE here)
_PARAM = struct.Struct(">I")       # struct crypto_authenc_key_param: __be32 enckeylen
_RTA_SPACE = 8                     # RTA_SPACE(sizeof(param)) = RTA_ALIGN(4 + 4)


class AeadSectorCipher(KeyHolder):
    """Base of the AEAD sector ciphers.

    ``seal(src, dst, ivs, aads, unit_bytes) -> tags`` and
    ``open(src, dst, ivs, aads, tags, unit_bytes)``; ``ivs`` ``(n, iv_size)``, ``aads`` a
    list of ``n`` byte strings, ``tags`` ``(n, tag_size)`` uint8.
    """

    name = "?"
    iv_size = 12
    block_size = 1
    #: largest tag; ``tag_sizes`` lists every size the kernel's setauthsize accepts
    max_tag_size = 16
    tag_sizes: tuple[int, ...] = (16,)

    def __init__(self, key, tag_size: int):
        if tag_size not in self.tag_sizes:
            allowed = ", ".join(str(t) for t in self.tag_sizes)
            raise ValueError(f"{self.name}: tag size {tag_size} is not supported ({allowed})")
        self.tag_size = tag_size

    def _split(self, src, dst, unit_bytes):
        s8, d8 = u8(src), u8(dst)
        if len(s8) != len(d8) or len(s8) % unit_bytes:
            raise ValueError(f"{self.name}: buffers are not a whole number of "
                             f"{unit_bytes}-byte units")
        return s8, d8, len(s8) // unit_bytes

    def seal(self, src, dst, ivs, aads, unit_bytes: int) -> np.ndarray:
        self._check_live()
        s8, d8, n = self._split(src, dst, unit_bytes)
        return self._seal(s8, d8, as_ivs(ivs, n, self.iv_size), aads, unit_bytes)

    def open(self, src, dst, ivs, aads, tags, unit_bytes: int) -> None:
        self._check_live()
        s8, d8, n = self._split(src, dst, unit_bytes)
        tags = as_ivs(tags, n, self.tag_size)
        self._open(s8, d8, as_ivs(ivs, n, self.iv_size), aads, tags, unit_bytes)


class _OneShotAead(AeadSectorCipher):
    """GCM and ChaCha20-Poly1305 through cryptography's one-shot AEAD objects."""

    _aead = None

    def _seal(self, src, dst, ivs, aads, unit_bytes):
        n = len(ivs)
        tags = np.empty((n, self.tag_size), np.uint8)
        enc = self._aead.encrypt
        t = self.tag_size
        for s in range(n):
            lo = s * unit_bytes
            out = enc(ivs[s].tobytes(), src[lo:lo + unit_bytes].tobytes(), aads[s])
            dst[lo:lo + unit_bytes] = np.frombuffer(out, np.uint8, unit_bytes)
            tags[s] = np.frombuffer(out, np.uint8, t, unit_bytes)
        return tags

    def _open(self, src, dst, ivs, aads, tags, unit_bytes):
        dec = self._aead.decrypt
        for s in range(len(ivs)):
            lo = s * unit_bytes
            try:
                out = dec(ivs[s].tobytes(), src[lo:lo + unit_bytes].tobytes() + tags[s].tobytes(),
                          aads[s])
            except InvalidTag:
                raise AuthenticationFailed(s) from None
            dst[lo:lo + unit_bytes] = np.frombuffer(out, np.uint8)

    def _drop(self):
        self._aead = None


class AesGcm(_OneShotAead):
    """``gcm(aes)``: 12-byte nonce = the IV; tags of 4, 8 or 12..16 bytes (truncated)."""

    name = "gcm(aes)"
    tag_sizes = (4, 8, 12, 13, 14, 15, 16)

    def __init__(self, key, tag_size: int = 16):
        super().__init__(key, tag_size)
        key = check_key(self.name, key, AES_KEY_SIZES)
        self._hold(key)
        self._aead = AESGCM(key)

    def _seal(self, src, dst, ivs, aads, unit_bytes):
        return super()._seal(src, dst, ivs, aads, unit_bytes)  # GCM tags truncate cleanly

    def _open(self, src, dst, ivs, aads, tags, unit_bytes):
        if self.tag_size == 16:
            return super()._open(src, dst, ivs, aads, tags, unit_bytes)
        alg = algorithms.AES(bytes(self._key))
        for s in range(len(ivs)):
            lo = s * unit_bytes
            ctx = Cipher(alg, modes.GCM(ivs[s].tobytes(), tags[s].tobytes(),
                                        min_tag_length=self.tag_size)).decryptor()
            ctx.authenticate_additional_data(aads[s])
            out = ctx.update(src[lo:lo + unit_bytes].tobytes())
            try:
                ctx.finalize()
            except InvalidTag:
                raise AuthenticationFailed(s) from None
            dst[lo:lo + unit_bytes] = np.frombuffer(out, np.uint8)


class ChaCha20Poly1305Rfc7539(_OneShotAead):
    """``rfc7539(chacha20,poly1305)``: RFC 7539 AEAD, 32-byte key, 12-byte nonce, 16-byte tag."""

    name = "rfc7539(chacha20,poly1305)"
    tag_sizes = (16,)

    def __init__(self, key, tag_size: int = 16):
        super().__init__(key, tag_size)
        key = check_key(self.name, key, (32,))
        self._hold(key)
        self._aead = ChaCha20Poly1305(key)


def authenc_key_blob(enckey: bytes, authkey: bytes) -> bytes:
    """The kernel's authenc() key: ``rtattr{len=8, type=1} || be32(enckeylen) || authkey ||
    enckey`` (crypto/authenc.c, ``crypto_authenc_extractkeys``)."""
    return (_RTA.pack(_RTA_SPACE, CRYPTO_AUTHENC_KEYA_PARAM) + _PARAM.pack(len(enckey))
            + bytes(authkey) + bytes(enckey))


def parse_authenc_key_blob(blob: bytes) -> tuple[bytes, bytes]:
    """``(enckey, authkey)`` from :func:`authenc_key_blob`'s format; ValueError if malformed."""
    blob = bytes(blob)
    if len(blob) < _RTA_SPACE:
        raise ValueError("authenc key: shorter than its rtattr header")
    rta_len, rta_type = _RTA.unpack_from(blob)
    if rta_type != CRYPTO_AUTHENC_KEYA_PARAM or rta_len != _RTA_SPACE:
        raise ValueError("authenc key: bad rtattr header")
    (enckeylen,) = _PARAM.unpack_from(blob, 4)
    rest = blob[_RTA_SPACE:]
    if enckeylen > len(rest):
        raise ValueError("authenc key: enckeylen is larger than the key")
    return rest[len(rest) - enckeylen:], rest[:len(rest) - enckeylen]


class Authenc(AeadSectorCipher):
    """``authenc(hmac(<hash>),<inner>)``: encrypt-then-MAC over ``AAD || ciphertext``."""

    def __init__(self, inner: SectorCipher, hash_name: str, authkey: bytes, tag_size: int):
        digest = hashlib.new(hash_name).digest_size
        self.tag_sizes = tuple(range(1, digest + 1))
        self.max_tag_size = digest
        self.name = f"authenc(hmac({hash_name}),{inner.name})"
        super().__init__(b"", tag_size)
        if len(authkey) == 0:
            raise ValueError(f"{self.name}: empty HMAC key")
        self.inner = inner
        self.iv_size = inner.iv_size
        self.block_size = inner.block_size
        self.hash_name = hash_name
        self._hold(bytes(authkey))

    @classmethod
    def from_key_blob(cls, blob: bytes, inner_cls, hash_name: str, tag_size: int) -> "Authenc":
        enckey, authkey = parse_authenc_key_blob(blob)
        return cls(inner_cls(enckey), hash_name, authkey, tag_size)

    def _tags(self, ct, aads, unit_bytes):
        key, h, t = bytes(self._key), self.hash_name, self.tag_size
        digest = hmac.digest
        n = len(aads)
        out = bytearray(n * t)
        for s in range(n):
            lo = s * unit_bytes
            out[s * t:(s + 1) * t] = digest(key, aads[s] + ct[lo:lo + unit_bytes].tobytes(), h)[:t]
        return np.frombuffer(out, np.uint8).reshape(n, t)

    def _seal(self, src, dst, ivs, aads, unit_bytes):
        self.inner.encrypt(src, dst, ivs, unit_bytes)
        return self._tags(dst, aads, unit_bytes)

    def _open(self, src, dst, ivs, aads, tags, unit_bytes):
        want = self._tags(src, aads, unit_bytes)
        for s in range(len(ivs)):
            if not hmac.compare_digest(want[s].tobytes(), tags[s].tobytes()):
                raise AuthenticationFailed(s)
        self.inner.decrypt(src, dst, ivs, unit_bytes)

    def wipe(self):
        self.inner.wipe()
        super().wipe()
