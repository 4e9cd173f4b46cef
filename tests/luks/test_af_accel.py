"""The optional C accelerator of the AF splitter, dmkit.luks._afevp (libcrypto digests),
gives the same bytes as the hashlib path of dmkit.luks.af, and af_merge uses it when it
can and falls back to hashlib when it cannot."""

import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmkit.errors import NotSupportedError
from dmkit.luks import af
from dmkit.luks.hashes import is_supported

from ._util import seeded_rng

afevp = pytest.importorskip("dmkit.luks._afevp",
                            reason="the optional libcrypto accelerator dmkit.luks._afevp was "
                                   "not built (needs libssl-dev when dmkit is installed)")

#: cryptsetup hash names tested (those libcrypto or hashlib lack are skipped, with why)
HASHES = ["sha1", "sha256", "sha512", "ripemd160", "sha3-256", "whirlpool", "blake2b-512",
          "sm3"]
SIZES = [16, 32, 33, 64, 96, 100]


def _c_has(md: str) -> bool:
    try:
        afevp.merge(bytes(16), 16, 1, md)
    except ValueError:
        return False
    return True


def _md(h: str) -> str:
    """OpenSSL's name for ``h``; skips the test if either side cannot compute it."""
    md = af._EVP_NAMES[h]
    if not is_supported(h):
        pytest.skip(f"{h}: not available in this Python's hashlib (no reference to compare "
                    "with; OpenSSL 3 has it only in the legacy provider)")
    if not _c_has(md):
        pytest.skip(f"{h}: libcrypto has no digest {md!r} here (OpenSSL 3 has some only in "
                    "the legacy provider)")
    return md


def _blocks(key_size: int, stripes: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(key_size * stripes)


@pytest.mark.parametrize("h", HASHES)
def test_c_merge_equals_python(h):
    """Every key size of SIZES with 1, 2 and 4000 stripes (one test per hash, so that a
    hash this OpenSSL lacks is one skip)."""
    md = _md(h)
    for size in SIZES:
        for stripes in (1, 2, 4000):
            split = _blocks(size, stripes, size * 7919 + stripes)
            expect = af._af_merge_py(split, size, stripes, h)
            got = afevp.merge(split, size, stripes, md)
            assert isinstance(got, bytearray)
            assert got == expect, (size, stripes)
            assert af.af_merge(split, size, stripes, h) == expect  # the public path (C here)


@settings(max_examples=40, deadline=None)
@given(h=st.sampled_from(["sha1", "sha256", "sha512", "sha3-256"]),
       size=st.integers(1, 300), stripes=st.integers(1, 60), seed=st.integers(0, 2**32 - 1),
       extra=st.integers(0, 600))
def test_c_merge_equals_python_random(h, size, stripes, seed, extra):
    md = af._EVP_NAMES[h]
    split = _blocks(size, stripes, seed) + bytes(extra)  # trailing padding is ignored
    assert afevp.merge(split, size, stripes, md) == af._af_merge_py(split, size, stripes, h)


@pytest.mark.parametrize("h", ["sha1", "sha256", "sha512", "ripemd160", "sha3-256"])
@pytest.mark.parametrize("size", SIZES)
def test_round_trip_python_split_c_merge(h, size):
    md = _md(h)
    key = bytes(range(size))
    split = af.af_split(key, 4000, h, seeded_rng(size))  # padded to whole sectors
    assert afevp.merge(split, size, 4000, md) == key
    assert afevp.merge(memoryview(split), size, 4000, md) == key
    assert afevp.merge(bytes(split), size, 4000, md) == key


@pytest.mark.parametrize("h", ["sha1", "sha256", "sha512"])
@pytest.mark.parametrize("size", [16, 33, 64])
@pytest.mark.parametrize("stripes", [1, 2, 4000])
def test_c_split_equals_python(h, size, stripes):
    md = _md(h)
    key = random.Random(size).randbytes(size)
    py = af.af_split(key, stripes, h, seeded_rng(stripes))
    rng = seeded_rng(stripes)  # the same random blocks af_split takes
    rnd = b"".join(rng(size) for _ in range(stripes - 1))
    c = afevp.split(key, rnd, stripes, md)
    assert isinstance(c, bytearray)
    assert c == py[:size * stripes]
    assert afevp.merge(c, size, stripes, md) == key


def test_bad_arguments():
    split = bytes(64 * 4000)
    with pytest.raises(ValueError, match="needs"):
        afevp.merge(split[:-1], 64, 4000, "SHA256")  # short split
    with pytest.raises(ValueError, match="stripes"):
        afevp.merge(split, 64, 0, "SHA256")
    with pytest.raises(ValueError, match="stripes"):
        afevp.merge(split, 64, -1, "SHA256")
    with pytest.raises(ValueError, match="key size"):
        afevp.merge(split, 0, 4000, "SHA256")
    with pytest.raises(ValueError, match="key size"):
        afevp.merge(split, -64, 4000, "SHA256")
    with pytest.raises(ValueError, match="too large"):
        afevp.merge(split, 2**62, 4, "SHA256")
    with pytest.raises(ValueError, match="not available"):
        afevp.merge(split, 64, 4000, "no-such-digest")
    with pytest.raises(ValueError, match="fixed output size"):
        afevp.merge(split, 64, 4000, "SHAKE128")  # an XOF
    with pytest.raises(ValueError, match="needs"):
        afevp.split(bytes(64), bytes(64 * 3998), 4000, "SHA256")  # short random
    with pytest.raises(ValueError, match="key size"):
        afevp.split(b"", b"", 1, "SHA256")
    with pytest.raises(TypeError):
        afevp.merge("not bytes", 1, 1, "SHA256")


def test_af_merge_falls_back_to_python(monkeypatch):
    key = bytes(range(64))
    split = af.af_split(key, 4000, "sha256", seeded_rng())

    class NoDigest:  # a libcrypto without the digest: the C side raises ValueError
        @staticmethod
        def merge(*args):
            raise ValueError("luks af: digest is not available in libcrypto")

    monkeypatch.setattr(af, "_afevp", NoDigest)
    assert af.af_merge(split, 64, 4000, "sha256") == key
    monkeypatch.setattr(af, "_afevp", None)  # not built
    got = af.af_merge(split, 64, 4000, "SHA256")
    assert isinstance(got, bytearray) and got == key


def test_af_merge_argument_errors_unchanged():
    with pytest.raises(ValueError):
        af.af_merge(bytes(64), 64, 0, "sha256")
    with pytest.raises(ValueError):
        af.af_merge(bytes(63), 64, 1, "sha256")
    with pytest.raises(NotSupportedError):
        af.af_merge(bytes(64), 64, 1, "md4-not-a-luks-hash")
    assert af.af_merge(b"", 0, 1, "sha256") == bytearray()  # as the Python path always did


def test_threads_share_nothing():
    """The GIL is released during the loop: concurrent merges each get their own key."""
    splits = [_blocks(64, 4000, seed) for seed in range(8)]
    expect = [af._af_merge_py(s, 64, 4000, "sha256") for s in splits]
    got = [None] * len(splits)

    def work(i):
        for _ in range(5):
            got[i] = afevp.merge(splits[i], 64, 4000, "SHA256")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(splits))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == expect
