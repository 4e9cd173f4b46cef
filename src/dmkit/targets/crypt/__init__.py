"""The crypt target (dm-crypt).  See :mod:`dmkit.targets.crypt.target` and
docs/targets/crypt.md; the sector ciphers are in :mod:`dmkit.crypto`."""

from .spec import CipherSpec, parse_cipher_spec
from .target import INTEGRITY_PROFILE_NAME, CryptTarget

__all__ = ["CryptTarget", "CipherSpec", "parse_cipher_spec", "INTEGRITY_PROFILE_NAME"]
