"""``dmkit luks``: LUKS2 and LUKS1 volumes offline, with cryptsetup's verbs and option names.

- ``format`` is ``luksFormat`` (with ``--integrity``: the dm-integrity superblock and the
  wipe that gives every sector a valid tag, a progress bar on a terminal);
- ``dump`` is ``luksDump`` (``--json``/``--dump-json-metadata``; ``--dump-volume-key``
  only when asked, after cryptsetup's warning);
- ``add-key``, ``change-key``, ``remove-key``, ``kill-slot``, ``test-passphrase``,
  ``header-backup``, ``header-restore`` are ``luksAddKey``, ``luksChangeKey``,
  ``luksRemoveKey``, ``luksKillSlot``, ``open --test-passphrase``, ``luksHeaderBackup``,
  ``luksHeaderRestore``;
- ``export`` copies the decrypted volume out (a sector failing authentication stops it,
  named, unless ``--zero-on-error``); ``import`` writes data into it.

Passphrases come from ``--key-file`` (``-`` is stdin; ``--keyfile-offset``,
``--keyfile-size``), else from a prompt without echo on a terminal, else from the first
line of stdin, as cryptsetup reads them.  A question ("Are you sure? (Type 'yes' in
capital letters)") is asked before destroying anything unless ``--batch-mode``; unlike
cryptsetup it is asked (and read from stdin) even when stdin is not a terminal.

The data verbs live in :mod:`.luks_data`, the shared helpers in :mod:`._luks_common`.

Exit status as cryptsetup's: 0 success, 1 wrong parameters or a failed operation, 2 no
key available with this passphrase, 4 the device does not exist or cannot be opened.
Keys and passphrases are never printed or logged; ``--dump-volume-key`` is the one way to
see a volume key.
"""

from __future__ import annotations

import contextlib
import logging
import os

import click

import dmkit.luks as luks

from ..block import SECTOR_SHIFT, FileDevice
from ..errors import DmkitError
from ..keys import SecretBytes
from ..luks import KeyslotError, NoKeyError
from ..luks.keyfile import write_volume_key_file
from ._common import emit_json
from ._luks_common import (
    _batch,
    _confirm,
    _header,
    _header_volume,
    _key_bytes,
    _key_file,
    _key_slot,
    _open_file,
    _pbkdf,
    _pbkdf_opts,
    _secrets,
    _Size,
    _vk_file,
    _volume_key,
)
from .luks_data import export_cmd, import_cmd
from .progress import progress

__all__ = ["luks_group"]

log = logging.getLogger("dmkit.cli")


# -- the group -----------------------------------------------------------------------------------

@click.group("luks", short_help="LUKS2/LUKS1 volumes, as cryptsetup (offline).")
def luks_group():
    """LUKS2 and LUKS1 volumes, as cryptsetup: format, dump, key slots, header backups,
    and the decrypted data (export, import) through dmkit's crypt and integrity targets.

    IMAGE is an image file or a block device.  Passphrases come from --key-file (- for
    stdin), else a prompt without echo on a terminal, else the first line of stdin.
    Exit status: 0 success, 1 failure or wrong parameters, 2 no key available with this
    passphrase, 4 no such device.
    """


# -- format --------------------------------------------------------------------------------------

@luks_group.command("format")
@click.argument("image", metavar="IMAGE")
@click.argument("key_file_arg", metavar="[KEY_FILE]", required=False)
@click.option("--type", "luks_type", type=click.Choice(["luks2", "luks1"]), default="luks2",
              show_default=True, help="LUKS version.")
@click.option("--cipher", "-c", default="aes-xts-plain64", show_default=True,
              help="Cipher spec cipher-mode-iv (aes-gcm-random and chacha20-random need "
                   "--integrity).")
@click.option("--key-size", "-s", type=click.IntRange(min=8), metavar="BITS",
              help="Volume key bits (default 512 for XTS, else 256; an integrity key is "
                   "added).")
@click.option("--integrity", "-I", metavar="MODE",
              help="LUKS2 authenticated encryption: hmac-sha256, hmac-sha512, aead "
                   "(aes-gcm-random), poly1305 (chacha20-random).")
@click.option("--integrity-no-wipe", is_flag=True,
              help="Do not wipe the volume: sectors fail authentication until written.")
@click.option("--sector-size", type=int, metavar="BYTES",
              help="Encryption sector size (LUKS2): 512, 1024, 2048 or 4096 (default: as "
                   "cryptsetup, the device's physical block size or the file system's block "
                   "size, 512 if the data size is not a multiple of it).")
