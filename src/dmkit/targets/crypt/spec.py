"""The ``<cipher>`` argument of a crypt table and the cipher instances it names.

Kernel: Documentation/admin-guide/device-mapper/dm-crypt.rst and drivers/md/dm-crypt.c
(``crypt_ctr_cipher_old``, ``crypt_ctr_cipher_new``, ``crypt_ctr_ivmode``,
``crypt_ctr_auth_cipher``, ``crypt_setkey``).  Two forms:

- ``cipher[:keycount]-chainmode-ivmode[:ivopts]`` (``aes-xts-plain64``,
  ``aes:64-cbc-lmk``, ``aes-cbc-essiv:sha256``, ``cipher_null-ecb``); a bare ``aes`` or
  ``aes-plain`` means ``aes-cbc-plain``; any chain mode but ``ecb`` needs an IV mode;
- ``capi:<crypto API name>-ivmode[:ivopts]`` (``capi:xts(aes)-plain64``,
  ``capi:gcm(aes)-random``, ``capi:authenc(hmac(sha256),xts(aes))-random``): IV options
  are after the last ``:``, the IV mode after the last ``-``.

AEAD is chosen by the table's ``integrity:<n>:aead`` option, not by the name: an AEAD
name without it (or a plain skcipher with it) cannot be allocated, as in the kernel.

Keys: ``keycount`` instances share the key in equal parts; the instance of a 512-byte
sector ``cc`` (target sector + ``iv_offset``) is ``cc & (keycount - 1)``.  For
``authenc(hmac(H),...)`` the table key is ``enckey || authkey`` with ``authkey`` as long
as H's digest.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ...crypto.ivmodes import UNSUPPORTED
from ...errors import TableError

__all__ = ["CipherSpec", "parse_cipher_spec", "build_ciphers", "iv_size_of"]

# (iv_size, block_size) of each cipher, and the dmkit.crypto class that implements it
# (imported when a key is set: parsing a table does not load numpy and the ciphers;
# tests/crypt check the sizes against the classes)
_SKCIPHERS = {"xts(aes)": (16, 16, "AesXts"), "cbc(aes)": (16, 16, "AesCbc"),
              "ecb(aes)": (0, 16, "AesEcb"), "ecb(cipher_null)": (0, 1, "NullCipher")}
_AEADS = {"gcm(aes)": (12, 1, "AesGcm"),
          "rfc7539(chacha20,poly1305)": (12, 1, "ChaCha20Poly1305Rfc7539")}


def _class(name: str):
    from ... import crypto

    return getattr(crypto, name)
_AUTHENC = re.compile(r"authenc\(hmac\(([a-z0-9_-]+)\),([a-z0-9_]+\([a-z0-9_]+\))\)")
_MAX_ALG_NAME = 128  # CRYPTO_MAX_ALG_NAME


def _err(msg: str) -> TableError:
    return TableError(f"crypt: {msg}")


@dataclass(frozen=True)
class CipherSpec:
    """A parsed ``<cipher>``; ``text`` is printed back unchanged in the table status."""

    text: str
    capi: bool
    #: the crypto API name (``xts(aes)``), without the essiv() wrapper
    cipher_api: str
    keycount: int
    ivmode: str | None
    ivopts: str | None

    @property
    def is_authenc(self) -> bool:
        return self.cipher_api.startswith("authenc(")

    def mac_hash(self) -> str | None:
        m = _AUTHENC.fullmatch(self.cipher_api)
        return m.group(1) if m else None


def parse_cipher_spec(text: str, *, aead: bool) -> CipherSpec:
    if not text:
        raise _err("empty cipher specification")
    if text.startswith("capi:"):
        rest = text[len("capi:"):]
        ivopts = None
        if ":" in rest:
            rest, ivopts = rest.rsplit(":", 1)
        ivmode = None
        if "-" in rest:
            rest, ivmode = rest.rsplit("-", 1)
        if not rest:
            raise _err(f"Invalid cipher specification {text!r}: no crypto API name after capi:")
        keycount = 64 if ivmode == "lmk" else 1
        spec = CipherSpec(text, True, rest, keycount, ivmode, ivopts)
    else:
        if "(" in text or aead:
            why = ("integrity:<n>:aead needs the capi: form" if aead
                   else "parentheses need the capi: form")
            raise _err(f"Bad cipher specification {text!r} ({why})")
        first, _, tail = text.partition("-")
        cipher, colon, keycount_text = first.partition(":")
        keycount = 1
        if colon:
            if not keycount_text.isdigit() or not keycount_text.isascii():
                raise _err(f"Bad cipher key count specification {keycount_text!r} in {text!r}")
            keycount = int(keycount_text)
            if keycount < 1 or keycount & (keycount - 1):
                raise _err(f"Bad cipher key count specification {keycount} in {text!r}: "
                           "must be a power of 2")
        chainmode, _, tail = tail.partition("-") if tail else ("", "", "")
        ivmode, colon, ivopts = tail.partition(":")
        ivmode = ivmode or None
        ivopts = ivopts if colon else None
        if not chainmode or (chainmode == "plain" and ivmode is None):
            chainmode, ivmode = "cbc", "plain"
        if chainmode != "ecb" and ivmode is None:
            raise _err(f"IV mechanism required in {text!r} (e.g. {cipher}-{chainmode}-plain64)")
        spec = CipherSpec(text, False, f"{chainmode}({cipher})", keycount, ivmode, ivopts)
    if len(spec.cipher_api) >= _MAX_ALG_NAME:
        raise _err(f"cipher name in {text!r} is too long")
    if spec.ivmode == "essiv" and not spec.ivopts:
        raise _err(f"Digest algorithm missing for ESSIV mode in {text!r} (essiv:sha256)")
    if spec.ivmode in UNSUPPORTED:
        raise _err(f"IV mode {spec.ivmode!r} in {text!r} is not supported by dmkit "
                   "(lmk, tcw and elephant are not implemented)")
    return spec


def _alloc_error(spec: CipherSpec, aead: bool) -> TableError:
    api = spec.cipher_api
    if aead and (api in _SKCIPHERS):
        why = f"{api} is not an AEAD; drop integrity:<n>:aead"
    elif not aead and (api in _AEADS or api.startswith("authenc(")):
        why = f"{api} is an AEAD; it needs integrity:<n>:aead"
    else:
        known = sorted([*_SKCIPHERS, *_AEADS, "authenc(hmac(sha256|sha512|...),xts(aes)|cbc(aes))"])
        why = f"unknown or unsupported cipher {api!r} (dmkit has: {', '.join(known)})"
    return _err(f"Error allocating crypto tfm for {spec.text!r}: {why}")


def iv_size_of(spec: CipherSpec, aead: bool) -> tuple[int, int]:
    """``(iv_size, block_size)`` of the named cipher, or a TableError if it is unknown."""
    api = spec.cipher_api
    if not aead:
        sizes = _SKCIPHERS.get(api)
        if sizes is None:
            raise _alloc_error(spec, aead)
        return sizes[0], sizes[1]
    if api in _AEADS:
        return _AEADS[api][0], _AEADS[api][1]
    m = _AUTHENC.fullmatch(api)
    if not m or m.group(2) not in ("xts(aes)", "cbc(aes)"):
        raise _alloc_error(spec, aead)
    try:
        hashlib.new(m.group(1))
    except ValueError:
        raise _err(f"Invalid AEAD cipher spec {spec.text!r}: unknown hash "
                   f"{m.group(1)!r}") from None
    inner = _SKCIPHERS[m.group(2)]
    return inner[0], inner[1]


def mac_key_size(spec: CipherSpec) -> int:
    h = spec.mac_hash()
    return hashlib.new(h).digest_size if h else 0


def build_ciphers(spec: CipherSpec, key: bytes, *, aead: bool, tag_size: int = 0) -> list:
    """One cipher instance per key part (``keycount`` skciphers, or one AEAD)."""
    if aead and spec.keycount != 1:
        raise _err(f"{spec.text!r}: AEAD ciphers take one key")
    if len(key) % spec.keycount:
        raise _err(f"Error decoding and setting key: a {len(key)}-byte key does not split into "
                   f"{spec.keycount} equal parts")
    sub = len(key) // spec.keycount
    try:
        if not aead:
            cls = _class(_SKCIPHERS[spec.cipher_api][2])
            return [cls(key[i * sub:(i + 1) * sub]) for i in range(spec.keycount)]
        if spec.cipher_api in _AEADS:
            return [_class(_AEADS[spec.cipher_api][2])(key, tag_size)]
        m = _AUTHENC.fullmatch(spec.cipher_api)
        mac = mac_key_size(spec)
        if len(key) <= mac:
            raise ValueError(f"{spec.cipher_api}: a {len(key)}-byte key leaves no room for "
                             f"the {mac}-byte HMAC key after the cipher key")
        inner = _class(_SKCIPHERS[m.group(2)][2])(key[:len(key) - mac])
        return [_class("Authenc")(inner, m.group(1), key[len(key) - mac:], tag_size)]
    except ValueError as e:
        raise _err(f"Error decoding and setting key: {e}") from None
