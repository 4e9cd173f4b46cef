"""zero: reads return zeros, writes are discarded (like /dev/zero).

Kernel doc: Documentation/admin-guide/device-mapper/zero.rst.
"""

from __future__ import annotations

from typing import Sequence

from ..block import Bio
from ..block.bio import OP_READ
from ..dm.args import ArgReader
from ..dm.target import Target
from ._util import zero_fill

__all__ = ["ZeroTarget"]


class ZeroTarget(Target):
    """zero

    Takes no arguments.  Discards and write-zeroes succeed and change nothing.
    """

    name = "zero"
    version = (1, 2, 0)

    def __init__(self, resolver, start_sector: int, nr_sectors: int, args: Sequence[str],
                 *, read_only: bool = False):
        super().__init__(resolver, start_sector, nr_sectors, args, read_only=read_only)
        ArgReader(self.name, args).done()

    def map(self, bio: Bio) -> None:
        if bio.op is OP_READ:
            zero_fill(bio.data)

    @property
    def can_discard(self) -> bool:
        return True

    @property
    def can_write_zeroes(self) -> bool:
        return True

    def status(self, kind: str) -> str:
        return ""
