"""dmkit: the Linux data-at-rest protection stack in userspace.

Device-mapper targets, dm-integrity, dm-crypt, LUKS and the kernel's key types, reading and
writing the kernel's and cryptsetup's on-disk formats.  See DESIGN.md for the layers.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
