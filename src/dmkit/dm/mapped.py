"""A mapped device: a table of targets behind the BlockDevice interface.

``submit`` splits each bio at target boundaries and hands each piece to its target with
the sector made relative to the target's start.  A FLUSH goes to every target that asks for
flushes.  The device's limits, integrity profile and inline-crypto capabilities are stacked
from its targets (see DESIGN.md, "dm core and targets").
"""

from __future__ import annotations

import bisect
from typing import Sequence

from ..block import SECTOR_SHIFT, Bio, BlockDevice, QueueLimits
from ..block.bio import OP_FLUSH, REQ_PREFLUSH
from ..errors import DmkitError, TableError
from .resolver import DeviceResolver
from .table import TableLine, format_line, parse_table
from .target import Target

__all__ = ["MappedDevice"]


class MappedDevice(BlockDevice):
    def __init__(self, name: str, targets: Sequence[Target], *, read_only: bool = False,
                 resolver: DeviceResolver | None = None, owns_resolver: bool = False):
        if not targets:
            raise TableError(f"{name}: a mapped device needs at least one target")
        self.name = name
        self.targets = list(targets)
        self.read_only = read_only
        self._resolver = resolver
        self._owns_resolver = owns_resolver
        self._starts = [t.start_sector for t in self.targets]
        last = self.targets[-1]
        self.nr_sectors = last.start_sector + last.nr_sectors
        self._closed = False

        limits = QueueLimits()
        for t in self.targets:
            limits = limits.stack(t.limits())
        self.limits = limits
        lbs_sectors = limits.logical_block_size >> SECTOR_SHIFT
        for t in self.targets:
            if (t.start_sector | t.nr_sectors) & (lbs_sectors - 1):
                raise TableError(
                    f"{name}: {t.name} target at sector {t.start_sector} (+{t.nr_sectors}) is "
                    f"not aligned to the {limits.logical_block_size}-byte logical block size")

        self.can_discard = not read_only and all(t.can_discard for t in self.targets)
        self.can_write_zeroes = not read_only and all(t.can_write_zeroes for t in self.targets)
        profiles = {t.integrity_profile() for t in self.targets}
        self.integrity = profiles.pop() if len(profiles) == 1 else None
        caps = self.targets[0].crypto_capabilities()
        for t in self.targets[1:]:
            other = t.crypto_capabilities()
            caps = None if caps is None or other is None else caps.intersect(other)
        self.crypto = caps

    # -- construction from table text --------------------------------------------------
    @classmethod
    def from_table(cls, text: str | Sequence[TableLine], *, name: str = "dm",
                   resolver: DeviceResolver | None = None, read_only: bool = False,
                   source: str = "table") -> "MappedDevice":
        from ..targets import get_target_class

        lines = parse_table(text, source) if isinstance(text, str) else list(text)
        owns = resolver is None
        resolver = resolver or DeviceResolver()
        built: list[Target] = []
        try:
            for line in lines:
                tcls = get_target_class(line.target_type)
                where = f"{source}:{line.lineno}: " if line.lineno else ""
                if tcls is None:
                    raise TableError(f"{where}unknown target type {line.target_type!r}")
                try:
                    built.append(tcls(resolver, line.start_sector, line.nr_sectors, line.args,
                                      read_only=read_only))
                except TableError as e:
                    raise TableError(f"{where}{e}") from None
            return cls(name, built, read_only=read_only, resolver=resolver, owns_resolver=owns)
        except BaseException:
            for t in built:
                t.close()
            if owns:
                resolver.close()
            raise

    # -- the data path ------------------------------------------------------------------
    def _submit(self, bio: Bio) -> None:
        if bio.op is OP_FLUSH:
            for t in self.targets:
                for nr in range(t.num_flush_bios):
                    flush = Bio.flush()
                    flush.target_bio_nr = nr
                    t.map(flush)
            return
        if bio.flags & REQ_PREFLUSH:
            # As dm core does: an empty flush to every target first, then the data
            # without PREFLUSH.
            self._submit(Bio.flush())
            bio = bio.remap(bio.sector)
            bio.flags &= ~REQ_PREFLUSH
        targets = self.targets
        sector, end = bio.sector, bio.end_sector
        i = bisect.bisect_right(self._starts, sector) - 1
        t = targets[i]
        if end <= t.start_sector + t.nr_sectors:  # the common case: no split
            t.map(bio.remap(sector - t.start_sector))
            return
        while sector < end:
            t = targets[i]
            n = min(end, t.start_sector + t.nr_sectors) - sector
            t.map(bio.split(sector - bio.sector, n, sector - t.start_sector))
            sector += n
            i += 1

    # -- reporting ------------------------------------------------------------------------
    def table_lines(self) -> list[str]:
        return [format_line(t.start_sector, t.nr_sectors, t.name, t.status("table"))
                for t in self.targets]

    def table(self) -> str:
        """The table as ``dmsetup table`` prints it."""
        return "".join(line + "\n" for line in self.table_lines())

    def status(self) -> str:
        """Per-segment state as ``dmsetup status`` prints it."""
        return "".join(format_line(t.start_sector, t.nr_sectors, t.name, t.status("info")) + "\n"
                       for t in self.targets)

    def message(self, sector: int, argv: Sequence[str]) -> str:
        """``dmsetup message``: send ``argv`` to the target holding ``sector``."""
        if not 0 <= sector < self.nr_sectors:
            raise TableError(f"{self.name}: message sector {sector} is outside the device")
        i = bisect.bisect_right(self._starts, sector) - 1
        return self.targets[i].message(argv)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        errors: list[DmkitError] = []
        for t in self.targets:
            try:
                t.close()
            except DmkitError as e:
                errors.append(e)
        if self._owns_resolver and self._resolver is not None:
            self._resolver.close()
        if errors:
            raise errors[0]
