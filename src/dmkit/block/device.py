"""The BlockDevice interface: geometry, capabilities, and ``submit``.

Every layer of dmkit — an image file, a mapped device, a target's underlying device — is a
BlockDevice.  Requests are synchronous: ``submit`` returns when the bio is complete (a
read's buffer is filled) or raises a :class:`~dmkit.errors.DmkitError`.

``submit`` checks the request against the device's geometry once, at the top, then calls
the backend's ``_submit``; backends and targets can rely on well-formed bios.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from ..errors import InvalidBioError, NotSupportedError, ReadOnlyError
from .bio import OP_DISCARD, OP_FLUSH, OP_READ, OP_WRITE, SECTOR_SHIFT, SECTOR_SIZE, Bio

__all__ = [
    "QueueLimits",
    "IntegrityProfile",
    "CryptoCapabilities",
    "BlockDevice",
]


@dataclass(frozen=True)
class QueueLimits:
    """The subset of the kernel's ``struct queue_limits`` that dmkit stacks."""

    logical_block_size: int = SECTOR_SIZE
    physical_block_size: int = SECTOR_SIZE
    io_min: int = SECTOR_SIZE
    io_opt: int = 0

    def __post_init__(self):
        for name in ("logical_block_size", "physical_block_size"):
            v = getattr(self, name)
            if v < SECTOR_SIZE or v & (v - 1) or v > 65536:
                raise ValueError(f"{name} {v} is not a power of two in 512..65536")

    def stack(self, other: "QueueLimits") -> "QueueLimits":
        """Combine with a lower device's limits, as ``blk_stack_limits`` does."""
        return QueueLimits(
            logical_block_size=max(self.logical_block_size, other.logical_block_size),
            physical_block_size=max(self.physical_block_size, other.physical_block_size),
            io_min=max(self.io_min, other.io_min),
            io_opt=max(self.io_opt, other.io_opt),
        )


@dataclass(frozen=True)
class IntegrityProfile:
    """Per-block metadata a device stores for the layer above (``blk_integrity``).

    dm-integrity without an internal hash registers ``DM-DIF-EXT-TAG`` with ``tuple_size``
    bytes of metadata for every ``interval_bytes`` of data.
    """

    name: str
    tuple_size: int
    tag_size: int
    interval_bytes: int


@dataclass(frozen=True)
class CryptoCapabilities:
    """Inline-encryption capabilities (``blk_crypto_profile``): for each crypto mode, a
    bitmask of supported data unit sizes, and the largest DUN the hardware takes."""

    modes: Mapping[str, int] = field(default_factory=dict)
    max_dun_bytes: int = 8

    def __post_init__(self):
        object.__setattr__(self, "modes", MappingProxyType(dict(self.modes)))

    def intersect(self, other: "CryptoCapabilities") -> "CryptoCapabilities | None":
        modes = {m: self.modes[m] & other.modes[m] for m in self.modes if m in other.modes}
        modes = {m: mask for m, mask in modes.items() if mask}
        if not modes:
            return None
        return CryptoCapabilities(modes, min(self.max_dun_bytes, other.max_dun_bytes))


