"""Tag functions against known answers: the kernel images' stored tags, and hashlib /
hmac / zlib / crc32c / xxhash computed independently here."""

import hashlib
import hmac
import struct
import zlib

import crc32c
import numpy as np
import pytest
import xxhash
from integrity_vectors import IMAGES, key_of, pattern_sector

from dmkit.targets.integrity import tags as tags_mod
from dmkit.targets.integrity.geometry import Geometry
from dmkit.targets.integrity.layout import SbFlags, Superblock
from dmkit.targets.integrity.tags import TagFunction, algorithm, algorithm_names, kernel_name

SALT = bytes(range(16))
BLOCK = bytes(range(256)) * 2


def le64(s):
    return struct.pack("<Q", s)


def crc32_le_bitwise(crc, data):
    """The kernel's crc32_le, one bit at a time (reference only: tiny inputs)."""
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc


def test_crc32c_salted():
    tf = TagFunction("crc32c", salt=SALT)
    assert tf.tag(BLOCK, 7) == crc32c.crc32c(SALT + le64(7) + BLOCK).to_bytes(4, "little")
    assert TagFunction("crc32c").tag(BLOCK, 7) == \
        crc32c.crc32c(le64(7) + BLOCK).to_bytes(4, "little")


def test_crc32_is_kernels_raw_crc32_le():
    tf = TagFunction("crc32")
    data = b"123456789" * 57
    block = (data + bytes(512))[:512]
    want = crc32_le_bitwise(0, le64(3) + block)
    assert tf.tag(block, 3) == want.to_bytes(4, "little")
    assert tf.tag(block, 3) != zlib.crc32(le64(3) + block).to_bytes(4, "little")
    seeded = TagFunction("crc32", key=(0x12345678).to_bytes(4, "little"))
    want = crc32_le_bitwise(0x12345678, le64(3) + block)
    assert seeded.tag(block, 3) == want.to_bytes(4, "little")


def test_crc32c_key_is_seed():
    # the kernel's crc32c key replaces the ~0 seed; the final inversion stays
    key = (0xFFFFFFFF).to_bytes(4, "little")
    assert TagFunction("crc32c", key=key).tag(BLOCK, 0) == TagFunction("crc32c").tag(BLOCK, 0)


def test_xxhash64_little_endian():
    tf = TagFunction("xxhash64", salt=SALT)
    want = xxhash.xxh64(SALT + le64(9) + BLOCK, seed=0).intdigest().to_bytes(8, "little")
    assert tf.tag(BLOCK, 9) == want


@pytest.mark.parametrize("name", ["sha1", "sha256", "sha512"])
def test_hashes(name):
    tf = TagFunction(name, salt=SALT)
    assert tf.tag(BLOCK, 1) == hashlib.new(name, SALT + le64(1) + BLOCK).digest()
    assert TagFunction(name).tag(BLOCK, 1) == hashlib.new(name, le64(1) + BLOCK).digest()


@pytest.mark.parametrize("name,h", [("hmac(sha256)", "sha256"), ("hmac-sha512", "sha512"),
                                    ("hmac(sha1)", "sha1")])
def test_hmacs(name, h):
    key = b"k" * 32
    tf = TagFunction(name, key=key, salt=SALT)
    assert tf.tag(BLOCK, 5) == hmac.new(key, SALT + le64(5) + BLOCK, h).digest()


def test_truncation_and_padding():
    full = hashlib.sha256(le64(0) + BLOCK).digest()
    assert TagFunction("sha256", tag_size=20).tag(BLOCK, 0) == full[:20]
    c = crc32c.crc32c(le64(0) + BLOCK).to_bytes(4, "little")
    assert TagFunction("crc32c", tag_size=5).tag(BLOCK, 0) == c + b"\0"


def test_4k_blocks_count_512_byte_sectors():
    data = bytes(range(256)) * 32  # two 4 KiB blocks
    tf = TagFunction("sha256", block_size=4096)
    got = tf.tags(data, 16)
    assert got == (hashlib.sha256(le64(16) + data[:4096]).digest()
                   + hashlib.sha256(le64(24) + data[4096:]).digest())


def test_batch_equals_single():
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, 64 * 512, dtype=np.uint8).tobytes()
    for name in ("crc32c", "crc32", "xxhash64", "sha256"):
        tf = TagFunction(name, salt=SALT)
        batch = tf.tags(data, 1000)
        single = b"".join(tf.tag(data[i * 512:(i + 1) * 512], 1000 + i) for i in range(64))
        assert batch == single


