"""The fast loops of TagFunction.tags -- the int-state checksums (crc32c, the kernel's crc32:
per-sector prefix states from tables), HMAC (hashlib inner/outer pad states) and the C
accelerator (libcrypto, one call per request, for hashes and hmac(hash)) -- give the same
bytes as the generic per-block state path (``hmac`` objects, per-block prefix calls) for
every tag size, key, salt, block size, block count and sector (high bits too)."""

import hashlib
import hmac
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmkit.targets.integrity import tags as tags_mod
from dmkit.targets.integrity.tags import TagFunction

needs_evp = pytest.mark.skipif(tags_mod._tagsevp is None,
                               reason="the optional C accelerator _tagsevp is not built "
                                      "(no compiler or libcrypto headers at install)")


def _generic(tf: TagFunction, data, sector: int) -> bytes:
    """``tf.tags`` through the generic per-block state path only."""
    saved = tf._evp, tf._hmac_pads
    tf._evp = tf._hmac_pads = None
    try:
        return tf.tags(data, sector)
    finally:
        tf._evp, tf._hmac_pads = saved


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
    generic = _generic(tf, data, 2 * 987654)
    assert len(generic) == 7 * tag_size
    saved, tf._evp = tf._evp, None          # the hashlib pad-state loop
    assert tf.tags(data, 2 * 987654) == generic
    tf._evp = saved                         # the C accelerator, where built
    assert tf.tags(data, 2 * 987654) == generic


# -- the C accelerator -------------------------------------------------------------------------

@needs_evp
@pytest.mark.parametrize("alg", ["sha1", "sha256", "sha512", "md5", "sha3-256", "hmac(sha1)",
                                 "hmac(sha256)", "hmac(sha512)", "hmac(sha3-512)"])
def test_accelerator_in_use_for_hashes_and_hmacs(alg):
    key = b"k" * 32 if alg.startswith("hmac") else None
    tf = TagFunction(alg, key=key, block_size=4096, salt=bytes(16))
    assert tf._evp is not None
    assert TagFunction("crc32c")._evp is None and TagFunction("blake2b-256")._evp is None


@needs_evp
def test_accelerator_against_hashlib_written_out():
    """Independently of tags.py: HMAC(key, salt || le64(sector) || block) per block."""
    key, salt = os.urandom(48), os.urandom(16)
    data = os.urandom(4096 * 5)
    tf = TagFunction("hmac(sha256)", key=key, block_size=4096, salt=salt)
    want = b"".join(hmac.new(key, salt + struct.pack("<Q", 80 + 8 * i)
                             + data[4096 * i:4096 * (i + 1)], "sha256").digest()
                    for i in range(5))
    assert tf.tags(data, 80) == want
    plain = TagFunction("sha512", block_size=512)
    want = b"".join(hashlib.sha512(struct.pack("<Q", 3 + i) + data[512 * i:512 * (i + 1)])
                    .digest() for i in range(40))
    assert plain.tags(data, 3) == want


@needs_evp
@settings(max_examples=150, deadline=None)
@given(alg=st.sampled_from(["sha256", "sha1", "sha512", "hmac(sha256)", "hmac(sha512)",
                            "hmac(sha1)", "hmac(md5)"]),
       tag_size=st.sampled_from([1, 4, 16, 20, 32, 48, 64, 100, 255]),
       block_size=st.sampled_from([512, 1024, 2048, 4096]),
       key_size=st.sampled_from([1, 16, 32, 64, 65, 128, 129, 300]),
       salted=st.booleans(),
       nblocks=st.integers(1, 12),
       first_block=st.integers(0, (1 << 52) - 1),
       seed=st.binary(min_size=1, max_size=8))
def test_accelerator_matches_generic_path(alg, tag_size, block_size, key_size, salted,
                                          nblocks, first_block, seed):
    key = hashlib.shake_256(b"key" + seed).digest(key_size) if alg.startswith("hmac") else None
    salt = hashlib.shake_256(b"salt" + seed).digest(16) if salted else None
    tf = TagFunction(alg, key=key, tag_size=tag_size, block_size=block_size, salt=salt)
    assert tf._evp is not None
    data = hashlib.shake_256(seed).digest(block_size * nblocks)
    sector = first_block * (block_size >> 9)
    got = tf.tags(data, sector)
    assert got == _generic(tf, data, sector)
    assert len(got) == nblocks * tag_size


@needs_evp
def test_accelerator_that_disagrees_is_not_used(monkeypatch):
    """A libcrypto whose digest differs from hashlib's (or is missing) is checked once at
    construction and left unused: the tags stay the hashlib loop's."""
    real = tags_mod._tagsevp.digests

    def wrong(*args):
        out = bytearray(real(*args))
        out[0] ^= 1
        return bytes(out)

    class Fake:
        digests = staticmethod(wrong)
    monkeypatch.setattr(tags_mod, "_tagsevp", Fake)
    tf = TagFunction("hmac(sha256)", key=b"k" * 32, block_size=512)
    assert tf._evp is None
    data = os.urandom(512 * 4)
    assert tf.tags(data, 8) == _generic(tf, data, 8)

    class Missing:
        @staticmethod
        def digests(*args):
            raise ValueError("integrity tags: digest SHA256 is not available in libcrypto")
    monkeypatch.setattr(tags_mod, "_tagsevp", Missing)
    assert TagFunction("sha256", block_size=512)._evp is None


