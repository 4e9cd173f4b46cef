"""Helpers shared by the ``dmkit luks`` commands: devices, passphrases, questions,
options (private)."""

from __future__ import annotations

import contextlib
import errno as _errno
import getpass
import logging
import sys
from typing import Iterator

import click

import dmkit.luks as luks

from ..block import FileDevice
from ..errors import DeviceError, DmkitError
from ..keys import SecretBytes
from ..luks import NoKeyError, Pbkdf
from ..luks.keyfile import read_key_file, read_volume_key_file
from ._common import STDIO

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



def _key_bytes(vol) -> int:
    """The volume key size (from the header: LUKS1, or a LUKS2 key slot)."""
    n = vol.data_segment().key_bytes
    if not n:
        raise DmkitError("Cannot determine volume key size for LUKS without keyslots.")
    return n