def test_verify_and_discard_filler():
    tf = TagFunction("crc32c")
    data = bytes(4 * 512)
    stored = bytearray(tf.tags(data, 0))
    assert tf.verify(data, 0, stored) is None
    stored[9] ^= 1
    assert tf.verify(data, 0, stored) == 2
    stored[8:12] = b"\xf6" * 4
    assert tf.verify(data, 0, stored) == 2
    assert tf.verify(data, 0, stored, allow_discards=True) is None
    assert list(tf.bad_blocks(data, 0, bytes(16))) == [0, 1, 2, 3]


def test_cryptographic_tags_compare_in_constant_time(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append(len(a))
        return real(a, b)
    monkeypatch.setattr(tags_mod._hmac, "compare_digest", spy)
    tf = TagFunction("hmac-sha256", key=b"x" * 32)
    data = bytes(8 * 512)
    tf.verify(data, 0, tf.tags(data, 0))
    assert calls == [8 * 32]            # one comparison for the whole request
    assert tf.cryptographic and not TagFunction("crc32c").cryptographic


def test_names_and_keys():
    assert kernel_name("hmac-sha256") == "hmac(sha256)"
    assert kernel_name("HMAC(SHA256)") == "hmac(sha256)"
    assert kernel_name("cmac-aes") == "cmac(aes)"
    assert algorithm("hmac-sha256") is algorithm("hmac(sha256)")
    for n in ("crc32c", "crc32", "xxhash64", "sha1", "sha256", "sha512",
              "hmac(sha256)", "hmac(sha512)", "blake2b-256", "cmac(aes)"):
        assert n in algorithm_names()
    with pytest.raises(ValueError, match="unknown"):
        algorithm("crct10dif")
    with pytest.raises(ValueError, match="needs a key"):
        TagFunction("hmac-sha256")
    with pytest.raises(ValueError, match="takes no key"):
        TagFunction("sha256", key=b"k")
    with pytest.raises(ValueError, match="4 bytes|expected 4"):
        TagFunction("crc32c", key=b"12345")
    with pytest.raises(ValueError, match="tag size"):
        TagFunction("sha256", tag_size=425)
    with pytest.raises(ValueError, match="block size"):
        TagFunction("sha256", block_size=8192)
    with pytest.raises(ValueError, match="salt"):
        TagFunction("sha256", salt=b"short")


def test_blake2b_and_cmac():
    key = bytes(16)
    assert TagFunction("blake2b-256", key=key).tag(BLOCK, 2) == \
        hashlib.blake2b(le64(2) + BLOCK, digest_size=32, key=key).digest()
    from cryptography.hazmat.primitives import cmac
    from cryptography.hazmat.primitives.ciphers import algorithms
    c = cmac.CMAC(algorithms.AES(key))
    c.update(le64(2) + BLOCK)
    assert TagFunction("cmac(aes)", key=key).tag(BLOCK, 2) == c.finalize()


INDEPENDENT = {
    "crc32c": lambda key, msg: crc32c.crc32c(msg).to_bytes(4, "little"),
    "sha256": lambda key, msg: hashlib.sha256(msg).digest(),
    "hmac-sha256": lambda key, msg: hmac.new(key, msg, "sha256").digest(),
}


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_kernel_stored_tags(name, kernel_images):
    """Tags the kernel stored for the first pattern blocks and a zero block, against an
    independent computation (salt with fix_hmac, le64 sector, the block)."""
    from integrity_vectors import ALGORITHM
    files = kernel_images.files(name)
    meta_raw = (files.get("meta") or files["device"]).read_bytes()
    data_raw = files["data"].read_bytes() if "data" in files else meta_raw
    sb = Superblock.from_bytes(meta_raw)
    geo = Geometry.from_superblock(sb, len(data_raw) // 512,
                                   len(meta_raw) // 512 if "meta" in files else None)
    salt = sb.salt if sb.has(SbFlags.FIXED_HMAC) else b""
    indep = INDEPENDENT[ALGORITHM[name]]
    spb = sb.sectors_per_block
    zero_sector = IMAGES[name]["written_ranges"][0]["sectors"]  # first unwritten sector
    for s in (0, spb, 2 * spb, zero_sector):
        ds, to = geo.locate(s)
        block = data_raw[ds * 512:(ds + spb) * 512]
        want = b"".join(pattern_sector(s + i) for i in range(spb)) if s < zero_sector \
            else bytes(512 * spb)
        assert block == want
        stored = meta_raw[to:to + sb.integrity_tag_size]
        assert stored == indep(key_of(name), salt + le64(s) + block)
