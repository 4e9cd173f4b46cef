"""Tag bytes on the metadata device, through a write-back cache of dirty sectors.

The kernel reaches the tag area through dm-bufio: tag writes dirty a buffer in memory and
reach the disk when the target flushes (a FLUSH or FUA request, a journal write-home, the
bitmap flush, a recalculation step, close) or when the client has too much dirty memory.
:class:`TagStore` does the same with 4 KiB chunks aligned to the device: writes patch the
cache (reading back only a partially covered first or last sector), reads are one device
read with the dirty sectors laid over it, and :meth:`writeback` writes the dirty sectors
as runs, one request per run.  Only sectors that were written are ever written back, so a
chunk that reaches past a tag run into data sectors never overwrites the data.

Invariant: a cached sector is dirty and holds the newest bytes; every other sector's
newest bytes are on the device.

The public methods hold :attr:`TagStore.lock`: journal mode's writer thread
(:mod:`.homewriter`) writes tags and writes them back while requests read them.
"""

from __future__ import annotations

import threading

from ...block import SECTOR_SHIFT, Bio, BlockDevice
from ...block.bio import OP_READ

__all__ = ["TagStore"]

_CHUNK_SHIFT = 12
_CHUNK = 1 << _CHUNK_SHIFT
_SPC = _CHUNK >> SECTOR_SHIFT            # sectors per chunk
_FULL = (1 << _SPC) - 1