@_pbkdf_opts
@_key_file
@_vk_file
@_key_slot
@_header
@click.option("--uuid", help="UUID of the new volume.")
@click.option("--label", help="LUKS2 label.")
@click.option("--subsystem", help="LUKS2 subsystem label.")
@click.option("--luks2-metadata-size", type=_Size(), metavar="SIZE",
              help="Size of each LUKS2 metadata copy (16384 .. 4194304).")
@click.option("--luks2-keyslots-size", type=_Size(), metavar="SIZE",
              help="Size of the LUKS2 key slots area.")
@click.option("--offset", "-o", type=click.IntRange(min=0), metavar="SECTORS",
              help="Data offset in 512-byte sectors.")
@_batch
def format_cmd(image, key_file_arg, luks_type, cipher, key_size, integrity, integrity_no_wipe,
               sector_size, key_file, keyfile_offset, keyfile_size, volume_key_file, key_slot,
               header, uuid, label, subsystem, luks2_metadata_size, luks2_keyslots_size,
               offset, batch_mode, **pbkdf_opts):
    """Format IMAGE as a LUKS volume, as `cryptsetup luksFormat` does.

    With --integrity the data segment gets a dm-integrity superblock and (unless
    --integrity-no-wipe) every sector is written once so that its tag is valid.
    """
    if key_file_arg is not None:
        if key_file is not None:
            raise click.UsageError("give the key file once: KEY_FILE or --key-file")
        key_file = key_file_arg
    if luks_type == "luks1":
        for name, value in (("--integrity", integrity), ("--label", label),
                            ("--subsystem", subsystem),
                            ("--luks2-metadata-size", luks2_metadata_size),
                            ("--luks2-keyslots-size", luks2_keyslots_size)):
            if value:
                raise click.UsageError(f"{name} can be used only for LUKS2 format.")
        if sector_size not in (None, 512):
            raise click.UsageError("--sector-size can be used only for LUKS2 format.")
    if integrity_no_wipe and not integrity:
        raise click.UsageError("--integrity-no-wipe needs --integrity")
    if key_size is not None and key_size % 8:
        raise click.UsageError("--key-size must be a multiple of 8 bits")
    pbkdf = _pbkdf(1 if luks_type == "luks1" else 2, **pbkdf_opts)
    kw = {"cipher": cipher, "pbkdf": pbkdf, "keyslot": key_slot, "uuid": uuid}
    if luks_type == "luks2":
        kw.update(integrity=integrity, label=label or "",
                  subsystem=subsystem or "")
        if luks2_metadata_size:
            kw["metadata_size"] = luks2_metadata_size
        if luks2_keyslots_size:
            kw["keyslots_size"] = luks2_keyslots_size
    else:
        kw["hash"] = pbkdf.hash
    if offset is not None:
        kw["data_offset"] = offset << SECTOR_SHIFT
    # the cipher key: --key-size counts the integrity key too (cryptsetup); format adds it
    int_key = 0
    if integrity:
        stored = luks.volume.integrity_spec(integrity)
        int_key = luks.volume.integrity_key_bytes(stored)
    if key_size is not None:
        if key_size // 8 <= int_key:
            raise click.UsageError("Volume key is too small for encryption with integrity "
                                   "extensions.")
        kw["key_bytes"] = key_size // 8 - int_key

    data = _open_file(image, write=True)
    with contextlib.ExitStack() as stack:
        stack.callback(data.close)
        hdr = None
        target = image
        if header is not None:
            target = header
            if os.path.exists(header):
                hdr = _open_file(header, write=True)
                stack.callback(hdr.close)
        if luks_type == "luks2":
            kw["sector_size"] = sector_size or _optimal_sector_size(
                data, hdr if hdr is not None else data, header is not None, kw)
        old = _existing(hdr if hdr is not None else data)
        msg = f"This will overwrite data on {target} irrevocably."
        if old:
            msg += f"\n{target} {old}; its key slots will be lost."
        _confirm(msg, batch_mode)
        secrets = stack.enter_context(_secrets())
        passphrase = secrets.get(key_file, keyfile_offset, keyfile_size,
                                 f"Enter passphrase for {target}: ", verify=True)
        if volume_key_file is not None:
            xts = cipher.partition("-")[2].startswith("xts-")
            want = (kw.get("key_bytes") or (64 if xts else 32)) + int_key
            kw["volume_key"] = _volume_key(volume_key_file, want)
            secrets.held.append(kw["volume_key"])
        wipe_bar = None
        last = [0]

        def tick(done: int, total: int) -> None:
            nonlocal wipe_bar
            if wipe_bar is None:
                wipe_bar = progress(total, "wipe")
            wipe_bar.update(done - last[0])
            last[0] = done

        if integrity and not integrity_no_wipe:
            click.echo("Wiping device to initialize integrity checksum.\nYou can interrupt "
                       "this by pressing CTRL+c (rest of not wiped device will contain invalid "
                       "checksum).", err=True)
        try:
            opened = luks.format(data, passphrase, type=luks_type,
                                 header=hdr if hdr is not None else header,
                                 integrity_wipe=not integrity_no_wipe, progress=tick, **kw)
        finally:
            if wipe_bar is not None:
                wipe_bar.close()
        opened.wipe()


