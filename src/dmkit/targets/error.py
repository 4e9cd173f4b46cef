"""error: every request fails with an I/O error.

Kernel: ``io_err_target`` in drivers/md/dm-target.c.
"""

from __future__ import annotations

from typing import Sequence

from ..block import Bio
from ..dm.args import ArgReader
from ..dm.target import Target
from ..errors import BlockIOError

__all__ = ["ErrorTarget"]


class ErrorTarget(Target):
    """error

    Takes no arguments.  Reads, writes, discards and write-zeroes fail with EIO, naming
    the sector; flushes are not sent to it (as in the kernel).
    """

    name = "error"
    version = (1, 6, 0)

    def __init__(self, resolver, start_sector: int, nr_sectors: int, args: Sequence[str],
                 *, read_only: bool = False):
        super().__init__(resolver, start_sector, nr_sectors, args, read_only=read_only)
        ArgReader(self.name, args).done()

    def map(self, bio: Bio) -> None:
        raise BlockIOError(f"error: {bio.op.name.lower()} at sector "
                           f"{self.start_sector + bio.sector} hits the error target")

    @property
    def can_discard(self) -> bool:
        return True  # accepted, then failed: the kernel returns EIO, not EOPNOTSUPP

    @property
    def can_write_zeroes(self) -> bool:
        return True

    def status(self, kind: str) -> str:
        return ""
