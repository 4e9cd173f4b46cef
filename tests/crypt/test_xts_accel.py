"""The optional C accelerators give the same bytes as the numpy path and as OpenSSL's XTS
one unit at a time: dmkit.crypto._xtsfix (the tweak-mask pass) and dmkit.crypto._xtsevp
(libcrypto XTS over many units, also behind dmkit.crypto.fastxts)."""

import threading

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from dmkit.crypto import fastxts, skcipher

xtsfix = pytest.importorskip("dmkit.crypto._xtsfix",
                             reason="the optional C accelerator was not built")
xtsevp = pytest.importorskip("dmkit.crypto._xtsevp",
                             reason="the optional libcrypto accelerator was not built "
                                    "(needs libssl-dev when dmkit is installed)")


def _reference(key: bytes, src: np.ndarray, ivs: np.ndarray, unit: int, decrypt: bool):
    """OpenSSL's XTS, one context per unit (what the accelerators must equal)."""
    out = bytearray()
    for s in range(len(ivs)):
        c = Cipher(algorithms.AES(key), modes.XTS(ivs[s].tobytes()))
        ctx = c.decryptor() if decrypt else c.encryptor()
        out += ctx.update(src[s * unit:(s + 1) * unit].tobytes())
    return bytes(out)


def _run(cipher, decrypt, src, ivs, unit, *, evp: bool, fix: bool) -> np.ndarray:
    saved = skcipher._xtsevp, skcipher._xtsfix
    skcipher._xtsevp = saved[0] if evp else None
    skcipher._xtsfix = saved[1] if fix else None
    try:
        out = np.empty_like(src)
        (cipher.decrypt if decrypt else cipher.encrypt)(src, out, ivs, unit)
        return out
    finally:
        skcipher._xtsevp, skcipher._xtsfix = saved


@settings(max_examples=60, deadline=None)
@given(key=st.one_of(st.binary(min_size=32, max_size=32), st.binary(min_size=48, max_size=48),
                     st.binary(min_size=64, max_size=64), st.just(bytes(range(16)) * 2)),
       unit=st.sampled_from([512, 1024, 4096]),
       n=st.integers(1, 70), seed=st.integers(0, 2**32 - 1), decrypt=st.booleans())
def test_c_and_numpy_paths_agree(key, unit, n, seed, decrypt):
    rng = np.random.default_rng(seed)
    src = rng.integers(0, 256, n * unit, dtype=np.uint8)
    ivs = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    cipher = skcipher.AesXts(key)
    with_evp = _run(cipher, decrypt, src, ivs, unit, evp=True, fix=True)
    with_fix = _run(cipher, decrypt, src, ivs, unit, evp=False, fix=True)
    with_numpy = _run(cipher, decrypt, src, ivs, unit, evp=False, fix=False)
    assert (with_fix == with_numpy).all()
    assert (with_evp == with_numpy).all()
    half = len(key) // 2
    if len(key) != 48 and key[:half] != key[half:]:  # what OpenSSL's XTS accepts
        assert with_evp.tobytes() == _reference(key, src, ivs, unit, decrypt)


@settings(max_examples=40, deadline=None)
@given(key=st.one_of(st.binary(min_size=32, max_size=32), st.binary(min_size=64, max_size=64)),
       unit=st.sampled_from([512, 4096]), n=st.integers(1, 40),
       first=st.one_of(st.integers(0, 2**40), st.just(2**64 - 3), st.just(2**32 - 2)),
       step=st.sampled_from([1, 8]), ivmode=st.sampled_from(sorted(fastxts.C_IV_MODES)),
       seed=st.integers(0, 2**32 - 1), decrypt=st.booleans())
