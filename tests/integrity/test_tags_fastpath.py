"""The fast loops of TagFunction.tags -- the int-state checksums (crc32c, the kernel's crc32:
per-sector prefix states from tables) and HMAC (hashlib inner/outer pad states) -- give
the same bytes as the generic per-block state path (``hmac`` objects, per-block prefix
calls) for every tag size, key, salt, block size, block count and sector (high bits too)."""

import os

import pytest

from dmkit.targets.integrity.tags import TagFunction


@pytest.mark.parametrize("alg", ["crc32c", "crc32"])
@pytest.mark.parametrize("tag_size", [1, 2, 4, 5, 13])
@pytest.mark.parametrize("block_size", [512, 4096])
@pytest.mark.parametrize("keyed", [False, True])
@pytest.mark.parametrize("salted", [False, True])
def test_fast_path_matches_generic(alg, tag_size, block_size, keyed, salted):
    tf = TagFunction(alg, key=os.urandom(4) if keyed else None, tag_size=tag_size,
                     block_size=block_size, salt=os.urandom(16) if salted else None)
    assert tf._int_tags is not None
    for nblocks, sector in [(19, 8 * 1234567), (3, 8), (64, (1 << 61) - 8 * 64),
                            (40, 0xFFFF_FF00_0000_0000), (20, 0x1_0000 - 32),
                            (100, 0x7_FFE0), (9, 0xFFFF_FFFF_FFFF_FF00)]:
        data = os.urandom(block_size * nblocks)
        fast = tf.tags(data, sector)
        saved, tf._int_tags = tf._int_tags, None
        assert tf.tags(data, sector) == fast, (nblocks, sector)
        tf._int_tags = saved
        assert len(fast) == nblocks * tag_size


@pytest.mark.parametrize("alg", ["hmac(sha256)", "hmac(sha512)", "hmac(sha1)", "hmac(md5)",
                                 "hmac(sha3-256)"])
@pytest.mark.parametrize("tag_size", [4, 20, 32, 64, 100])
@pytest.mark.parametrize("key_size", [1, 32, 64, 200])
@pytest.mark.parametrize("salted", [False, True])
def test_hmac_fast_path_matches_hmac_objects(alg, tag_size, key_size, salted):
    tf = TagFunction(alg, key=os.urandom(key_size), tag_size=tag_size, block_size=1024,
                     salt=os.urandom(16) if salted else None)
    assert tf._hmac_pads is not None
    data = os.urandom(1024 * 7)
    fast = tf.tags(data, 2 * 987654)
    tf._hmac_pads = None
    assert tf.tags(data, 2 * 987654) == fast
    assert len(fast) == 7 * tag_size


def test_known_crc32c_tag():
    # the kernel's crc32c tag of a zero 512-byte block at sector 0 without salt
    tf = TagFunction("crc32c")
    import crc32c
    assert tf.tags(bytes(512), 0) == crc32c.crc32c(bytes(8) + bytes(512)).to_bytes(4, "little")
