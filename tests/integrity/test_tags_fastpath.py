"""The int-state checksums (crc32c, the kernel's crc32) have a fast loop in TagFunction.tags;
it gives the same bytes as the generic per-block state path for every tag size, key, salt
and block size."""

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
    data = os.urandom(block_size * 19)
    fast = tf.tags(data, 8 * 1234567)
    tf._int_tags = None
    assert tf.tags(data, 8 * 1234567) == fast
    assert len(fast) == 19 * tag_size


def test_known_crc32c_tag():
    # the kernel's crc32c tag of a zero 512-byte block at sector 0 without salt
    tf = TagFunction("crc32c")
    import crc32c
    assert tf.tags(bytes(512), 0) == crc32c.crc32c(bytes(8) + bytes(512)).to_bytes(4, "little")
