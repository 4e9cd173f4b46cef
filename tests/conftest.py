import hashlib
import os

import pytest

from dmkit.block import SECTOR_SIZE


def pattern_sector(i: int) -> bytes:
    """Known plaintext: sector ``i`` is a pattern derived from ``i`` (misplacement shows)."""
    return hashlib.sha256(b"dmkit-fixture:%d" % i).digest() * (SECTOR_SIZE // 32)


def pattern(start_sector: int, nr_sectors: int) -> bytes:
    return b"".join(pattern_sector(i) for i in range(start_sector, start_sector + nr_sectors))


@pytest.fixture
def make_image(tmp_path):
    """Create a zero-filled image file of ``nr_sectors`` sectors; returns its path."""
    counter = iter(range(1_000_000))

    def make(nr_sectors: int, name: str | None = None, content: bytes | None = None) -> str:
        path = tmp_path / (name or f"img{next(counter)}.img")
        with open(path, "wb") as f:
            if content is not None:
                f.write(content)
            f.truncate(nr_sectors * SECTOR_SIZE)
        return os.fspath(path)

    return make
