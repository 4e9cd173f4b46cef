"""The errors of the keyring.

Each derives from a class of :mod:`dmkit.errors` (and through it from the builtin that
matches), and carries the errno the kernel's keyring returns for the same failure, so a
frontend that puts errnos on the wire says what ``keyctl`` would say.  Messages name the
key (type and description), never its bytes.
"""

from __future__ import annotations

import errno as _errno

from ..errors import DmkitError, FormatError, IntegrityError, NotSupportedError

__all__ = [
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


class KeyringError(DmkitError):
    """Root of the keyring's errors (never raised itself)."""


class KeyFormatError(KeyringError, FormatError):
    """A payload, blob, description or length the kernel would refuse (``EINVAL``)."""

    default_errno = _errno.EINVAL


class KeyNotFoundError(KeyringError, LookupError):
    """No key of that type and description (``ENOKEY``, "Required key not available")."""

    default_errno = _errno.ENOKEY


class KeyExistsError(KeyringError, ValueError):
    """A key of that type and description is already there (``EEXIST``)."""

    default_errno = _errno.EEXIST


class KeyAccessError(KeyringError, PermissionError):
    """The key exists but may not be read this way, e.g. a ``logon`` key.

    The kernel answers ``EOPNOTSUPP`` when a key type has no read method, which is how
    ``logon`` keys stay inside it.
    """

    default_errno = _errno.EOPNOTSUPP


class KeyRevokedError(KeyringError, PermissionError):
    """The key was revoked (``EKEYREVOKED``)."""

    default_errno = _errno.EKEYREVOKED


class KeyAuthError(KeyringError, IntegrityError):
    """An encrypted key's HMAC does not verify: wrong master key or altered blob.

    The kernel answers ``EINVAL`` ("bad hmac") for this, and so does this error.
    """

    default_errno = _errno.EINVAL


class KeyNotSupportedError(KeyringError, NotSupportedError):
    """Valid for the kernel but impossible here (``trusted`` keys need a TPM)."""

    default_errno = _errno.EOPNOTSUPP


class KeyStoreError(KeyringError, OSError):
    """The keyring store file cannot be read, parsed or written."""

    default_errno = _errno.EIO


class KernelKeyringError(KeyringError, OSError):
    """A keyctl/add_key/request_key system call failed; ``errno`` is the kernel's."""

    default_errno = _errno.EIO
