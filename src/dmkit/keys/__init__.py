"""The kernel keyring's key types in userspace: ``user``, ``logon``, ``encrypted``.

Safe recipes first: a :class:`Keyring` (in-process), a :class:`KeyStore` (a 0600 file
holding only what may leave a keyring), a :class:`KernelKeyring` (the real one, through
system calls), and :func:`resolve_key_reference` for ``:<size>:<type>:<description>`` in
dm-crypt and dm-integrity tables.  The low-level ``encrypted`` blob format (derivation,
wrap, unwrap, payload grammar) is :mod:`dmkit.keys.encrypted`.

Kernel: Documentation/security/keys/core.rst, Documentation/security/keys/trusted-encrypted.rst,
security/keys/encrypted-keys/encrypted.c; keyctl(1).  See docs/keyring.md.
"""

from .._lazy import lazy_names

# Loaded on first use (PEP 562): a LUKS open needs SecretBytes and Keyring, not the
# encrypted-key format or the kernel bridge.
_WHERE = {
    "FORMATS": "encrypted", "Blob": "encrypted",
    "KernelKeyringError": "errors", "KeyAccessError": "errors", "KeyAuthError": "errors",
    "KeyExistsError": "errors", "KeyFormatError": "errors", "KeyNotFoundError": "errors",
    "KeyNotSupportedError": "errors", "KeyringError": "errors", "KeyRevokedError": "errors",
    "KeyStoreError": "errors",
    "KernelKeyring": "kernel", "kernel_keyring_status": "kernel",
    "KeyInfo": "keyring", "Keyring": "keyring", "KeySource": "keyring",
    "KeyReference": "reference", "is_key_reference": "reference",
    "resolve_key_reference": "reference",
    "SecretBytes": "secret", "KeyStore": "store",
    "EncryptedKey": "types", "Key": "types", "LogonKey": "types", "UserKey": "types",
}

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

__getattr__, __dir__ = lazy_names(__name__, _WHERE, __all__)
