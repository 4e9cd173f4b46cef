"""The block layer: bios, the BlockDevice interface, backends, and byte access."""

from .bio import SECTOR_SHIFT, SECTOR_SIZE, Bio, BioFlags, BioIntegrityPayload, BioOp
from .device import BlockDevice, CryptoCapabilities, IntegrityProfile, QueueLimits
from .file import FileDevice
from .fileobj import BlockDeviceIO
from .memory import MemoryDevice
from .rmw import read_bytes, readinto_bytes, write_bytes

__all__ = [
    "SECTOR_SHIFT",
    "SECTOR_SIZE",
    "Bio",
    "BioFlags",
    "BioIntegrityPayload",
    "BioOp",
    "BlockDevice",
    "CryptoCapabilities",
    "IntegrityProfile",
    "QueueLimits",
    "FileDevice",
    "BlockDeviceIO",
    "MemoryDevice",
    "read_bytes",
    "readinto_bytes",
    "write_bytes",
]
