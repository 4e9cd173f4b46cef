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

Exit status as cryptsetup's: 0 success, 1 wrong parameters or a failed operation, 2 no
key available with this passphrase, 4 the device does not exist or cannot be opened.
Keys and passphrases are never printed or logged; ``--dump-volume-key`` is the one way to
see a volume key.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import getpass
import logging
import os
import sys
import time
from typing import BinaryIO, Iterator

import click

import dmkit.luks as luks

from ..block import SECTOR_SHIFT, FileDevice
from ..errors import DeviceError, DmkitError, IntegrityError
from ..keys import SecretBytes
from ..luks import KeyslotError, NoKeyError, Pbkdf
from ..luks.dump import dump_volume_key as volume_key_text, luks1_json
from ..luks.keyfile import read_key_file, read_volume_key_file, write_volume_key_file
from ._common import STDIO, emit_json
from .copy import _copy_in, _input_file, _output_file
from .progress import progress

__all__ = ["luks_group"]

log = logging.getLogger("dmkit.cli")



class MissingDevice(DmkitError):
    """cryptsetup's exit status 4: the device does not exist or cannot be opened."""

    default_errno = _errno.ENODEV
    exit_code = 4


class Aborted(DmkitError):
    """The user did not answer YES."""

    default_errno = _errno.ECANCELED


class AuthenticationFailed(DmkitError):
    """A sector of an authenticated volume failed its check (export stopped)."""

    default_errno = _errno.EILSEQ


# -- devices, passphrases, questions ----------------------------------------------------------

def _open_file(path: str, *, write: bool) -> FileDevice:
    try:
        return FileDevice(path, read_only=not write)
    except DeviceError as e:
        if e.errno in (_errno.ENOENT, _errno.EACCES, _errno.EPERM, _errno.ENOTDIR):
            raise MissingDevice(f"Device {path} does not exist or access denied.",
                                errno=e.errno) from None
        raise


def _stdin_is_tty() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _stdin_line(what: str) -> SecretBytes:
    """The first line of stdin without its newline (cryptsetup without --key-file)."""
    stream = sys.stdin.buffer
    line = bytearray(stream.readline(luks.keyfile.KEYFILE_SIZE_MAX + 1))
    try:
        if line.endswith(b"\n"):
            del line[-1:]
        if not line:
            raise DmkitError(f"Nothing to read on input ({what}).")
        return SecretBytes(line)
    finally:
        line[:] = bytes(len(line))


def _prompt(text: str) -> SecretBytes:
    try:
        pw = getpass.getpass(text)
    except EOFError:
        raise DmkitError("Error reading passphrase from terminal.") from None
    if not pw:
        raise DmkitError("Error reading passphrase from terminal.")
    return SecretBytes(pw.encode("utf-8"))


class _Secrets:
    """Where this command's passphrases come from; stdin can serve only one of them."""

    def __init__(self):
        self.stdin_used = False
        self.held: list[SecretBytes] = []

    def get(self, key_file: str | None, offset: int, size: int | None, prompt: str,
            *, verify: bool = False) -> SecretBytes:
        if key_file is not None:
            if key_file == STDIO:
                self._take_stdin()
            secret = read_key_file(key_file, keyfile_offset=offset, keyfile_size=size)
        elif offset or size is not None:
            raise click.UsageError("--keyfile-offset and --keyfile-size need a key file")
        elif _stdin_is_tty():
            secret = _prompt(prompt)
            if verify:
                again = _prompt("Verify passphrase: ")
                same = secret == again
                again.wipe()
                if not same:
                    secret.wipe()
                    raise NoKeyError("Passphrases do not match.")
        else:
            self._take_stdin()
            secret = _stdin_line(prompt.rstrip(": "))
        self.held.append(secret)
        return secret

    def _take_stdin(self) -> None:
        if self.stdin_used:
            raise click.UsageError("only one passphrase can come from stdin: give the other "
                                   "with a key file")
        self.stdin_used = True

    def wipe(self) -> None:
        for s in self.held:
            s.wipe()


