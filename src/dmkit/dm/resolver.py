"""Resolving device names in tables: image paths and other mapped devices.

A table names its devices as the kernel's do, by path.  Here a name is, in order:
``/dev/mapper/NAME`` or ``NAME`` of a mapped device registered with the resolver; a
``major:minor`` device number (looked up in sysfs); or a path to an image file or block
device.  The same path used twice (a striped set over two
regions of one image) is opened once and reference counted, as ``dm_get_device`` does.
"""

from __future__ import annotations

import os
import re

from ..block import BlockDevice, FileDevice
from ..errors import DeviceError

__all__ = ["DeviceResolver"]

MAPPER_PREFIX = "/dev/mapper/"
_DEVNUM = re.compile(r"\d+:\d+")


def _devnum_path(spec: str) -> str:
    """``major:minor`` -> ``/dev/NAME``, through sysfs (as the kernel accepts both forms)."""
    try:
        with open(f"/sys/dev/block/{spec}/uevent") as f:
            for line in f:
                if line.startswith("DEVNAME="):
                    return "/dev/" + line.split("=", 1)[1].strip()
    except OSError:
        pass
    raise DeviceError(f"{spec}: no block device with that major:minor number")


class DeviceResolver:
    """What a table's targets reach outside themselves: devices, and keys.

    ``keyring`` is where ``:<size>:<type>:<description>`` key references in tables are
    looked up; by default the dmkit key store (``$DMKIT_KEYRING``) with the kernel
    keyring behind it, loaded on first use.
    """

    def __init__(self, mapped: dict[str, BlockDevice] | None = None, *, keyring=None):
        #: named mapped devices that tables may stack on
        self.mapped: dict[str, BlockDevice] = dict(mapped or {})
        self._open: dict[tuple[str, bool], list] = {}  # key -> [device, refcount]
        self.keyring = keyring

    def resolve_key(self, reference: str) -> bytes:
        """The key bytes a table's ``:<size>:<type>:<description>`` names (size checked)."""
        from ..keys import KernelKeyring, KeyStore, kernel_keyring_status, resolve_key_reference

        if self.keyring is None:
            fallback = KernelKeyring() if kernel_keyring_status()[0] else None
            self.keyring = KeyStore().load(fallback=fallback)
        return resolve_key_reference(reference, self.keyring)

    def register(self, name: str, dev: BlockDevice) -> None:
        if name in self.mapped:
            raise DeviceError(f"{name}: a mapped device of that name exists")
        self.mapped[name] = dev

    def unregister(self, name: str) -> None:
        self.mapped.pop(name, None)

    def get(self, spec: str, *, read_only: bool = False) -> BlockDevice:
        name = spec[len(MAPPER_PREFIX):] if spec.startswith(MAPPER_PREFIX) else spec
        if name in self.mapped:
            dev = self.mapped[name]
            if not read_only and dev.read_only:
                raise DeviceError(f"{spec}: mapped device is read-only")
            return dev
        path = _devnum_path(spec) if _DEVNUM.fullmatch(spec) else spec
        key = (os.path.realpath(path), read_only)
        entry = self._open.get(key)
        if entry is None:
            if not os.path.exists(path):
                raise DeviceError(f"{spec}: no such file, device or mapped device")
            entry = self._open[key] = [FileDevice(path, read_only=read_only, name=spec), 0]
        entry[1] += 1
        return entry[0]

    def put(self, dev: BlockDevice) -> None:
        for key, entry in list(self._open.items()):
            if entry[0] is dev:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._open[key]
                    dev.close()
                return

    def close(self) -> None:
        for dev, _ in self._open.values():
            dev.close()
        self._open.clear()
