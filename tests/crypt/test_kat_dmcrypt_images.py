"""Known answers from the real kernel: plain dm-crypt images for every IV mode and cipher
dmkit has (tests/vectors/crypt/dmcrypt-ivs/, made by its build.py + oracle-script.sh in
Linux 6.1; see the crypt section of tests/vectors/README.md).

Each image holds the fixture pattern written by the kernel through one table line. dmkit,
given the same line over the image, reads exactly the pattern and prints the kernel's
table back; and writing the pattern through the same line onto a zeroed image gives the
kernel's bytes: the whole file for the plain images, the data and the tags (read back
through the integrity target) for those over dm-integrity. For ``random`` IVs the kernel's
IVs are fed to dmkit's injectable source, so that case is byte-exact too.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path

import pytest
import zstandard

from dmkit.block import Bio, BioIntegrityPayload
from dmkit.block.bio import OP_READ
from dmkit.dm import DeviceResolver, MappedDevice

from ..conftest import pattern

IVS = Path(__file__).resolve().parents[1] / "vectors" / "crypt" / "dmcrypt-ivs"
MANIFEST = json.loads((IVS / "manifest.json").read_text())
IMAGES = {im["name"]: im for im in MANIFEST["images"]}
NAMES = sorted(IMAGES)
DIF = sorted(n for n in NAMES if "dif_table_given" in IMAGES[n])

# What the images must cover (the brief of issue 5's known-answer item); a case missing
# from the manifest fails here rather than silently shrinking the test.
REQUIRED = {
    "aes-cbc-plain", "aes-cbc-plain64", "aes-cbc-plain64be", "aes-cbc-essiv:sha256",
    "aes-cbc-benbi", "aes-cbc-null", "aes-cbc-eboiv", "aes-xts-plain", "aes-xts-plain64",
    "aes-xts-plain64be", "aes-xts-essiv:sha256", "aes-ecb", "capi:cbc(aes)-plain64",
    "aes:2-cbc-plain64", "cipher_null-ecb", "capi:xts(aes)-plain64", "aes:2-cbc-essiv:sha256",
    "aes:4-xts-plain64", "capi:gcm(aes)-plain64", "capi:rfc7539(chacha20,poly1305)-plain64",
    "capi:authenc(hmac(sha256),cbc(aes))-plain64",
    "capi:authenc(hmac(sha512),xts(aes))-plain64", "aes-xts-random",
}


def test_the_manifest_covers_every_combination():
    ciphers = {im["cipher"] for im in IMAGES.values()}
    assert REQUIRED <= ciphers, REQUIRED - ciphers
    opts = {o for im in IMAGES.values() for o in im["optional"]}
    assert {"sector_size:4096", "iv_large_sectors", "sector_size:2048",
            "sector_size:1024"} <= opts
    assert any(im["iv_offset"] >= 1 << 32 for im in IMAGES.values())
    assert any(im["offset"] for im in IMAGES.values())
    assert MANIFEST["refused_by_the_kernel"] == []
    assert MANIFEST["versions"]["kernel"].startswith("6.1.")
    for im in IMAGES.values():
        assert all(s.startswith("rc=0 ") for s in im["status"]), im["name"]
        assert im["kernel_read_sha256"] == MANIFEST["pattern"]["sha256"]


def unpack(tmp_path: Path, im: dict) -> str:
    raw = zstandard.ZstdDecompressor().decompress((IVS / im["file"]).read_bytes(),
                                                  max_output_size=im["raw_size"])
    assert hashlib.sha256(raw).hexdigest() == im["raw_sha256"]
    out = tmp_path / f"{im['name']}.img"
    out.write_bytes(raw)
    return str(out)


def zero_image(tmp_path: Path, im: dict) -> str:
    out = tmp_path / f"{im['name']}.dmkit.img"
    with open(out, "wb") as f:
        f.truncate(im["raw_size"])
    return str(out)


def tables(im: dict, path: str) -> tuple[str | None, str]:
    """The kernel's lines as given to ``dmsetup create``, the guest disk replaced by
    ``path`` (and the integrity device, when there is one, by the mapped name ``dif``)."""
    crypt = im["table_given"].split()
    assert crypt[2] == "crypt" and crypt[6] == (
        f"/dev/mapper/{im['name']}_dif" if "dif_table_given" in im else im["guest_device"])
    if "dif_table_given" not in im:
        crypt[6] = path
        return None, " ".join(crypt)
    dif = im["dif_table_given"].split()
    assert dif[2] == "integrity" and dif[3] == im["guest_device"]
    dif[3], crypt[6] = path, "dif"
    return " ".join(dif), " ".join(crypt)


@contextmanager
def stack(im: dict, path: str, *, read_only: bool):
    """(crypt device, integrity device or None) over ``path`` with the kernel's lines."""
    dif_line, crypt_line = tables(im, path)
    r = DeviceResolver()
    lower = top = None
    try:
        if dif_line:
            lower = MappedDevice.from_table(dif_line + "\n", resolver=r, read_only=read_only,
                                            name="dif")
            r.register("dif", lower)
        top = MappedDevice.from_table(crypt_line + "\n", resolver=r, read_only=read_only)
        yield top, lower
    finally:
        if top is not None:
            top.close()
        if lower is not None:
            lower.close()
        r.close()


