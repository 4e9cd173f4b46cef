"""Key references in tables: ``:<key_size>:<key_type>:<key_description>``.

Kernel: Documentation/admin-guide/device-mapper/dm-crypt.rst ("<key>") and
drivers/md/dm-crypt.c (``get_key_size``, ``crypt_set_keyring_key``, ``set_key_user``,
``set_key_encrypted``).  The size is decimal bytes and must equal the key's length (the
payload of a ``user``/``logon`` key, the data length of an ``encrypted`` key); the type is
``logon``, ``user``, ``encrypted`` or ``trusted`` (refused here: it needs a TPM); the
description is everything after the type's colon (it may hold colons) and no whitespace
is allowed anywhere, because dm could not print it back in a table.

The crypt and integrity targets call :func:`resolve_key_reference` with the keyring they
were given (a :class:`~dmkit.keys.keyring.Keyring`, a
:class:`~dmkit.keys.kernel.KernelKeyring`, or anything with a ``material`` method).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import KeyFormatError
from .keyring import KeySource
from .secret import SecretBytes
from .types import refuse_trusted

__all__ = ["REFERENCE_KEY_TYPES", "KeyReference", "is_key_reference", "resolve_key_reference"]

REFERENCE_KEY_TYPES = ("logon", "user", "encrypted", "trusted")
_WS = re.compile(r"\s")


def is_key_reference(text: str) -> bool:
    """Whether a table's key argument names a keyring key (rather than hex bytes)."""
    return text.startswith(":")


@dataclass(frozen=True)
class KeyReference:
    """A parsed ``:<size>:<type>:<description>``."""

    key_size: int
    key_type: str
    description: str

    @classmethod
    def parse(cls, text: str) -> KeyReference:
        if not text.startswith(":"):
            raise KeyFormatError(f"key reference {text!r}: must start with ':' "
                                 f"(:<size>:<type>:<description>)")
        if _WS.search(text):
            raise KeyFormatError(f"key reference {text!r}: whitespace is not allowed")
        size_text, sep, rest = text[1:].partition(":")
        if not sep or not size_text.isascii() or not size_text.isdigit():
            raise KeyFormatError(f"key reference {text!r}: the size must be a decimal number "
                                 f"of bytes (:<size>:<type>:<description>)")
        key_type, sep, description = rest.partition(":")
        if not sep or not key_type or not description:
            raise KeyFormatError(f"key reference {text!r}: needs a type and a description "
                                 f"(:<size>:<type>:<description>)")
        if key_type not in REFERENCE_KEY_TYPES:
            raise KeyFormatError(f"key reference {text!r}: unknown key type {key_type!r} "
                                 f"(logon, user, encrypted)")
        size = int(size_text)
        if size == 0:
            raise KeyFormatError(f"key reference {text!r}: the size must not be 0")
        return cls(size, key_type, description)

    def __str__(self) -> str:
        return f":{self.key_size}:{self.key_type}:{self.description}"

    def resolve(self, keyring: KeySource) -> SecretBytes:
        """The key bytes, checked against the size; the caller wipes them."""
        if self.key_type == "trusted":
            raise refuse_trusted(self.description)
        material = keyring.material(self.key_type, self.description)
        if len(material) != self.key_size:
            n = len(material)
            material.wipe()
            raise KeyFormatError(f"key reference {self}: the {self.key_type} key is {n} bytes, "
                                 f"the reference says {self.key_size}")
        return material


def resolve_key_reference(text: str, keyring: KeySource) -> bytes:
    """The bytes of the key ``text`` (``:<size>:<type>:<description>``) names in ``keyring``.

    Raises :class:`~dmkit.keys.errors.KeyFormatError` for a malformed reference or a size
    that is not the key's, :class:`~dmkit.keys.errors.KeyNotFoundError` for a missing key,
    and the keyring's own errors (a sealed key whose master is missing, a revoked key).
    The caller should keep the bytes in a wipeable key object.
    """
    material = KeyReference.parse(text).resolve(keyring)
    try:
        return material.reveal()
    finally:
        material.wipe()
