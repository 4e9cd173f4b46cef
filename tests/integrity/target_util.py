"""Building integrity targets over in-memory devices for tests."""

from __future__ import annotations

import hashlib

from dmkit.block import MemoryDevice
from dmkit.dm import DeviceResolver, MappedDevice
from dmkit.targets.integrity.target import IntegrityTarget


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def salt_rng(seed: bytes = b"salt"):
    """A deterministic ``rng(n)`` for the superblock salt."""
    return lambda n: hashlib.shake_256(seed).digest(n)


def target(devs: dict, args: str, nr_sectors: int | None = None, **kw) -> IntegrityTarget:
    """An IntegrityTarget over the named devices; ``nr_sectors`` defaults to all the device
    provides (found by loading it once with one block, which formats a zeroed device)."""
    kw.setdefault("rng", salt_rng())
    resolver = DeviceResolver(dict(devs))
    if nr_sectors is None:
        probe = IntegrityTarget(resolver, 0, 8, args.split(), **kw)
        nr_sectors = probe.provided_data_sectors
        probe.close()
    return IntegrityTarget(resolver, 0, nr_sectors, args.split(), **kw)


def mapped(devs: dict, args: str, nr_sectors: int | None = None, **kw) -> MappedDevice:
    t = target(devs, args, nr_sectors, **kw)
    return MappedDevice("integ", [t], resolver=t.resolver)


def memdisk(nr_sectors: int = 4096, **kw) -> MemoryDevice:
    return MemoryDevice(nr_sectors, name="disk", **kw)


def digest(dev) -> str:
    return hashlib.sha256(bytes(dev.buf)).hexdigest()
