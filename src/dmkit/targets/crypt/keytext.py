"""The ``<key>`` argument of a crypt table: hex, ``-`` (no key), or a keyring reference.

Kernel: drivers/md/dm-crypt.c (``get_key_size``, ``crypt_set_key``,
``crypt_set_keyring_key``).  ``:<key_size>:<logon|user|encrypted>:<description>`` is
resolved through :mod:`dmkit.keys` with the keyring the table's resolver carries
(``DeviceResolver.keyring``); without one, the kernel keyring when this process can use
it.  Key bytes never appear in a message: errors name the reference or the length only.
"""

from __future__ import annotations

import re

from ...errors import DmkitError, TableError

__all__ = ["KeyText", "parse_key_text"]

_HEX = re.compile(r"[0-9a-fA-F]*")


class KeyText:
    """A decoded key argument: ``key`` bytes (wipe with :meth:`wipe`) and, for a keyring
    key, the ``reference`` text that the table status prints instead of the bytes."""

    __slots__ = ("key", "reference")

    def __init__(self, key: bytearray, reference: str | None):
        self.key = key
        self.reference = reference

    def __repr__(self) -> str:
        return f"<KeyText {len(self.key)} bytes{' ' + self.reference if self.reference else ''}>"

    def wipe(self) -> None:
        from ...crypto._key import wipe_bytearray

        wipe_bytearray(self.key)


def key_size_of(text: str) -> int:
    """The key size the text declares (``get_key_size``), without resolving it."""
    if not text.startswith(":"):
        return len(text) // 2
    size, sep, _ = text[1:].partition(":")
    if not sep or not size.isdigit() or not size.isascii():
        raise TableError("crypt: Cannot parse key size: a keyring key is "
                         ":<key_size>:<logon|user|encrypted>:<key_description>")
    return int(size)


def _keyring_source(resolver):
    """The resolver's keyring (a LUKS volume's private one), else the kernel keyring,
    which is imported only then."""
    ring = getattr(resolver, "keyring", None)
    if ring is not None:
        return ring
    from ...keys import KernelKeyring, kernel_keyring_status
    ok, why = kernel_keyring_status()
    if not ok:
        raise TableError(f"crypt: no keyring to resolve the key from: set "
                         f"DeviceResolver.keyring, or use the kernel keyring ({why})")
    return KernelKeyring()


def parse_key_text(text: str, resolver) -> KeyText:
    if text == "-":
        return KeyText(bytearray(), None)
    if not text.startswith(":"):
        if len(text) % 2 or not _HEX.fullmatch(text):
            raise TableError(f"crypt: Error decoding and setting key: not a hex key "
                             f"({len(text)} characters; an even number of hex digits, or '-' "
                             "for no key, or :<size>:<type>:<description>)")
        if not text:
            raise TableError("crypt: Error decoding and setting key: empty key")
        return KeyText(bytearray.fromhex(text), None)
    key_size_of(text)  # the size field is checked first, as the kernel does
    from ...keys import KeyReference
    try:
        ref = KeyReference.parse(text)
    except DmkitError as e:
        raise TableError(f"crypt: Error decoding and setting key: {e}") from None
    source = _keyring_source(resolver)
    try:
        material = ref.resolve(source)
    except DmkitError as e:
        raise TableError(f"crypt: Error decoding and setting key {ref}: {e}") from None
    try:
        return KeyText(bytearray(material.view()), str(ref))
    finally:
        material.wipe()
