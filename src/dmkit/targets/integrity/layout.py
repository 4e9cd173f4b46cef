"""On-disk structures of dm-integrity: the superblock and the journal's pieces.

Upstream: ``struct superblock``, ``struct journal_entry``, ``struct journal_sector`` and the
``SB_*`` / ``JOURNAL_*`` constants of ``drivers/md/dm-integrity.c`` (Linux 6.1, target
v1.10.0); the field list is also in cryptsetup's ``lib/integrity/integrity.h``.  The prose
description is ``Documentation/admin-guide/device-mapper/dm-integrity.rst``.

Everything on disk is little-endian.  The superblock is the first 64 bytes of an 8-sector
(4 KiB) area at the target's start on the metadata device; the rest of that area is
zero, except that with ``SB_FLAG_FIXED_HMAC`` and a journal MAC the last ``digestsize``
bytes of the first 512-byte sector hold a MAC of the bytes before it (``sb_mac``).

Journal sectors (512 bytes each) end with an 8-byte commit id.  The first
``JOURNAL_BLOCK_SECTORS`` sectors of a section hold journal entries, then an 8-byte MAC
slot, then the commit id; the data sectors that follow hold 504 bytes of data and the
commit id (the data's own last 8 bytes are kept in the entry's ``last_bytes``).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from ...errors import FormatError

__all__ = [
    "SB_MAGIC",
    "SB_VERSION_1",
    "SB_VERSION_2",
    "SB_VERSION_3",
    "SB_VERSION_4",
    "SB_VERSION_5",
    "SB_VERSION_MAX",
    "SB_SECTORS",
    "SALT_SIZE",
    "SbFlags",
    "Superblock",
    "required_version",
    "MAX_SECTORS_PER_BLOCK",
    "MAX_TAG_SIZE",
    "MIN_LOG2_INTERLEAVE_SECTORS",
    "MAX_LOG2_INTERLEAVE_SECTORS",
    "JOURNAL_BLOCK_SECTORS",
    "JOURNAL_SECTOR_DATA",
    "JOURNAL_MAC_PER_SECTOR",
    "JOURNAL_MAC_SIZE",
    "JOURNAL_ENTRY_ROUNDUP",
    "N_COMMIT_IDS",
    "COMMIT_IDS",
    "DISCARD_FILLER",
    "JOURNAL_SECTOR_UNUSED_HI",
    "JOURNAL_SECTOR_INPROGRESS_HI",
    "JournalEntry",
    "JournalSectorTail",
    "journal_entry_size",
    "commit_id",
]

# -- superblock ---------------------------------------------------------------------------

SB_MAGIC = b"integrt\0"
SB_VERSION_1 = 1
SB_VERSION_2 = 2  # meta_device, recalculating
SB_VERSION_3 = 3  # bitmap mode / dirty bitmap
SB_VERSION_4 = 4  # fix_padding
SB_VERSION_5 = 5  # fix_hmac (salt)
SB_VERSION_MAX = SB_VERSION_5
#: version 6 (Linux 6.11+, ``SB_FLAG_INLINE``) stores tags in the device's own
#: integrity metadata, which a userspace image cannot have; it is refused by name.
SB_VERSION_INLINE = 6
SB_SECTORS = 8
SALT_SIZE = 16

MAX_SECTORS_PER_BLOCK = 8
MIN_LOG2_INTERLEAVE_SECTORS = 3
MAX_LOG2_INTERLEAVE_SECTORS = 31


class SbFlags(enum.IntFlag):
    """``SB_FLAG_*``: the superblock's ``flags`` word."""

    HAVE_JOURNAL_MAC = 0x1
    RECALCULATING = 0x2
    DIRTY_BITMAP = 0x4
    FIXED_PADDING = 0x8
    FIXED_HMAC = 0x10


_KNOWN_FLAGS = int(SbFlags.HAVE_JOURNAL_MAC | SbFlags.RECALCULATING | SbFlags.DIRTY_BITMAP
                   | SbFlags.FIXED_PADDING | SbFlags.FIXED_HMAC)
_SB_FLAG_INLINE = 0x20