@contextlib.contextmanager
def _secrets() -> Iterator[_Secrets]:
    s = _Secrets()
    try:
        yield s
    finally:
        s.wipe()


def _confirm(message: str, batch_mode: bool, fail: str = "Operation aborted.") -> None:
    """cryptsetup's ``yesDialog``: the question on stderr, the answer from stdin."""
    if batch_mode:
        return
    click.echo(f"\nWARNING!\n========\n{message}\n\nAre you sure? (Type 'yes' in capital "
               "letters): ", nl=False, err=True)
    # the binary buffer, which a passphrase read after the answer also uses
    answer = sys.stdin.buffer.readline()
    if answer.rstrip(b"\n") != b"YES":
        click.echo("", err=True)
        raise Aborted(fail)


def _volume_key(path: str, key_bytes: int) -> SecretBytes:
    return read_volume_key_file(path, key_bytes)


@contextlib.contextmanager
def _header_volume(image: str, header: str | None, *, write: bool):
    """The LUKS volume (header object) on IMAGE, or on the detached --header."""
    dev = _open_file(header if header is not None else image, write=write)
    try:
        yield luks.load(dev)
    finally:
        dev.close()


# -- shared options ----------------------------------------------------------------------------

def _options(*opts):
    def deco(f):
        for o in reversed(opts):
            f = o(f)
        return f
    return deco


_key_file = _options(
    click.option("--key-file", "-d", metavar="FILE",
                 help="Read the passphrase from FILE (- for stdin) instead of a prompt."),
    click.option("--keyfile-offset", type=click.IntRange(min=0), default=0, metavar="BYTES",
                 help="Skip BYTES at the start of the key file."),
    click.option("--keyfile-size", "-l", type=click.IntRange(min=1), metavar="BYTES",
                 help="Use at most BYTES of the key file."),
)
_header = click.option("--header", metavar="FILE",
                       help="The LUKS header is detached, in FILE; IMAGE holds the data.")
_key_slot = click.option("--key-slot", "-S", type=click.IntRange(0, 31), metavar="N",
                         help="Use (or create) key slot N only.")
_batch = click.option("--batch-mode", "-q", is_flag=True, help="Do not ask for confirmation.")
_vk_file = click.option("--volume-key-file", metavar="FILE",
                        help="Use the volume key in FILE instead of a passphrase.")
_pbkdf_opts = _options(
    click.option("--pbkdf", type=click.Choice(["pbkdf2", "argon2i", "argon2id"]),
                 help="KDF of the new key slot (LUKS2 default argon2id; LUKS1 pbkdf2)."),
    click.option("--pbkdf-memory", type=click.IntRange(min=1), metavar="KIB",
                 help="Argon2 memory cost in KiB (default 1048576)."),
    click.option("--pbkdf-parallel", type=click.IntRange(1, 4), metavar="N",
                 help="Argon2 threads (default 4)."),
    click.option("--pbkdf-force-iterations", type=click.IntRange(min=1), metavar="N",
                 help="Fixed KDF cost (PBKDF2 iterations, Argon2 time) instead of the "
                      "benchmark."),
    click.option("--iter-time", "-i", type=click.IntRange(min=1), metavar="MS",
                 help="Benchmark the KDF to take MS milliseconds (default 2000)."),
    click.option("--hash", "-h", "hash_name", metavar="HASH",
                 help="Hash of PBKDF2, the AF splitter and digests (default sha256)."),
)


def _pbkdf(version: int, *, pbkdf, pbkdf_memory, pbkdf_parallel, pbkdf_force_iterations,
           iter_time, hash_name) -> Pbkdf:
    kind = pbkdf or ("pbkdf2" if version == 1 else "argon2id")
    if version == 1 and kind != "pbkdf2":
        raise click.UsageError("LUKS1 key slots use --pbkdf pbkdf2 only")
    kw = {"type": kind}
    if hash_name:
        kw["hash"] = hash_name.lower()
    if pbkdf_force_iterations:
        kw["iterations"] = pbkdf_force_iterations
    if pbkdf_memory:
        kw["memory_kb"] = pbkdf_memory
    if pbkdf_parallel:
        kw["parallel"] = pbkdf_parallel
    if iter_time:
        kw["iter_time_ms"] = iter_time
    return Pbkdf(**kw)


