"""Shared pieces of the ``dmkit integrity`` commands: errors and exit statuses, algorithm
names, key files, opening DEV and --data-device, --offset (the table's reserved sectors)
and the superblock there, the options that say how to read a device and its journal
(encryption, MAC), and the verified reader.

Exit statuses: :class:`InputError` is bad input (2, like a usage error),
:class:`VerificationFailed` a verification failure (1).  Keys are read from files into
memory only; no message names their bytes.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import logging
import os
from typing import Iterator

import click

from ..block import SECTOR_SHIFT, FileDevice
from ..errors import DeviceError, DmkitError, FormatError, IntegrityError
from ..targets.integrity import IntegrityReader, JournalStatus
from ..targets.integrity.geometry import Geometry
from ..targets.integrity.jcrypt import JournalCipher
from ..targets.integrity.layout import SB_MAGIC, SB_SECTORS, SbFlags, Superblock
from ..targets.integrity.tags import algorithm, kernel_name

__all__ = ["MAX_KEY_SIZE", "OFFSET_HELP", "InputError", "VerificationFailed", "bad_input",
           "cryptsetup_name", "algorithm_name", "read_key", "open_devices", "same_file",
           "positive", "offset_option", "check_offset", "superblock_at", "check_fits",
           "alg_options", "journal_crypt_options", "journal_integrity_options",
           "journal_keys", "make_reader", "quiet_integrity_log"]

log = logging.getLogger("dmkit.cli")

#: the most key bytes read from a key file (integritysetup's MAX_KEY_SIZE)
MAX_KEY_SIZE = 4096

OFFSET_HELP = ("Sectors (512 bytes) before the superblock, never written: the table's "
               "reserved_sectors, e.g. a LUKS2 integrity volume's data offset / 512. "
               "With --data-device it applies to DEV (superblock, journal and tags); the data "
               "device is used from sector 0, as the kernel does.")

#: the first bytes of a LUKS1/LUKS2 header (a hint when there is no superblock)
_LUKS_MAGIC = b"LUKS\xba\xbe"


class InputError(DmkitError):
    """Bad input to an integrity command: exit status 2, like a usage error."""

    default_errno = _errno.EINVAL
    exit_code = 2


class VerificationFailed(DmkitError):
    """Blocks failed verification (the message says which)."""

    default_errno = _errno.EILSEQ
    exit_code = 1


@contextlib.contextmanager
def bad_input() -> Iterator[None]:
    """Turn format and argument errors into InputError (exit 2); integrity errors pass."""
    try:
        yield
    except (IntegrityError, InputError, VerificationFailed):
        raise
    except (FormatError, DeviceError, ValueError) as e:
        raise InputError(str(e), errno=getattr(e, "errno", None) or _errno.EINVAL) from None


def cryptsetup_name(name: str) -> str:
    """integritysetup's spelling of a kernel algorithm name (``hmac(sha256)`` ->
    ``hmac-sha256``)."""
    k = kernel_name(name)
    if k.endswith(")") and "(" in k:
        outer, inner = k[:-1].split("(", 1)
        return f"{outer}-{inner}"
    return k


def algorithm_name(name: str) -> str:
    if "(" in name and not name.endswith(")"):
        raise InputError(f"--integrity: malformed algorithm name {name!r}")
    try:
        return algorithm(name).name
    except ValueError as e:
        raise InputError(str(e)) from None


# -- keys --------------------------------------------------------------------------------

def read_key(path: str | None, size: int | None, option: str) -> bytes | None:
    """The key in ``path``: its first ``size`` bytes, or the whole file (at most 4096)."""
    if path is None:
        if size is not None:
            raise InputError(f"{option}-size needs {option}-file")
        return None
    if size is not None and not 1 <= size <= MAX_KEY_SIZE:
        raise InputError(f"{option}-size {size} is not in 1..{MAX_KEY_SIZE}")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_SIZE + 1)
    except OSError as e:
        raise InputError(f"{path}: cannot read key file: {e.strerror}",
                         errno=e.errno) from None
    if size is not None:
        if len(data) < size:
            raise InputError(f"{path}: key file has {len(data)} bytes, {option}-size "
                             f"asks for {size}")
        return data[:size]
    if not data:
        raise InputError(f"{path}: key file is empty")
    if len(data) > MAX_KEY_SIZE:
        raise InputError(f"{path}: key file is larger than {MAX_KEY_SIZE} bytes (give "
                         f"{option}-size)")
    return data


# -- devices -----------------------------------------------------------------------------

@contextlib.contextmanager
def open_devices(dev: str, data_device: str | None, *,
                 write: bool) -> Iterator[tuple[FileDevice, FileDevice | None]]:
    """(data device, metadata device or None).  With ``--data-device``, DEV holds the
    superblock, journal and tags (integritysetup's convention)."""
    with contextlib.ExitStack() as stack:
        with bad_input():
            first = stack.enter_context(FileDevice(dev, read_only=not write))
            data = None
            if data_device is not None:
                data = stack.enter_context(FileDevice(data_device, read_only=not write))
        if data is None:
            yield first, None
            return
        if same_file(os.fstat(first.fileno()), os.fstat(data.fileno())):
            raise InputError(f"{data_device}: the data device is DEV itself")
        yield data, first


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
        return True
    return bool(a.st_rdev and a.st_rdev == b.st_rdev)


def positive(ctx, param, value):
    if value is not None and value <= 0:
        raise click.BadParameter("must be positive")
    return value


# -- --offset: the table's reserved sectors ----------------------------------------------------

def _offset(ctx, param, value):
    if value is not None and value < 0:
        # one line and exit status 2 (InputError), before any device is opened
        raise InputError(f"--offset {value}: a number of sectors cannot be negative")
    return value


def offset_option(f):
    """``--offset SECTORS``: where the superblock is (dm-integrity's ``reserved_sectors``)."""
    return click.option("--offset", type=int, default=0, show_default=True,
                        callback=_offset, metavar="SECTORS", help=OFFSET_HELP)(f)


def check_offset(md, offset: int) -> None:
    """The superblock's 8 sectors at ``offset`` must lie on the metadata device."""
    if md.nr_sectors < offset + SB_SECTORS:
        raise InputError(f"{md.name}: --offset {offset} is beyond the end of the device "
                         f"({md.nr_sectors} sectors; the superblock needs {SB_SECTORS} "
                         "sectors from there)")


def superblock_at(md, offset: int) -> Superblock:
    """The superblock at sector ``offset`` of the metadata device ``md`` (the device
    itself when interleaved), validated.  An offset past the end of ``md`` and a sector
    that holds no superblock are InputErrors naming the sector."""
    if md.nr_sectors < SB_SECTORS:
        raise InputError(f"{md.name}: {md.nr_sectors} sectors is too small to hold a "
                         "dm-integrity superblock")
    check_offset(md, offset)
    with bad_input():
        raw = bytes(md.read(offset, SB_SECTORS))
        if raw[:len(SB_MAGIC)] != SB_MAGIC:
            hint = ""
            if raw[:len(_LUKS_MAGIC)] == _LUKS_MAGIC:
                hint = ("; it holds a LUKS header: a LUKS2 volume's integrity superblock is "
                        "at its data offset, give --offset (the data offset / 512)")
            elif offset and bytes(md.read(0, 1))[:len(SB_MAGIC)] == SB_MAGIC:
                hint = "; sector 0 holds one: drop --offset"
            raise InputError(f"{md.name}: no dm-integrity superblock at sector {offset}: "
                             f"superblock magic {raw[:8]!r} is not {SB_MAGIC!r} (not a "
                             f"dm-integrity device{hint})")
        # other faults name the sector too when it is not the usual one
        return Superblock.from_bytes(
            raw, device=md.name if not offset else f"{md.name} at sector {offset}")


def check_fits(geo: Geometry, md) -> None:
    """The last tag must lie on the metadata device.  The kernel's own check for a separate
    metadata device (``calculate_device_limits``) leaves the reserved sectors out, so with
    --offset a metadata device that is short by up to that many sectors would pass it and
    fail only when the last tags are read."""
    if not geo.separate_metadata or not geo.provided_data_sectors:
        return
    last = geo.provided_data_sectors - geo.sectors_per_block
    end = geo.tag_offset(last) + geo.tag_size
    if end > md.nr_sectors << SECTOR_SHIFT:
        raise InputError(f"{md.name}: the tags end at byte {end}, past the end of the "
                         f"metadata device ({md.nr_sectors} sectors) with the superblock at "
                         f"sector {geo.start_sector}: truncated image or wrong --offset")

# -- shared options -------------------------------------------------------------------------

def alg_options(f):
    """The options that say how to read a device: algorithm, key, layout checks."""
    opts = [
        click.option("--integrity", "integrity_alg", default="crc32c", show_default=True,
                     metavar="ALG",
                     help="Tag algorithm: cryptsetup's name (crc32c, sha256, hmac-sha256) "
                          "or the kernel's (hmac(sha256))."),
        click.option("--integrity-key-file", metavar="FILE",
                     help="Key of a keyed algorithm (hmac-*), read from FILE."),
        click.option("--integrity-key-size", type=int, metavar="BYTES",
                     help="Bytes of the key file to use (default: the whole file)."),
        click.option("--data-device", metavar="DEV",
                     help="The data is on DEV; the device argument holds the superblock, "
                          "journal and tags."),
        offset_option,
        click.option("--tag-size", type=int, callback=positive, metavar="BYTES",
                     help="Check that the superblock has this tag size."),
        click.option("--sector-size", type=int, callback=positive, metavar="BYTES",
                     help="Check that the superblock has this block size."),
        click.option("--buffer-sectors", type=int, default=128, show_default=True,
                     callback=positive, metavar="SECTORS",
                     help="The table's buffer_sectors (matters only for the old padding)."),
        click.option("--allow-discards", is_flag=True,
                     help="Blocks whose tag is the discard filler (0xF6) read as they are."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def journal_crypt_options(f):
    """The journal's encryption: verify/export replay an encrypted journal with it,
    import writes one."""
    for o in reversed([
        click.option("--journal-crypt", metavar="ALG",
                     help="The journal's encryption (ctr-aes, chacha20, cbc-aes, xts-aes), "
                          "as given to format."),
        click.option("--journal-crypt-key-file", metavar="FILE",
                     help="Key of the journal's encryption, read from FILE."),
        click.option("--journal-crypt-key-size", type=int, metavar="BYTES"),
    ]):
        f = o(f)
    return f


def journal_integrity_options(f):
    """The journal MAC (``journal_mac``) DEV was formatted with."""
    for o in reversed([
        click.option("--journal-integrity", metavar="ALG",
                     help="The journal MAC DEV was formatted with (hmac-sha256, ...): "
                          "the journal's section MACs and the superblock MAC are checked."),
        click.option("--journal-integrity-key-file", metavar="FILE",
                     help="Key of the journal MAC, read from FILE."),
        click.option("--journal-integrity-key-size", type=int, metavar="BYTES"),
    ]):
        f = o(f)
    return f


def journal_keys(journal_crypt=None, journal_crypt_key_file=None, journal_crypt_key_size=None,
                 journal_integrity=None, journal_integrity_key_file=None,
                 journal_integrity_key_size=None, **_):
    """(JournalCipher or None, journal MAC algorithm or None, its key or None) from the
    options, checked before any device is touched."""
    jkey = read_key(journal_crypt_key_file, journal_crypt_key_size, "--journal-crypt-key")
    if (journal_crypt is None) != (jkey is None):
        raise InputError("--journal-crypt and --journal-crypt-key-file go together")
    cipher = None
    if journal_crypt is not None:
        try:
            cipher = JournalCipher(journal_crypt, jkey)
        except ValueError as e:
            raise InputError(f"--journal-crypt: {e}") from None
    jmac = algorithm_name(journal_integrity) if journal_integrity else None
    jmac_key = read_key(journal_integrity_key_file, journal_integrity_key_size,
                        "--journal-integrity-key")
    if jmac is None and jmac_key is not None:
        raise InputError("--journal-integrity-key-file needs --journal-integrity")
    if jmac is not None:
        try:
            algorithm(jmac).check_key(jmac_key)
        except ValueError as e:
            raise InputError(f"--journal-integrity: {e}") from None
    return cipher, jmac, jmac_key


def make_reader(data_dev, meta_dev, *, integrity_alg, integrity_key_file, integrity_key_size,
                tag_size, sector_size, buffer_sectors, allow_discards, offset=0,
                **journal_opts) -> IntegrityReader:
    """The verified reader the options describe, superblock at sector ``offset`` of the
    metadata device, journal replayed in memory (decrypted with --journal-crypt; its MACs
    checked with --journal-integrity)."""
    alg = algorithm_name(integrity_alg)
    key = read_key(integrity_key_file, integrity_key_size, "--integrity-key")
    cipher, jmac, jmac_key = journal_keys(**journal_opts)
    md = meta_dev or data_dev
    name = md.name
    superblock_at(md, offset)
    with bad_input():
        reader = IntegrityReader(data_dev, meta_dev, internal_hash=alg, key=key,
                                 tag_size=tag_size, block_size=sector_size,
                                 start_sector=offset, buffer_sectors=buffer_sectors,
                                 allow_discards=allow_discards, replay_journal=True,
                                 name=name, journal_crypt=cipher, journal_mac=jmac,
                                 journal_mac_key=jmac_key)
    check_fits(reader.geometry, md)
    if jmac is None and reader.superblock.has(SbFlags.HAVE_JOURNAL_MAC) \
            and reader.journal.status is JournalStatus.REPLAY_NEEDED:
        log.warning("%s: the journal is replayed without checking its journal MAC (give "
                    "--journal-integrity and its key to check it)", name)
    if reader.journal.status is JournalStatus.UNREADABLE:
        log.warning("%s: the journal does not read as a plain journal (%s); writes still "
                    "in it, if any, are not applied%s", name, reader.journal.message,
                    "" if cipher else " (encrypted? give --journal-crypt and its key)")
    return reader


@contextlib.contextmanager
def quiet_integrity_log() -> Iterator[None]:
    """The reader logs each failed request; these commands report every bad sector
    themselves, once, so its per-request lines are held back here."""
    logger = logging.getLogger("dmkit.integrity")
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(old)
