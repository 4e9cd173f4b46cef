"""Header backup and restore (``luksHeaderBackup`` / ``luksHeaderRestore``).

cryptsetup ``LUKS2_hdr_backup``/``LUKS2_hdr_restore`` (``lib/luks2/luks2_json_metadata.c``)
and ``LUKS_hdr_backup``/``LUKS_hdr_restore`` (``lib/luks1/keymanage.c``).  A backup is the
raw bytes of both LUKS2 header copies and the key slots area (LUKS1: the header and all
key slot areas), rounded up to 4 KiB, in a file created 0400 that must not exist yet.

A restore validates the backup completely first, refuses a backup whose data offset or
header size differs from a LUKS header already on the device (as cryptsetup does) or
that carries reencryption requirements, and then writes it in one piece.
"""

from __future__ import annotations

import errno as _errno
import os

from ..block import BlockDevice, read_bytes, write_bytes
from ..errors import BlockIOError, DeviceError, FormatError
from .layout import probe_version
from .luks1 import luks1_device_sectors, read_luks1_header
from .luks2 import read_luks2_header

__all__ = ["backup_bytes", "header_backup", "header_restore"]

_PAGE = 4096


def _span(version: int, source) -> tuple[int, int]:
    """(bytes of header + key slot areas, data offset in bytes) of a validated header."""
    if version == 2:
        h = read_luks2_header(source)
        return h.metadata.hdr_and_areas_size, h.metadata.data_offset
    h = read_luks1_header(source)
    return luks1_device_sectors(h) * 512, h.payloadOffset * 512


def _version(source) -> int:
    head = bytes(read_bytes(source, 0, 8)) if isinstance(source, BlockDevice) else bytes(source[:8])
    v = probe_version(head)
    if v is None:
        name = source.name if isinstance(source, BlockDevice) else "backup"
        raise FormatError(f"Device {name} is not a valid LUKS device.")
    return v


def backup_bytes(device: BlockDevice) -> bytes:
    """The backup image of ``device``'s LUKS header (validated before it is copied)."""
    version = _version(device)
    size, _ = _span(version, device)
    raw = bytearray(read_bytes(device, 0, size))
    if version == 1:
        # wipe the unused tail of the header sector so no old signature survives
        hdr = read_luks1_header(device)
        if min(kb.keyMaterialOffset for kb in hdr.keyblock) * 512 == 4096:
            raw[1024:4096] = bytes(3072)
    return bytes(raw) + bytes(-len(raw) % _PAGE)


def header_backup(device: BlockDevice, path: str | os.PathLike) -> int:
    """Write the backup to a new file ``path`` (mode 0400); returns its size."""
    data = backup_bytes(device)
    try:
        fd = os.open(os.fspath(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o400)
    except FileExistsError:
        raise DeviceError(f"Requested header backup file {os.fspath(path)} already exists.",
                          errno=_errno.EEXIST) from None
    except OSError as e:
        raise DeviceError(f"Cannot create header backup file {os.fspath(path)}: {e.strerror}",
                          errno=e.errno) from None
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(data)


def header_restore(device: BlockDevice, backup: bytes | str | os.PathLike) -> int:
    """Restore a backup (bytes, or a file path) onto ``device``; returns bytes written."""
    if not isinstance(backup, (bytes, bytearray, memoryview)):
        with open(os.fspath(backup), "rb") as f:
            backup = f.read()
    backup = bytes(backup)
    try:
        version = _version(backup)
        size, offset = _span(version, backup)
    except FormatError as e:
        raise FormatError(f"Backup file does not contain valid LUKS header ({e}).") from None
    if version == 2:
        reqs = read_luks2_header(backup).metadata.config.requirements
        if reqs:
            raise FormatError(f"Forbidden LUKS2 requirements detected in backup: {reqs[0]}.")
    if device.size_bytes < size:
        raise DeviceError(f"Device {device.name} is too small for the backup ({size} bytes).")
    try:
        cur_version = _version(device)
        cur_size, cur_offset = _span(cur_version, device)
    except FormatError:
        cur_version = None
    if cur_version is not None:
        if cur_offset != offset:
            raise FormatError("Data offset differ on device and backup, restore failed.")
        if cur_size != size:
            raise FormatError("Binary header with keyslot areas size differ on device and "
                              "backup, restore failed.")
    write_bytes(device, 0, backup[:size])
    device.flush()
    try:
        if _version(device) != version or _span(version, device) != (size, offset):
            raise FormatError("mismatch")
    except FormatError:
        raise BlockIOError(f"luks: header on {device.name} does not read back after "
                           "restore") from None
    return size