# struct superblock: magic[8] version log2_interleave_sectors integrity_tag_size
# journal_sections provided_data_sectors flags log2_sectors_per_block
# log2_blocks_per_bitmap_bit pad[2] recalc_sector pad2[8] salt[16]
_SB = struct.Struct("<8sBBHIQIBB2sQ8s16s")
assert _SB.size == 64, _SB.size


def required_version(flags: int, *, meta_device: bool = False, bitmap_mode: bool = False) -> int:
    """The version the kernel writes for these flags (``sb_set_version``).

    The kernel always writes the lowest version whose features are in use: fix_hmac 5,
    fix_padding 4, bitmap mode or a dirty bitmap 3, a separate metadata device or a
    recalculation in progress 2, otherwise 1.
    """
    if flags & SbFlags.FIXED_HMAC:
        return SB_VERSION_5
    if flags & SbFlags.FIXED_PADDING:
        return SB_VERSION_4
    if bitmap_mode or flags & SbFlags.DIRTY_BITMAP:
        return SB_VERSION_3
    if meta_device or flags & SbFlags.RECALCULATING:
        return SB_VERSION_2
    return SB_VERSION_1


@dataclass(frozen=True)
class Superblock:
    """``struct superblock`` (dm-integrity.c).  Field names are upstream's.

    ``from_bytes`` checks what can be checked without knowing the devices: magic, a
    known version, a tag size and block size the kernel accepts, a non-zero journal,
    flags that exist and agree with the version, a provided size that is a whole number
    of blocks.  :mod:`.geometry` checks the rest against the device sizes.
    """

    version: int
    log2_interleave_sectors: int
    integrity_tag_size: int
    journal_sections: int
    provided_data_sectors: int
    flags: SbFlags
    log2_sectors_per_block: int
    log2_blocks_per_bitmap_bit: int = 0
    recalc_sector: int = 0
    salt: bytes = bytes(SALT_SIZE)
    magic: bytes = SB_MAGIC
    pad: bytes = field(default=bytes(2), repr=False)
    pad2: bytes = field(default=bytes(8), repr=False)

    SIZE = _SB.size
    #: size of the area the superblock heads (``SB_SECTORS`` sectors)
    AREA_BYTES = SB_SECTORS << 9

    # -- derived values -----------------------------------------------------------------
    @property
    def sectors_per_block(self) -> int:
        return 1 << self.log2_sectors_per_block

    @property
    def block_size(self) -> int:
        """Data block size in bytes (``sector_size`` in integritysetup's dump)."""
        return 512 << self.log2_sectors_per_block

    @property
    def interleave_sectors(self) -> int:
        return 1 << self.log2_interleave_sectors

    def has(self, flag: SbFlags) -> bool:
        return bool(self.flags & flag)

    # -- parse / build ------------------------------------------------------------------
    @classmethod
    def from_bytes(cls, buf, *, device: str = "integrity") -> "Superblock":
        """Parse and validate the first 64 bytes of ``buf``.

        ``device`` names the device in error messages.
        """
        mv = memoryview(buf).cast("B")
        if len(mv) < cls.SIZE:
            raise FormatError(f"{device}: superblock truncated: {len(mv)} bytes, need {cls.SIZE}")
        (magic, version, log2_interleave, tag_size, journal_sections, provided, flags,
         log2_spb, log2_bpb, pad, recalc_sector, pad2, salt) = _SB.unpack_from(mv, 0)
        sb = cls(version=version, log2_interleave_sectors=log2_interleave,
                 integrity_tag_size=tag_size, journal_sections=journal_sections,
                 provided_data_sectors=provided, flags=SbFlags(flags & _KNOWN_FLAGS),
                 log2_sectors_per_block=log2_spb, log2_blocks_per_bitmap_bit=log2_bpb,
                 recalc_sector=recalc_sector, salt=bytes(salt), magic=bytes(magic),
                 pad=bytes(pad), pad2=bytes(pad2))
        sb.validate(device=device, raw_flags=flags)
        return sb

    def to_bytes(self) -> bytes:
        """The 64-byte structure.  (``to_area_bytes`` gives the zero-padded 4 KiB area.)"""
        return _SB.pack(self.magic, self.version, self.log2_interleave_sectors,
                        self.integrity_tag_size, self.journal_sections,
                        self.provided_data_sectors, int(self.flags),
                        self.log2_sectors_per_block, self.log2_blocks_per_bitmap_bit,
                        self.pad, self.recalc_sector, self.pad2, self.salt)

    def to_area_bytes(self) -> bytes:
        return self.to_bytes() + bytes(self.AREA_BYTES - self.SIZE)

    # -- validation -------------------------------------------------------------------------
    def validate(self, *, device: str = "integrity", raw_flags: int | None = None) -> None:
        """Raise FormatError naming ``device`` and the field if this cannot be a superblock
        the kernel wrote (or would load)."""
        def bad(fld: str, why: str) -> FormatError:
            return FormatError(f"{device}: superblock {fld}: {why}")

        if self.magic != SB_MAGIC:
            raise bad("magic", f"{self.magic!r} is not {SB_MAGIC!r} (not a dm-integrity device)")
        if self.version == SB_VERSION_INLINE:
            raise bad("version", "6 (inline tags in the device's own metadata) is not supported")
        if not SB_VERSION_1 <= self.version <= SB_VERSION_MAX:
            raise bad("version", f"{self.version} is unknown (supported 1..{SB_VERSION_MAX})")
        flags = int(self.flags) if raw_flags is None else raw_flags
        if flags & ~_KNOWN_FLAGS:
            what = "inline" if flags & _SB_FLAG_INLINE else "unknown"
            raise bad("flags", f"0x{flags:x} has {what} bits 0x{flags & ~_KNOWN_FLAGS:x}")
        need = required_version(flags)
        if self.version < need:
            raise bad("version", f"{self.version} is too old for flags {SbFlags(flags)!r} "
                                 f"(they need version {need})")
        if not 1 <= self.integrity_tag_size <= MAX_TAG_SIZE:
            raise bad("integrity_tag_size",
                      f"{self.integrity_tag_size} is not in 1..{MAX_TAG_SIZE}")
        if (1 << self.log2_sectors_per_block) > MAX_SECTORS_PER_BLOCK:
            raise bad("log2_sectors_per_block",
                      f"{self.log2_sectors_per_block} gives blocks over 4096 bytes")
        if self.journal_sections == 0:
            raise bad("journal_sections", "is 0")
        lis = self.log2_interleave_sectors
        if lis != 0 and not MIN_LOG2_INTERLEAVE_SECTORS <= lis <= MAX_LOG2_INTERLEAVE_SECTORS:
            raise bad("log2_interleave_sectors",
                      f"{lis} is neither 0 (separate metadata device) nor in "
                      f"{MIN_LOG2_INTERLEAVE_SECTORS}..{MAX_LOG2_INTERLEAVE_SECTORS}")
        if self.provided_data_sectors == 0:
            raise bad("provided_data_sectors", "is 0")
        if self.provided_data_sectors & (self.sectors_per_block - 1):
            raise bad("provided_data_sectors",
                      f"{self.provided_data_sectors} is not a whole number of "
                      f"{self.block_size}-byte blocks")
        if len(self.salt) != SALT_SIZE:
            raise bad("salt", f"is {len(self.salt)} bytes, not {SALT_SIZE}")