def _optimal_sector_size(data: FileDevice, hdr: FileDevice, detached: bool, kw) -> int:
    """cryptsetup's sector size autodetection (``device_optimal_encryption_sector_size``):
    the physical block size of a block device, the file system's block size for an image
    file; 512 when that is out of range or the data size is not a multiple of it."""
    if data.is_blockdev:
        size = data.limits.physical_block_size
    else:
        try:
            size = os.fstatvfs(data.fileno()).f_bsize
        except OSError:
            size = 512
    if size not in (512, 1024, 2048, 4096):
        return 512
    _, offset = luks.luks2_volume.luks2_layout(
        hdr.size_bytes, metadata_size=kw.get("metadata_size", 16384),
        keyslots_size=kw.get("keyslots_size"), data_offset=kw.get("data_offset"),
        detached=detached)
    if (data.size_bytes - offset) % size:
        log.debug("Device size is not aligned to sector size. Reverting to 512 bytes.")
        return 512
    return size


def _existing(dev: FileDevice) -> str | None:
    """What a format would destroy, in words (a LUKS header), or None."""
    try:
        version = luks.probe(dev)
    except DmkitError:
        return None
    if version is None:
        return None
    try:
        return f"contains a LUKS{version} header (UUID {luks.load(dev).uuid})"
    except DmkitError:
        return f"contains a damaged LUKS{version} header"


# -- dump ------------------------------------------------------------------------------------------

@luks_group.command("dump")
@click.argument("image", metavar="IMAGE")
@click.option("--json", "as_json", is_flag=True,
              help="The LUKS2 JSON metadata (as --dump-json-metadata); LUKS1 headers as a "
                   "JSON object of their fields.")
@click.option("--dump-json-metadata", is_flag=True, help="cryptsetup's name for --json (LUKS2).")
@click.option("--dump-volume-key", is_flag=True,
              help="Print the volume key (needs the passphrase; asks first).")
@_vk_file
@_key_file
@_key_slot
@_header
@_batch
def dump_cmd(image, as_json, dump_json_metadata, dump_volume_key, volume_key_file, key_file,
             keyfile_offset, keyfile_size, key_slot, header, batch_mode):
    """Print the LUKS header of IMAGE as `cryptsetup luksDump` does.

    The volume key is shown only with --dump-volume-key (with --volume-key-file it is
    written to that new 0600 file instead of the terminal).
    """
    if volume_key_file is not None and not dump_volume_key:
        raise click.UsageError("--volume-key-file needs --dump-volume-key")
    if dump_volume_key:
        _confirm("The header dump with volume key is sensitive information\nthat allows "
                 "access to encrypted partition without a passphrase.\nThis dump should be "
                 "stored encrypted in a safe place.", batch_mode)
        with _header_volume(image, header, write=False) as vol, _secrets() as secrets:
            pw = secrets.get(key_file, keyfile_offset, keyfile_size,
                             f"Enter passphrase for {image}: ")
            with vol.unlock(pw, keyslot=key_slot) as opened:
                if volume_key_file is not None:
                    write_volume_key_file(volume_key_file, opened.volume_key)
                from ..luks.dumptext import dump_volume_key

                click.echo(dump_volume_key(opened, image, key_file=volume_key_file), nl=False)
        return
    if as_json or dump_json_metadata:
        with _header_volume(image, header, write=False) as vol:
            if vol.version == 1:
                if dump_json_metadata:
                    raise DmkitError("Dump operation is not supported for this device type.")
                from ..luks.dumptext import luks1_json

                emit_json(luks1_json(vol))
                return
        dev = _open_file(header or image, write=False)
        try:
            click.echo(luks.dump_json(dev))
        finally:
            dev.close()
        return
    dev = _open_file(header or image, write=False)
    try:
        click.echo(luks.dump(dev, name=header or image), nl=False)
    finally:
        dev.close()