@needs_evp
def test_accelerator_rejects_bad_input():
    evp = tags_mod._tagsevp
    with pytest.raises(ValueError, match="whole number of 512-byte blocks"):
        evp.digests("SHA256", None, b"", bytes(700), 512, 0, 1)
    with pytest.raises(ValueError, match="not available"):
        evp.digests("NO-SUCH-DIGEST", None, b"", bytes(512), 512, 0, 1)
    with pytest.raises(ValueError, match="negative"):
        evp.digests("SHA256", None, b"", bytes(512), 512, 0, -1)
    assert evp.digests("SHA256", b"k", b"", b"", 512, 0, 1) == b""


def test_known_crc32c_tag():
    # the kernel's crc32c tag of a zero 512-byte block at sector 0 without salt
    tf = TagFunction("crc32c")
    import crc32c
    assert tf.tags(bytes(512), 0) == crc32c.crc32c(bytes(8) + bytes(512)).to_bytes(4, "little")


# -- read_tags: the read overlapped with the hashing ------------------------------------------

@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    """A file of 3 MiB of known bytes, open for reading."""
    path = tmp_path_factory.mktemp("overlap") / "data"
    content = hashlib.shake_256(b"overlap").digest(3 << 20)
    path.write_bytes(content)
    fd = os.open(path, os.O_RDONLY)
    yield fd, content
    os.close(fd)


@needs_evp
@settings(max_examples=120, deadline=None)
@given(alg=st.sampled_from(["sha256", "sha1", "sha512", "hmac(sha256)", "hmac(sha512)"]),
       tag_size=st.sampled_from([4, 20, 32, 64, 100]),
       block_size=st.sampled_from([512, 4096]),
       nblocks=st.integers(1, 300),
       piece_blocks=st.integers(1, 400),
       at_block=st.integers(0, 400),
       first_block=st.integers(0, (1 << 52) - 1),
       salted=st.booleans())
def test_read_tags_reads_and_hashes_like_tags(data_file, alg, tag_size, block_size, nblocks,
                                              piece_blocks, at_block, first_block, salted):
    """Whatever the piece size (one piece, several, a last short one): the buffer holds
    the file's bytes and the tags are ``tags`` of them."""
    fd, content = data_file
    key = b"K" * 32 if alg.startswith("hmac") else None
    tf = TagFunction(alg, key=key, tag_size=tag_size, block_size=block_size,
                     salt=b"S" * 16 if salted else None)
    assert tf.can_read_tags
    offset, length = at_block * block_size, nblocks * block_size
    buf = bytearray(length)
    sector = first_block * (block_size >> 9)
    got = tf.read_tags(fd, offset, buf, sector, piece_blocks * block_size)
    assert bytes(buf) == content[offset:offset + length]
    assert got == tf.tags(buf, sector) == _generic(tf, buf, sector)


@needs_evp
def test_read_tags_errors(data_file, tmp_path):
    fd, content = data_file
    tf = TagFunction("hmac(sha256)", key=b"k" * 32, block_size=4096)
    evp = tags_mod._tagsevp
    # past the end of the file, in the piece the calling thread reads and in a later one
    for offset in (len(content) - 4096, len(content) - (1 << 20) + 8192):
        with pytest.raises(OSError, match=f"short read at byte {len(content)}") as e:
            tf.read_tags(fd, offset, bytearray(1 << 20), 0, 128 << 10)
        assert e.value.errno == 5
    wfd = os.open(tmp_path / "w", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError) as e:
            tf.read_tags(wfd, 0, bytearray(1 << 20), 0, 128 << 10)
        assert e.value.errno == 9          # EBADF: not open for reading
    finally:
        os.close(wfd)
    with pytest.raises(TypeError):        # the buffer must be writable
        evp.read_digests(fd, 0, bytes(4096), 4096, "SHA256", None, b"", 4096, 0, 8)
    with pytest.raises(ValueError, match="bad read"):
        evp.read_digests(fd, 0, bytearray(4096), 1000, "SHA256", None, b"", 4096, 0, 8)
    with pytest.raises(ValueError, match="bad read"):
        evp.read_digests(fd, -512, bytearray(4096), 4096, "SHA256", None, b"", 4096, 0, 8)
    with pytest.raises(ValueError, match="whole number"):
        evp.read_digests(fd, 0, bytearray(4000), 4096, "SHA256", None, b"", 4096, 0, 8)
    with pytest.raises(ValueError, match="not available"):
        evp.read_digests(fd, 0, bytearray(4096), 4096, "NO-SUCH", None, b"", 4096, 0, 8)
    # the CRCs have no accelerator
    assert not TagFunction("crc32c", block_size=4096).can_read_tags
