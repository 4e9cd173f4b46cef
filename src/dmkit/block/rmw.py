"""Byte-granular access to a BlockDevice: the one read-modify-write helper.

The Python file-like object and the NBD server address bytes; devices address logical
blocks.  These functions bridge the two.  Aligned spans go to the device as one bio with
no copy; only the partial head and tail blocks of an unaligned write are read back.
"""

from __future__ import annotations

from ..errors import InvalidBioError
from .bio import SECTOR_SHIFT, Bio, BioFlags
from .device import BlockDevice

__all__ = ["read_bytes", "readinto_bytes", "write_bytes"]


def _check_range(dev: BlockDevice, offset: int, length: int) -> None:
    if offset < 0 or length < 0 or offset + length > dev.size_bytes:
        raise InvalidBioError(f"{dev.name}: byte range {offset}+{length} is outside the "
                              f"device ({dev.size_bytes} bytes)")


def readinto_bytes(dev: BlockDevice, offset: int, buf) -> int:
    """Fill ``buf`` with the device's bytes at ``offset``.  Returns ``len(buf)``."""
    mv = memoryview(buf).cast("B")
    length = len(mv)
    _check_range(dev, offset, length)
    if length == 0:
        return 0
    lbs = dev.logical_block_size
    start = offset // lbs * lbs
    end = -(-(offset + length) // lbs) * lbs
    if start == offset and end == offset + length:
        dev.submit(Bio.read(offset >> SECTOR_SHIFT, mv))
    else:
        tmp = bytearray(end - start)
        dev.submit(Bio.read(start >> SECTOR_SHIFT, tmp))
        mv[:] = memoryview(tmp)[offset - start:offset - start + length]
    return length


def read_bytes(dev: BlockDevice, offset: int, length: int) -> bytearray:
    buf = bytearray(length)
    readinto_bytes(dev, offset, buf)
    return buf


def write_bytes(dev: BlockDevice, offset: int, data, flags: BioFlags = BioFlags(0)) -> int:
    """Write ``data`` at byte ``offset``, reading back partial head/tail blocks."""
    mv = memoryview(data).cast("B")
    length = len(mv)
    _check_range(dev, offset, length)
    if length == 0:
        return 0
    lbs = dev.logical_block_size
    end = offset + length
    head = offset // lbs * lbs
    tail = -(-end // lbs) * lbs
    if head == offset and tail == end:
        dev.submit(Bio.write(offset >> SECTOR_SHIFT, mv, flags))
        return length
    if tail - head <= 2 * lbs or head // lbs == (tail - 1) // lbs:
        # Small or single-block write: one read of the span, patch, one write.
        tmp = bytearray(tail - head)
        dev.submit(Bio.read(head >> SECTOR_SHIFT, tmp))
        tmp[offset - head:offset - head + length] = mv
        dev.submit(Bio.write(head >> SECTOR_SHIFT, tmp, flags))
        return length
    # Large write: patch the partial blocks, send the aligned middle straight from data.
    mid_lo = -(-offset // lbs) * lbs
    mid_hi = end // lbs * lbs
    if mid_lo > offset:
        blk = bytearray(lbs)
        dev.submit(Bio.read(head >> SECTOR_SHIFT, blk))
        blk[offset - head:] = mv[:mid_lo - offset]
        dev.submit(Bio.write(head >> SECTOR_SHIFT, blk, flags))
    if mid_hi > mid_lo:
        dev.submit(Bio.write(mid_lo >> SECTOR_SHIFT, mv[mid_lo - offset:mid_hi - offset], flags))
    if end > mid_hi:
        blk = bytearray(lbs)
        dev.submit(Bio.read(mid_hi >> SECTOR_SHIFT, blk))
        blk[:end - mid_hi] = mv[mid_hi - offset:]
        dev.submit(Bio.write(mid_hi >> SECTOR_SHIFT, blk, flags))
    return length
