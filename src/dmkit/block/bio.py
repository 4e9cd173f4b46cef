"""Bio: one block request, as the kernel's ``struct bio`` carries it.

A bio names an operation, a start sector (always 512-byte units), and for data operations a
buffer: the source of a write, or the destination a read fills in place.  Splitting a bio
(at target boundaries, at stripe chunks) makes sub-bios that share the parent's buffers
through memoryview slices: no data is copied.

Invariants:
- ``sector`` and ``nr_sectors`` are in 512-byte sectors;
- for READ and WRITE, ``len(data) == nr_sectors * 512``; a READ's buffer is writable;
- FLUSH has ``nr_sectors == 0`` and no data;
- ``integrity``, when present, holds ``tuple_size`` bytes for each ``interval_bytes`` of
  data (the per-block metadata dm-integrity stores for the layer above).
"""

from __future__ import annotations

import enum

SECTOR_SHIFT = 9
SECTOR_SIZE = 1 << SECTOR_SHIFT

__all__ = [
    "SECTOR_SHIFT",
    "SECTOR_SIZE",
    "BioOp",
    "BioFlags",
    "BioIntegrityPayload",
    "Bio",
    "OP_READ",
    "OP_WRITE",
    "OP_FLUSH",
    "OP_DISCARD",
    "OP_WRITE_ZEROES",
    "REQ_FUA",
    "REQ_PREFLUSH",
]


class BioOp(enum.IntEnum):
    """Operations; the values are the kernel's ``REQ_OP_*`` numbers."""

    READ = 0
    WRITE = 1
    FLUSH = 2
    DISCARD = 3
    WRITE_ZEROES = 9

    @property
    def has_data(self) -> bool:
        return self in (BioOp.READ, BioOp.WRITE)

    @property
    def is_write(self) -> bool:
        """Whether the op changes the device (the kernel's ``op_is_write``)."""
        return self in (BioOp.WRITE, BioOp.DISCARD, BioOp.WRITE_ZEROES)


class BioFlags(enum.IntFlag):
    """Request flags.  Values are the kernel's ``REQ_*`` bits (Linux 6.1, ``blk_types.h``)
    so a flags mask in a table (flakey's ``corrupt_bio_byte``) means what it means there."""

    SYNC = 1 << 11
    META = 1 << 12
    FUA = 1 << 17
    PREFLUSH = 1 << 18


# Hot-path aliases: comparing against a module global is ~10x cheaper than an Enum class
# attribute, and flags are kept as plain ints on bios (IntFlag arithmetic is slow).
OP_READ = BioOp.READ
OP_WRITE = BioOp.WRITE
OP_FLUSH = BioOp.FLUSH
OP_DISCARD = BioOp.DISCARD
OP_WRITE_ZEROES = BioOp.WRITE_ZEROES
REQ_FUA = int(BioFlags.FUA)
REQ_PREFLUSH = int(BioFlags.PREFLUSH)


class BioIntegrityPayload:
    """Per-interval metadata carried with a bio (the kernel's ``bio_integrity_payload``).

    (This class and :class:`Bio` are written out rather than made by ``dataclass``: a
    slotted dataclass costs about a millisecond of every command's start-up.)"""

    __slots__ = ("buf", "tuple_size", "interval_bytes")

    def __init__(self, buf: memoryview, tuple_size: int, interval_bytes: int):
        self.buf = buf
        self.tuple_size = tuple_size
        self.interval_bytes = interval_bytes

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.buf, self.tuple_size, self.interval_bytes) == \
            (other.buf, other.tuple_size, other.interval_bytes)

    __hash__ = None     # mutable, compared by value (as the dataclass was)

    def __repr__(self) -> str:
        return (f"BioIntegrityPayload(buf={self.buf!r}, tuple_size={self.tuple_size!r}, "
                f"interval_bytes={self.interval_bytes!r})")

    def slice(self, offset_sectors: int, nr_sectors: int) -> "BioIntegrityPayload":
        per = self.interval_bytes >> SECTOR_SHIFT
        if offset_sectors % per or nr_sectors % per:
            raise ValueError("integrity payload split inside an interval")
        start = offset_sectors // per * self.tuple_size
        end = start + nr_sectors // per * self.tuple_size
        return BioIntegrityPayload(self.buf[start:end], self.tuple_size, self.interval_bytes)


