"""Key slot area encryption: low-level.

A key slot's split key material is encrypted the way dm-crypt would encrypt it on a
device of 512-byte sectors starting at the area, with IV sector 0 at the area's first
sector (cryptsetup ``crypt_storage_*`` in ``lib/crypto_backend/crypto_storage.c`` and
``LUKS_encrypt_to_storage`` in ``lib/luks1/keyencryption.c``).

Only what key slots use is here: ``cipher-mode-iv`` specs with the cipher ``aes`` (or
``cipher_null``), the modes ``xts``, ``cbc``, ``ecb`` and ``ctr``, and the IV generators
``plain``, ``plain64``, ``plain64be``, ``essiv:<hash>``, ``benbi`` and ``null``.  This is
not the crypt target (:mod:`dmkit.targets.crypt` handles data) and needs no speed: an
area is a few hundred sectors.
"""

from __future__ import annotations

from ..block import SECTOR_SIZE
from ..errors import NotSupportedError
from .hashes import hash_ctor

__all__ = ["parse_cipher_spec", "check_keyslot_cipher", "encrypt_area", "decrypt_area"]

_MODES = ("xts", "cbc", "ecb", "ctr")
_IVS = ("plain", "plain64", "plain64be", "essiv", "benbi", "null")


def parse_cipher_spec(spec: str) -> tuple[str, str, str]:
    """``aes-xts-plain64`` → (``aes``, ``xts``, ``plain64``).  ``aes-ecb`` has IV ''.

    ``cipher_null`` and ``null`` are ``(cipher_null, ecb, '')``; a bare cipher or
    ``cipher-plain`` means ``cbc-plain``, as in cryptsetup's ``crypt_parse_name_and_mode``.
    """
    if spec in ("null", "cipher_null"):
        return "cipher_null", "ecb", ""
    cipher, sep, rest = spec.partition("-")
    if not cipher:
        raise NotSupportedError(f"luks: cipher specification {spec!r} is not valid")
    if not sep:
        return cipher, "cbc", "plain"
    if rest == "plain":
        return cipher, "cbc", "plain"
    mode, _, iv = rest.partition("-")
    return cipher, mode, iv


def _check(spec: str, key_size: int) -> tuple[str, str, str, str | None]:
    cipher, mode, iv = parse_cipher_spec(spec)
    ivname, _, ivopt = iv.partition(":")
    if cipher == "cipher_null":
        if mode != "ecb" or iv:
            raise NotSupportedError(f"luks: key slot cipher {spec!r} is not supported")
        return cipher, mode, "", None
    if cipher != "aes" or mode not in _MODES:
        raise NotSupportedError(f"luks: key slot cipher {spec!r} is not supported")
    if mode == "ecb":
        if iv:
            raise NotSupportedError(f"luks: key slot cipher {spec!r} is not supported")
    elif ivname not in _IVS or (ivname == "essiv") != bool(ivopt):
        raise NotSupportedError(f"luks: key slot cipher {spec!r} is not supported")
    valid = (32, 64) if mode == "xts" else (16, 24, 32)
    if key_size not in valid:
        raise NotSupportedError(f"luks: key slot cipher {spec!r} does not take a "
                                f"{key_size * 8}-bit key")
    if ivname == "essiv":
        essiv_key = hash_ctor(ivopt)().digest_size
        if essiv_key not in (16, 24, 32):
            raise NotSupportedError(f"luks: ESSIV hash {ivopt!r} does not give an AES key")
    return cipher, mode, ivname, ivopt or None


def check_keyslot_cipher(spec: str, key_size: int) -> None:
    """Raise NotSupportedError unless key slot areas can use ``spec`` with this key size."""
    _check(spec, key_size)


def _ivs(ivname: str, ivopt: str | None, key: bytes, nr_sectors: int, start: int):
    """The 16-byte IV of each sector, as dm-crypt's IV generators make them."""
    if ivname == "essiv":
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        salt = hash_ctor(ivopt)(bytes(key)).digest()
        ecb = Cipher(algorithms.AES(salt), modes.ECB()).encryptor()
        plain = b"".join((start + i).to_bytes(16, "little") for i in range(nr_sectors))
        out = ecb.update(plain) + ecb.finalize()
        return [out[16 * i:16 * i + 16] for i in range(nr_sectors)]
    result = []
    for i in range(nr_sectors):
        s = start + i
        if ivname == "plain":
            result.append((s & 0xFFFFFFFF).to_bytes(16, "little"))
        elif ivname == "plain64":
            result.append((s & 0xFFFFFFFFFFFFFFFF).to_bytes(16, "little"))
        elif ivname == "plain64be":
            result.append(bytes(8) + (s & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big"))
        elif ivname == "benbi":  # 1-based count of 16-byte blocks, big-endian
            result.append(bytes(8) + ((s << 5) + 1).to_bytes(8, "big"))
        else:  # null
            result.append(bytes(16))
    return result


def _crypt(spec: str, key: bytes, data: bytes, start_sector: int, encrypt: bool) -> bytearray:
    if len(data) % SECTOR_SIZE:
        raise ValueError("key slot material must be whole 512-byte sectors")
    cipher, mode, ivname, ivopt = _check(spec, len(key))
    if cipher == "cipher_null":
        return bytearray(data)
    key = bytes(key)
    if mode == "xts":
        fast = _fast_xts(key, ivname)
        if fast is not None:
            # one C call for the whole area (the same bytes as a cipher per sector)
            try:
                out = bytearray(len(data))
                fast.crypt(not encrypt, data, out, SECTOR_SIZE, start_sector, 1)
                return out
            finally:
                fast.wipe()
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    if mode == "ecb":
        ctx = Cipher(algorithms.AES(key), modes.ECB())
        op = ctx.encryptor() if encrypt else ctx.decryptor()
        return bytearray(op.update(bytes(data)) + op.finalize())
    nr = len(data) // SECTOR_SIZE
    out = bytearray(len(data))
    mv = memoryview(data)
    algo = algorithms.AES(key)
    for i, iv in enumerate(_ivs(ivname, ivopt, key, nr, start_sector)):
        if mode == "xts":
            ctx = Cipher(algo, modes.XTS(iv))
        elif mode == "cbc":
            ctx = Cipher(algo, modes.CBC(iv))
        else:
            ctx = Cipher(algo, modes.CTR(iv))
        op = ctx.encryptor() if encrypt else ctx.decryptor()
        lo = i * SECTOR_SIZE
        out[lo:lo + SECTOR_SIZE] = op.update(mv[lo:lo + SECTOR_SIZE]) + op.finalize()
    return out


def _fast_xts(key: bytes, ivname: str):
    """The C accelerator's XTS for this key and IV mode, or None (not built, or it cannot
    do them); imported here, so that opening a volume loads no cipher library it does not
    use."""
    from ..crypto.fastxts import fast_xts
    return fast_xts("xts(aes)", 1, ivname, key)


def encrypt_area(spec: str, key: bytes, plaintext: bytes, start_sector: int = 0) -> bytearray:
    """Encrypt whole sectors of key material; IVs count from ``start_sector``."""
    return _crypt(spec, key, plaintext, start_sector, True)


def decrypt_area(spec: str, key: bytes, ciphertext: bytes, start_sector: int = 0) -> bytearray:
    return _crypt(spec, key, ciphertext, start_sector, False)
