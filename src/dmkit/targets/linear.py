"""linear: maps a range of the device onto a range of another device.

Kernel doc: Documentation/admin-guide/device-mapper/linear.rst.
"""

from __future__ import annotations

from typing import Sequence

from ..block import Bio
from ..block.bio import OP_FLUSH
from ..dm.args import ArgReader
from ..dm.target import Target

__all__ = ["LinearTarget"]


class LinearTarget(Target):
    """linear <dev_path> <offset>

    ``offset`` is the starting sector on ``dev_path``.
    """

    name = "linear"
    version = (1, 4, 0)
    passes_integrity = True
    passes_crypto = True
    num_flush_bios = 1

    def __init__(self, resolver, start_sector: int, nr_sectors: int, args: Sequence[str],
                 *, read_only: bool = False):
        super().__init__(resolver, start_sector, nr_sectors, args, read_only=read_only)
        r = ArgReader(self.name, args)
        self.dev_spec = r.shift("device path")
        self.offset = r.uint("device sector")
        r.done()
        self.dev = self.get_device(self.dev_spec)
        self.check_within(self.dev, self.offset, nr_sectors, "device")

    def map(self, bio: Bio) -> None:
        if bio.op is OP_FLUSH:
            self.dev.submit(bio)
        else:
            self.dev.submit(bio.remap(self.offset + bio.sector))

    @property
    def can_discard(self) -> bool:
        return self.dev.can_discard

    @property
    def can_write_zeroes(self) -> bool:
        return self.dev.can_write_zeroes

    def status(self, kind: str) -> str:
        if kind == "table":
            return f"{self.dev_spec} {self.offset}"
        return ""