class _Size(click.ParamType):
    """A byte count with an optional unit, as cryptsetup takes sizes: 16384, 16k, 4M."""

    name = "size"
    _UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        for tail in ("ib", "b"):
            if text.endswith(tail) and text[:-len(tail)][-1:] in "kmgt":
                text = text[:-len(tail)]
        unit = text[-1:] if text[-1:] in "kmgt" else ""
        digits = text[:-1] if unit else text
        if not digits.isdigit() or not digits.isascii() or int(digits) <= 0:
            self.fail(f"{value!r} is not a size (bytes, or with a unit: 16k, 4m)", param, ctx)
        return int(digits) * self._UNITS[unit]


_PBKDF_KEYS = ("pbkdf", "pbkdf_memory", "pbkdf_parallel", "pbkdf_force_iterations",
               "iter_time", "hash_name")


def _split_pbkdf(opts: dict) -> dict:
    return {k: opts.pop(k) for k in _PBKDF_KEYS}


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
                click.echo(volume_key_text(opened, image, key_file=volume_key_file), nl=False)
        return
    if as_json or dump_json_metadata:
        with _header_volume(image, header, write=False) as vol:
            if vol.version == 1:
                if dump_json_metadata:
                    raise DmkitError("Dump operation is not supported for this device type.")
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


def _key_bytes(vol) -> int:
    """The volume key size (from the header: LUKS1, or a LUKS2 key slot)."""
    n = vol.data_segment().key_bytes
    if not n:
        raise DmkitError("Cannot determine volume key size for LUKS without keyslots.")
    return n


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


# -- the data: export and import -------------------------------------------------------------

_data_options = _options(_key_file, _vk_file, _key_slot, _header)


@contextlib.contextmanager
def _open_volume(image, *, key_file, keyfile_offset, keyfile_size, volume_key_file,
                 key_slot, header, writable, integrity_journal=True) -> Iterator[luks.LuksDevice]:
    data = _open_file(image, write=writable)
    try:
        with _secrets() as secrets:
            if volume_key_file is not None:
                with _header_volume(image, header, write=False) as vol:
                    nbytes = _key_bytes(vol)
                vk = _volume_key(volume_key_file, nbytes)
                secrets.held.append(vk)
                cred = {"volume_key": vk}
            else:
                cred = {"passphrase": secrets.get(key_file, keyfile_offset, keyfile_size,
                                                  f"Enter passphrase for {image}: ")}
            hdr = _open_file(header, write=False) if header is not None else None
            try:
                vol = luks.open(data, header=hdr, keyslot=key_slot, writable=writable,
                                integrity_journal=integrity_journal, **cred)
            finally:
                if hdr is not None:
                    hdr.close()
    except BaseException:
        data.close()
        raise
    try:
        yield vol
    finally:
        try:
            vol.close()
        finally:
            data.close()


@contextlib.contextmanager
def _quiet_crypt_log() -> Iterator[None]:
    """The crypt target logs each failed request; export reports each bad sector itself,
    once, so those lines are held back here."""
    logger = logging.getLogger("dmkit.crypt")
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(old)


@luks_group.command("export")
@click.argument("image", metavar="IMAGE")
@click.argument("out", metavar="OUT", type=click.Path(dir_okay=False, allow_dash=True))
@_data_options
@click.option("--zero-on-error", is_flag=True,
              help="Write zeros for sectors that fail authentication (listed on stderr) "
                   "instead of stopping.")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"bytes": N, "bad_sectors": [...], "seconds": S} (on stderr when '
                   'OUT is -).')
