"""The Target base class: what every device-mapper target implements.

A target is built from its table arguments, maps bios addressed relative to its own start
(the kernel's ``dm_target_offset``), reports status, answers messages, lists the devices it
uses, and is closed.  Class attributes declare what it passes through from the devices
below (integrity profiles, inline-crypto capabilities) and how many flush bios it wants.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, ClassVar, Sequence

from ..block import Bio, BlockDevice, CryptoCapabilities, IntegrityProfile, QueueLimits
from ..errors import TableError

if TYPE_CHECKING:
    from .resolver import DeviceResolver

__all__ = ["Target", "StatusType"]

StatusType = str  # "table" or "info"


class Target(abc.ABC):
    #: the name in table lines
    name: ClassVar[str]
    version: ClassVar[tuple[int, int, int]] = (1, 0, 0)
    #: the kernel's DM_TARGET_PASSES_INTEGRITY
    passes_integrity: ClassVar[bool] = False
    #: the kernel's DM_TARGET_PASSES_CRYPTO
    passes_crypto: ClassVar[bool] = False
    #: how many FLUSH bios the target receives for one flush of the mapped device
    num_flush_bios: ClassVar[int] = 0
    #: whether reads may be mapped on several threads at once (dmkit's own; see
    #: dmkit.block.parallel): false unless a target knows it holds no shared state on the
    #: read path and the devices below allow it
    parallel_reads: bool = False

    def __init__(self, resolver: "DeviceResolver", start_sector: int, nr_sectors: int,
                 args: Sequence[str], *, read_only: bool = False):
        self.resolver = resolver
        self.start_sector = start_sector
        self.nr_sectors = nr_sectors
        self.read_only = read_only
        self._devices: list[BlockDevice] = []

    # -- for constructors ------------------------------------------------------------
    def get_device(self, spec: str, what: str = "device") -> BlockDevice:
        """Open a device named in the table (path or mapped-device name) for this target."""
        try:
            dev = self.resolver.get(spec, read_only=self.read_only)
        except TableError:
            raise
        except Exception as e:
            raise TableError(f"{self.name}: cannot open {what} {spec!r}: {e}") from None
        self._devices.append(dev)
        return dev

    def check_within(self, dev: BlockDevice, offset: int, nr_sectors: int, what: str) -> None:
        if offset + nr_sectors > dev.nr_sectors:
            raise TableError(f"{self.name}: {what} {dev.name}: sectors {offset}+{nr_sectors} "
                             f"go past its end ({dev.nr_sectors} sectors)")

    # -- the data path ----------------------------------------------------------------
    @abc.abstractmethod
    def map(self, bio: Bio) -> None:
        """Carry out ``bio``, whose sector is relative to the start of this target."""

    # -- reporting ----------------------------------------------------------------------
    @abc.abstractmethod
    def status(self, kind: StatusType) -> str:
        """``table``: arguments that rebuild an equal target.  ``info``: its state."""

    def message(self, argv: Sequence[str]) -> str:
        raise TableError(f"{self.name}: unrecognised message {' '.join(argv)!r}")

    def devices(self) -> list[BlockDevice]:
        return list(self._devices)

    # -- what the mapped device stacks ------------------------------------------------------
    def limits(self) -> QueueLimits:
        out = QueueLimits()
        for dev in self._devices:
            out = out.stack(dev.limits)
        return out

    @property
    def can_discard(self) -> bool:
        return False

    @property
    def can_write_zeroes(self) -> bool:
        return False

    def integrity_profile(self) -> IntegrityProfile | None:
        if not self.passes_integrity or not self._devices:
            return None
        profiles = {dev.integrity for dev in self._devices}
        return profiles.pop() if len(profiles) == 1 else None

    def crypto_capabilities(self) -> CryptoCapabilities | None:
        if not self.passes_crypto or not self._devices:
            return None
        caps = self._devices[0].crypto
        for dev in self._devices[1:]:
            if caps is None or dev.crypto is None:
                return None
            caps = caps.intersect(dev.crypto)
        return caps

    def close(self) -> None:
        devs, self._devices = self._devices, []
        for dev in devs:
            self.resolver.put(dev)
