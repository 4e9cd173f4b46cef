"""LUKS2 and LUKS1: headers, key slots, KDFs, the AF splitter, digests, tokens.

Byte-compatible with cryptsetup's on-disk formats (LUKS2 On-Disk Format Specification,
LUKS1 On-Disk Format Specification 1.2.3; cryptsetup 2.6 ``lib/luks2``, ``lib/luks1``).
See docs/luks.md.

Safe recipes (paths or BlockDevices):

- :func:`open` — the decrypted volume as a file (a :class:`LuksDevice`, whose ``device``
  is a BlockDevice): dmkit's integrity and crypt targets stacked as ``cryptsetup open``
  stacks the kernel's; read-only unless ``writable=True``;
- :func:`unlock` — unlock with a passphrase or key file (or a volume key, or a keyring
  token) and get an :class:`Unlocked`: the volume key and a :class:`DataSegment` from
  which the ``crypt``/``integrity`` tables are built;
- :func:`format` — ``luksFormat`` (LUKS2 or LUKS1, detached headers; with integrity also
  the dm-integrity superblock and the wipe that makes every tag valid);
- :func:`load` — the :class:`Luks2Volume` / :class:`Luks1Volume` with the key slot
  operations (add, change, remove, kill), tokens, labels, repair;
- :func:`dump` / :func:`dump_json` — ``luksDump`` text and JSON;
- :func:`header_backup` / :func:`header_restore`.

The low-level parts have their own modules: :mod:`.layout` (binary headers),
:mod:`.metadata` (the JSON model and its validation), :mod:`.luks2` (header copies and
writes), :mod:`.af`, :mod:`.kdf`, :mod:`.storage` (key slot area encryption),
:mod:`.keyslot`, and the data path's parts in :mod:`.data` (the stack, the integrity
format, the wipe) and :mod:`.keyfile`.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from ..block import BlockDevice, FileDevice, read_bytes
from ..errors import FormatError
from .data import LuksDevice, format_integrity, open_unlocked, plan_integrity, wipe
from .errors import NO_KEY_MESSAGE, KeyslotError, NoKeyError, ParameterError
from .kdf import Pbkdf
from .keyfile import read_key_file
from .layout import probe_version
from .luks2 import Luks2Header, read_luks2_header
from .luks2_volume import Luks2Volume, format_luks2, luks2_layout
from .metadata import Luks2Metadata
from .volume import DataSegment, IntegrityTableParams, Unlocked, integrity_spec, integrity_tag_bytes

if TYPE_CHECKING:
    from .luks1 import Luks1Volume, format_luks1

__all__ = [
    "open",
    "unlock",
    "format",
    "wipe",
    "read_key_file",
    "LuksDevice",
    "load",
    "probe",
    "dump",
    "dump_json",
    "header_backup",
    "header_restore",
    "Luks2Volume",
    "Luks1Volume",
    "Luks2Header",
    "Luks2Metadata",
    "format_luks2",
    "format_luks1",
    "read_luks2_header",
    "Unlocked",
    "DataSegment",
    "IntegrityTableParams",
    "Pbkdf",
    "NoKeyError",
    "KeyslotError",
    "ParameterError",
    "NO_KEY_MESSAGE",
]

@contextlib.contextmanager
def _device(target, *, write: bool):
    """A BlockDevice for a path (opened and closed here) or the device itself."""
    if isinstance(target, BlockDevice):
        yield target
        return
    dev = FileDevice(target, read_only=not write)
    try:
        yield dev
    finally:
        dev.close()


def probe(device: BlockDevice) -> int | None:
    """The LUKS version (1 or 2) whose magic ``device`` starts with, else None."""
    if device.size_bytes < 512:
        return None
    return probe_version(bytes(read_bytes(device, 0, 512)))


def __getattr__(name: str):
    """LUKS1, dump and header backup load on first use (PEP 562): opening a LUKS2 volume
    does not need them."""
    if name in ("Luks1Volume", "format_luks1"):
        from . import luks1

        value = getattr(luks1, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load(device: BlockDevice, **kw) -> Luks1Volume | Luks2Volume:
    """The LUKS volume on ``device`` (the header device, when the header is detached)."""
    version = probe(device)
    if version == 2:
        return Luks2Volume.load(device, **kw)
    if version == 1:
        from .luks1 import Luks1Volume

        return Luks1Volume.load(device, **kw)
    try:  # a destroyed primary: the secondary LUKS2 header may still be found
        return Luks2Volume.load(device, **kw)
    except FormatError:
        pass
    raise FormatError(f"Device {device.name} is not a valid LUKS device.")


def _passphrase(passphrase, key_file, keyfile_offset: int, keyfile_size: int | None):
    if key_file is None:
        if keyfile_offset or keyfile_size is not None:
            raise ParameterError("luks: keyfile_offset and keyfile_size need a key_file")
        return passphrase
    if passphrase is not None:
        raise ParameterError("luks: give a passphrase or a key file, not both")
    return read_key_file(key_file, keyfile_offset=keyfile_offset, keyfile_size=keyfile_size)


def unlock(device, passphrase=None, *, key_file=None, keyfile_offset: int = 0,
           keyfile_size: int | None = None, header=None, keyslot: int | None = None,
           volume_key=None, keyring=None, token: int | None = None) -> Unlocked:
    """Unlock a LUKS volume's metadata: returns the volume key and its data segment.

    ``device`` and ``header`` (a detached header) are paths or BlockDevices.  Give a
    ``passphrase`` (str or bytes) or a ``key_file`` (a path, ``-`` for stdin; with
    ``keyfile_offset``/``keyfile_size`` as cryptsetup's options), a ``volume_key``, or a
    ``keyring`` (with ``material(type, description)``) for ``luks2-keyring`` tokens.
    A wrong passphrase raises :class:`NoKeyError` ("No key available with this
    passphrase.", exit code 2).  Devices opened here from paths are closed on return.
    """
    passphrase = _passphrase(passphrase, key_file, keyfile_offset, keyfile_size)
    try:
        with _device(header if header is not None else device, write=False) as dev:
            vol = load(dev)
            if volume_key is not None:
                return vol.unlock_with_volume_key(volume_key)
            if passphrase is None and keyring is not None:
                if vol.version != 2:
                    raise ParameterError("luks1: tokens are a LUKS2 feature")
                return vol.unlock_token(keyring, token=token)
            if passphrase is None:
                raise ParameterError("luks: a passphrase, key file, volume key or keyring "
                                     "is needed")
            return vol.unlock(passphrase, keyslot=keyslot)
    finally:
        if key_file is not None:
            passphrase.wipe()


def open(device, passphrase=None, *, key_file=None, keyfile_offset: int = 0,
         keyfile_size: int | None = None, volume_key=None, header=None,
         keyslot: int | None = None, keyring=None, token: int | None = None,
         writable: bool = False, name: str = "luks",
         integrity_journal: bool = True) -> LuksDevice:
    """Open a LUKS volume's data: a seekable file of the decrypted volume (a
    :class:`LuksDevice`; its ``device`` is the mapped device, a BlockDevice).

    Read-only unless ``writable``: a read-only open never writes to the image (an
    integrity journal left by a crash is replayed in memory).  Unlocking is as
    :func:`unlock`.  With integrity (LUKS2 ``--integrity``) a sector that fails
    authentication makes the read fail with :class:`~dmkit.errors.IntegrityError`
    naming it.  ``integrity_journal=False`` writes without the dm-integrity journal
    (cryptsetup's ``--integrity-no-journal``).  Close it (or use ``with``) to flush,
    close the devices and wipe the key.
    """
    owned = []
    if isinstance(device, BlockDevice):
        data = device
    else:
        data = FileDevice(device, read_only=not writable)
        owned.append(data)
    try:
        unlocked = unlock(data, passphrase, key_file=key_file, keyfile_offset=keyfile_offset,
                          keyfile_size=keyfile_size, header=header, keyslot=keyslot,
                          volume_key=volume_key, keyring=keyring, token=token)
        try:
            return open_unlocked(data, unlocked, writable=writable, name=name,
                                 integrity_journal=integrity_journal, owned=owned)
        except BaseException:
            unlocked.wipe()
            raise
    except BaseException:
        for d in owned:
            d.close()
        raise


def _new_header_file(path, size: int) -> None:
    fd = os.open(os.fspath(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _integrity_plan(header_size: int, data_sectors: int, detached: bool, kw) -> None:
    """Refuse, before anything is written, a device too small for the dm-integrity
    superblock, journal and tags that the format would create after the header."""
    integrity = kw.get("integrity")
    if not integrity:
        return
    cipher = kw.get("cipher", "aes-xts-plain64")
    stored = integrity_spec(integrity)
    if stored == "none" and integrity_tag_bytes("none", cipher) == 0:
        return
    _, data_offset = luks2_layout(header_size, metadata_size=kw.get("metadata_size", 16384),
                                  keyslots_size=kw.get("keyslots_size"),
                                  data_offset=kw.get("data_offset"),
                                  align=kw.get("align", 1 << 20), detached=detached)
    seg = DataSegment(cipher=cipher, key_bytes=0, offset_sectors=data_offset // 512,
                      sector_size=kw.get("sector_size", 512), integrity=stored)
    plan_integrity(data_sectors, seg)


def format(device, passphrase=None, *, type: str = "luks2", header=None, key_file=None,
           keyfile_offset: int = 0, keyfile_size: int | None = None,
           integrity_wipe: bool = True, progress=None, **kw) -> Unlocked:
    """``cryptsetup luksFormat``: see :func:`format_luks2` / :func:`format_luks1` for the
    options.  With ``header`` (a path or BlockDevice) the header is detached; a header
    path that does not exist is created (0600) with the size the header needs.

    With ``integrity`` (LUKS2), what cryptsetup does after the header follows: the
    dm-integrity superblock and journal at the data offset, then (unless
    ``integrity_wipe=False``) zeros written over the whole volume through the stack so
    every sector has a valid tag; ``progress(done_bytes, total_bytes)`` reports the wipe.
    A device too small for that is refused before anything is written.
    """
    if type not in ("luks1", "luks2"):
        raise ParameterError(f"luks: unknown type {type!r} (luks1 or luks2)")
    if type == "luks1" and kw.get("integrity"):
        raise ParameterError("Integrity option can be used only for LUKS2 format.")
    passphrase = _passphrase(passphrase, key_file, keyfile_offset, keyfile_size)
    if passphrase is None:
        raise ParameterError("luks: a passphrase or key file is needed")
    if type == "luks2":
        fmt = format_luks2
    else:
        from .luks1 import format_luks1 as fmt
    if header is not None and not isinstance(header, BlockDevice) and \
            not os.path.exists(header):
        if type == "luks2":
            meta = kw.get("metadata_size", 16384)
            size = 2 * meta + (kw.get("keyslots_size") or (16 << 20) - 2 * meta)
        else:  # the header sector and eight key slot areas, 4 KiB aligned
            key = kw.get("key_bytes") or 64
            size = 4096 + 8 * -(-key * 4000 // 4096) * 4096
        _new_header_file(header, size)
    with contextlib.ExitStack() as stack:
        if key_file is not None:
            stack.callback(passphrase.wipe)
        data = stack.enter_context(_device(device, write=True))
        hdr = stack.enter_context(_device(header, write=True)) if header is not None else data
        if type == "luks2":
            _integrity_plan(hdr.size_bytes, data.nr_sectors, header is not None, kw)
        if header is None:
            opened = fmt(data, passphrase, **kw)
        else:
            opened = fmt(hdr, passphrase, data_device=data, **kw)
        if opened.segment.integrity:
            try:
                format_integrity(data, opened.segment, rng=kw.get("rng", os.urandom))
                if integrity_wipe:
                    wipe(data, opened, progress=progress)
            except BaseException:
                opened.wipe()
                raise
        return opened


def dump(device, *, header=None, name: str | None = None) -> str:
    """``cryptsetup luksDump`` text.  ``name`` is the device path LUKS1 dumps show."""
    target = header if header is not None else device
    with _device(target, write=False) as dev:
        vol = load(dev)
        if vol.version == 1:
            from .dumptext import dump_luks1

            return dump_luks1(vol, name or (os.fspath(target) if not isinstance(
                target, BlockDevice) else dev.name))
        from .dumptext import dump_luks2

        return dump_luks2(vol.header)


def dump_json(device, *, header=None) -> str:
    """``cryptsetup luksDump --dump-json-metadata`` (LUKS2 only)."""
    with _device(header if header is not None else device, write=False) as dev:
        vol = load(dev)
        if vol.version != 2:
            raise FormatError("Dump operation is not supported for this device type.")
        from .dumptext import dump_luks2_json

        return dump_luks2_json(vol.header)


def header_backup(device, path) -> int:
    """``luksHeaderBackup``: write the header and key slot areas to a new file."""
    with _device(device, write=False) as dev:
        from . import backup as _backup

        return _backup.header_backup(dev, path)


def header_restore(device, backup) -> int:
    """``luksHeaderRestore`` from a backup file path (or bytes)."""
    with _device(device, write=True) as dev:
        from . import backup as _backup

        return _backup.header_restore(dev, backup)

