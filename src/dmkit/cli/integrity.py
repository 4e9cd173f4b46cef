"""``dmkit integrity``: dm-integrity devices offline, with integritysetup's verbs and options.

- ``format`` writes what ``integritysetup format`` leaves on disk (superblock, empty
  journal, the tag of a zero block for every block), byte for byte;
- ``dump`` prints the superblock as ``integritysetup dump`` does;
- ``verify`` checks every provided block against its tag (the journal replayed in memory);
- ``export`` copies the verified provided data out;
- ``detect`` finds which tag algorithm the stored tags were made with.

Everything but ``format`` opens the devices read-only.  Exit status: 0 success, 1 a
verification failure (mismatching blocks, nothing detected, an aborted format), 2 bad
input (usage, an unreadable key file, a device that is not dm-integrity or does not fit
its superblock, a tag or block size that contradicts it).  Keys come from files and are
never printed or logged.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import logging
import os
import stat
import sys
import tempfile
import time
from typing import BinaryIO, Iterator

import click

from ..block import SECTOR_SHIFT, Bio, BioOp, BlockDevice, FileDevice
from ..errors import DeviceError, DmkitError, FormatError, IntegrityError, InvalidBioError
from ..targets.integrity import IntegrityReader, JournalStatus, read_superblock
from ..targets.integrity.detect import detect_algorithm
from ..targets.integrity.format import (
    FormatParams,
    JournalCipher,
    decrypt_journal,
    existing_superblock,
    format_device,
    plan_format,
)
from ..targets.integrity.geometry import Geometry
from ..targets.integrity.layout import SbFlags, Superblock
from ..targets.integrity.tags import algorithm, kernel_name
from ._common import STDIO, emit_json
from .progress import progress

__all__ = ["integrity", "cryptsetup_name", "dump_text"]

log = logging.getLogger("dmkit.cli")

#: the most key bytes read from a key file (integritysetup's MAX_KEY_SIZE)
MAX_KEY_SIZE = 4096
#: bytes per request when exporting
EXPORT_CHUNK_BYTES = 4 << 20
_SALVAGE_PIECE_BYTES = 64 << 10

#: where format draws its salt; tests replace it to make images deterministic
random_bytes = os.urandom


class InputError(DmkitError):
    """Bad input to an integrity command: exit status 2, like a usage error."""

    default_errno = _errno.EINVAL
    exit_code = 2


class VerificationFailed(DmkitError):
    """Blocks failed verification (the message says which)."""

    default_errno = _errno.EILSEQ
    exit_code = 1


@contextlib.contextmanager
def _bad_input() -> Iterator[None]:
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


def _algorithm_name(name: str) -> str:
    if "(" in name and not name.endswith(")"):
        raise InputError(f"--integrity: malformed algorithm name {name!r}")
    try:
        return algorithm(name).name
    except ValueError as e:
        raise InputError(str(e)) from None


# -- keys --------------------------------------------------------------------------------

def _read_key(path: str | None, size: int | None, option: str) -> bytes | None:
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
def _open_devices(dev: str, data_device: str | None, *, write: bool
                  ) -> Iterator[tuple[FileDevice, FileDevice | None]]:
    """(data device, metadata device or None).  With ``--data-device``, DEV holds the
    superblock, journal and tags (integritysetup's convention)."""
    with contextlib.ExitStack() as stack:
        with _bad_input():
            first = stack.enter_context(FileDevice(dev, read_only=not write))
            if data_device is None:
                yield first, None
                return
            data = stack.enter_context(FileDevice(data_device, read_only=not write))
        if os.path.samefile(dev, data_device):
            raise InputError(f"{data_device}: the data device is DEV itself")
        yield data, first


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
        return True
    return bool(a.st_rdev and a.st_rdev == b.st_rdev)


def _positive(ctx, param, value):
    if value is not None and value <= 0:
        raise click.BadParameter("must be positive")
    return value


# -- shared options -------------------------------------------------------------------------

def _alg_options(f):
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
        click.option("--tag-size", type=int, callback=_positive, metavar="BYTES",
                     help="Check that the superblock has this tag size."),
        click.option("--sector-size", type=int, callback=_positive, metavar="BYTES",
                     help="Check that the superblock has this block size."),
        click.option("--buffer-sectors", type=int, default=128, show_default=True,
                     callback=_positive, metavar="SECTORS",
                     help="The table's buffer_sectors (matters only for the old padding)."),
        click.option("--allow-discards", is_flag=True,
                     help="Blocks whose tag is the discard filler (0xF6) read as they are."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _journal_crypt_options(f):
    """verify/export: the journal encryption, to replay an encrypted journal."""
    for o in reversed([
        click.option("--journal-crypt", metavar="ALG",
                     help="The journal's encryption (ctr-aes, chacha20, cbc-aes, xts-aes), "
                          "so that writes still in it can be replayed."),
        click.option("--journal-crypt-key-file", metavar="FILE"),
        click.option("--journal-crypt-key-size", type=int, metavar="BYTES"),
    ]):
        f = o(f)
    return f


class _PlainJournalView(BlockDevice):
    """A read-only view of ``dev`` whose journal area reads as its decrypted content (with
    the default commit ids), for the reader's replay; every other sector is ``dev``'s."""

    def __init__(self, dev: BlockDevice, first_sector: int, plain: bytes):
        self.dev = dev
        self.name = dev.name
        self.nr_sectors = dev.nr_sectors
        self.limits = dev.limits
        self.read_only = True
        self._lo = first_sector
        self._hi = first_sector + (len(plain) >> SECTOR_SHIFT)
        self._plain = plain

    def _submit(self, bio: Bio) -> None:
        if bio.op is BioOp.FLUSH:
            return
        if bio.op is not BioOp.READ:
            raise InvalidBioError(f"{self.name}: read-only view")
        self.dev.submit(bio)
        a, b = max(bio.sector, self._lo), min(bio.sector + bio.nr_sectors, self._hi)
        if a < b:
            bio.data[(a - bio.sector) << SECTOR_SHIFT:(b - bio.sector) << SECTOR_SHIFT] = \
                self._plain[(a - self._lo) << SECTOR_SHIFT:(b - self._lo) << SECTOR_SHIFT]


def _decrypted_journal_devices(data_dev, meta_dev, name, key, buffer_sectors):
    md = meta_dev or data_dev
    sb = read_superblock(md)
    geo = Geometry.from_superblock(sb, data_dev.nr_sectors,
                                   meta_dev.nr_sectors if meta_dev is not None else None,
                                   buffer_sectors=buffer_sectors, device=md.name)
    plain = decrypt_journal(md.read(geo.journal_start_sector, geo.journal_sectors), geo,
                            JournalCipher(name, key))
    view = _PlainJournalView(md, geo.journal_start_sector, plain)
    return (view, None) if meta_dev is None else (data_dev, view)


def _reader(data_dev, meta_dev, *, integrity_alg, integrity_key_file, integrity_key_size,
            tag_size, sector_size, buffer_sectors, allow_discards, journal_crypt=None,
            journal_crypt_key_file=None, journal_crypt_key_size=None, **_) -> IntegrityReader:
    alg = _algorithm_name(integrity_alg)
    key = _read_key(integrity_key_file, integrity_key_size, "--integrity-key")
    jkey = _read_key(journal_crypt_key_file, journal_crypt_key_size, "--journal-crypt-key")
    if (journal_crypt is None) != (jkey is None):
        raise InputError("--journal-crypt and --journal-crypt-key-file go together")
    name = (meta_dev or data_dev).name
    with _bad_input():
        if journal_crypt is not None:
            data_dev, meta_dev = _decrypted_journal_devices(data_dev, meta_dev, journal_crypt,
                                                            jkey, buffer_sectors)
        reader = IntegrityReader(data_dev, meta_dev, internal_hash=alg, key=key,
                                 tag_size=tag_size, block_size=sector_size,
                                 buffer_sectors=buffer_sectors, allow_discards=allow_discards,
                                 replay_journal=True, name=name)
    if reader.journal.status is JournalStatus.UNREADABLE:
        log.warning("%s: the journal does not read as a plain journal (%s); writes still "
                    "in it, if any, are not applied%s", name, reader.journal.message,
                    "" if journal_crypt else " (encrypted? give --journal-crypt and its key)")
    return reader


@contextlib.contextmanager
def _quiet_integrity_log() -> Iterator[None]:
    """The reader logs each failed request; these commands report every bad sector
    themselves, once, so its per-request lines are held back here."""
    logger = logging.getLogger("dmkit.integrity")
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(old)


# -- the group ---------------------------------------------------------------------------

@click.group(short_help="dm-integrity devices, as integritysetup (offline).")
def integrity():
    """dm-integrity devices, as integritysetup: format, dump, verify, export, detect.

    DEV is an image file or a block device; with --data-device it is the metadata device
    (superblock, journal and tags) and the data lives on the data device.  Commands other
    than format open devices read-only and never change them (a journal that needs
    replaying is replayed in memory).  Exit status: 0 success, 1 verification failure,
    2 bad input.
    """


# -- format ------------------------------------------------------------------------------

@integrity.command("format")
@click.argument("dev", metavar="DEV")
@click.option("--integrity", "integrity_alg", default="crc32c", show_default=True,
              metavar="ALG", help="Tag algorithm (crc32c, sha256, hmac-sha256, hmac(sha256)...).")
@click.option("--integrity-key-file", metavar="FILE", help="Key of a keyed algorithm.")
@click.option("--integrity-key-size", type=int, metavar="BYTES",
              help="Bytes of the key file to use (default: the whole file).")
@click.option("--tag-size", type=int, callback=_positive, metavar="BYTES",
              help="Tag bytes per block (default: the algorithm's digest size).")
@click.option("--sector-size", type=int, default=512, show_default=True, metavar="BYTES",
              help="Block size: 512, 1024, 2048 or 4096.")
@click.option("--interleave-sectors", type=int, callback=_positive, metavar="SECTORS",
              help="Data sectors per tag area (default 32768).")
@click.option("--journal-size", type=int, callback=_positive, metavar="BYTES",
              help="Journal size (default: the kernel's, 1/128 of the device, at most 64 MiB).")
@click.option("--buffer-sectors", type=int, default=128, show_default=True,
              callback=_positive, metavar="SECTORS", help="The table's buffer_sectors.")
@click.option("--journal-integrity", metavar="ALG",
              help="Journal MAC (hmac-sha256...): sets have_journal_mac.")
@click.option("--journal-integrity-key-file", metavar="FILE")
@click.option("--journal-integrity-key-size", type=int, metavar="BYTES")
@click.option("--journal-crypt", metavar="ALG",
              help="Journal encryption: ctr-aes, chacha20, cbc-aes or xts-aes.")
@click.option("--journal-crypt-key-file", metavar="FILE")
@click.option("--journal-crypt-key-size", type=int, metavar="BYTES")
@click.option("--integrity-bitmap-mode", "-B", is_flag=True,
              help="Accepted for integritysetup compatibility: the on-disk format is the "
                   "same (the mode is chosen when the device is opened).")
@click.option("--integrity-no-journal", "-D", is_flag=True,
              help="Accepted for integritysetup compatibility (see --integrity-bitmap-mode).")
@click.option("--data-device", metavar="DEV",
              help="Put the data on DEV; the device argument gets superblock, journal and tags.")
@click.option("--integrity-legacy-padding", is_flag=True,
              help="The old 128 KiB tag-area padding (no fix_padding).")
@click.option("--integrity-legacy-hmac", is_flag=True,
              help="No fix_hmac: no salt in tags and journal MACs (superblock version < 5).")
@click.option("--no-wipe", is_flag=True,
              help="Do not initialise data and tags (every block fails verification until "
                   "written).")
@click.option("--batch-mode", "-q", is_flag=True, help="Do not ask for confirmation.")
def format_cmd(dev, integrity_alg, integrity_key_file, integrity_key_size, tag_size,
               sector_size, interleave_sectors, journal_size, buffer_sectors,
               journal_integrity, journal_integrity_key_file, journal_integrity_key_size,
               journal_crypt, journal_crypt_key_file, journal_crypt_key_size,
               integrity_bitmap_mode, integrity_no_journal, data_device,
               integrity_legacy_padding, integrity_legacy_hmac, no_wipe, batch_mode):
    """Format DEV as dm-integrity, as `integritysetup format` does.

    Writes the superblock the kernel would write, an empty journal, and (unless
    --no-wipe) zeros with their tags over every block.  Asks before overwriting
    anything unless --batch-mode.  Defaults are integritysetup's: crc32c, 4-byte tags,
    512-byte blocks, fixed padding and fix_hmac.
    """
    if journal_integrity is None and journal_integrity_key_file is not None:
        raise InputError("--journal-integrity-key-file needs --journal-integrity")
    if journal_crypt is None and journal_crypt_key_file is not None:
        raise InputError("--journal-crypt-key-file needs --journal-crypt")
    alg = _algorithm_name(integrity_alg)
    key = _read_key(integrity_key_file, integrity_key_size, "--integrity-key")
    jmac = _algorithm_name(journal_integrity) if journal_integrity else None
    jmac_key = _read_key(journal_integrity_key_file, journal_integrity_key_size,
                         "--journal-integrity-key")
    jcrypt_key = _read_key(journal_crypt_key_file, journal_crypt_key_size,
                           "--journal-crypt-key")
    if journal_crypt is not None and jcrypt_key is None:
        raise InputError("--journal-crypt needs --journal-crypt-key-file")
    if sector_size not in (512, 1024, 2048, 4096):
        raise InputError(f"--sector-size {sector_size} is not 512, 1024, 2048 or 4096")
    if journal_size is not None and journal_size < 512:
        raise InputError(f"--journal-size {journal_size} is less than one sector")
    params = FormatParams(
        internal_hash=alg, key=key, tag_size=tag_size, block_size=sector_size,
        interleave_sectors=interleave_sectors,
        journal_sectors=journal_size >> SECTOR_SHIFT if journal_size else None,
        buffer_sectors=buffer_sectors, fix_padding=not integrity_legacy_padding,
        fix_hmac=not integrity_legacy_hmac, journal_mac=jmac, journal_mac_key=jmac_key,
        journal_crypt=journal_crypt, journal_crypt_key=jcrypt_key)
    with _open_devices(dev, data_device, write=True) as (data_dev, meta_dev):
        md = meta_dev or data_dev
        with _bad_input():
            plan = plan_format(data_dev.nr_sectors,
                               meta_dev.nr_sectors if meta_dev is not None else None,
                               params=params, salt=random_bytes(16), device=md.name)
        if tag_size is not None and tag_size != algorithm(alg).digest_size:
            log.warning("requested tag size %d bytes differs from %s's %d-byte output",
                        tag_size, alg, algorithm(alg).digest_size)
        if not batch_mode:
            _confirm_format(dev, md)
            click.echo("Wiping device to initialize integrity checksum." if not no_wipe
                       else "Not wiping: every block fails verification until written.",
                       err=True)
        total = plan.provided_data_sectors
        bar = progress(total << SECTOR_SHIFT, "wipe") if not no_wipe else None
        last = [0]

        def tick(done: int, _total: int) -> None:
            bar.update((done - last[0]) << SECTOR_SHIFT)
            last[0] = done
        try:
            format_device(data_dev, meta_dev, params=params, wipe=not no_wipe, plan=plan,
                          progress=tick if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
    if not batch_mode:
        click.echo(f"Formatted with tag size {plan.superblock.integrity_tag_size}, "
                   f"internal integrity {cryptsetup_name(alg)}.")


def _confirm_format(dev: str, md) -> None:
    """integritysetup's question; an existing superblock is named in it."""
    msg = f"This will overwrite data on {dev} irrevocably."
    old = existing_superblock(md)
    if old is not None:
        msg += (f"\n{dev} holds a dm-integrity superblock (version {old.version}, "
                f"{old.provided_data_sectors} provided sectors, tag size "
                f"{old.integrity_tag_size}); its data and tags will be lost.")
    click.echo(f"\nWARNING!\n========\n{msg}\n\nAre you sure? (Type 'yes' in capital "
               "letters): ", nl=False, err=True)
    answer = sys.stdin.readline()
    if answer.strip() != "YES":
        click.echo("", err=True)
        raise DmkitError("operation aborted; nothing was written", errno=_errno.ECANCELED)


# -- dump --------------------------------------------------------------------------------

_FLAG_NAMES = ((SbFlags.HAVE_JOURNAL_MAC, "have_journal_mac"),
               (SbFlags.RECALCULATING, "recalculating"),
               (SbFlags.DIRTY_BITMAP, "dirty_bitmap"),
               (SbFlags.FIXED_PADDING, "fix_padding"),
               (SbFlags.FIXED_HMAC, "fix_hmac"))


def _dump_fields(sb: Superblock) -> dict:
    fields = {
        "superblock_version": sb.version,
        "log2_interleave_sectors": sb.log2_interleave_sectors,
        "integrity_tag_size": sb.integrity_tag_size,
        "journal_sections": sb.journal_sections,
        "provided_data_sectors": sb.provided_data_sectors,
        "sector_size": sb.block_size,
    }
    if sb.version >= 2 and sb.has(SbFlags.RECALCULATING):
        fields["recalc_sector"] = sb.recalc_sector
    fields["log2_blocks_per_bitmap"] = sb.log2_blocks_per_bitmap_bit
    fields["flags"] = [name for flag, name in _FLAG_NAMES if sb.has(flag)]
    return fields


def dump_text(sb: Superblock, device: str) -> str:
    """The superblock as ``integritysetup dump DEVICE`` prints it (cryptsetup 2.6)."""
    f = _dump_fields(sb)
    lines = [f"Info for integrity device {device}."]
    lines += [f"{k} {v}" for k, v in f.items() if k != "flags"]
    lines.append("flags " + "".join(name + " " for name in f["flags"]))
    return "\n".join(lines) + "\n"


@integrity.command("dump")
@click.argument("dev", metavar="DEV")
@click.option("--json", "as_json", is_flag=True, help="Print the fields as a JSON object.")
def dump_cmd(dev: str, as_json: bool):
    """Print the superblock of DEV as `integritysetup dump` does."""
    with _open_devices(dev, None, write=False) as (d, _), _bad_input():
        sb = read_superblock(d)
    if as_json:
        emit_json({"device": dev, **_dump_fields(sb)})
    else:
        click.echo(dump_text(sb, dev), nl=False)


# -- verify ------------------------------------------------------------------------------

def _unverified(reader: IntegrityReader) -> list[dict]:
    """Ranges whose tags the kernel itself would not trust yet (and scrub skips): a dirty
    bitmap (bitmap mode, not closed cleanly) and a recalculation in progress."""
    out = []
    if reader.journal.status is JournalStatus.DIRTY_BITMAP:
        out += [{"start_sector": s, "sectors": n,
                 "reason": "dirty bitmap region (bitmap mode, not closed cleanly)"}
                for s, n in reader.journal.dirty_ranges]
    sb = reader.superblock
    if sb.has(SbFlags.RECALCULATING) and sb.recalc_sector < sb.provided_data_sectors:
        out.append({"start_sector": sb.recalc_sector,
                    "sectors": sb.provided_data_sectors - sb.recalc_sector,
                    "reason": f"tags being recalculated (recalc_sector {sb.recalc_sector})"})
    return out


def _covered(ranges: list[dict]) -> int:
    """Sectors in the union of the ranges."""
    total, end = 0, 0
    for r in sorted(ranges, key=lambda r: r["start_sector"]):
        a, b = r["start_sector"], r["start_sector"] + r["sectors"]
        if b > end:
            total += b - max(a, end)
            end = b
    return total


@integrity.command("verify")
@click.argument("dev", metavar="DEV")
@_alg_options
@_journal_crypt_options
@click.option("--json", "as_json", is_flag=True,
              help='Print {"checked_sectors": N, "mismatches": [sector, ...], ...}.')
def verify_cmd(dev: str, as_json: bool, data_device: str | None, **opts):
    """Check every provided block of DEV against its tag.

    A journal that still holds committed blocks is replayed in memory first (the
    device is not changed).  Exit status 0 when every block verifies, 1 when any
    does not (each listed by its first sector), 2 on bad input.
    """
    with _open_devices(dev, data_device, write=False) as (data_dev, meta_dev), \
            _quiet_integrity_log():
        reader = _reader(data_dev, meta_dev, **opts)
        total = reader.nr_sectors
        bar = progress(total << SECTOR_SHIFT, "verify")
        last = [0]

        def tick(done: int, _total: int) -> None:
            bar.update((done - last[0]) << SECTOR_SHIFT)
            last[0] = done
        t0 = time.monotonic()
        try:
            bad = reader.scrub(progress=tick)
        finally:
            bar.close()
        seconds = time.monotonic() - t0
        unverified = _unverified(reader)
        skipped = _covered(unverified)
        replayed = len(reader.replayed_sectors)
    result = {
        "device": dev,
        "algorithm": reader.tag_fn.algorithm.name,
        "provided_sectors": total,
        "checked_sectors": total - skipped,
        "mismatches": bad,
        "unverified": unverified,
        "journal_replayed_blocks": replayed,
        "journal": reader.journal.status.value,
        "seconds": round(seconds, 6),
    }
    if as_json:
        emit_json(result)
    else:
        click.echo(f"{dev}: {result['checked_sectors']} of {total} sectors checked, "
                   f"{len(bad)} block(s) failed ({result['algorithm']})"
                   + (f", {replayed} block(s) from the journal" if replayed else ""))
        for s in bad[:20]:
            click.echo(f"mismatch at sector {s}")
        if len(bad) > 20:
            click.echo(f"... and {len(bad) - 20} more (--json lists all)")
        for u in unverified:
            click.echo(f"not verified: sectors {u['start_sector']}+{u['sectors']}: "
                       f"{u['reason']}")
    if bad:
        hint = ""
        if len(bad) * reader.geometry.sectors_per_block >= total - skipped:
            hint = " (every block: wrong --integrity algorithm or key?)"
        raise VerificationFailed(f"{dev}: {len(bad)} block(s) failed verification, the "
                                 f"first at sector {bad[0]}{hint}")
    if unverified:
        raise VerificationFailed(f"{dev}: {skipped} sector(s) could not be verified: "
                                 f"{unverified[0]['reason']}")


# -- export ------------------------------------------------------------------------------

@integrity.command("export")
@click.argument("dev", metavar="DEV")
@click.argument("out", metavar="OUT", type=click.Path(dir_okay=False, allow_dash=True))
@_alg_options
@_journal_crypt_options
@click.option("--zero-on-error", is_flag=True,
              help="Write zeros for blocks that fail verification (listed on stderr) "
                   "instead of failing.")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"bytes": N, "bad_sectors": [...], ...} (on stderr when OUT is -).')
def export_cmd(dev: str, out: str, zero_on_error: bool, as_json: bool,
               data_device: str | None, **opts):
    """Copy the verified provided data of DEV into OUT (a path, or - for stdout).

    The journal is replayed in memory first; DEV is not changed.  A block that fails
    verification stops the export with its sector named (an existing OUT is left as it
    was), unless --zero-on-error.
    """
    t0 = time.monotonic()
    with _open_devices(dev, data_device, write=False) as (data_dev, meta_dev), \
            _quiet_integrity_log():
        reader = _reader(data_dev, meta_dev, **opts)
        leaves = [os.fstat(d.fileno()) for d in (data_dev, meta_dev) if d is not None]
        if out == STDIO:
            stream = sys.stdout.buffer
            if stream.isatty():
                raise click.UsageError("refusing to write binary data to a terminal: "
                                       "redirect stdout or give OUT a path")
            bad = _copy_verified(reader, stream, zero_on_error)
            stream.flush()
        else:
            with _output_file(out, leaves) as f:
                bad = _copy_verified(reader, f, zero_on_error)
        replayed = len(reader.replayed_sectors)
        nbytes = reader.size_bytes
    seconds = time.monotonic() - t0
    if bad:
        shown = ", ".join(map(str, bad[:50])) + (f", ... ({len(bad)} in all)"
                                                 if len(bad) > 50 else "")
        click.echo(f"dmkit: {dev}: zero-filled {len(bad)} block(s) that failed "
                   f"verification, at sectors: {shown}", err=True)
    if as_json:
        emit_json({"bytes": nbytes, "seconds": round(seconds, 6), "bad_sectors": bad,
                   "journal_replayed_blocks": replayed}, err=out == STDIO)


def _copy_verified(reader: IntegrityReader, f: BinaryIO, zero_on_error: bool) -> list[int]:
    total = reader.size_bytes
    bs = reader.geometry.block_size
    buf = memoryview(bytearray(min(EXPORT_CHUNK_BYTES, total)))
    bad: list[int] = []
    bar = progress(total, "export")
    try:
        done = 0
        while done < total:
            n = min(len(buf), total - done)
            view = buf[:n]
            try:
                reader.readinto(done >> SECTOR_SHIFT, view)
            except IntegrityError:
                if not zero_on_error:
                    raise
                _salvage(reader, view, done, bs, bad)
            f.write(view)
            done += n
            bar.update(n)
    finally:
        bar.close()
    return bad


def _salvage(reader: IntegrityReader, view: memoryview, offset: int, bs: int,
             bad: list[int]) -> None:
    """Read a chunk that failed in pieces of 64 KiB, and the pieces that fail block by
    block, zero-filling (and listing) the blocks that do not verify."""
    piece = max(bs, _SALVAGE_PIECE_BYTES // bs * bs)
    for p in range(0, len(view), piece):
        part = view[p:p + piece]
        try:
            reader.readinto((offset + p) >> SECTOR_SHIFT, part)
            continue
        except IntegrityError:
            pass
        for off in range(0, len(part), bs):
            try:
                reader.readinto((offset + p + off) >> SECTOR_SHIFT, part[off:off + bs])
            except IntegrityError:
                part[off:off + bs] = bytes(bs)
                bad.append((offset + p + off) >> SECTOR_SHIFT)


@contextlib.contextmanager
def _output_file(path: str, leaves: list[os.stat_result]) -> Iterator[BinaryIO]:
    """OUT written beside itself and renamed into place on success (a regular file), or
    in place (a block device, /dev/null).  Refuses to overwrite the devices read."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if any(_same_file(st, leaf) for leaf in leaves):
            raise InputError(f"{path}: this is the device being exported; refusing to "
                             "overwrite it", errno=_errno.EBUSY)
        if not stat.S_ISREG(st.st_mode):
            with open(path, "wb") as f:
                yield f
            return
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.",
                                   suffix=".dmkit-tmp")
    except OSError as e:
        raise InputError(f"{path}: cannot create: {e.strerror}", errno=e.errno) from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        if st is not None:
            mode = stat.S_IMODE(st.st_mode)
        else:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- detect ------------------------------------------------------------------------------

@integrity.command("detect")
@click.argument("dev", metavar="DEV")
@click.option("--integrity-key-file", metavar="FILE",
              help="Also try keyed algorithms (hmac-*) with this key.")
@click.option("--integrity-key-size", type=int, metavar="BYTES",
              help="Bytes of the key file to use (default: the whole file).")
@click.option("--data-device", metavar="DEV", help="The data device (separate metadata).")
@click.option("--buffer-sectors", type=int, default=128, show_default=True,
              callback=_positive, metavar="SECTORS")
@click.option("--samples", type=int, default=64, show_default=True, callback=_positive,
              help="Most blocks to test (written blocks first, then zero blocks).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def detect_cmd(dev: str, integrity_key_file, integrity_key_size, data_device,
               buffer_sectors, samples, as_json):
    """Find the tag algorithm of DEV by testing candidates on a sample of its blocks.

    The superblock does not record the algorithm; this tries every one dmkit knows
    (keyed ones only with --integrity-key-file), salted as the superblock says
    (fix_hmac) and not, on blocks spread over the device, skipping blocks whose tag is
    the discard filler.  Exit status 0 with the best match, 1 when nothing matches.
    """
    key = _read_key(integrity_key_file, integrity_key_size, "--integrity-key")
    with _open_devices(dev, data_device, write=False) as (data_dev, meta_dev), _bad_input():
        res = detect_algorithm(data_dev, meta_dev, key=key, buffer_sectors=buffer_sectors,
                               max_samples=samples)
    best = res.best
    if as_json:
        emit_json(res.as_dict(dev))
    elif best is not None:
        kname = "" if cryptsetup_name(best.algorithm) == best.algorithm \
            else f" = {best.algorithm}"
        traits = (["keyed"] if best.keyed else []) \
            + (["fix_hmac salt"] if best.salted else ["no salt"]) + [f"tag size {res.tag_size}"]
        click.echo(f"{dev}: {cryptsetup_name(best.algorithm)}{kname} ({', '.join(traits)}): "
                   f"{best.matched} of {res.sampled} sampled blocks match "
                   f"({res.data_blocks} written, {res.zero_blocks} zero)")
        if res.ambiguous:
            other = res.candidates[1]
            click.echo(f"ambiguous: {cryptsetup_name(other.algorithm)} matches as many "
                       "(tags too short to tell apart)")
    if best is None:
        why = ("no block to test (every tag is blank or the discard filler)"
               if not res.sampled else
               f"no algorithm matches the tags of the {res.sampled} sampled blocks"
               + ("" if key is not None else " (keyed algorithms need "
                  "--integrity-key-file)"))
        raise VerificationFailed(f"{dev}: {why}")


# -- import ------------------------------------------------------------------------------

_MODES = {"journal": "J", "bitmap": "B", "direct": "D"}


@integrity.command("import")
@click.argument("dev", metavar="DEV")
@click.argument("input_path", metavar="IN", type=click.Path(dir_okay=False, allow_dash=True))
@_alg_options
@click.option("--journal-integrity", metavar="ALG",
              help="The journal MAC DEV was formatted with (needed when it has one).")
@click.option("--journal-integrity-key-file", metavar="FILE")
@click.option("--journal-integrity-key-size", type=int, metavar="BYTES")
@click.option("--mode", type=click.Choice(sorted(_MODES)), default="journal",
              show_default=True,
              help="How the target writes: through the journal, with the dirty bitmap, or "
                   "directly.")
@click.option("--json", "as_json", is_flag=True, help='Print {"bytes": N, "seconds": S}.')
def import_cmd(dev: str, input_path: str, data_device: str | None, mode: str,
               journal_integrity, journal_integrity_key_file, journal_integrity_key_size,
               as_json: bool, **opts):
    """Write IN (a path, or - for stdin) into the formatted device DEV from sector 0.

    The bytes go through dmkit's dm-integrity target (the kernel's table line for
    DEV's superblock, in the chosen mode), which writes data and tags as the kernel
    does; the device is flushed and closed cleanly (journal written home, bitmap clean).
    IN may be shorter than the device, not longer: that is refused before anything is
    written.  DEV must already be formatted.
    """
    from ..dm import MappedDevice
    from ..dm.resolver import DeviceResolver
    from ..targets.integrity import IntegrityTarget
    from .copy import _copy_in, _input_file

    alg = _algorithm_name(opts["integrity_alg"])
    key = _read_key(opts["integrity_key_file"], opts["integrity_key_size"], "--integrity-key")
    jmac = _algorithm_name(journal_integrity) if journal_integrity else None
    jmac_key = _read_key(journal_integrity_key_file, journal_integrity_key_size,
                         "--journal-integrity-key")
    with _bad_input():
        algorithm(alg).check_key(key)
        if jmac is not None:
            algorithm(jmac).check_key(jmac_key)
    with _open_devices(dev, data_device, write=False) as (data_dev, meta_dev), _bad_input():
        sb = read_superblock(meta_dev or data_dev)
        # the geometry check (a truncated image) before any write
        IntegrityReader(data_dev, meta_dev, internal_hash=alg, key=key,
                        tag_size=opts["tag_size"], block_size=opts["sector_size"],
                        buffer_sectors=opts["buffer_sectors"], replay_journal=True)
    if sb.has(SbFlags.HAVE_JOURNAL_MAC) != (jmac is not None):
        raise InputError(f"{dev}: the superblock {'has' if jmac is None else 'has no'} a "
                         "journal MAC: " + ("give --journal-integrity and its key"
                                            if jmac is None else "drop --journal-integrity"))
    args = [data_device or dev, "0", str(sb.integrity_tag_size), _MODES[mode]]
    optional = [f"buffer_sectors:{opts['buffer_sectors']}"]
    if data_device is not None:
        optional.append(f"meta_device:{dev}")
    if sb.block_size != 512:
        optional.append(f"block_size:{sb.block_size}")
    if opts["allow_discards"]:
        optional.append("allow_discards")
    if sb.has(SbFlags.FIXED_PADDING):
        optional.append("fix_padding")
    if sb.has(SbFlags.FIXED_HMAC):
        optional.append("fix_hmac")
    optional.append(f"internal_hash:{alg}" + (f":{key.hex()}" if key else ""))
    if jmac is not None:
        optional.append(f"journal_mac:{jmac}" + (f":{jmac_key.hex()}" if jmac_key else ""))
    args += [str(len(optional)), *optional]
    resolver = DeviceResolver()
    t0 = time.monotonic()
    try:
        with _bad_input():
            target = IntegrityTarget(resolver, 0, sb.provided_data_sectors, args)
    except InputError:
        resolver.close()
        raise
    finally:
        args.clear()   # the hex keys
    mapped = MappedDevice(f"integrity({dev})", [target], resolver=resolver,
                          owns_resolver=True)
    try:
        try:
            ctx = _input_file(input_path, mapped)
            f, size = ctx.__enter__()
        except DmkitError as e:
            if e.errno in (_errno.ENOSPC, _errno.EBUSY):   # too big, or IN is DEV
                raise InputError(str(e), errno=e.errno) from None
            raise
        try:
            _copy_in(mapped, f, size, "<stdin>" if input_path == STDIO else input_path)
            mapped.flush()
        finally:
            ctx.__exit__(None, None, None)
    finally:
        mapped.close()
    seconds = time.monotonic() - t0
    if as_json:
        emit_json({"bytes": size, "seconds": round(seconds, 6)})
