"""``dmkit integrity``: dm-integrity devices offline, with integritysetup's verbs and options.

- ``format`` writes what ``integritysetup format`` leaves on disk (superblock, empty
  journal, the tag of a zero block for every block), byte for byte;
- ``dump`` prints the superblock as ``integritysetup dump`` does;
- ``detect`` finds which tag algorithm the stored tags were made with;
- ``verify``, ``export`` and ``import`` (in :mod:`.integrity_io`) check every block, copy
  the verified data out, and write data in through dmkit's integrity target.

Every verb takes ``--offset SECTORS``, the table's ``reserved_sectors``: the superblock is
at that sector of DEV (the metadata device with ``--data-device``; the data device is
then used from sector 0, as the kernel does), and nothing before it is written.

Everything but ``format`` and ``import`` opens the devices read-only.  Exit status: 0
success, 1 a verification failure (mismatching blocks, nothing detected, an aborted
format), 2 bad input (usage, an unreadable key file, a device that is not dm-integrity or
does not fit its superblock, a tag or block size that contradicts it).  Keys come from
files and are never printed or logged.
"""

from __future__ import annotations

import errno as _errno
import logging
import os
import sys

import click

from ..block import SECTOR_SHIFT
from ..errors import DmkitError
from ..targets.integrity.detect import detect_algorithm
from ..targets.integrity.format import (
    FormatParams,
    existing_superblock,
    format_device,
    plan_format,
)
from ..targets.integrity.geometry import Geometry
from ..targets.integrity.layout import SbFlags, Superblock
from ..targets.integrity.tags import algorithm
from ._common import emit_json
from ._integrity_common import (
    InputError,
    VerificationFailed,
    algorithm_name,
    bad_input,
    check_fits,
    check_offset,
    cryptsetup_name,
    offset_option,
    open_devices,
    positive,
    read_key,
    superblock_at,
)
from .integrity_io import export_cmd, import_cmd, verify_cmd
from .progress import progress

__all__ = ["integrity", "cryptsetup_name", "dump_text"]

log = logging.getLogger("dmkit.cli")

#: where format draws its salt; tests replace it to make images deterministic
random_bytes = os.urandom


# -- the group ---------------------------------------------------------------------------