def _fields_but_device(line: str, device_at: int) -> list[str]:
    f = line.split()
    return f[:device_at] + f[device_at + 1:]


@pytest.mark.parametrize("name", NAMES)
def test_dmkit_reads_the_kernels_image(tmp_path, name):
    im = IMAGES[name]
    path = unpack(tmp_path, im)
    n = im["mapped_sectors"]
    with stack(im, path, read_only=True) as (top, lower):
        assert top.nr_sectors == n
        assert top.logical_block_size == im["logical_block_size"]
        # the table dmkit prints is the kernel's (the device aside: the kernel prints major:minor)
        assert _fields_but_device(top.table_lines()[0], 6) == \
            _fields_but_device(im["dm_table_while_open"], 6)
        if lower is not None:
            assert _fields_but_device(lower.table_lines()[0], 3) == \
                _fields_but_device(im["dif_table_while_open"], 3)
        whole = top.read(0, n)
        assert hashlib.sha256(whole).hexdigest() == im["kernel_read_sha256"]
        assert whole == pattern(0, n)
        # one unit at a time too (each unit on its own IV, key and, for AEAD, tag)
        step = im["logical_block_size"] // 512
        for s in range(0, n, step * 5):
            assert top.read(s, step) == pattern(s, step), s


def read_with_tags(lower: MappedDevice, n: int) -> tuple[bytes, bytes]:
    """Data and per-block metadata of the first ``n`` sectors of an integrity device."""
    prof = lower.integrity
    data = bytearray(n * 512)
    meta = bytearray(n * 512 // prof.interval_bytes * prof.tuple_size)
    lower.submit(Bio(OP_READ, 0, n, memoryview(data), 0,
                     BioIntegrityPayload(memoryview(meta), prof.tuple_size, prof.interval_bytes)))
    return bytes(data), bytes(meta)


def _write_pattern(top: MappedDevice, n: int) -> None:
    # three requests of uneven size (multiples of 4 KiB, so valid for every sector_size)
    for a, b in ((0, 8), (8, n // 2 + 8), (n // 2 + 8, n)):
        top.write(a, pattern(a, b - a))
    top.flush()


@pytest.mark.parametrize("name", sorted(set(NAMES) - set(DIF)))
def test_dmkit_writes_the_kernels_bytes(tmp_path, name):
    """Every plain image (all IV modes here are deterministic): dmkit's whole file equals
    the kernel's, the untouched sectors before ``<offset>`` included."""
    im = IMAGES[name]
    kernel = Path(unpack(tmp_path, im)).read_bytes()
    mine = zero_image(tmp_path, im)
    with stack(im, mine, read_only=False) as (top, _):
        _write_pattern(top, im["mapped_sectors"])
    got = Path(mine).read_bytes()
    if got != kernel:
        bad = next(i for i in range(0, len(got), 512) if got[i:i + 512] != kernel[i:i + 512])
        pytest.fail(f"{name}: first differing sector {bad // 512} of the image")


@pytest.mark.parametrize("name", DIF)
def test_dmkit_writes_the_kernels_ciphertext_and_tags(tmp_path, name):
    """Over dm-integrity: the data and the metadata dm-crypt gives the integrity target
    (tag, then the IV for ``random``) equal the kernel's, block by block. For ``random``
    dmkit's IV source is fed the kernel's IVs, in the kernel's order."""
    im = IMAGES[name]
    n = im["mapped_sectors"]
    kpath = unpack(tmp_path, im)
    with stack(im, kpath, read_only=True) as (top, lower):
        k_data, k_meta = read_with_tags(lower, n)
        crypt = top.targets[0]
        tuple_size = lower.integrity.tuple_size
        iv_size = crypt.integrity_iv_size
        tag_size = tuple_size - iv_size
    kernel_ivs = b"".join(k_meta[i + tag_size:i + tuple_size]
                          for i in range(0, len(k_meta), tuple_size))
    mine = zero_image(tmp_path, im)
    with stack(im, mine, read_only=False) as (top, lower):
        if iv_size:
            taken = 0

            def rng(nbytes: int) -> bytes:
                nonlocal taken
                taken += nbytes
                return kernel_ivs[taken - nbytes:taken]

            top.targets[0].rng = rng
        else:
            assert "-random" not in im["cipher"]
        _write_pattern(top, n)
    with stack(im, mine, read_only=True) as (top, lower):
        m_data, m_meta = read_with_tags(lower, n)
        assert top.read(0, n) == pattern(0, n)
    assert m_meta == k_meta
    assert m_data == k_data