class TagStore:
    """``dev``: the metadata device (the data device when tags are interleaved).
    ``max_dirty_bytes``: above this much dirty cache, write back (without a flush)."""

    def __init__(self, dev: BlockDevice, *, max_dirty_bytes: int = 8 << 20):
        self.dev = dev
        self.max_dirty_chunks = max(1, max_dirty_bytes >> _CHUNK_SHIFT)
        #: chunk index -> [4 KiB buffer, mask of dirty sectors]
        self._chunks: dict[int, list] = {}
        self.writebacks = 0
        self.lock = threading.Lock()

    @property
    def dirty(self) -> bool:
        return bool(self._chunks)

    # -- reading ------------------------------------------------------------------------------
    def read(self, offset: int, length: int) -> bytearray:
        """The newest ``length`` tag bytes at byte ``offset`` of the device."""
        with self.lock:
            return self._read(offset, length)

    def _read(self, offset: int, length: int) -> bytearray:
        a = offset >> SECTOR_SHIFT
        b = (offset + length + 511) >> SECTOR_SHIFT
        buf = bytearray((b - a) << SECTOR_SHIFT)
        self.dev.submit(Bio(OP_READ, a, b - a, memoryview(buf)))
        if self._chunks:
            self._overlay(a, b, buf)
        lo = offset - (a << SECTOR_SHIFT)
        if lo == 0 and length == len(buf):
            return buf
        return buf[lo:lo + length]

    def _overlay(self, a: int, b: int, buf: bytearray) -> None:
        """Lay the dirty sectors of ``[a, b)`` over ``buf`` (which starts at sector a)."""
        chunks = self._chunks
        for ci in range(a // _SPC, (b - 1) // _SPC + 1):
            entry = chunks.get(ci)
            if entry is None:
                continue
            cbuf, mask = entry
            base = ci * _SPC
            for s in range(_SPC):
                if mask >> s & 1 and a <= base + s < b:
                    p = (base + s - a) << SECTOR_SHIFT
                    buf[p:p + 512] = cbuf[s << SECTOR_SHIFT:(s + 1) << SECTOR_SHIFT]

    # -- writing ------------------------------------------------------------------------------
    def write(self, offset: int, data) -> None:
        """Set the tag bytes at byte ``offset``; they reach the device at writeback."""
        with self.lock:
            self._write(offset, data)

    def _write(self, offset: int, data) -> None:
        mv = memoryview(data).cast("B")
        end = offset + len(mv)
        if end == offset:
            return
        self._fill_partial_edges(offset, end)
        chunks = self._chunks
        for ci in range(offset >> _CHUNK_SHIFT, ((end - 1) >> _CHUNK_SHIFT) + 1):
            cbase = ci << _CHUNK_SHIFT
            lo, hi = max(offset, cbase), min(end, cbase + _CHUNK)
            entry = chunks.get(ci)
            if entry is None:
                entry = chunks[ci] = [bytearray(_CHUNK), 0]
            entry[0][lo - cbase:hi - cbase] = mv[lo - offset:hi - offset]
            s0 = (lo - cbase) >> SECTOR_SHIFT
            s1 = (hi - cbase + 511) >> SECTOR_SHIFT
            entry[1] |= ((1 << (s1 - s0)) - 1) << s0
        if len(chunks) > self.max_dirty_chunks:
            self._writeback(0)

    def _fill_partial_edges(self, offset: int, end: int) -> None:
        """Bring the device's bytes into the cache for a first or last sector that the
        write covers only in part (unless that sector is already cached)."""
        first, last = offset >> SECTOR_SHIFT, (end - 1) >> SECTOR_SHIFT
        need = []
        if offset & 511 and not self._cached(first):
            need.append(first)
        if end & 511 and last not in need and not self._cached(last):
            need.append(last)
        if not need:
            return
        if len(need) == 2 and need[1] == need[0] + 1:
            runs = [(need[0], 2)]
        else:
            runs = [(s, 1) for s in need]
        for s, n in runs:
            raw = self.dev.read(s, n)
            for k in range(n):
                ci, si = divmod(s + k, _SPC)
                entry = self._chunks.get(ci)
                if entry is None:
                    entry = self._chunks[ci] = [bytearray(_CHUNK), 0]
                entry[0][si << SECTOR_SHIFT:(si + 1) << SECTOR_SHIFT] = \
                    raw[k << SECTOR_SHIFT:(k + 1) << SECTOR_SHIFT]
                entry[1] |= 1 << si

    def _cached(self, sector: int) -> bool:
        entry = self._chunks.get(sector // _SPC)
        return entry is not None and bool(entry[1] >> (sector % _SPC) & 1)

    def writeback(self, flags: int = 0) -> int:
        """Write every dirty sector, one request per run of consecutive sectors; returns the
        number of requests.  (No flush: the caller flushes when it needs durability.)"""
        with self.lock:
            return self._writeback(flags)

    def _writeback(self, flags: int) -> int:
        if not self._chunks:
            return 0
        runs: list[tuple[int, list[memoryview]]] = []
        start = nxt = -1
        pieces: list[memoryview] = []
        for ci in sorted(self._chunks):
            cbuf, mask = self._chunks[ci]
            mv = memoryview(cbuf)
            if mask == _FULL:
                spans = [(0, _SPC)]
            else:
                spans = _mask_runs(mask)
            for s0, s1 in spans:
                sector = ci * _SPC + s0
                piece = mv[s0 << SECTOR_SHIFT:s1 << SECTOR_SHIFT]
                if sector == nxt:
                    pieces.append(piece)
                else:
                    if pieces:
                        runs.append((start, pieces))
                    start, pieces = sector, [piece]
                nxt = ci * _SPC + s1
        if pieces:
            runs.append((start, pieces))
        for sector, bufs in runs:
            data = bufs[0] if len(bufs) == 1 else b"".join(bufs)
            self.dev.submit(Bio.write(sector, data, flags))
        self._chunks.clear()
        self.writebacks += 1
        return len(runs)

    def discard_cache(self) -> None:
        """Forget unwritten tags (after a failure the device is not trusted anyway)."""
        with self.lock:
            self._chunks.clear()


def _mask_runs(mask: int) -> list[tuple[int, int]]:
    out = []
    s = 0
    while s < _SPC:
        if mask >> s & 1:
            e = s
            while e < _SPC and mask >> e & 1:
                e += 1
            out.append((s, e))
            s = e
        else:
            s += 1
    return out