def export_cmd(image, out, zero_on_error, as_json, **opts):
    """Copy the decrypted data of IMAGE into OUT (a path, or - for stdout).

    IMAGE is opened read-only.  With integrity, a sector that fails authentication stops
    the export with its sector named (an existing OUT is left as it was), unless
    --zero-on-error.  Sectors are 512-byte units from the start of the volume.
    """
    t0 = time.monotonic()
    _refuse_same_file(out, image, opts.get("header"))
    with _open_volume(image, writable=False, **opts) as vol, _quiet_crypt_log():
        dev = vol.device
        if out == STDIO:
            stream = sys.stdout.buffer
            if stream.isatty():
                raise click.UsageError("refusing to write binary data to a terminal: "
                                       "redirect stdout or give OUT a path")
            bad = _copy_out(vol, stream, zero_on_error, image)
            stream.flush()
        else:
            with _output_file(out, dev) as f:
                bad = _copy_out(vol, f, zero_on_error, image)
        nbytes = dev.size_bytes
    if bad:
        shown = ", ".join(map(str, bad[:50])) + (f", ... ({len(bad)} in all)"
                                                 if len(bad) > 50 else "")
        click.echo(f"dmkit: {image}: zero-filled {len(bad)} sector(s) that failed "
                   f"authentication, at sectors: {shown}", err=True)
    if as_json:
        emit_json({"bytes": nbytes, "bad_sectors": bad,
                   "seconds": round(time.monotonic() - t0, 6)}, err=out == STDIO)


def _refuse_same_file(path: str, *devices: str | None) -> None:
    try:
        st = os.stat(path)
    except OSError:
        return
    for d in devices:
        if d is None:
            continue
        try:
            ds = os.stat(d)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (ds.st_dev, ds.st_ino) or \
                (st.st_rdev and st.st_rdev == ds.st_rdev):
            raise DeviceError(f"{path}: this is {d}, which the volume uses; refusing to "
                              "overwrite it", errno=_errno.EBUSY)


def _copy_out(vol: luks.LuksDevice, f: BinaryIO, zero_on_error: bool, image: str
              ) -> list[int]:
    bar = progress(vol.size_bytes, "export")
    try:
        return vol.export(f, zero_on_error=zero_on_error,
                          progress=lambda done, total, n: bar.update(n))
    except IntegrityError as e:
        raise AuthenticationFailed(
            f"{image}: sector {e.sector} failed authentication (INTEGRITY AEAD ERROR); "
            "export stopped (--zero-on-error writes zeros for such sectors and lists "
            "them)") from None
    finally:
        bar.close()


@luks_group.command("import")
@click.argument("image", metavar="IMAGE")
@click.argument("input_path", metavar="IN", type=click.Path(dir_okay=False, allow_dash=True))
@_data_options
@click.option("--integrity-no-journal", is_flag=True,
              help="Write without the dm-integrity journal (faster; a crash can leave "
                   "sectors failing authentication).")
@click.option("--json", "as_json", is_flag=True, help='Print {"bytes": N, "seconds": S}.')
def import_cmd(image, input_path, integrity_no_journal, as_json, **opts):
    """Write IN (a path, or - for stdin) into the volume on IMAGE from its first sector.

    The data is encrypted (and authenticated) as the kernel would write it.  IN may be
    shorter than the volume, not longer: that is refused before anything is written.
    """
    if input_path == STDIO and opts.get("key_file") == STDIO:
        raise click.UsageError("IN and --key-file cannot both be stdin")
    if input_path == STDIO and opts.get("key_file") is None and \
            opts.get("volume_key_file") is None and not _stdin_is_tty():
        raise click.UsageError("IN is stdin: give the passphrase with --key-file")
    _refuse_same_file(input_path, image, opts.get("header"))
    t0 = time.monotonic()
    with _open_volume(image, writable=True, integrity_journal=not integrity_no_journal,
                      **opts) as vol:
        dev = vol.device
        with _input_file(input_path, dev) as (f, size):
            _copy_in(dev, f, size, "<stdin>" if input_path == STDIO else input_path)
            dev.flush()
    if as_json:
        emit_json({"bytes": size, "seconds": round(time.monotonic() - t0, 6)})
