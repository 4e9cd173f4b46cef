"""Bitmap mode's bit operations over sector ranges (``block_bitmap_op``).

Upstream: ``block_bitmap_op``, ``block_bitmap_copy``, ``bitmap_block_work`` and
``bitmap_flush_work`` in ``drivers/md/dm-integrity.c`` (Linux 6.1).  One bit covers
``2**(log2_sectors_per_block + log2_blocks_per_bitmap_bit)`` sectors; bit ``i`` is bit
``i % 8`` of byte ``i // 8`` (the kernel's ``test_bit`` on little-endian longs).  The
on-disk bitmap is the first ``n_bitmap_blocks`` 4 KiB blocks of the journal area.

Only the bits of a range are touched, never whole blocks: like the kernel, bytes past the
last bit keep whatever the journal area held (that matters for byte-exact images).
"""

from __future__ import annotations

import numpy as np

__all__ = ["SectorBitmap"]

#: ranges of bits spanning at most this many bytes are tested as one Python int
_SMALL_BYTES = 64


class SectorBitmap:
    """Bit operations on ``buf`` (a bytearray or a writable memoryview) for sector ranges.

    ``shift`` is ``log2_sectors_per_block + log2_blocks_per_bitmap_bit``.
    """

    def __init__(self, buf, shift: int, log2_sectors_per_block: int):
        self.buf = buf
        self.np = np.frombuffer(buf, dtype=np.uint8)
        self.shift = shift
        self._block_mask = (1 << log2_sectors_per_block) - 1

    def _bits(self, sector: int, nr_sectors: int) -> tuple[int, int]:
        if (sector | nr_sectors) & self._block_mask:
            raise ValueError(f"bitmap access {sector}+{nr_sectors} is not block aligned")
        return sector >> self.shift, (sector + nr_sectors - 1) >> self.shift

    def _view(self, b0: int, b1: int) -> tuple[int, int, np.ndarray]:
        y0, y1 = b0 >> 3, (b1 >> 3) + 1
        bits = np.unpackbits(self.np[y0:y1], bitorder="little")
        return y0, y1, bits

    def _small(self, b0: int, b1: int) -> int | None:
        """Bits ``b0..b1`` as an int (bit 0 = bit ``b0``) when they span at most
        ``_SMALL_BYTES`` bytes, else None.  A request touches one or two bits, and this is
        checked on every read in bitmap mode: ``int.from_bytes`` costs a tenth of
        unpacking with numpy."""
        y0, y1 = b0 >> 3, (b1 >> 3) + 1
        if y1 - y0 > _SMALL_BYTES:
            return None
        return int.from_bytes(self.buf[y0:y1], "little") >> (b0 & 7) & ((2 << (b1 - b0)) - 1)

    def all_set(self, sector: int, nr_sectors: int) -> bool:
        if nr_sectors <= 0:
            return True
        b0, b1 = self._bits(sector, nr_sectors)
        v = self._small(b0, b1)
        if v is not None:
            return v == (2 << (b1 - b0)) - 1
        y0, _, bits = self._view(b0, b1)
        return bool(bits[b0 - 8 * y0:b1 - 8 * y0 + 1].all())

    def all_clear(self, sector: int, nr_sectors: int) -> bool:
        if nr_sectors <= 0:
            return True
        b0, b1 = self._bits(sector, nr_sectors)
        v = self._small(b0, b1)
        if v is not None:
            return not v
        y0, _, bits = self._view(b0, b1)
        return not bits[b0 - 8 * y0:b1 - 8 * y0 + 1].any()

    def _assign(self, sector: int, nr_sectors: int, value: int) -> None:
        if nr_sectors <= 0:
            return
        b0, b1 = self._bits(sector, nr_sectors)
        y0, y1, bits = self._view(b0, b1)
        bits[b0 - 8 * y0:b1 - 8 * y0 + 1] = value
        self.np[y0:y1] = np.packbits(bits, bitorder="little")

    def set(self, sector: int, nr_sectors: int) -> None:
        self._assign(sector, nr_sectors, 1)

    def clear(self, sector: int, nr_sectors: int) -> None:
        self._assign(sector, nr_sectors, 0)

    def first_set(self, sector: int, nr_sectors: int) -> int | None:
        """The first sector of ``[sector, +nr)`` whose bit is set, or None."""
        b0, b1 = self._bits(sector, nr_sectors)
        y0, _, bits = self._view(b0, b1)
        hit = np.flatnonzero(bits[b0 - 8 * y0:b1 - 8 * y0 + 1])
        if not hit.size:
            return None
        return max(sector, (b0 + int(hit[0])) << self.shift)

    def last_set_end(self, sector: int, nr_sectors: int) -> int | None:
        """The end (exclusive) of the last set bit's span inside ``[sector, +nr)``."""
        b0, b1 = self._bits(sector, nr_sectors)
        y0, _, bits = self._view(b0, b1)
        hit = np.flatnonzero(bits[b0 - 8 * y0:b1 - 8 * y0 + 1])
        if not hit.size:
            return None
        return min(sector + nr_sectors, (b0 + int(hit[-1]) + 1) << self.shift)

    def copy_from(self, other: "SectorBitmap") -> None:
        n = min(len(self.np), len(other.np))
        self.np[:n] = other.np[:n]
