"""Key files and volume key files, read as cryptsetup reads them.

cryptsetup ``lib/utils_keyring.c``-free part of ``lib/utils.c``
(``crypt_keyfile_device_read``) and ``man/cryptsetup.8`` (``--key-file``,
``--keyfile-offset``, ``--keyfile-size``, ``--volume-key-file``):

- a key file is used byte for byte, newlines included; ``-`` is standard input;
- ``keyfile_offset`` bytes are skipped first; ``keyfile_size`` is the most bytes used, and a
  file shorter than that is an error ("Cannot read requested amount of data.");
- without ``keyfile_size`` the whole file is used, at most 8 MiB
  (``DEFAULT_KEYFILE_SIZE_MAXKB``), and an empty key is refused.

The bytes come back as :class:`~dmkit.keys.SecretBytes`: never shown, wipeable.
"""

from __future__ import annotations

import errno as _errno
import os
import sys

from ..errors import DmkitError
from ..keys import SecretBytes
from .errors import ParameterError

__all__ = ["read_key_file", "read_volume_key_file", "write_volume_key_file",
           "KEYFILE_SIZE_MAX", "KeyFileError"]

#: cryptsetup's DEFAULT_KEYFILE_SIZE_MAXKB (8 MiB)
KEYFILE_SIZE_MAX = 8192 * 1024
STDIN = "-"


class KeyFileError(DmkitError, OSError):
    """A key file cannot be read or does not hold what was asked for."""

    default_errno = _errno.EINVAL


def _open(path, stdin):
    if os.fspath(path) == STDIN:
        return (stdin or sys.stdin.buffer), False
    try:
        return open(path, "rb"), True
    except OSError as e:
        raise KeyFileError(f"Failed to open key file {os.fspath(path)}: {e.strerror}.",
                           errno=e.errno) from None


def read_key_file(path, *, keyfile_offset: int = 0, keyfile_size: int | None = None,
                  stdin=None) -> SecretBytes:
    """The passphrase a key file holds (``--key-file``, ``--keyfile-offset``,
    ``--keyfile-size``).  ``path`` ``-`` reads ``stdin`` (default: standard input)."""
    if keyfile_offset < 0:
        raise ParameterError("Negative keyfile offset is not allowed.")
    if keyfile_size is not None and not 0 < keyfile_size <= KEYFILE_SIZE_MAX:
        raise ParameterError(f"Key file size {keyfile_size} is not in 1..{KEYFILE_SIZE_MAX}.")
    name = "<stdin>" if os.fspath(path) == STDIN else os.fspath(path)
    f, owned = _open(path, stdin)
    buf = bytearray()
    try:
        if keyfile_offset:
            skipped = 0
            if owned and f.seekable():
                skipped = min(f.seek(keyfile_offset), keyfile_offset)
            while skipped < keyfile_offset:
                chunk = f.read(min(1 << 20, keyfile_offset - skipped))
                if not chunk:
                    break
                skipped += len(chunk)
            if skipped < keyfile_offset:
                raise KeyFileError(f"{name}: Cannot seek to requested keyfile offset.")
        limit = keyfile_size if keyfile_size is not None else KEYFILE_SIZE_MAX + 1
        while len(buf) < limit:
            chunk = f.read(min(1 << 16, limit - len(buf)))
            if not chunk:
                break
            buf += chunk
    finally:
        if owned:
            f.close()
    try:
        if keyfile_size is not None and len(buf) < keyfile_size:
            raise KeyFileError(f"{name}: Cannot read requested amount of data.")
        if len(buf) > KEYFILE_SIZE_MAX:
            raise KeyFileError(f"{name}: Maximum keyfile size exceeded.")
        if not buf:
            raise KeyFileError(f"{name}: Nothing to read on input.")
        return SecretBytes(bytes(buf))
    finally:
        buf[:] = bytes(len(buf))


def read_volume_key_file(path, key_bytes: int | None = None) -> SecretBytes:
    """A volume key file (``--volume-key-file``): exactly ``key_bytes`` bytes if given."""
    f, owned = _open(path, None)
    try:
        data = f.read((key_bytes or 512) + 1)
    finally:
        if owned:
            f.close()
    name = "<stdin>" if os.fspath(path) == STDIN else os.fspath(path)
    try:
        if key_bytes is not None and len(data) < key_bytes:
            raise KeyFileError(f"Cannot read {key_bytes} bytes from volume key file {name}.")
        if key_bytes is None and not 0 < len(data) <= 512:
            raise KeyFileError(f"Volume key file {name} must hold 1..512 bytes.")
        return SecretBytes(data[:key_bytes] if key_bytes is not None else data)
    finally:
        del data


def write_volume_key_file(path, key: SecretBytes) -> None:
    """Write a volume key to a new file created with mode 0600 (refuses to overwrite)."""
    try:
        fd = os.open(os.fspath(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC,
                     0o600)
    except OSError as e:
        raise KeyFileError(f"Cannot create volume key file {os.fspath(path)}: {e.strerror}.",
                           errno=e.errno) from None
    try:
        view = memoryview(key.reveal())
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