class Bio:
    """One request: ``op`` on ``nr_sectors`` from ``sector``.  ``flags`` is a plain int of
    :class:`BioFlags` bits; ``crypt_ctx`` a blk-crypto context (key + data unit number)
    when inline encryption is requested; ``target_bio_nr`` which of a target's
    ``num_flush_bios`` flushes this is (``dm_bio_get_target_bio_nr``).  Compared by
    identity."""

    __slots__ = ("op", "sector", "nr_sectors", "data", "flags", "integrity", "crypt_ctx",
                 "target_bio_nr")

    def __init__(self, op: BioOp, sector: int, nr_sectors: int,
                 data: memoryview | None = None, flags: int = 0,
                 integrity: BioIntegrityPayload | None = None,
                 crypt_ctx: object | None = None, target_bio_nr: int = 0):
        self.op = op
        self.sector = sector
        self.nr_sectors = nr_sectors
        self.data = data
        self.flags = flags
        self.integrity = integrity
        self.crypt_ctx = crypt_ctx
        self.target_bio_nr = target_bio_nr

    # -- constructors ---------------------------------------------------------------
    @classmethod
    def read(cls, sector: int, buf, flags: int = 0) -> "Bio":
        mv = _as_bytes_view(buf)
        if mv.readonly:
            raise ValueError("read buffer is read-only")
        return cls(OP_READ, sector, len(mv) >> SECTOR_SHIFT, mv, int(flags))

    @classmethod
    def write(cls, sector: int, data, flags: int = 0) -> "Bio":
        mv = _as_bytes_view(data)
        return cls(OP_WRITE, sector, len(mv) >> SECTOR_SHIFT, mv, int(flags))

    @classmethod
    def flush(cls) -> "Bio":
        return cls(OP_FLUSH, 0, 0, None, REQ_PREFLUSH)

    @classmethod
    def discard(cls, sector: int, nr_sectors: int) -> "Bio":
        return cls(OP_DISCARD, sector, nr_sectors)

    @classmethod
    def write_zeroes(cls, sector: int, nr_sectors: int) -> "Bio":
        return cls(OP_WRITE_ZEROES, sector, nr_sectors)

    # -- splitting and remapping ----------------------------------------------------
    def split(self, offset_sectors: int, nr_sectors: int, sector: int) -> "Bio":
        """A sub-bio covering ``[offset, offset+nr)`` of this one, placed at ``sector``.

        Buffers are shared, so a read into the sub-bio fills the parent's buffer.
        """
        data = None
        if self.data is not None:
            data = self.data[offset_sectors << SECTOR_SHIFT:(offset_sectors + nr_sectors) << SECTOR_SHIFT]
        integrity = None
        if self.integrity is not None:
            integrity = self.integrity.slice(offset_sectors, nr_sectors)
        return Bio(self.op, sector, nr_sectors, data, self.flags, integrity, self.crypt_ctx)

    def remap(self, sector: int) -> "Bio":
        """The same request, sent to ``sector`` of another device (the whole bio)."""
        return Bio(self.op, sector, self.nr_sectors, self.data, self.flags, self.integrity,
                   self.crypt_ctx)

    @property
    def end_sector(self) -> int:
        return self.sector + self.nr_sectors

    def __repr__(self) -> str:
        return (f"Bio({self.op.name}, sector={self.sector}, nr_sectors={self.nr_sectors}, "
                f"flags={BioFlags(self.flags)!r})")


def _as_bytes_view(buf) -> memoryview:
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    if len(mv) % SECTOR_SIZE:
        raise ValueError(f"buffer of {len(mv)} bytes is not a whole number of sectors")
    return mv