class BlockDevice(abc.ABC):
    """A device of ``nr_sectors`` 512-byte sectors.

    Subclasses set the attributes in ``__init__`` and implement ``_submit``.
    """

    name: str = "?"
    nr_sectors: int = 0
    limits: QueueLimits = QueueLimits()
    read_only: bool = False
    can_discard: bool = False
    can_write_zeroes: bool = False
    integrity: IntegrityProfile | None = None
    crypto: CryptoCapabilities | None = None

    @property
    def can_write(self) -> bool:
        return not self.read_only

    @property
    def logical_block_size(self) -> int:
        return self.limits.logical_block_size

    @property
    def size_bytes(self) -> int:
        return self.nr_sectors << SECTOR_SHIFT

    # -- the one entry point ---------------------------------------------------------
    def submit(self, bio: Bio) -> None:
        """Carry out ``bio``; raise a DmkitError naming device and sector on failure."""
        self.check_bio(bio)
        self._submit(bio)

    @abc.abstractmethod
    def _submit(self, bio: Bio) -> None:
        ...

    def check_bio(self, bio: Bio) -> None:
        """Reject a malformed request with an error naming this device and the sector.

        Runs once per bio per layer, so it is written for speed (module-global op
        aliases, plain-int arithmetic).
        """
        op = bio.op
        if op is OP_FLUSH:
            return
        sector, nr = bio.sector, bio.nr_sectors
        if sector < 0 or nr <= 0 or sector + nr > self.nr_sectors:
            raise InvalidBioError(
                f"{self.name}: request for sectors {sector}+{nr} is outside the device "
                f"({self.nr_sectors} sectors)")
        lbs = self.limits.logical_block_size
        if (sector | nr) & ((lbs >> SECTOR_SHIFT) - 1):
            raise InvalidBioError(
                f"{self.name}: request for sectors {sector}+{nr} is not aligned to the "
                f"{lbs}-byte logical block size")
        if op is OP_READ or op is OP_WRITE:
            data = bio.data
            if data is None or len(data) != nr << SECTOR_SHIFT:
                raise InvalidBioError(f"{self.name}: buffer size does not match {nr} sectors")
            if op is OP_READ:
                if data.readonly:
                    raise InvalidBioError(f"{self.name}: read buffer is read-only")
            elif self.read_only:
                raise ReadOnlyError(f"{self.name}: device is read-only")
        else:
            if self.read_only:
                raise ReadOnlyError(f"{self.name}: device is read-only")
            if op is OP_DISCARD:
                if not self.can_discard:
                    raise NotSupportedError(f"{self.name}: discard not supported")
            elif not self.can_write_zeroes:
                raise NotSupportedError(f"{self.name}: write-zeroes not supported")
        if bio.integrity is not None:
            self._check_integrity(bio)

    def _check_integrity(self, bio: Bio) -> None:
        prof = self.integrity
        if prof is None:
            raise InvalidBioError(f"{self.name}: bio carries integrity metadata but the "
                                  "device has no integrity profile")
        want = (bio.nr_sectors << SECTOR_SHIFT) // prof.interval_bytes * prof.tuple_size
        if len(bio.integrity.buf) != want or bio.integrity.tuple_size != prof.tuple_size:
            raise InvalidBioError(f"{self.name}: integrity metadata for sector {bio.sector} "
                                  f"is {len(bio.integrity.buf)} bytes, expected {want}")

    def submit_vec(self, op, sector: int, bufs, flags: int = 0) -> None:
        """Read or write consecutive sectors from several buffers (a multi-segment bio).

        ``bufs`` are whole-sector memoryviews covering ``sector`` onwards in order.  The
        default sends one bio per buffer; backends that can do vectored I/O in one call
        (FileDevice: preadv/pwritev) override it.
        """
        for buf in bufs:
            n = len(buf) >> SECTOR_SHIFT
            self.submit(Bio(op, sector, n, buf, flags))
            sector += n

    def start_writeback(self, sector: int, nr_sectors: int) -> None:
        """A hint that the written range will be flushed soon: a backend with a write-back
        cache may start writing it out now.  No ordering or durability follows from it.
        The default does nothing."""

    # -- conveniences built on submit --------------------------------------------------
    def read(self, sector: int, nr_sectors: int, flags: int = 0) -> bytearray:
        buf = bytearray(nr_sectors << SECTOR_SHIFT)
        self.submit(Bio.read(sector, buf, flags))
        return buf

    def readinto(self, sector: int, buf, flags: int = 0) -> None:
        self.submit(Bio.read(sector, buf, flags))

    def write(self, sector: int, data, flags: int = 0) -> None:
        self.submit(Bio.write(sector, data, flags))

    def flush(self) -> None:
        self.submit(Bio.flush())

    def discard(self, sector: int, nr_sectors: int) -> None:
        self.submit(Bio.discard(sector, nr_sectors))

    def write_zeroes(self, sector: int, nr_sectors: int) -> None:
        self.submit(Bio.write_zeroes(sector, nr_sectors))

    def close(self) -> None:
        """Release what the device holds.  Closing twice is harmless."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.nr_sectors} sectors>"

