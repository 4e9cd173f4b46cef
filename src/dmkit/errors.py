"""The exception tree of dmkit.

One root, :class:`DmkitError`, carrying an ``errno``.  Each subclass also derives from
the builtin that matches its meaning, so callers that know nothing of dmkit can still
catch ``ValueError`` or ``OSError``.  Messages are one line and name the thing and the
place (``integrity: checksum mismatch at sector 8192``); the errno is what goes on the
wire (NBD, FUSE).
"""

from __future__ import annotations

import errno as _errno

__all__ = [
    "DmkitError",
    "TableError",
    "DeviceError",
    "BlockIOError",
    "InvalidBioError",
    "ReadOnlyError",
    "NotSupportedError",
    "IntegrityError",
    "FormatError",
]


class DmkitError(Exception):
    """Root of every error dmkit raises on purpose."""

    default_errno = _errno.EIO
    #: exit status the CLI uses for this error
    exit_code = 1

    def __init__(self, message: str, *, errno: int | None = None):
        super().__init__(message)
        self.errno = errno if errno is not None else type(self).default_errno

    def __str__(self) -> str:  # OSError would prefix "[Errno N]"; keep it one plain line
        return self.args[0] if self.args else type(self).__name__


class TableError(DmkitError, ValueError):
    """A device-mapper table, or one target's arguments, is invalid."""

    default_errno = _errno.EINVAL


class DeviceError(DmkitError, OSError):
    """A device cannot be opened or does not have the needed geometry."""

    default_errno = _errno.ENODEV


class BlockIOError(DmkitError, OSError):
    """A request failed on the device (the EIO of a real disk)."""

    default_errno = _errno.EIO


class InvalidBioError(DmkitError, ValueError):
    """A request is malformed: out of range, misaligned, wrong buffer size."""

    default_errno = _errno.EINVAL


class ReadOnlyError(DmkitError, PermissionError):
    """A write was sent to a device opened read-only."""

    default_errno = _errno.EROFS


class NotSupportedError(DmkitError, OSError):
    """The operation is valid but this device or target does not support it."""

    default_errno = _errno.EOPNOTSUPP


class IntegrityError(DmkitError, OSError):
    """Data failed verification (a tag or an authentication check)."""

    default_errno = _errno.EILSEQ


class FormatError(DmkitError, ValueError):
    """An on-disk structure is invalid (bad magic, checksum, impossible size)."""

    default_errno = _errno.EINVAL
