"""The benchmark cases.  Each module registers its cases in :data:`benchmarks.registry.CASES`
when imported; a new module is added to this list by hand (no import magic)."""

from . import crypt, integrity, luks, peers, targets

__all__ = ["crypt", "integrity", "luks", "peers", "targets"]