@click.group(short_help="dm-integrity devices, as integritysetup (offline).")
def integrity():
    """dm-integrity devices, as integritysetup: format, dump, verify, export, detect, import.

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
@click.option("--tag-size", type=int, callback=positive, metavar="BYTES",
              help="Tag bytes per block (default: the algorithm's digest size).")
@click.option("--sector-size", type=int, default=512, show_default=True, metavar="BYTES",
              help="Block size: 512, 1024, 2048 or 4096.")
@click.option("--interleave-sectors", type=int, callback=positive, metavar="SECTORS",
              help="Data sectors per tag area (default 32768).")
@click.option("--journal-size", type=int, callback=positive, metavar="BYTES",
              help="Journal size (default: the kernel's, 1/128 of the device, at most 64 MiB).")
@click.option("--buffer-sectors", type=int, default=128, show_default=True,
              callback=positive, metavar="SECTORS", help="The table's buffer_sectors.")
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
@offset_option
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
               integrity_bitmap_mode, integrity_no_journal, data_device, offset,
               integrity_legacy_padding, integrity_legacy_hmac, no_wipe, batch_mode):
    """Format DEV as dm-integrity, as `integritysetup format` does.

    Writes the superblock the kernel would write, an empty journal, and (unless
    --no-wipe) zeros with their tags over every block.  Asks before overwriting
    anything unless --batch-mode.  Defaults are integritysetup's: crc32c, 4-byte tags,
    512-byte blocks, fixed padding and fix_hmac.  With --offset N the superblock goes to
    sector N of DEV and the N sectors before it are not written; the provided size is what
    the kernel provides with reserved_sectors N.
    """
    if journal_integrity is None and journal_integrity_key_file is not None:
        raise InputError("--journal-integrity-key-file needs --journal-integrity")
    if journal_crypt is None and journal_crypt_key_file is not None:
        raise InputError("--journal-crypt-key-file needs --journal-crypt")
    alg = algorithm_name(integrity_alg)
    key = read_key(integrity_key_file, integrity_key_size, "--integrity-key")
    jmac = algorithm_name(journal_integrity) if journal_integrity else None
    jmac_key = read_key(journal_integrity_key_file, journal_integrity_key_size,
                         "--journal-integrity-key")
    jcrypt_key = read_key(journal_crypt_key_file, journal_crypt_key_size,
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
        journal_crypt=journal_crypt, journal_crypt_key=jcrypt_key, start_sector=offset)
    with open_devices(dev, data_device, write=True) as (data_dev, meta_dev):
        md = meta_dev or data_dev
        check_offset(md, offset)
        try:
            with bad_input():
                plan = plan_format(data_dev.nr_sectors,
                                   meta_dev.nr_sectors if meta_dev is not None else None,
                                   params=params, salt=random_bytes(16), device=md.name)
        except InputError as e:
            if not offset:
                raise
            raise InputError(f"{e} (--offset {offset} leaves {md.nr_sectors - offset} of its "
                             f"{md.nr_sectors} sectors)", errno=e.errno) from None
        check_fits(plan.geometry, md)
        if tag_size is not None and tag_size != algorithm(alg).digest_size:
            log.warning("requested tag size %d bytes differs from %s's %d-byte output",
                        tag_size, alg, algorithm(alg).digest_size)
        if not batch_mode:
            _confirm_format(dev, md, offset)
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


def _confirm_format(dev: str, md, offset: int = 0) -> None:
    """integritysetup's question; an existing superblock (at the offset) is named in it."""
    msg = f"This will overwrite data on {dev} irrevocably."
    if offset:
        msg += f"\nIts first {offset} sectors (--offset) are left as they are."
    old = existing_superblock(md, offset)
    if old is not None:
        where = f" at sector {offset}" if offset else ""
        msg += (f"\n{dev} holds a dm-integrity superblock{where} (version {old.version}, "
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
@offset_option
@click.option("--json", "as_json", is_flag=True,
              help="Print the fields as a JSON object (with \"offset\" when --offset is "
                   "given).")
def dump_cmd(dev: str, offset: int, as_json: bool):
    """Print the superblock of DEV (at sector --offset) as `integritysetup dump` does."""
    with open_devices(dev, None, write=False) as (d, _):
        sb = superblock_at(d, offset)
    if as_json:
        emit_json({"device": dev, **({"offset": offset} if offset else {}),
                   **_dump_fields(sb)})
    else:
        click.echo(dump_text(sb, dev), nl=False)

# -- detect ------------------------------------------------------------------------------

@integrity.command("detect")
@click.argument("dev", metavar="DEV")
@click.option("--integrity-key-file", metavar="FILE",
              help="Also try keyed algorithms (hmac-*) with this key.")
@click.option("--integrity-key-size", type=int, metavar="BYTES",
              help="Bytes of the key file to use (default: the whole file).")
@click.option("--data-device", metavar="DEV", help="The data device (separate metadata).")
@offset_option
@click.option("--buffer-sectors", type=int, default=128, show_default=True,
              callback=positive, metavar="SECTORS")
@click.option("--samples", type=int, default=64, show_default=True, callback=positive,
              help="Most blocks to test (written blocks first, then zero blocks).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def detect_cmd(dev: str, integrity_key_file, integrity_key_size, data_device, offset,
               buffer_sectors, samples, as_json):
    """Find the tag algorithm of DEV by testing candidates on a sample of its blocks.

    The superblock does not record the algorithm; this tries every one dmkit knows
    (keyed ones only with --integrity-key-file), salted as the superblock says
    (fix_hmac) and not, on blocks spread over the device, skipping blocks whose tag is
    the discard filler.  Exit status 0 with the best match, 1 when nothing matches.
    """
    key = read_key(integrity_key_file, integrity_key_size, "--integrity-key")
    with open_devices(dev, data_device, write=False) as (data_dev, meta_dev):
        md = meta_dev or data_dev
        sb = superblock_at(md, offset)
        with bad_input():
            geo = Geometry.from_superblock(
                sb, data_dev.nr_sectors, meta_dev.nr_sectors if meta_dev is not None else None,
                start_sector=offset, buffer_sectors=buffer_sectors, device=md.name)
        check_fits(geo, md)
        with bad_input():
            res = detect_algorithm(data_dev, meta_dev, key=key, start_sector=offset,
                                   buffer_sectors=buffer_sectors, max_samples=samples)
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


for _cmd in (verify_cmd, export_cmd, import_cmd):
    integrity.add_command(_cmd)