# -- key slots -------------------------------------------------------------------------------

@luks_group.command("test-passphrase")
@click.argument("image", metavar="IMAGE")
@_key_file
@_key_slot
@_header
@click.option("--verbose", "-v", is_flag=True, help="Say which key slot opened.")
def test_passphrase_cmd(image, key_file, keyfile_offset, keyfile_size, key_slot, header,
                        verbose):
    """Check a passphrase, as `cryptsetup open --test-passphrase` (exit 2 if wrong)."""
    with _header_volume(image, header, write=False) as vol, _secrets() as secrets:
        pw = secrets.get(key_file, keyfile_offset, keyfile_size,
                         f"Enter passphrase for {image}: ")
        with vol.unlock(pw, keyslot=key_slot) as opened:
            if verbose:
                click.echo(f"Key slot {opened.keyslot} unlocked.", err=True)


@luks_group.command("add-key")
@click.argument("image", metavar="IMAGE")
@click.argument("new_key_file", metavar="[NEW_KEY_FILE]", required=False)
@_key_file
@click.option("--new-keyfile-offset", type=click.IntRange(min=0), default=0, metavar="BYTES")
@click.option("--new-keyfile-size", type=click.IntRange(min=1), metavar="BYTES")
@_vk_file
@_key_slot
@_header
@_pbkdf_opts
def add_key_cmd(image, new_key_file, key_file, keyfile_offset, keyfile_size,
                new_keyfile_offset, new_keyfile_size, volume_key_file, key_slot, header,
                **pbkdf_opts):
    """Add a key slot, as `cryptsetup luksAddKey`: unlock with an existing passphrase (or
    --volume-key-file), then the new passphrase from NEW_KEY_FILE or a prompt."""
    with _header_volume(image, header, write=True) as vol, _secrets() as secrets:
        pbkdf = _pbkdf(vol.version, **pbkdf_opts)
        if volume_key_file is not None:
            vk = _volume_key(volume_key_file, _key_bytes(vol))
            secrets.held.append(vk)
            opened = vol.unlock_with_volume_key(vk)
        else:
            pw = secrets.get(key_file, keyfile_offset, keyfile_size,
                             "Enter any existing passphrase: ")
            opened = vol.unlock(pw)
        with opened:
            new = secrets.get(new_key_file, new_keyfile_offset, new_keyfile_size,
                              "Enter new passphrase for key slot: ", verify=True)
            slot = vol.add_keyslot(opened.volume_key, new, keyslot=key_slot, pbkdf=pbkdf)
        log.info("key slot %d created", slot)


@luks_group.command("change-key")
@click.argument("image", metavar="IMAGE")
@click.argument("new_key_file", metavar="[NEW_KEY_FILE]", required=False)
@_key_file
@click.option("--new-keyfile-offset", type=click.IntRange(min=0), default=0, metavar="BYTES")
@click.option("--new-keyfile-size", type=click.IntRange(min=1), metavar="BYTES")
@_key_slot
@_header
@_pbkdf_opts
def change_key_cmd(image, new_key_file, key_file, keyfile_offset, keyfile_size,
                   new_keyfile_offset, new_keyfile_size, key_slot, header, **pbkdf_opts):
    """Change a passphrase, as `cryptsetup luksChangeKey`: the key slot it opens keeps
    its number and opens with the new passphrase."""
    with _header_volume(image, header, write=True) as vol, _secrets() as secrets:
        pbkdf = _pbkdf(vol.version, **pbkdf_opts)
        pw = secrets.get(key_file, keyfile_offset, keyfile_size,
                         "Enter passphrase to be changed: ")
        vol.unlock(pw, keyslot=key_slot).wipe()  # a wrong passphrase fails before the prompt
        new = secrets.get(new_key_file, new_keyfile_offset, new_keyfile_size,
                          "Enter new passphrase: ", verify=True)
        vol.change_key(pw, new, keyslot=key_slot, pbkdf=pbkdf)


