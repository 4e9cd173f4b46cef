"""striped: RAID-0 over several devices, in chunks that rotate among them.

Kernel doc: Documentation/admin-guide/device-mapper/striped.rst; validation, mapping and
status follow drivers/md/dm-stripe.c (target version 1.6.0).

Target-relative sector ``s`` lies in chunk ``c, o = divmod(s, chunk_size)``; chunk ``c``
is on stripe ``c % stripes`` at row ``c // stripes``, that is at sector
``offset[stripe] + row * chunk_size + o`` of the stripe's device.
"""

from __future__ import annotations

from typing import Sequence

from ..block import SECTOR_SHIFT, Bio, BlockDevice, QueueLimits
from ..block.bio import OP_DISCARD, OP_FLUSH, OP_WRITE_ZEROES
from ..dm.args import ArgReader
from ..dm.table import join_args
from ..dm.target import Target
from ..errors import DmkitError, NotSupportedError

__all__ = ["StripedTarget"]

_U32_MAX = 0xFFFF_FFFF


class StripedTarget(Target):
    """striped <num stripes> <chunk size> [<dev path> <offset>]+

    ``chunk size`` is in sectors.  The target length must divide into ``num stripes``
    equal widths, each a whole number of chunks; each device holds one width from its
    ``offset``.
    """

    name = "striped"
    version = (1, 6, 0)
    passes_integrity = True

    def __init__(self, resolver, start_sector: int, nr_sectors: int, args: Sequence[str],
                 *, read_only: bool = False):
        super().__init__(resolver, start_sector, nr_sectors, args, read_only=read_only)
        r = ArgReader(self.name, args)
        if len(args) < 2:
            raise r.error("expected <num stripes> <chunk size> [<dev path> <offset>]+")
        self.stripes = r.uint("stripe count", 1, _U32_MAX)
        self.chunk_size = r.uint("chunk size", 1, _U32_MAX)
        if nr_sectors % self.stripes:
            raise r.error(f"target length {nr_sectors} is not divisible by the number of "
                          f"stripes {self.stripes}")
        self.stripe_width = nr_sectors // self.stripes
        if self.stripe_width % self.chunk_size:
            raise r.error(f"stripe width {self.stripe_width} (target length / stripes) is "
                          f"not divisible by the chunk size {self.chunk_size}")
        if len(args) != 2 + 2 * self.stripes:
            raise r.error(f"{self.stripes} stripes need {2 * self.stripes} device "
                          f"arguments (<dev path> <offset> each), got {len(args) - 2}")
        self.specs: list[str] = []
        self.offsets: list[int] = []
        for i in range(self.stripes):
            self.specs.append(r.shift(f"device path of stripe {i}"))
            self.offsets.append(r.uint(f"offset of stripe {i}"))
        r.done()
        # The kernel asks for stripes flushes per flush of the device; see map().
        self.num_flush_bios = self.stripes
        self.error_count = [0] * self.stripes
        try:
            self.devs = [self.get_device(spec, f"stripe {i} device")
                         for i, spec in enumerate(self.specs)]
            for i, dev in enumerate(self.devs):
                self.check_within(dev, self.offsets[i], self.stripe_width, f"stripe {i} device")
            lbs = self.limits().logical_block_size
            if (self.chunk_size << SECTOR_SHIFT) % lbs:
                raise r.error(f"chunk size {self.chunk_size} sectors is not a multiple of the "
                              f"{lbs}-byte logical block size of the devices")
        except BaseException:
            self.close()
            raise
        # stripe i is the first stripe on its device: the one that carries its flush
        self._flushes_device = [self.devs.index(dev) == i for i, dev in enumerate(self.devs)]

    # -- the data path ----------------------------------------------------------------------
    def map(self, bio: Bio) -> None:
        op = bio.op
        if op is OP_FLUSH:
            self._map_flush(bio)
        elif op is OP_DISCARD or op is OP_WRITE_ZEROES:
            self._map_range(bio)
        else:
            self._map_data(bio)

    def _map_data(self, bio: Bio) -> None:
        """One sub-bio per piece of a chunk; buffers are shared, not copied."""
        chunk, stripes, offsets = self.chunk_size, self.stripes, self.offsets
        sector, end = bio.sector, bio.end_sector
        if stripes == 1:  # chunks follow each other on the one device: no split
            self._submit(0, bio.remap(offsets[0] + sector))
            return
        if bio.nr_sectors > chunk * stripes and bio.integrity is None and bio.crypt_ctx is None:
            self._map_data_vectored(bio)
            return
        while sector < end:
            chunk_nr, in_chunk = divmod(sector, chunk)
            row, stripe = divmod(chunk_nr, stripes)
            n = min(chunk - in_chunk, end - sector)
            dev_sector = offsets[stripe] + row * chunk + in_chunk
            if n == bio.nr_sectors:
                sub = bio.remap(dev_sector)
            else:
                sub = bio.split(sector - bio.sector, n, dev_sector)
            self._submit(stripe, sub)
            sector += n

    def _map_data_vectored(self, bio: Bio) -> None:
        """A bio spanning more than a row: each stripe's pieces are consecutive on its
        device, so each stripe gets one vectored request instead of one per chunk."""
        chunk, stripes, offsets = self.chunk_size, self.stripes, self.offsets
        sector, end, data = bio.sector, bio.end_sector, bio.data
        starts: list[int | None] = [None] * stripes
        pieces: list[list[memoryview]] = [[] for _ in range(stripes)]
        while sector < end:
            chunk_nr, in_chunk = divmod(sector, chunk)
            row, stripe = divmod(chunk_nr, stripes)
            n = min(chunk - in_chunk, end - sector)
            if starts[stripe] is None:
                starts[stripe] = offsets[stripe] + row * chunk + in_chunk
            lo = (sector - bio.sector) << SECTOR_SHIFT
            pieces[stripe].append(data[lo:lo + (n << SECTOR_SHIFT)])
            sector += n
        for stripe in range(stripes):
            if pieces[stripe]:
                dev = self.devs[stripe]
                try:
                    dev.submit_vec(bio.op, starts[stripe], pieces[stripe], bio.flags)
                except NotSupportedError:
                    raise
                except DmkitError:
                    self._note_error(dev)
                    raise

    def _map_range(self, bio: Bio) -> None:
        """Discard and write-zeroes: as dm-stripe, one request per stripe, covering the
        stripe's share of the range (contiguous on its device)."""
        for stripe in range(self.stripes):
            begin = self._stripe_position(bio.sector, stripe)
            end = self._stripe_position(bio.end_sector, stripe)
            if begin < end:
                sub = Bio(bio.op, self.offsets[stripe] + begin, end - begin, None, bio.flags)
                self._submit(stripe, sub)

    def _stripe_position(self, sector: int, stripe: int) -> int:
        """How many sectors of ``stripe`` lie before target sector ``sector``."""
        chunk_nr, in_chunk = divmod(sector, self.chunk_size)
        row, at = divmod(chunk_nr, self.stripes)
        if stripe < at:
            in_chunk = self.chunk_size
        elif stripe > at:
            in_chunk = 0
        return row * self.chunk_size + in_chunk

    def _map_flush(self, bio: Bio) -> None:
        # dm core sends num_flush_bios (= stripes) empty flushes numbered by
        # target_bio_nr (the kernel's dm_bio_get_target_bio_nr): flush number i is stripe
        # i's.  A device shared by several stripes is flushed once, by its first stripe.
        stripe = bio.target_bio_nr
        if self._flushes_device[stripe]:
            self._submit(stripe, bio)

    def _submit(self, stripe: int, bio: Bio) -> None:
        try:
            self.devs[stripe].submit(bio)
        except NotSupportedError:
            raise
        except DmkitError:
            self._note_error(self.devs[stripe])
            raise

    def _note_error(self, dev: BlockDevice) -> None:
        # As stripe_end_io: the error counts against every stripe on that device.
        for i, d in enumerate(self.devs):
            if d is dev:
                self.error_count[i] += 1

    # -- what the mapped device stacks ----------------------------------------------------------
    def limits(self) -> QueueLimits:
        base = super().limits()
        chunk_bytes = self.chunk_size << SECTOR_SHIFT
        return QueueLimits(base.logical_block_size, base.physical_block_size,
                           io_min=max(base.io_min, chunk_bytes),
                           io_opt=chunk_bytes * self.stripes)

    @property
    def can_discard(self) -> bool:
        return all(dev.can_discard for dev in self.devs)

    @property
    def can_write_zeroes(self) -> bool:
        return all(dev.can_write_zeroes for dev in self.devs)

    # -- reporting ----------------------------------------------------------------------------
    def status(self, kind: str) -> str:
        if kind == "table":
            words = [str(self.stripes), str(self.chunk_size)]
            for spec, offset in zip(self.specs, self.offsets):
                words += [spec, str(offset)]
            return join_args(words)
        # "<#stripes> <dev>... 1 <A|D per stripe>", as stripe_status prints it
        health = "".join("D" if n else "A" for n in self.error_count)
        return " ".join([str(self.stripes), *(join_args([s]) for s in self.specs), "1", health])
