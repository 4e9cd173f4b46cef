"""Errors of the LUKS layer.

Malformed metadata is a :class:`~dmkit.errors.FormatError` (one line naming the field).
A passphrase that opens no key slot is :class:`NoKeyError`, whose message is cryptsetup's
own and whose exit code is cryptsetup's (2): the same opaque failure whatever the reason
(wrong passphrase, slot digest mismatch), so a peer that can probe learns nothing more.
"""

from __future__ import annotations

import errno as _errno

from ..errors import DmkitError

__all__ = ["NoKeyError", "KeyslotError", "ParameterError", "NO_KEY_MESSAGE"]

#: cryptsetup's message for a passphrase (or key file) that opens no key slot
NO_KEY_MESSAGE = "No key available with this passphrase."


class NoKeyError(DmkitError, PermissionError):
    """No key slot opens with the given passphrase (cryptsetup: -EPERM, exit code 2)."""

    default_errno = _errno.EPERM
    exit_code = 2

    def __init__(self, message: str = NO_KEY_MESSAGE, *, errno: int | None = None):
        super().__init__(message, errno=errno)


class KeyslotError(DmkitError, ValueError):
    """A key slot operation cannot be done: no such slot, slot in use, no room left."""

    default_errno = _errno.EINVAL


class ParameterError(DmkitError, ValueError):
    """A parameter of a LUKS operation is invalid (a cipher, a size, a KDF cost)."""

    default_errno = _errno.EINVAL
