"""Access to the kernel-made dm-integrity images in tests/vectors/integrity/.

Images are stored zstd-compressed; they are decompressed once per test session into a
temporary directory (read-only copies are opened from there; tests that tamper copy them).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "integrity"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())
IMAGES = {im["name"]: im for im in MANIFEST["images"]}

#: what the open commands give that the superblock does not record
ALGORITHM = {
    "crc32c-journal": "crc32c",
    "sha256-journal-4k": "sha256",
    "hmac-sha256-journal": "hmac-sha256",
    "crc32c-bitmap": "crc32c",
    "crc32c-direct": "crc32c",
    "sha256-separate-meta": "sha256",
    "crc32c-journal-crash": "crc32c",
}
#: images whose data area is out of date until the journal is replayed
NEEDS_REPLAY = {"crc32c-journal-crash"}


def key_of(name: str) -> bytes | None:
    keys = IMAGES[name]["keys"]
    return bytes.fromhex(keys["hmac"]["hex"]) if "hmac" in keys else None


def pattern_sector(s: int) -> bytes:
    return hashlib.sha256(b"dmkit-fixture:%d" % s).digest() * 16


def pattern(start: int, n: int) -> bytes:
    return b"".join(pattern_sector(s) for s in range(start, start + n))


def _decompress(src: Path, dst: Path) -> None:
    try:
        import zstandard
    except ImportError:
        zstandard = None
    if zstandard is not None:
        with open(src, "rb") as fi, open(dst, "wb") as fo:
            zstandard.ZstdDecompressor().copy_stream(fi, fo)
        return
    if shutil.which("zstd"):
        subprocess.run(["zstd", "-q", "-d", "-f", str(src), "-o", str(dst)], check=True)
        return
    pytest.skip("neither the zstandard module nor the zstd tool is available to "
                "decompress the kernel images")


class ImageCache:
    def __init__(self, root: Path):
        self.root = root

    def path(self, file: str) -> Path:
        """Decompressed path of a manifest ``file`` (``integrity/NAME.img.zst``)."""
        name = Path(file).name
        assert name.endswith(".zst")
        dst = self.root / name[:-4]
        if not dst.exists():
            tmp = dst.with_suffix(dst.suffix + ".part")
            _decompress(VECTORS / name, tmp)
            os.replace(tmp, dst)
            os.chmod(dst, 0o444)
        return dst

    def files(self, name: str) -> dict[str, Path]:
        """role ("device", "meta", "data") -> decompressed path."""
        return {f["role"]: self.path(f["file"]) for f in IMAGES[name]["files"]}

    def copy(self, name: str, dest_dir: Path) -> dict[str, Path]:
        """Writable copies of an image's files in ``dest_dir``."""
        out = {}
        for role, p in self.files(name).items():
            q = dest_dir / p.name
            shutil.copyfile(p, q)
            os.chmod(q, 0o644)
            out[role] = q
        return out


class OracleImageCache(ImageCache):
    """The images dmkit's target wrote and the kernel read back (``oracle/``, see
    tests/vectors/README.md): ``path(file)`` takes a name in that folder."""

    def path(self, file: str) -> Path:
        dst = self.root / file[:-4]
        if not dst.exists():
            _decompress(VECTORS / "oracle" / file, dst)
        return dst

