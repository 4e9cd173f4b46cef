"""dm-integrity in userspace: the kernel's on-disk format, byte for byte.

Kernel doc: Documentation/admin-guide/device-mapper/dm-integrity.rst; source:
drivers/md/dm-integrity.c (Linux 6.1, target v1.10.0); cryptsetup lib/integrity/.

Split by concern:

- :mod:`.layout` — the superblock and journal structures (``struct superblock``...);
- :mod:`.geometry` — journal size, tag areas, provided size, where a block and its tag are;
- :mod:`.tags` — the tag functions (``internal_hash``), batched;
- :mod:`.journal` — what a replay would do, the dirty bitmap;
- :mod:`.reader` — a verified read-only BlockDevice over an image;
- :mod:`.target` — the table target (modes J/B/D/R, the write path, replay, the bitmap,
  recalculation), with :mod:`.options` (the table line), :mod:`.datapath` (requests),
  :mod:`.jwriter` (the journal's write side), :mod:`.tagstore` (the tag cache) and
  :mod:`.bitmap` (bitmap-mode bit operations).
"""

from .geometry import (
    Extent,
    Geometry,
    JournalGeometry,
    compute_provided_data_sectors,
    format_superblock,
)
from .journal import JournalScan, JournalStatus, UnreplayedJournalError, scan_journal
from .layout import SbFlags, Superblock
from .reader import IntegrityReader, read_superblock
from .tags import TagAlgorithm, TagFunction, algorithm, algorithm_names, kernel_name


def __getattr__(name: str):
    # The table target (and its data path) is imported on first use: the LUKS code needs
    # only the layout and geometry, and CLI start-up time counts.
    if name == "IntegrityTarget":
        from .target import IntegrityTarget

        return IntegrityTarget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "Superblock",
    "SbFlags",
    "Geometry",
    "JournalGeometry",
    "Extent",
    "compute_provided_data_sectors",
    "format_superblock",
    "JournalScan",
    "JournalStatus",
    "UnreplayedJournalError",
    "scan_journal",
    "IntegrityReader",
    "read_superblock",
    "TagAlgorithm",
    "TagFunction",
    "algorithm",
    "algorithm_names",
    "kernel_name",
    "IntegrityTarget",
]
