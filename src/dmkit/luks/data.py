"""The data path of a LUKS volume: the integrity and crypt targets stacked over the image.

What ``cryptsetup open`` builds in the kernel, built from dmkit's own targets with the
tables of :meth:`~dmkit.luks.Unlocked.dm_tables`: a ``crypt`` device on the data device, or,
for LUKS2 with ``--integrity``, the ``<name>_dif`` integrity device (no internal hash: the
tags are dm-crypt's AEAD tags and random IVs) with the crypt device on top.  The volume key
reaches the crypt table through a private keyring (``:<bytes>:logon:cryptsetup:<uuid>-d0``),
so no table text ever holds it.

cryptsetup's ``lib/integrity/integrity.c`` (``INTEGRITY_format``, ``INTEGRITY_data_sectors``)
and ``lib/setup.c`` (``_crypt_format_luks2``) for what a format does after the header:
zero the first 4 KiB of the data segment, then load a temporary ``integrity`` table of 8
sectors on it so the kernel writes the superblock and an empty journal with its own defaults
(journal 1/128 of the whole device, at most 64 MiB; 32768-sector interleave; fix_padding; no
fix_hmac: there is no integrity key).  ``src/cryptsetup.c`` (``_wipe_data_device``) then
writes zeros over the whole volume through dm-crypt on a dm-integrity without journal, so
every sector has a valid tag; dmkit does the same with its targets (:func:`wipe`).

A read-only open never writes to the image.  If the integrity journal holds committed
entries that were not written home (a crash), it is replayed into an in-memory overlay,
as the kernel's replay would do on disk.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
from typing import TYPE_CHECKING, Callable

from ..block import SECTOR_SHIFT, Bio, BlockDevice, BlockDeviceIO
from ..block.bio import OP_FLUSH, OP_READ, OP_WRITE
from ..block.parallel import default_workers, export_parallel, parallel_reads_safe, regular_file_fd
from ..dm import DeviceResolver, MappedDevice
from ..errors import (DmkitError, FormatError, IntegrityError, NotSupportedError, ReadOnlyError,
                      TableError)
from ..keys import Keyring
from .volume import DataSegment, IntegrityTableParams, Unlocked

if TYPE_CHECKING:
    from ..targets.integrity.layout import Superblock

# The integrity target's modules (and numpy, which they use) are imported only for volumes
# with integrity: opening a plain LUKS volume does not load them.

__all__ = ["LuksDevice", "open_unlocked", "integrity_params", "plan_integrity",
           "format_integrity", "wipe", "WIPE_CHUNK_BYTES"]

log = logging.getLogger("dmkit.luks")

#: bytes written per request while wiping (cryptsetup's DEFAULT_WIPE_BLOCK is 1 MiB)
WIPE_CHUNK_BYTES = 4 << 20
#: bytes per request of ``readall`` and ``export``
READ_CHUNK_BYTES = EXPORT_CHUNK_BYTES = 4 << 20
#: when a chunk fails authentication, it is read again in pieces of this size
SALVAGE_PIECE_BYTES = 64 << 10
_DATA = "luks_data"


# -- the dm-integrity superblock of a LUKS2 data segment ---------------------------------------

def plan_integrity(device_sectors: int, segment: DataSegment) -> Superblock:
    """The superblock ``INTEGRITY_format`` would make for ``segment`` on a data device of
    ``device_sectors`` sectors (nothing written).  Raises :class:`FormatError` when the
    device is too small."""
    from ..targets.integrity.geometry import format_superblock

    try:
        return format_superblock(device_sectors, tag_size=segment.integrity_tag_bytes,
                                 block_size=segment.sector_size,
                                 start_sector=segment.offset_sectors, internal_hash=False,
                                 fix_padding=True, fix_hmac=False)
    except ValueError as e:
        raise FormatError(f"Cannot format integrity for the data device: {e} "
                          f"({device_sectors} sectors, data offset "
                          f"{segment.offset_sectors})") from None


def _read_superblock(data_dev: BlockDevice, segment: DataSegment) -> Superblock:
    from ..targets.integrity.layout import SB_SECTORS, Superblock

    start = segment.offset_sectors
    if data_dev.nr_sectors < start + SB_SECTORS:
        raise FormatError(f"luks: {data_dev.name}: no room for the dm-integrity superblock at "
                          f"sector {start} ({data_dev.nr_sectors} sectors)")
    raw = bytes(data_dev.read(start, SB_SECTORS))
    if raw[:8] != b"integrt\0":
        raise FormatError(f"luks: {data_dev.name}: no dm-integrity superblock at sector {start} "
                          "(the LUKS2 header asks for integrity; was the volume formatted "
                          "without its data device?)")
    return Superblock.from_bytes(raw, device=data_dev.name)


def integrity_params(data_dev: BlockDevice, segment: DataSegment, *,
                     mode: str = "J") -> IntegrityTableParams:
    """What the ``<name>_dif`` table needs from the superblock at the data offset, checked
    against the LUKS2 segment (tag size, sector size)."""
    from ..targets.integrity.geometry import Geometry
    from ..targets.integrity.layout import SbFlags

    sb = _read_superblock(data_dev, segment)
    where = f"luks: {data_dev.name}: dm-integrity superblock at sector {segment.offset_sectors}"
    if sb.integrity_tag_size != segment.integrity_tag_bytes:
        raise FormatError(f"{where}: tag size {sb.integrity_tag_size}, the LUKS2 segment "
                          f"needs {segment.integrity_tag_bytes}")
    if sb.block_size != segment.sector_size:
        raise FormatError(f"{where}: block size {sb.block_size}, the LUKS2 segment has "
                          f"sector size {segment.sector_size}")
    if sb.has(SbFlags.HAVE_JOURNAL_MAC):
        raise NotSupportedError(f"{where}: a journal MAC; cryptsetup formats none and dmkit "
                                "does not know its key")
    geo = Geometry.from_superblock(sb, data_dev.nr_sectors,
                                   start_sector=segment.offset_sectors, device=data_dev.name)
    # the kernel shrinks the tag buffer to the tag area run and prints what it uses
    return IntegrityTableParams(provided_data_sectors=sb.provided_data_sectors,
                                journal_sectors=geo.journal_sectors,
                                buffer_sectors=1 << geo.log2_buffer_sectors,
                                fix_padding=sb.has(SbFlags.FIXED_PADDING), mode=mode)


def _format_table(segment: DataSegment, device: str) -> str:
    opts = []
    if segment.sector_size != 512:
        opts.append(f"block_size:{segment.sector_size}")
    opts.append("fix_padding")
    return (f"0 8 integrity {device} {segment.offset_sectors} {segment.integrity_tag_bytes} J "
            f"{len(opts)} {' '.join(opts)}")


def format_integrity(data_dev: BlockDevice, segment: DataSegment, *,
                     rng: Callable[[int], bytes] = os.urandom) -> Superblock:
    """``INTEGRITY_format``: zero the 4 KiB at the data offset and let the integrity target
    write the superblock and empty journal there, as the kernel does on a zeroed device.
    Returns the superblock written."""
    from ..targets.integrity.layout import SB_SECTORS

    if not segment.integrity:
        raise ValueError("this segment has no integrity")
    plan_integrity(data_dev.nr_sectors, segment)
    data_dev.write(segment.offset_sectors, bytes(SB_SECTORS << SECTOR_SHIFT))
    resolver = DeviceResolver({_DATA: data_dev})
    dev = MappedDevice.from_table(_format_table(segment, _DATA), name="temporary-cryptsetup",
                                  resolver=resolver)
    dev.close()
    data_dev.flush()
    return _read_superblock(data_dev, segment)


# -- an in-memory overlay for read-only opens that must replay a journal ----------------------

class _Overlay(BlockDevice):
    """Reads come from ``base`` unless the sector was written here; writes stay in memory.
    Used only under a read-only open whose integrity journal needs replaying."""

    def __init__(self, base: BlockDevice):
        self.base = base
        self.name = f"{base.name} (in-memory overlay)"
        self.nr_sectors = base.nr_sectors
        self.limits = base.limits
        self.read_only = False
        self._sectors: dict[int, bytes] = {}
        self._keys: list[int] = []

    def _submit(self, bio: Bio) -> None:
        if bio.op is OP_FLUSH:
            return
        lo, n = bio.sector, bio.nr_sectors
        if bio.op is OP_READ:
            self.base.submit(Bio(OP_READ, lo, n, bio.data, bio.flags))
            i = bisect.bisect_left(self._keys, lo)
            while i < len(self._keys) and self._keys[i] < lo + n:
                s = self._keys[i]
                off = (s - lo) << SECTOR_SHIFT
                bio.data[off:off + 512] = self._sectors[s]
                i += 1
            return
        if bio.op is not OP_WRITE:
            raise NotSupportedError(f"{self.name}: {bio.op.name.lower()} not supported")
        data = bytes(bio.data)
        for k in range(n):
            if lo + k not in self._sectors:
                bisect.insort(self._keys, lo + k)
            self._sectors[lo + k] = data[k << SECTOR_SHIFT:(k + 1) << SECTOR_SHIFT]


# -- the opened volume -----------------------------------------------------------------------

class LuksDevice(BlockDeviceIO):
    """An opened LUKS volume: a seekable file of its decrypted data (read-only unless
    opened writable), with the mapped device under it as :attr:`device` (a
    :class:`~dmkit.block.BlockDevice` of ``nr_sectors`` sectors).

    Closing it flushes what was written, closes the integrity device cleanly (journal
    written home), closes what the open opened, and wipes the volume key.
    """

    def __init__(self, top: MappedDevice, unlocked: Unlocked, *, dif: MappedDevice | None,
                 resolver: DeviceResolver, keyring: Keyring, writable: bool,
                 owned: list, name: str):
        super().__init__(top, writable=writable)
        self.device = top
        self.dif = dif
        self.unlocked = unlocked
        self._resolver = resolver
        self._keyring = keyring
        self._owned = owned
        self._name = name

    # what the volume is
    @property
    def name(self) -> str:
        return self._name

    @property
    def segment(self) -> DataSegment:
        return self.unlocked.segment

    @property
    def keyslot(self) -> int | None:
        return self.unlocked.keyslot

    @property
    def uuid(self) -> str:
        return self.unlocked.uuid

    @property
    def version(self) -> int:
        return self.unlocked.version

    @property
    def nr_sectors(self) -> int:
        return self.device.nr_sectors

    @property
    def size_bytes(self) -> int:
        return self.device.size_bytes

    @property
    def sector_size(self) -> int:
        """The encryption sector (a read or write of the device is a multiple of it)."""
        return self.device.logical_block_size

    def readall(self) -> bytes:
        """The rest of the volume, read in large requests (``read()`` without a size)."""
        out = bytearray(max(0, self.size_bytes - self.tell()))
        view = memoryview(out)
        done = 0
        while done < len(out):
            n = self.readinto(view[done:done + READ_CHUNK_BYTES])
            if not n:
                break
            done += n
        del view
        return bytes(out[:done])

    def export(self, f, *, zero_on_error: bool = False,
               progress: Callable[[int, int, int], object] | None = None,
               chunk_bytes: int = EXPORT_CHUNK_BYTES, workers: int | None = None) -> list[int]:
        """Write the whole decrypted volume to the binary file ``f``; returns the sectors
        that failed authentication (512-byte units, one per encryption sector).

        Without ``zero_on_error`` the first failure raises
        :class:`~dmkit.errors.IntegrityError` (``.sector`` names it) after writing the
        data before its chunk.  With it, a failing chunk is read again in 64 KiB pieces,
        and a failing piece sector by sector; failing sectors are written as zeros.
        ``progress(done_bytes, total_bytes, just_written)`` after each chunk.

        A volume without integrity whose data path allows it, exported to a regular file, is
        read on ``workers`` threads (default: one per CPU, see
        :mod:`dmkit.block.parallel`); ``workers=1`` reads on the calling thread only.
        """
        dev = self.device
        total, unit = dev.size_bytes, dev.logical_block_size
        step = max(chunk_bytes // unit, 1) * unit
        if (workers is None or workers > 1) and self.dif is None and total \
                and parallel_reads_safe(dev) and regular_file_fd(f) is not None:
            # no integrity: nothing can fail authentication; decrypt on every CPU
            export_parallel(dev, f, chunk_bytes=step, progress=progress,
                            workers=default_workers() if workers is None else workers)
            return []
        buf = memoryview(bytearray(min(step, total)))
        bad: list[int] = []
        done = 0
        while done < total:
            view = buf[:min(len(buf), total - done)]
            try:
                dev.readinto(done >> SECTOR_SHIFT, view)
            except IntegrityError as e:
                if not zero_on_error:
                    if getattr(e, "sector", None) is None:
                        found: list[int] = []
                        _salvage(dev, view, done, unit, found)
                        e.sector = found[0] if found else done >> SECTOR_SHIFT
                    raise
                _salvage(dev, view, done, unit, bad)
            f.write(view)
            done += len(view)
            if progress is not None:
                progress(done, total, len(view))
        return bad

    def tables(self) -> list[tuple[str, str]]:
        """``(name, table)`` of each mapped device, bottom first, as ``dmsetup table``
        shows them; the key is the keyring reference, never the key."""
        out = []
        if self.dif is not None:
            out.append((self.dif.name, self.dif.table().rstrip("\n")))
        out.append((self.device.name, self.device.table().rstrip("\n")))
        return out

    def __repr__(self) -> str:
        return (f"<LuksDevice {self._name}: LUKS{self.version} {self.uuid}, "
                f"{self.segment.cipher}{' + ' + self.segment.integrity if self.segment.integrity else ''}, "
                f"{self.nr_sectors} sectors, {'read-write' if self.writable() else 'read-only'}>")

    def close(self) -> None:
        if self.closed:
            return
        errors: list[BaseException] = []
        try:
            super().close()
        except BaseException as e:  # noqa: BLE001 - everything below must still be closed
            errors.append(e)
        for dev in (self.device, self.dif):
            if dev is None:
                continue
            try:
                dev.close()
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
        self._resolver.close()
        for dev in reversed(self._owned):
            try:
                dev.close()
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
        self._keyring.wipe()
        self.unlocked.wipe()
        if errors:
            raise errors[0]


def _salvage(dev: BlockDevice, view: memoryview, offset: int, unit: int,
             bad: list[int]) -> None:
    """Read a chunk that failed in 64 KiB pieces, and the failing pieces unit by unit,
    zero-filling (and listing) the units that fail."""
    piece = max(unit, SALVAGE_PIECE_BYTES // unit * unit)
    for p in range(0, len(view), piece):
        part = view[p:p + piece]
        try:
            dev.readinto((offset + p) >> SECTOR_SHIFT, part)
            continue
        except IntegrityError:
            pass
        for off in range(0, len(part), unit):
            try:
                dev.readinto((offset + p + off) >> SECTOR_SHIFT, part[off:off + unit])
            except IntegrityError:
                part[off:off + unit] = bytes(unit)
                bad.append((offset + p + off) >> SECTOR_SHIFT)


def _build(data_dev: BlockDevice, unlocked: Unlocked, *, writable: bool, name: str,
           integrity_mode: str, owned: list) -> LuksDevice:
    seg = unlocked.segment
    keyring = Keyring()
    keyring.add("logon", unlocked.keyring_description(), unlocked.volume_key.reveal())
    resolver = DeviceResolver({_DATA: data_dev}, keyring=keyring)
    dif = top = None
    try:
        if seg.integrity:
            params = integrity_params(data_dev, seg, mode=integrity_mode)
            dif_name = f"{name}_dif"
            tables = seg.dm_tables(unlocked.key_reference(), _DATA, data_dev.nr_sectors,
                                   integrity=params, dif_device=dif_name)
            dif = _load_dif(tables[0][1], dif_name, data_dev, resolver, writable, owned)
            resolver.register(dif_name, dif)
            crypt_table = tables[1][1]
        else:
            (_, crypt_table), = seg.dm_tables(unlocked.key_reference(), _DATA,
                                              data_dev.nr_sectors)
        top = MappedDevice.from_table(crypt_table, name=name, resolver=resolver,
                                      read_only=not writable, source=name)
        return LuksDevice(top, unlocked, dif=dif, resolver=resolver, keyring=keyring,
                          writable=writable, owned=owned, name=name)
    except BaseException:
        for d in (top, dif):
            if d is not None:
                with contextlib.suppress(DmkitError):
                    d.close()
        resolver.close()
        keyring.wipe()
        raise


def _load_dif(table: str, dif_name: str, data_dev: BlockDevice, resolver: DeviceResolver,
              writable: bool, owned: list) -> MappedDevice:
    """The integrity device.  Read-only, a journal that needs replaying (or a dirty
    state) is taken up through an in-memory overlay: the image is never written."""
    try:
        return MappedDevice.from_table(table, name=dif_name, resolver=resolver,
                                       read_only=not writable, source=dif_name)
    except TableError as first:
        if writable:
            raise
        log.debug("%s: read-only load refused (%s); replaying in memory", dif_name, first)
        overlay = _Overlay(data_dev)
        sub = DeviceResolver({_DATA: overlay})
        try:
            dev = MappedDevice.from_table(table, name=dif_name, resolver=sub, read_only=False,
                                          source=dif_name)
        except DmkitError:
            sub.close()
            raise first from None
        return dev


def open_unlocked(data_dev: BlockDevice, unlocked: Unlocked, *, writable: bool = False,
                  name: str = "luks", integrity_journal: bool = True,
                  owned: list | None = None) -> LuksDevice:
    """The data path of an unlocked volume on ``data_dev`` (which must be writable for a
    writable open).  ``integrity_journal=False`` loads dm-integrity in direct mode (D), as
    cryptsetup's ``--integrity-no-journal`` and its format wipe do.  ``owned`` devices are
    closed with the result; the result owns ``unlocked`` (its key is wiped on close)."""
    if writable and data_dev.read_only:
        raise ReadOnlyError(f"{data_dev.name}: the device is read-only; cannot open the "
                            "volume for writing")
    if name.strip() != name or not name or any(c.isspace() for c in name):
        raise ValueError(f"luks: device name {name!r} must be one word")
    return _build(data_dev, unlocked, writable=writable, name=name,
                  integrity_mode="J" if integrity_journal else "D", owned=list(owned or []))


def wipe(data_dev: BlockDevice, unlocked: Unlocked, *,
         progress: Callable[[int, int], object] | None = None,
         chunk_bytes: int = WIPE_CHUNK_BYTES) -> int:
    """Write zeros over the whole volume through the crypt and integrity targets (integrity
    in direct mode), so every sector carries a valid tag: cryptsetup's wipe after
    ``luksFormat --integrity``.  ``progress(done_bytes, total_bytes)`` after each request.
    Returns the bytes written.  ``unlocked`` stays usable (its key is not wiped here)."""
    copy = Unlocked(volume_key=type(unlocked.volume_key)(unlocked.volume_key),
                    keyslot=unlocked.keyslot, segment=unlocked.segment, uuid=unlocked.uuid,
                    version=unlocked.version, volume=unlocked.volume)
    vol = open_unlocked(data_dev, copy, writable=True, name="wipe", integrity_journal=False)
    try:
        dev = vol.device
        total = dev.size_bytes
        step = max(chunk_bytes // dev.logical_block_size, 1) * dev.logical_block_size
        zeros = memoryview(bytes(min(step, total)))
        done = 0
        while done < total:
            n = min(len(zeros), total - done)
            dev.write(done >> SECTOR_SHIFT, zeros[:n])
            done += n
            if progress is not None:
                progress(done, total)
        dev.flush()
        return total
    finally:
        vol.close()
