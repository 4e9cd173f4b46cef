"""The optional C mask pass (dmkit.crypto._xtsfix) gives the same bytes as the numpy path."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmkit.crypto import skcipher

xtsfix = pytest.importorskip("dmkit.crypto._xtsfix",
                             reason="the optional C accelerator was not built")


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
    run = cipher.decrypt if decrypt else cipher.encrypt
    with_c = np.empty_like(src)
    run(src, with_c, ivs, unit)
    with_numpy = np.empty_like(src)
    saved, skcipher._xtsfix = skcipher._xtsfix, None
    try:
        run(src, with_numpy, ivs, unit)
    finally:
        skcipher._xtsfix = saved
    assert (with_c == with_numpy).all()


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