# -- journal -----------------------------------------------------------------------------

JOURNAL_BLOCK_SECTORS = 8
JOURNAL_SECTOR_DATA = 512 - 8          # bytes of a journal sector before its commit id
JOURNAL_MAC_PER_SECTOR = 8
JOURNAL_MAC_SIZE = JOURNAL_MAC_PER_SECTOR * JOURNAL_BLOCK_SECTORS
JOURNAL_ENTRY_ROUNDUP = 8
#: the largest tag: one entry for an 8-sector block must fit in a sector with a MAC slot
MAX_TAG_SIZE = JOURNAL_SECTOR_DATA - JOURNAL_MAC_PER_SECTOR - (8 + 8 * MAX_SECTORS_PER_BLOCK)
N_COMMIT_IDS = 4
#: ``create_journal`` sets these (before any journal encryption)
COMMIT_IDS = (0x1111111111111111, 0x2222222222222222, 0x3333333333333333, 0x4444444444444444)
#: the tag a discarded block gets when the target has allow_discards
DISCARD_FILLER = 0xF6
#: ``sector_hi`` (bytes 4..8 of an entry) of an unused / in-progress entry
JOURNAL_SECTOR_UNUSED_HI = 0xFFFFFFFF
JOURNAL_SECTOR_INPROGRESS_HI = 0xFFFFFFFE

