"""Helpers for the LUKS tests: the stored cryptsetup-made headers, fast KDF settings,
a deterministic rng, and a device that fails on a chosen write."""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path

from dmkit.block import MemoryDevice
from dmkit.block.bio import OP_WRITE
from dmkit.errors import BlockIOError
from dmkit.luks import Pbkdf

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "luks"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())
IMAGES = {im["name"]: im for im in MANIFEST["images"]}
LUKS2_NAMES = [n for n, im in IMAGES.items() if im["kind"] == "luks2"]
ALL_NAMES = list(IMAGES)

FAST = Pbkdf(type="pbkdf2", iterations=1000)
FAST_ARGON2ID = Pbkdf(type="argon2id", iterations=4, memory_kb=64, parallel=1)
FAST_ARGON2I = Pbkdf(type="argon2i", iterations=4, memory_kb=64, parallel=1)


@functools.lru_cache(maxsize=None)
def image_bytes(name: str) -> bytes:
    """The stored header image of manifest entry ``name``, decompressed."""
    import zstandard
    raw = (VECTORS / IMAGES[name]["file"]).read_bytes()
    return zstandard.ZstdDecompressor().decompress(raw, max_output_size=16 << 20)


def image_device(name: str) -> MemoryDevice:
    return MemoryDevice(initial=image_bytes(name), name=name)


def seeded_rng(seed: int = 1):
    r = random.Random(seed)
    return r.randbytes


class FailingDevice(MemoryDevice):
    """A memory device whose ``fail_at``-th write (0-based) writes only its first half
    and then fails, as a crash in the middle of a write would leave it."""

    def __init__(self, initial: bytes, fail_at: int | None = None):
        super().__init__(initial=initial, name="failing")
        self.fail_at = fail_at
        self.writes = 0

    def _submit(self, bio):
        if bio.op is OP_WRITE:
            n = self.writes
            self.writes += 1
            if self.fail_at is not None and n == self.fail_at:
                half = (bio.nr_sectors // 2) * 512
                lo = bio.sector * 512
                self.buf[lo:lo + half] = bio.data[:half]
                raise BlockIOError(f"{self.name}: injected failure at write {n}")
        super()._submit(bio)
