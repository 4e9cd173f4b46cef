"""``dmkit integrity verify / export / import``: every block checked, the verified data
copied out, data written in through dmkit's integrity target.

verify and export open the devices read-only and replay a journal in memory (an encrypted
one with ``--journal-crypt``, its MACs checked with ``--journal-integrity``); the image is
never changed.  import builds the kernel's table line for DEV's superblock (its
``reserved_sectors`` is ``--offset``; with the journal's encryption and MAC when given)
and writes through :class:`IntegrityTarget`, then flushes and closes it as the kernel
closes a device (journal written home, bitmap clean).
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import stat
import sys
import time
from typing import BinaryIO, Iterator

import click

from ..block import SECTOR_SHIFT
from ..dm import MappedDevice
from ..dm.resolver import DeviceResolver
from ..errors import DmkitError, IntegrityError
from ..targets.integrity import IntegrityReader, IntegrityTarget, JournalStatus
from ..targets.integrity.layout import SbFlags
from ..targets.integrity.tags import algorithm
from ._common import STDIO, emit_json, replacing_file
from ._integrity_common import (
    InputError,
    VerificationFailed,
    alg_options,
    algorithm_name,
    bad_input,
    check_fits,
    journal_crypt_options,
    journal_integrity_options,
    journal_keys,
    make_reader,
    open_devices,
    quiet_integrity_log,
    read_key,
    same_file,
    superblock_at,
)
from .copy import _copy_in, _input_file  # the same import rules as `dmkit import`
from .progress import progress

__all__ = ["verify_cmd", "export_cmd", "import_cmd", "EXPORT_CHUNK_BYTES"]

#: bytes per request when exporting
EXPORT_CHUNK_BYTES = 4 << 20
_SALVAGE_PIECE_BYTES = 64 << 10


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


@click.command("verify")
@click.argument("dev", metavar="DEV")
@alg_options
@journal_crypt_options
@journal_integrity_options
@click.option("--json", "as_json", is_flag=True,
              help='Print {"checked_sectors": N, "mismatches": [sector, ...], ...}.')
def verify_cmd(dev: str, as_json: bool, data_device: str | None, **opts):
    """Check every provided block of DEV against its tag.

    A journal that still holds committed blocks is replayed in memory first (the
    device is not changed).  Exit status 0 when every block verifies, 1 when any
    does not (each listed by its first sector), 2 on bad input.
    """
    with open_devices(dev, data_device, write=False) as (data_dev, meta_dev), \
            quiet_integrity_log():
        reader = make_reader(data_dev, meta_dev, **opts)
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

@click.command("export")
@click.argument("dev", metavar="DEV")
@click.argument("out", metavar="OUT", type=click.Path(dir_okay=False, allow_dash=True))
@alg_options
@journal_crypt_options
@journal_integrity_options
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
    with open_devices(dev, data_device, write=False) as (data_dev, meta_dev), \
            quiet_integrity_log():
        reader = make_reader(data_dev, meta_dev, **opts)
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
        if any(same_file(st, leaf) for leaf in leaves):
            raise InputError(f"{path}: this is the device being exported; refusing to "
                             "overwrite it", errno=_errno.EBUSY)
        if not stat.S_ISREG(st.st_mode):
            with open(path, "wb") as f:
                yield f
            return
    with replacing_file(path, st, InputError) as f:
        yield f

# -- import ------------------------------------------------------------------------------

_MODES = {"journal": "J", "bitmap": "B", "direct": "D"}


@click.command("import")
@click.argument("dev", metavar="DEV")
@click.argument("input_path", metavar="IN", type=click.Path(dir_okay=False, allow_dash=True))
@alg_options
@journal_crypt_options
@journal_integrity_options
@click.option("--mode", type=click.Choice(sorted(_MODES)), default="journal",
              show_default=True,
              help="How the target writes: through the journal, with the dirty bitmap, or "
                   "directly.")
@click.option("--json", "as_json", is_flag=True, help='Print {"bytes": N, "seconds": S}.')
def import_cmd(dev: str, input_path: str, data_device: str | None, mode: str,
               as_json: bool, **opts):
    """Write IN (a path, or - for stdin) into the formatted device DEV from sector 0.

    The bytes go through dmkit's dm-integrity target (the kernel's table line for
    DEV's superblock, with --offset as its reserved_sectors, in the chosen mode), which
    writes data and tags as the kernel does; the device is flushed and closed cleanly
    (journal written home, bitmap clean).
    IN may be shorter than the device, not longer: that is refused before anything is
    written.  DEV must already be formatted.
    """
    alg = algorithm_name(opts["integrity_alg"])
    key = read_key(opts["integrity_key_file"], opts["integrity_key_size"], "--integrity-key")
    cipher, jmac, jmac_key = journal_keys(**opts)
    with bad_input():
        algorithm(alg).check_key(key)
    if cipher is not None and mode == "bitmap":
        raise InputError("--journal-crypt cannot be used with --mode bitmap (the journal "
                         "area holds the bitmap, which is not encrypted)")
    offset = opts["offset"]
    with open_devices(dev, data_device, write=False) as (data_dev, meta_dev):
        sb = superblock_at(meta_dev or data_dev, offset)
        if sb.has(SbFlags.HAVE_JOURNAL_MAC) != (jmac is not None):
            raise InputError(f"{dev}: the superblock {'has' if jmac is None else 'has no'} "
                             "a journal MAC: " + ("give --journal-integrity and its key"
                                                  if jmac is None
                                                  else "drop --journal-integrity"))
        # the geometry check (a truncated image), the superblock and journal MACs, and a
        # journal the target would have to replay, before any write
        with bad_input():
            reader = IntegrityReader(data_dev, meta_dev, internal_hash=alg, key=key,
                                     tag_size=opts["tag_size"], block_size=opts["sector_size"],
                                     start_sector=offset, buffer_sectors=opts["buffer_sectors"],
                                     replay_journal=True, journal_crypt=cipher,
                                     journal_mac=jmac, journal_mac_key=jmac_key)
        check_fits(reader.geometry, meta_dev or data_dev)
    args = [data_device or dev, str(offset), str(sb.integrity_tag_size), _MODES[mode]]
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
    if cipher is not None:
        optional.append(f"journal_crypt:{cipher.name}:{cipher.key_hex()}")
    if jmac is not None:
        optional.append(f"journal_mac:{jmac}" + (f":{jmac_key.hex()}" if jmac_key else ""))
    args += [str(len(optional)), *optional]
    resolver = DeviceResolver()
    t0 = time.monotonic()
    try:
        with bad_input():
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
