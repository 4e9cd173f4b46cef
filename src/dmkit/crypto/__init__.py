"""Low-level sector ciphers and IV generators (dm-crypt's, usable by LUKS too).

This is the hazmat layer in pyca/cryptography's sense: objects that hold a validated key
and transform many data units in one call, each unit with its own IV.  The safe recipes
are :mod:`dmkit.targets.crypt` (tables) and ``dmkit.luks``.

- :mod:`dmkit.crypto.skcipher`: ``xts(aes)``, ``cbc(aes)``, ``ecb(aes)``, ``ecb(cipher_null)``;
- :mod:`dmkit.crypto.aead`: ``gcm(aes)``, ``rfc7539(chacha20,poly1305)``,
  ``authenc(hmac(<hash>),xts(aes)|cbc(aes))`` and the kernel's authenc key blob;
- :mod:`dmkit.crypto.iv`: plain, plain64, plain64be, essiv, benbi, null, random, eboiv;
- :mod:`dmkit.crypto.gf128`: XTS tweak arithmetic.

Keys are checked when an object is built, never printed by ``repr``, and ``wipe()``
zeroes dmkit's copy.
"""

from .._lazy import lazy_names

# Loaded on first use (PEP 562), so that importing one submodule (the numpy-free
# dmkit.crypto.fastxts, say) does not import numpy and every cipher.
_WHERE = {
    "AeadSectorCipher": "aead", "AesGcm": "aead", "Authenc": "aead",
    "ChaCha20Poly1305Rfc7539": "aead", "authenc_key_blob": "aead",
    "parse_authenc_key_blob": "aead", "AuthenticationFailed": "_key",
    "IV_MODES": "iv", "BenbiIv": "iv", "EboivIv": "iv", "EssivIv": "iv", "IvGenerator": "iv",
    "NullIv": "iv", "Plain64BeIv": "iv", "Plain64Iv": "iv", "PlainIv": "iv", "RandomIv": "iv",
    "AesCbc": "skcipher", "AesEcb": "skcipher", "AesXts": "skcipher", "NullCipher": "skcipher",
    "SectorCipher": "skcipher",
}

__all__ = [
    "SectorCipher", "AesXts", "AesCbc", "AesEcb", "NullCipher",
    "AeadSectorCipher", "AesGcm", "ChaCha20Poly1305Rfc7539", "Authenc", "AuthenticationFailed",
    "authenc_key_blob", "parse_authenc_key_blob",
    "IvGenerator", "PlainIv", "Plain64Iv", "Plain64BeIv", "EssivIv", "BenbiIv", "NullIv",
    "RandomIv", "EboivIv", "IV_MODES",
]

__getattr__, __dir__ = lazy_names(__name__, _WHERE, __all__)