def test_fastxts_generates_the_iv_modes(key, unit, n, first, step, ivmode, seed, decrypt):
    """FastXts (IVs generated in C) equals OpenSSL per unit with the IVs dm-crypt's
    plain64/plain/plain64be generators make, including wrap-around of the sector."""
    half = len(key) // 2
    if key[:half] == key[half:]:
        assert fastxts.fast_xts("xts(aes)", 1, ivmode, key) is None
        return
    rng = np.random.default_rng(seed)
    src = rng.integers(0, 256, n * unit, dtype=np.uint8)
    ivs = np.zeros((n, 16), np.uint8)
    for s in range(n):
        v = (first + s * step) % 2**64
        if ivmode == "plain64":
            ivs[s, :8] = np.frombuffer(v.to_bytes(8, "little"), np.uint8)
        elif ivmode == "plain":
            ivs[s, :4] = np.frombuffer((v % 2**32).to_bytes(4, "little"), np.uint8)
        else:
            ivs[s, 8:] = np.frombuffer(v.to_bytes(8, "big"), np.uint8)
    fx = fastxts.fast_xts("xts(aes)", 1, ivmode, key)
    out = bytearray(len(src))
    fx.crypt(decrypt, src, out, unit, first, step)
    assert bytes(out) == _reference(key, src, ivs, unit, decrypt)
    inplace = bytearray(src.tobytes())  # dst may be src
    fx.crypt(decrypt, inplace, inplace, unit, first, step)
    assert inplace == out


def test_fastxts_refuses_what_it_cannot_do_and_wipes():
    key = bytes(range(64))
    assert fastxts.fast_xts("xts(aes)", 2, "plain64", key) is None      # keycount
    assert fastxts.fast_xts("xts(aes)", 1, "essiv", key) is None        # IV mode
    assert fastxts.fast_xts("cbc(aes)", 1, "plain64", key) is None      # cipher
    assert fastxts.fast_xts("xts(aes)", 1, "plain64", key[:48]) is None  # AES-192
    assert fastxts.fast_xts("xts(aes)", 1, "plain64", bytes(64)) is None  # equal halves
    fx = fastxts.fast_xts("xts(aes)", 1, "plain64", key)
    assert "000102" not in repr(fx)
    with pytest.raises(ValueError, match="whole number"):
        fx.crypt(True, bytes(1000), bytearray(1000), 512, 0, 1)
    with pytest.raises(ValueError, match="whole number"):
        fx.crypt(True, bytes(1024), bytearray(512), 512, 0, 1)
    fx.wipe()
    with pytest.raises(ValueError, match="wiped"):
        fx.crypt(True, bytes(512), bytearray(512), 512, 0, 1)
    with pytest.raises(ValueError, match="32 or 64"):
        xtsevp.crypt(bytes(48), bytearray(512), bytes(512), 512, 0, 1, 0, True)
    with pytest.raises(ValueError, match="IV mode"):
        xtsevp.crypt(key, bytearray(512), bytes(512), 512, 0, 1, 7, True)
    with pytest.raises(ValueError, match="16 bytes of IV"):
        xtsevp.crypt_ivs(key, bytearray(1024), bytes(1024), 512, bytes(16), True)


def test_fastxts_runs_on_threads_in_parallel_with_the_same_bytes():
    """The GIL is released: several threads on one FastXts give what one thread gives."""
    key = bytes(range(1, 65))
    fx = fastxts.fast_xts("xts(aes)", 1, "plain64", key)
    src = np.random.default_rng(5).integers(0, 256, 8 << 20, dtype=np.uint8).tobytes()
    want = bytearray(len(src))
    fx.crypt(True, src, want, 512, 0, 1)
    got = bytearray(len(src))
    quarter = len(src) // 4
    view = memoryview(got)

    def one(i):
        lo = i * quarter
        fx.crypt(True, src[lo:lo + quarter], view[lo:lo + quarter], 512, lo // 512, 1)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == want


def test_mask_xor_known_answer_and_size_checks():
    # tweak 1: masks x^0 .. x^129 cross the 128-bit boundary: x^128 = x^7 + x^2 + x + 1
    starts = np.array([[1, 0]], np.uint64)
    dst = np.empty(130 * 16, np.uint8)
    xtsfix.mask_xor(dst, bytes(130 * 16), starts, 130)
    masks = dst.view(np.uint64).reshape(130, 2)
    for j in range(128):
        want = 1 << j
        assert int(masks[j, 0]) | int(masks[j, 1]) << 64 == want
    assert int(masks[128, 0]) == 0x87 and int(masks[128, 1]) == 0
    assert int(masks[129, 0]) == 0x87 << 1
    with pytest.raises(ValueError, match="buffer sizes do not match"):
        xtsfix.mask_xor(np.empty(32, np.uint8), bytes(48), starts, 2)
    with pytest.raises(ValueError):
        xtsfix.mask_xor(np.empty(16 * 300, np.uint8), bytes(16 * 300), starts, 300)