_U64 = struct.Struct("<Q")
_TAIL = struct.Struct("<8sQ")
assert _TAIL.size == 16


def journal_entry_size(sectors_per_block: int, tag_size: int) -> int:
    """``journal_entry_size``: sector + one ``last_bytes`` per sector + tag, rounded to 8."""
    raw = 8 + 8 * sectors_per_block + tag_size
    return -(-raw // JOURNAL_ENTRY_ROUNDUP) * JOURNAL_ENTRY_ROUNDUP


def commit_id(section: int, sector: int, seq: int, commit_ids=COMMIT_IDS) -> int:
    """``dm_integrity_commit_id``: the commit id that ends sector ``sector`` of journal
    section ``section`` when written with commit sequence ``seq`` (as a little-endian u64)."""
    return commit_ids[seq] ^ (((section << 32) ^ sector) & 0xFFFFFFFFFFFFFFFF)


@dataclass(frozen=True)
class JournalEntry:
    """``struct journal_entry``: where a journalled block goes, its displaced last bytes,
    and its tag.  ``sector`` is the raw 64-bit field; its high half marks unused
    (0xFFFFFFFF) and in-progress (0xFFFFFFFE) entries."""

    sector: int
    last_bytes: tuple[bytes, ...]
    tag: bytes

    @property
    def sector_hi(self) -> int:
        return self.sector >> 32

    @property
    def is_unused(self) -> bool:
        return self.sector_hi == JOURNAL_SECTOR_UNUSED_HI

    @property
    def is_inprogress(self) -> bool:
        return self.sector_hi == JOURNAL_SECTOR_INPROGRESS_HI

    @classmethod
    def from_bytes(cls, buf, sectors_per_block: int, tag_size: int) -> "JournalEntry":
        mv = memoryview(buf).cast("B")
        size = journal_entry_size(sectors_per_block, tag_size)
        if len(mv) < size:
            raise FormatError(f"journal entry truncated: {len(mv)} bytes, need {size}")
        (sector,) = _U64.unpack_from(mv, 0)
        last = tuple(bytes(mv[8 + 8 * s:16 + 8 * s]) for s in range(sectors_per_block))
        t0 = 8 + 8 * sectors_per_block
        return cls(sector, last, bytes(mv[t0:t0 + tag_size]))

    def to_bytes(self, tag_size: int | None = None) -> bytes:
        """The entry padded to ``journal_entry_size`` (padding is zero)."""
        ts = len(self.tag) if tag_size is None else tag_size
        if len(self.tag) != ts or any(len(b) != 8 for b in self.last_bytes):
            raise ValueError("journal entry: tag or last_bytes of the wrong size")
        raw = _U64.pack(self.sector) + b"".join(self.last_bytes) + self.tag
        return raw + bytes(journal_entry_size(len(self.last_bytes), ts) - len(raw))


@dataclass(frozen=True)
class JournalSectorTail:
    """The last 16 bytes of every journal metadata sector: ``mac[8]`` then ``commit_id``.
    (Data sectors of the journal carry only the commit id in their last 8 bytes.)"""

    mac: bytes
    commit_id: int

    SIZE = _TAIL.size

    @classmethod
    def from_bytes(cls, sector_buf) -> "JournalSectorTail":
        mv = memoryview(sector_buf).cast("B")
        if len(mv) != 512:
            raise FormatError(f"journal sector is {len(mv)} bytes, not 512")
        mac, cid = _TAIL.unpack_from(mv, 512 - _TAIL.size)
        return cls(bytes(mac), cid)

    def to_bytes(self) -> bytes:
        return _TAIL.pack(self.mac, self.commit_id)
