"""Where dm-integrity keeps things: journal, tag areas, data areas, and the provided size.

This is the arithmetic of ``drivers/md/dm-integrity.c`` (Linux 6.1, v1.10.0):
``calculate_journal_section_size``, ``calculate_device_limits``,
``get_provided_data_sectors``, ``initialize_superblock``, ``get_area_and_offset``,
``get_metadata_sector_and_offset`` and ``get_data_sector``, restated in Python.

Layout of the metadata device (the data device itself when there is no ``meta_device``),
from the target's ``start`` sector (the table's reserved sectors)::

    start                 superblock, SB_SECTORS (8) sectors
    start + 8             journal: journal_sections x journal_section_sectors
    start + initial       tags ...

Interleaved (no meta_device): after the journal come areas of ``metadata_run`` sectors of
tags followed by ``2**log2_interleave_sectors`` data sectors.  ``metadata_run`` is the
area's tag bytes rounded up to 4 KiB with ``SB_FLAG_FIXED_PADDING`` and to 128 KiB without
(the old, "excessive" padding).  Tags are packed back to back, ``tag_size`` bytes per
block, so a tag can straddle a sector boundary.

Separate metadata device: the tags of all blocks follow the journal back to back, and
data sector ``s`` is sector ``s`` of the data device (``start`` applies to the metadata
device only).

One quirk is kept on purpose: the kernel addresses tags in buffers of
``2**log2_buffer_sectors`` sectors and rounds an area's tag start *down* to a buffer.
With fixed padding the area start is always buffer-aligned; with the old padding and an
interleave smaller than the buffer (``buffer_sectors`` defaults to 128) it is not, and the
tags really sit earlier than the area start.  ``tag_offset`` reproduces that, which is why
``buffer_sectors`` is a geometry input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from ...errors import FormatError
from .layout import (
    JOURNAL_BLOCK_SECTORS,
    JOURNAL_MAC_PER_SECTOR,
    JOURNAL_SECTOR_DATA,
    MAX_LOG2_INTERLEAVE_SECTORS,
    MAX_SECTORS_PER_BLOCK,
    MAX_TAG_SIZE,
    MIN_LOG2_INTERLEAVE_SECTORS,
    SALT_SIZE,
    SB_MAGIC,
    SB_SECTORS,
    SbFlags,
    Superblock,
    journal_entry_size,
    required_version,
)

__all__ = [
    "METADATA_PADDING_SECTORS",
    "DEFAULT_INTERLEAVE_SECTORS",
    "DEFAULT_BUFFER_SECTORS",
    "DEFAULT_SECTORS_PER_BITMAP_BIT",
    "DEFAULT_JOURNAL_SIZE_FACTOR",
    "DEFAULT_MAX_JOURNAL_SECTORS",
    "BITMAP_BLOCK_SIZE",
    "JournalGeometry",
    "Extent",
    "Geometry",
    "metadata_run_sectors",
    "log2_buffer_sectors_for",
    "default_journal_sectors",
    "compute_provided_data_sectors",
    "bitmap_log2_blocks_per_bit",
    "format_superblock",
]

METADATA_PADDING_SECTORS = 8
DEFAULT_INTERLEAVE_SECTORS = 32768
DEFAULT_BUFFER_SECTORS = 128
DEFAULT_SECTORS_PER_BITMAP_BIT = 32768
DEFAULT_JOURNAL_SIZE_FACTOR = 7
DEFAULT_MAX_JOURNAL_SECTORS = 131072
BITMAP_BLOCK_SIZE = 4096
_SECTOR_SHIFT = 9
_UINT_MAX = 0xFFFFFFFF


def _fls(x: int) -> int:
    """Index of the highest set bit (the kernel's ``__fls``); x > 0."""
    return x.bit_length() - 1


def _ffs(x: int) -> int:
    """Index of the lowest set bit (the kernel's ``__ffs``); x > 0."""
    return (x & -x).bit_length() - 1


# -- journal ------------------------------------------------------------------------------

@dataclass(frozen=True)
class JournalGeometry:
    """``calculate_journal_section_size``: how entries and data fill a journal section.

    A section is ``JOURNAL_BLOCK_SECTORS`` (8) metadata sectors of entries followed by one
    block of data per entry.  Entry ``n`` of a section lives in metadata sector ``n % 8``
    at byte ``(n // 8) * entry_size``; its data starts at sector ``8 + n*sectors_per_block``.
    """

    tag_size: int
    sectors_per_block: int
    have_journal_mac: bool
    journal_sections: int
    entry_size: int
    entries_per_sector: int
    section_entries: int
    section_sectors: int

    @classmethod
    def compute(cls, tag_size: int, sectors_per_block: int, have_journal_mac: bool,
                journal_sections: int) -> "JournalGeometry":
        entry_size = journal_entry_size(sectors_per_block, tag_size)
        space = JOURNAL_SECTOR_DATA - (JOURNAL_MAC_PER_SECTOR if have_journal_mac else 0)
        per_sector = space // entry_size
        section_entries = per_sector * JOURNAL_BLOCK_SECTORS
        section_sectors = section_entries * sectors_per_block + JOURNAL_BLOCK_SECTORS
        return cls(tag_size, sectors_per_block, have_journal_mac, journal_sections,
                   entry_size, per_sector, section_entries, section_sectors)

    @property
    def entries(self) -> int:
        return self.section_entries * self.journal_sections

    @property
    def total_sectors(self) -> int:
        return self.section_sectors * self.journal_sections

    def entry_position(self, n: int) -> tuple[int, int]:
        """(sector within the section, byte offset in it) of entry ``n``."""
        return n % JOURNAL_BLOCK_SECTORS, (n // JOURNAL_BLOCK_SECTORS) * self.entry_size

    def entry_data_sector(self, n: int) -> int:
        """First sector (within the section) of entry ``n``'s data."""
        return JOURNAL_BLOCK_SECTORS + n * self.sectors_per_block


# -- tag areas --------------------------------------------------------------------------------

def metadata_run_sectors(tag_size: int, log2_interleave_sectors: int,
                         log2_sectors_per_block: int, fixed_padding: bool) -> int:
    """Sectors of the tag area in front of each interleaved data area."""
    padding = (METADATA_PADDING_SECTORS << _SECTOR_SHIFT) if fixed_padding \
        else (1 << _SECTOR_SHIFT << METADATA_PADDING_SECTORS)
    tag_bytes = tag_size << (log2_interleave_sectors - log2_sectors_per_block)
    return -(-tag_bytes // padding) * padding >> _SECTOR_SHIFT


def log2_buffer_sectors_for(buffer_sectors: int) -> int:
    """The constructor's ``log2_buffer_sectors`` for a ``buffer_sectors`` argument."""
    return min(_fls(buffer_sectors or 1), 31 - _SECTOR_SHIFT)


def default_journal_sectors(data_device_sectors: int) -> int:
    """The journal size used when the table gives no ``journal_sectors``."""
    return min(DEFAULT_MAX_JOURNAL_SECTORS, data_device_sectors >> DEFAULT_JOURNAL_SIZE_FACTOR)


def _limits_ok(provided: int, *, initial_sectors: int, meta_device_sectors: int, start: int,
               separate: bool, tag_size: int, log2_spb: int, log2_interleave: int,
               metadata_run: int, log2_buffer_sectors: int) -> bool:
    """``calculate_device_limits`` returning success, for a candidate provided size."""
    if initial_sectors + METADATA_PADDING_SECTORS >= meta_device_sectors \
            or initial_sectors > _UINT_MAX:
        return False
    if not separate:
        last = provided - 1
        area, offset = last >> log2_interleave, last & ((1 << log2_interleave) - 1)
        last_sector = start + initial_sectors + (area << log2_interleave) \
            + (area + 1) * metadata_run + offset
        return start <= last_sector < meta_device_sectors
    meta_bytes = (provided >> log2_spb) * tag_size
    unit = 1 << (log2_buffer_sectors + _SECTOR_SHIFT)
    meta_size = -(-meta_bytes // unit) << log2_buffer_sectors
    return initial_sectors + meta_size <= meta_device_sectors


def compute_provided_data_sectors(*, data_device_sectors: int,
                                  meta_device_sectors: int | None, tag_size: int,
                                  log2_sectors_per_block: int, log2_interleave_sectors: int,
                                  journal_sections: int, have_journal_mac: bool,
                                  fixed_padding: bool, start_sector: int = 0,
                                  buffer_sectors: int = DEFAULT_BUFFER_SECTORS) -> int:
    """``get_provided_data_sectors``: the size the kernel provides on these devices.

    With a separate metadata device it is the data device rounded down to a block.
    Interleaved, it is built bit by bit from the top (bit ``fls64(device)-1`` down to bit
    3), keeping each bit for which the last data sector still fits on the device
    (``calculate_device_limits``).  0 means the device is too small.  The kernel computes
    this at every load, not only at format (a grown device grows the target).
    """
    if meta_device_sectors is not None:
        return data_device_sectors & ~((1 << log2_sectors_per_block) - 1)
    jg = JournalGeometry.compute(tag_size, 1 << log2_sectors_per_block, have_journal_mac,
                                 journal_sections)
    initial = SB_SECTORS + jg.total_sectors
    run = metadata_run_sectors(tag_size, log2_interleave_sectors, log2_sectors_per_block,
                               fixed_padding)
    kw = dict(initial_sectors=initial, meta_device_sectors=data_device_sectors,
              start=start_sector, separate=False, tag_size=tag_size,
              log2_spb=log2_sectors_per_block, log2_interleave=log2_interleave_sectors,
              metadata_run=run, log2_buffer_sectors=log2_buffer_sectors_for(buffer_sectors))
    provided = 0
    if data_device_sectors <= 0:
        return 0
    for bit in range(_fls(data_device_sectors), 2, -1):
        candidate = provided | (1 << bit)
        if _limits_ok(candidate, **kw):
            provided = candidate
    return provided


def bitmap_log2_blocks_per_bit(provided_data_sectors: int, journal: JournalGeometry,
                               log2_sectors_per_block: int,
                               sectors_per_bit: int | None = None) -> int:
    """``log2_blocks_per_bitmap_bit`` as the constructor computes it (and writes it into a
    new superblock): from ``sectors_per_bit`` (default 32768), at least one block, grown
    until the bitmap fits in the journal area."""
    if sectors_per_bit is None:
        log2_spbit = _fls(DEFAULT_SECTORS_PER_BITMAP_BIT)
    else:
        log2_spbit = 0 if sectors_per_bit == 0 else _fls(sectors_per_bit)
    log2_spbit = max(log2_spbit, log2_sectors_per_block)
    bits_in_journal = min(journal.total_sectors << (_SECTOR_SHIFT + 3), _UINT_MAX)
    while bits_in_journal < (provided_data_sectors + (1 << log2_spbit) - 1) >> log2_spbit:
        log2_spbit += 1
    return log2_spbit - log2_sectors_per_block


# -- the geometry of one device ----------------------------------------------------------------

class Extent(NamedTuple):
    """A run of blocks that is contiguous both in data and in tags (a named tuple: every
    request makes at least one, so it is cheap to build)."""

    logical_sector: int
    nr_sectors: int
    data_sector: int      # on the data device
    tag_offset: int       # byte offset of the first tag on the metadata device
    nr_blocks: int


@dataclass(frozen=True)
class Geometry:
    """Everything needed to find a block and its tag, for one superblock on given devices.

    Build it with :meth:`from_superblock`, which checks that the devices are big enough
    for what the superblock says (a truncated image is a FormatError naming the device).
    """

    superblock: Superblock
    start_sector: int
    separate_metadata: bool
    data_device_sectors: int
    meta_device_sectors: int
    journal: JournalGeometry
    initial_sectors: int
    metadata_run: int
    log2_buffer_sectors: int
    #: what the kernel would provide on these devices now (== the superblock's value
    #: unless a device was resized)
    device_provided_data_sectors: int

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_superblock(cls, sb: Superblock, data_device_sectors: int,
                        meta_device_sectors: int | None = None, *, start_sector: int = 0,
                        buffer_sectors: int = DEFAULT_BUFFER_SECTORS,
                        device: str = "integrity") -> "Geometry":
        separate = meta_device_sectors is not None
        msectors = meta_device_sectors if separate else data_device_sectors
        lis = sb.log2_interleave_sectors
        if separate and lis != 0:
            raise FormatError(f"{device}: superblock log2_interleave_sectors: {lis} on a "
                              "device with a separate metadata device (must be 0)")
        if not separate and not MIN_LOG2_INTERLEAVE_SECTORS <= lis <= MAX_LOG2_INTERLEAVE_SECTORS:
            raise FormatError(f"{device}: superblock log2_interleave_sectors: {lis}: this "
                              "superblock belongs to a separate metadata device (give the "
                              "data device too)" if lis == 0 else
                              f"{device}: superblock log2_interleave_sectors: {lis} is out "
                              "of range")
        jg = JournalGeometry.compute(sb.integrity_tag_size, sb.sectors_per_block,
                                     sb.has(SbFlags.HAVE_JOURNAL_MAC), sb.journal_sections)
        initial = SB_SECTORS + jg.total_sectors
        log2_buf = log2_buffer_sectors_for(buffer_sectors)
        if separate:
            run = 1
        else:
            run = metadata_run_sectors(sb.integrity_tag_size, lis, sb.log2_sectors_per_block,
                                       sb.has(SbFlags.FIXED_PADDING))
            log2_buf = min(log2_buf, _ffs(run))
        provided = sb.provided_data_sectors
        kw = dict(initial_sectors=initial, meta_device_sectors=msectors, start=start_sector,
                  separate=separate, tag_size=sb.integrity_tag_size,
                  log2_spb=sb.log2_sectors_per_block, log2_interleave=lis,
                  metadata_run=run, log2_buffer_sectors=log2_buf)
        ok = _limits_ok(provided, **kw)
        while not ok and separate and kw["log2_buffer_sectors"] > 3:
            kw["log2_buffer_sectors"] -= 1
            ok = _limits_ok(provided, **kw)
        if not ok:
            meta_name = "metadata device" if separate else "device"
            raise FormatError(
                f"{device}: {meta_name} of {msectors} sectors is too small for the superblock's "
                f"provided_data_sectors {provided} (journal {jg.total_sectors} sectors, "
                f"tag_size {sb.integrity_tag_size}): truncated image or wrong device")
        if separate:
            log2_buf = kw["log2_buffer_sectors"]
            if data_device_sectors < provided:
                raise FormatError(f"{device}: data device of {data_device_sectors} sectors is "
                                  f"smaller than provided_data_sectors {provided}")
        dev_provided = compute_provided_data_sectors(
            data_device_sectors=data_device_sectors, meta_device_sectors=meta_device_sectors,
            tag_size=sb.integrity_tag_size, log2_sectors_per_block=sb.log2_sectors_per_block,
            log2_interleave_sectors=lis, journal_sections=sb.journal_sections,
            have_journal_mac=sb.has(SbFlags.HAVE_JOURNAL_MAC),
            fixed_padding=sb.has(SbFlags.FIXED_PADDING), start_sector=start_sector,
            buffer_sectors=buffer_sectors)
        return cls(sb, start_sector, separate, data_device_sectors, msectors, jg, initial, run,
                   log2_buf, dev_provided)

    # -- sizes and places ------------------------------------------------------------------
    @property
    def provided_data_sectors(self) -> int:
        return self.superblock.provided_data_sectors

    @property
    def tag_size(self) -> int:
        return self.superblock.integrity_tag_size

    @property
    def sectors_per_block(self) -> int:
        return self.superblock.sectors_per_block

    @property
    def block_size(self) -> int:
        return self.superblock.block_size

    @property
    def log2_interleave_sectors(self) -> int:
        return self.superblock.log2_interleave_sectors

    @property
    def superblock_sector(self) -> int:
        """On the metadata device."""
        return self.start_sector

    @property
    def journal_start_sector(self) -> int:
        """On the metadata device; the bitmap lives here too in bitmap mode."""
        return self.start_sector + SB_SECTORS

    @property
    def journal_sectors(self) -> int:
        return self.journal.total_sectors

    @property
    def metadata_start_sector(self) -> int:
        """Where the kernel's tag buffers are counted from (``dm_bufio_set_sector_offset``)."""
        return self.start_sector + self.initial_sectors

    @property
    def nr_areas(self) -> int:
        if self.separate_metadata:
            return 1
        return -(-self.provided_data_sectors >> self.log2_interleave_sectors)

    def _area_offset(self, logical_sector: int) -> tuple[int, int]:
        if self.separate_metadata:
            return 0, logical_sector
        lis = self.log2_interleave_sectors
        return logical_sector >> lis, logical_sector & ((1 << lis) - 1)

    def _data_sector(self, area: int, offset: int) -> int:
        if self.separate_metadata:
            return offset
        return (self.start_sector + self.initial_sectors + (area << self.log2_interleave_sectors)
                + (area + 1) * self.metadata_run + offset)

    def _tag_offset(self, area: int, offset: int) -> int:
        lis = self.log2_interleave_sectors
        base = ((area << lis) + area * self.metadata_run) >> self.log2_buffer_sectors
        base_bytes = base << (self.log2_buffer_sectors + _SECTOR_SHIFT)
        block = offset >> self.superblock.log2_sectors_per_block
        return (self.metadata_start_sector << _SECTOR_SHIFT) + base_bytes + block * self.tag_size

    def _check_sector(self, logical_sector: int) -> None:
        if not 0 <= logical_sector < self.provided_data_sectors:
            raise ValueError(f"sector {logical_sector} is outside the provided "
                             f"{self.provided_data_sectors} sectors")
        if logical_sector & (self.sectors_per_block - 1):
            raise ValueError(f"sector {logical_sector} is not at a {self.block_size}-byte block")

    def data_sector(self, logical_sector: int) -> int:
        """Sector of the data device holding the block at ``logical_sector``."""
        self._check_sector(logical_sector)
        return self._data_sector(*self._area_offset(logical_sector))

    def tag_offset(self, logical_sector: int) -> int:
        """Byte offset, on the metadata device, of the tag of the block at ``logical_sector``."""
        self._check_sector(logical_sector)
        return self._tag_offset(*self._area_offset(logical_sector))

    def locate(self, logical_sector: int) -> tuple[int, int]:
        """(data device sector, metadata device byte offset of its tag)."""
        self._check_sector(logical_sector)
        ao = self._area_offset(logical_sector)
        return self._data_sector(*ao), self._tag_offset(*ao)

    def extents(self, logical_sector: int, nr_sectors: int) -> list[Extent]:
        """Split ``[logical_sector, +nr_sectors)`` (block aligned, inside the provided size)
        into runs contiguous in data and in tags: one per interleave area touched.

        Runs once per request, so the superblock's fields are read once here and the
        arithmetic of ``_area_offset``, ``_data_sector`` and ``_tag_offset`` is inlined
        (``test_geometry`` checks it against ``locate`` block by block)."""
        if nr_sectors <= 0:
            return []
        sb = self.superblock
        provided, l2spb = sb.provided_data_sectors, sb.log2_sectors_per_block
        end = logical_sector + nr_sectors
        if (logical_sector | end) & ((1 << l2spb) - 1) or logical_sector < 0 \
                or end > provided:
            self._check_sector(logical_sector)
            raise ValueError(f"range {logical_sector}+{nr_sectors} is not whole blocks inside "
                             f"the provided {provided} sectors")
        ts = sb.integrity_tag_size
        meta0 = (self.start_sector + self.initial_sectors) << _SECTOR_SHIFT
        if self.separate_metadata:
            return [Extent(logical_sector, nr_sectors, logical_sector,
                           meta0 + (logical_sector >> l2spb) * ts, nr_sectors >> l2spb)]
        lis, run, l2buf = sb.log2_interleave_sectors, self.metadata_run, self.log2_buffer_sectors
        data0 = self.start_sector + self.initial_sectors
        out = []
        pos = logical_sector
        while pos < end:
            area, offset = pos >> lis, pos & ((1 << lis) - 1)
            n = min(end - pos, (1 << lis) - offset)
            lead = (area << lis) + area * run
            out.append(Extent(pos, n, data0 + lead + run + offset,
                              meta0 + (lead >> l2buf << (l2buf + _SECTOR_SHIFT))
                              + (offset >> l2spb) * ts,
                              n >> l2spb))
            pos += n
        return out

    def area_layout(self, area: int) -> tuple[int, int, int, int]:
        """Interleaved only: (first tag sector, tag sectors, first data sector, data sectors)
        of interleave area ``area`` on the device."""
        if self.separate_metadata:
            raise ValueError("a separate metadata device has no interleave areas")
        lis = self.log2_interleave_sectors
        meta = self.start_sector + self.initial_sectors + (area << lis) + area * self.metadata_run
        return meta, self.metadata_run, meta + self.metadata_run, 1 << lis


# -- a new superblock -------------------------------------------------------------------------

def format_superblock(data_device_sectors: int, meta_device_sectors: int | None = None, *,
                      tag_size: int, block_size: int = 512,
                      journal_sectors: int | None = None, interleave_sectors: int | None = None,
                      buffer_sectors: int = DEFAULT_BUFFER_SECTORS,
                      sectors_per_bit: int | None = None, start_sector: int = 0,
                      internal_hash: bool = True, journal_mac: bool = False,
                      fix_padding: bool = False, fix_hmac: bool = False,
                      bitmap_mode: bool = False, recalculate: bool = False,
                      salt: bytes | None = None) -> Superblock:
    """The superblock the kernel writes when it loads a table on a zeroed device
    (``initialize_superblock`` plus what the constructor adds before writing it).

    Arguments are the table's: ``journal_sectors`` (default: device/128, at most 131072),
    ``interleave_sectors`` (rounded down to a power of two, clamped to 8..2**31), and the
    flags ``fix_padding``/``fix_hmac``.  ``internal_hash``/``journal_mac`` say whether those
    algorithms are given (fix_hmac only takes effect with one of them).  ``salt`` (16
    bytes, random in the kernel) is required when fix_hmac takes effect.
    """
    if block_size < 512 or block_size > MAX_SECTORS_PER_BLOCK << _SECTOR_SHIFT \
            or block_size & (block_size - 1):
        raise ValueError(f"block_size {block_size} is not a power of two in 512..4096")
    if not 1 <= tag_size <= MAX_TAG_SIZE:
        raise ValueError(f"tag_size {tag_size} is not in 1..{MAX_TAG_SIZE}")
    spb = block_size >> _SECTOR_SHIFT
    log2_spb = _ffs(spb)
    separate = meta_device_sectors is not None
    if journal_sectors is None:
        journal_sectors = default_journal_sectors(data_device_sectors)
    elif journal_sectors == 0:
        journal_sectors = 1
    flags = SbFlags(0)
    if journal_mac:
        flags |= SbFlags.HAVE_JOURNAL_MAC
    jg0 = JournalGeometry.compute(tag_size, spb, journal_mac, 1)
    journal_sections = max(journal_sectors // jg0.section_sectors, 1)
    use_salt = fix_hmac and (internal_hash or journal_mac)
    if use_salt:
        flags |= SbFlags.FIXED_HMAC
        if salt is None or len(salt) != SALT_SIZE:
            raise ValueError(f"fix_hmac needs a {SALT_SIZE}-byte salt")
    else:
        salt = bytes(SALT_SIZE)
    common = dict(tag_size=tag_size, log2_sectors_per_block=log2_spb,
                  have_journal_mac=journal_mac, start_sector=start_sector,
                  buffer_sectors=buffer_sectors)
    too_small = "device too small for dm-integrity with these parameters"
    if not separate:
        if fix_padding:
            flags |= SbFlags.FIXED_PADDING
        il = interleave_sectors or DEFAULT_INTERLEAVE_SECTORS
        lis = min(max(_fls(il), MIN_LOG2_INTERLEAVE_SECTORS), MAX_LOG2_INTERLEAVE_SECTORS)
        provided = compute_provided_data_sectors(
            data_device_sectors=data_device_sectors, meta_device_sectors=None,
            log2_interleave_sectors=lis, journal_sections=journal_sections,
            fixed_padding=fix_padding, **common)
        if not provided:
            raise ValueError(too_small)
    else:
        lis = 0
        provided = compute_provided_data_sectors(
            data_device_sectors=data_device_sectors, meta_device_sectors=meta_device_sectors,
            log2_interleave_sectors=0, journal_sections=journal_sections,
            fixed_padding=False, **common)
        if not provided:
            raise ValueError(too_small)
        # The largest journal (bit by bit, at most the requested size) whose tags still fit,
        # retried with smaller buffers as the kernel does.
        log2_buf = log2_buffer_sectors_for(buffer_sectors)
        while True:
            sections = 0
            for bit in range(_fls(journal_sections), -1, -1):
                test = sections | (1 << bit)
                if test > journal_sections:
                    continue
                jg = JournalGeometry.compute(tag_size, spb, journal_mac, test)
                if _limits_ok(provided, initial_sectors=SB_SECTORS + jg.total_sectors,
                              meta_device_sectors=meta_device_sectors, start=start_sector,
                              separate=True, tag_size=tag_size, log2_spb=log2_spb,
                              log2_interleave=0, metadata_run=1,
                              log2_buffer_sectors=log2_buf):
                    sections = test
            if sections or log2_buf <= 3:
                break
            log2_buf -= 1
        if not sections:
            raise ValueError(too_small)
        journal_sections = sections
    if recalculate:
        flags |= SbFlags.RECALCULATING
    jg = JournalGeometry.compute(tag_size, spb, journal_mac, journal_sections)
    log2_bpb = bitmap_log2_blocks_per_bit(provided, jg, log2_spb, sectors_per_bit)
    version = required_version(int(flags), meta_device=separate, bitmap_mode=bitmap_mode)
    return Superblock(version=version, log2_interleave_sectors=lis, integrity_tag_size=tag_size,
                      journal_sections=journal_sections, provided_data_sectors=provided,
                      flags=flags, log2_sectors_per_block=log2_spb,
                      log2_blocks_per_bitmap_bit=log2_bpb, recalc_sector=0, salt=salt,
                      magic=SB_MAGIC)