@luks_group.command("remove-key")
@click.argument("image", metavar="IMAGE")
@click.argument("key_file_arg", metavar="[KEY_FILE]", required=False)
@_key_file
@_header
@_batch
def remove_key_cmd(image, key_file_arg, key_file, keyfile_offset, keyfile_size, header,
                   batch_mode):
    """Remove the key slot a passphrase opens, as `cryptsetup luksRemoveKey`."""
    key_file = _one_key_file(key_file_arg, key_file)
    with _header_volume(image, header, write=True) as vol, _secrets() as secrets:
        pw = secrets.get(key_file, keyfile_offset, keyfile_size,
                         "Enter passphrase to be deleted: ")
        with vol.unlock(pw) as opened:
            slot = opened.keyslot
        if vol.active_keyslots() == [slot]:
            _confirm("This is the last keyslot. Device will become unusable after purging "
                     "this key.", batch_mode, "Operation aborted, the keyslot was NOT wiped.")
        vol.kill_slot(slot)


def _one_key_file(arg: str | None, opt: str | None) -> str | None:
    if arg is not None and opt is not None:
        raise click.UsageError("give the key file once: KEY_FILE or --key-file")
    return arg if arg is not None else opt


@luks_group.command("kill-slot")
@click.argument("image", metavar="IMAGE")
@click.argument("slot", metavar="SLOT", type=click.IntRange(0, 31))
@click.argument("key_file_arg", metavar="[KEY_FILE]", required=False)
@_key_file
@_header
@_batch
def kill_slot_cmd(image, slot, key_file_arg, key_file, keyfile_offset, keyfile_size, header,
                  batch_mode):
    """Wipe key slot SLOT, as `cryptsetup luksKillSlot`.

    Unless --batch-mode (or with a key file), a passphrase of another key slot is asked
    for and checked first; killing the last key slot asks for confirmation.
    """
    key_file = _one_key_file(key_file_arg, key_file)
    with _header_volume(image, header, write=True) as vol, _secrets() as secrets:
        active = vol.active_keyslots()
        if slot not in active:
            raise KeyslotError(f"Keyslot {slot} is not active.")
        if active == [slot]:
            _confirm("This is the last keyslot. Device will become unusable after purging "
                     "this key.", batch_mode, "Operation aborted, the keyslot was NOT wiped.")
        elif not batch_mode or key_file is not None:
            pw = secrets.get(key_file, keyfile_offset, keyfile_size,
                             "Enter any remaining passphrase: ")
            if not _opens_another(vol, pw, slot, active):
                raise NoKeyError()
        vol.kill_slot(slot)


def _opens_another(vol, pw: SecretBytes, slot: int, active: list[int]) -> bool:
    for other in active:
        if other == slot:
            continue
        try:
            vol.unlock(pw, keyslot=other).wipe()
            return True
        except (NoKeyError, KeyslotError):
            continue
    return False


# -- header backup ---------------------------------------------------------------------------

_backup_file = click.option("--header-backup-file", required=True, metavar="FILE",
                            help="The backup file.")


@luks_group.command("header-backup")
@click.argument("image", metavar="IMAGE")
@_backup_file
def header_backup_cmd(image, header_backup_file):
    """Save the header and key slot areas of IMAGE to a new file, as `cryptsetup
    luksHeaderBackup` (the file is created with mode 0400)."""
    dev = _open_file(image, write=False)
    try:
        luks.header_backup(dev, header_backup_file)
    finally:
        dev.close()


@luks_group.command("header-restore")
@click.argument("image", metavar="IMAGE")
@_backup_file
@_batch
def header_restore_cmd(image, header_backup_file, batch_mode):
    """Write a header backup onto IMAGE, as `cryptsetup luksHeaderRestore`."""
    try:
        with open(header_backup_file, "rb") as f:
            backup = f.read()
    except OSError as e:
        raise DmkitError(f"Cannot read header backup file {header_backup_file}: "
                         f"{e.strerror}.", errno=e.errno) from None
    from dmkit.block import MemoryDevice
    try:
        new_uuid = luks.load(MemoryDevice(initial=backup + bytes(-len(backup) % 512))).uuid
    except DmkitError as e:
        raise DmkitError(f"Backup file does not contain valid LUKS header ({e}).") from None
    dev = _open_file(image, write=True)
    try:
        version = luks.probe(dev)
        if version is not None:
            msg = (f"Device {image} already contains LUKS{version} header. Replacing header "
                   "will destroy existing keyslots.")
            try:
                if luks.load(dev).uuid != new_uuid:
                    msg += "\nWARNING: real device header has different UUID than backup!"
            except DmkitError:
                pass
        else:
            msg = (f"Device {image} does not contain LUKS header. Replacing header can "
                   "destroy data on that device.")
        _confirm(msg, batch_mode)
        luks.header_restore(dev, backup)
    finally:
        dev.close()


luks_group.add_command(export_cmd)
luks_group.add_command(import_cmd)
