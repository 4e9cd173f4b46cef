"""Backend in memory: a bytearray of ``nr_sectors`` sectors."""

from __future__ import annotations

from .bio import OP_FLUSH, OP_READ, OP_WRITE, SECTOR_SHIFT, Bio
from .device import BlockDevice, IntegrityProfile, QueueLimits

__all__ = ["MemoryDevice"]


class MemoryDevice(BlockDevice):
    """A RAM disk.  ``initial`` bytes, if given, set the content (and the size).

    With ``integrity`` the device also stores the per-interval metadata that bios carry,
    as a disk formatted with protection information would; reads hand it back.
    """

    def __init__(self, nr_sectors: int | None = None, *, initial: bytes | None = None,
                 read_only: bool = False, name: str = "memory",
                 limits: QueueLimits = QueueLimits(),
                 integrity: IntegrityProfile | None = None):
        if initial is not None:
            self.buf = bytearray(initial)
            if len(self.buf) % (1 << SECTOR_SHIFT):
                raise ValueError("initial content is not a whole number of sectors")
        else:
            self.buf = bytearray((nr_sectors or 0) << SECTOR_SHIFT)
        self.mv = memoryview(self.buf)
        self.nr_sectors = len(self.buf) >> SECTOR_SHIFT
        self.name = name
        self.read_only = read_only
        self.limits = limits
        self.can_discard = self.can_write_zeroes = not read_only
        self.integrity = integrity
        if integrity is not None:
            n = self.size_bytes // integrity.interval_bytes * integrity.tuple_size
            self.meta = bytearray(n)

    def _submit(self, bio: Bio) -> None:
        op = bio.op
        if op is OP_FLUSH:
            return
        lo, hi = bio.sector << SECTOR_SHIFT, bio.end_sector << SECTOR_SHIFT
        if op is OP_READ:
            bio.data[:] = self.mv[lo:hi]
        elif op is OP_WRITE:
            self.mv[lo:hi] = bio.data
        else:
            self.mv[lo:hi] = bytes(hi - lo)
        prof = self.integrity
        if prof is not None and bio.integrity is not None:
            mlo = lo // prof.interval_bytes * prof.tuple_size
            mhi = hi // prof.interval_bytes * prof.tuple_size
            if op is OP_READ:
                bio.integrity.buf[:] = self.meta[mlo:mhi]
            elif op is OP_WRITE:
                self.meta[mlo:mhi] = bio.integrity.buf
