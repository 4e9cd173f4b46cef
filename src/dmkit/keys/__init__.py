"""The kernel keyring's key types in userspace: ``user``, ``logon``, ``encrypted``.

Safe recipes first: a :class:`Keyring` (in-process), a :class:`KeyStore` (a 0600 file
holding only what may leave a keyring), a :class:`KernelKeyring` (the real one, through
system calls), and :func:`resolve_key_reference` for ``:<size>:<type>:<description>`` in
dm-crypt and dm-integrity tables.  The low-level ``encrypted`` blob format (derivation,
wrap, unwrap, payload grammar) is :mod:`dmkit.keys.encrypted`.

Kernel: Documentation/security/keys/core.rst, Documentation/security/keys/trusted-encrypted.rst,
security/keys/encrypted-keys/encrypted.c; keyctl(1).  See docs/keyring.md.
"""

from .encrypted import FORMATS, Blob
from .errors import (KernelKeyringError, KeyAccessError, KeyAuthError, KeyExistsError,
                     KeyFormatError, KeyNotFoundError, KeyNotSupportedError, KeyringError,
                     KeyRevokedError, KeyStoreError)
from .kernel import KernelKeyring, kernel_keyring_status
from .keyring import KeyInfo, Keyring, KeySource
from .reference import KeyReference, is_key_reference, resolve_key_reference
from .secret import SecretBytes
from .store import KeyStore
from .types import EncryptedKey, Key, LogonKey, UserKey

__all__ = [
    "FORMATS",
    "Blob",
    "EncryptedKey",
    "Key",
    "LogonKey",
    "UserKey",
    "KeyInfo",
    "Keyring",
    "KeySource",
    "KeyStore",
    "KernelKeyring",
    "kernel_keyring_status",
    "KeyReference",
    "is_key_reference",
    "resolve_key_reference",
    "SecretBytes",
    "KeyringError",
    "KeyFormatError",
    "KeyNotFoundError",
    "KeyExistsError",
    "KeyAccessError",
    "KeyRevokedError",
    "KeyAuthError",
    "KeyNotSupportedError",
    "KeyStoreError",
    "KernelKeyringError",
]
