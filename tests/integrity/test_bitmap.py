"""Bitmap mode's bit operations (``SectorBitmap``) against a list of booleans.

Ranges are block aligned; one bit covers ``2**shift`` sectors.  Short ranges take the
``int.from_bytes`` path, long ones (more than 64 bytes of bits) the numpy path; both are
checked, and bytes past the bits a range covers must never change.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmkit.targets.integrity.bitmap import SectorBitmap

NBYTES = 160                # 1280 bits: long ranges reach the numpy path


def _model_bits(buf: bytes) -> list[bool]:
    return [bool(buf[i >> 3] >> (i & 7) & 1) for i in range(8 * len(buf))]


_ops = st.tuples(st.sampled_from(["set", "clear"]), st.integers(0, 8 * NBYTES - 1),
                 st.integers(1, 8 * NBYTES))


@settings(max_examples=300, deadline=None)
@given(shift=st.integers(0, 4), l2spb=st.integers(0, 3), init=st.binary(min_size=NBYTES,
       max_size=NBYTES), ops=st.lists(_ops, max_size=8), query=st.tuples(
       st.integers(0, 8 * NBYTES - 1), st.integers(1, 8 * NBYTES)))
def test_against_a_list_of_bits(shift, l2spb, init, ops, query):
    l2spb = min(l2spb, shift)
    spb = 1 << l2spb
    buf = bytearray(init)
    bm = SectorBitmap(buf, shift, l2spb)
    model = _model_bits(init)

    def sectors(first_bit, nbits):
        first_bit = min(first_bit, len(model) - 1)
        nbits = min(nbits, len(model) - first_bit)
        # a block-aligned sector range inside those bits, not always bit aligned
        s = (first_bit << shift) + ((1 << shift) - spb if nbits > 1 else 0)
        e = (first_bit + nbits) << shift
        return s, e - s

    for op, b, nb in ops:
        s, n = sectors(b, nb)
        getattr(bm, op)(s, n)
        for i in range(s >> shift, ((s + n - 1) >> shift) + 1):
            model[i] = op == "set"
        assert _model_bits(bytes(buf)) == model

    s, n = sectors(*query)
    span = model[s >> shift:((s + n - 1) >> shift) + 1]
    assert bm.all_set(s, n) == all(span)
    assert bm.all_clear(s, n) == (not any(span))
    hits = [i for i, v in enumerate(span) if v]
    first = bm.first_set(s, n)
    last = bm.last_set_end(s, n)
    if not hits:
        assert first is None and last is None
    else:
        b0 = s >> shift
        assert first == max(s, (b0 + hits[0]) << shift)
        assert last == min(s + n, (b0 + hits[-1] + 1) << shift)


def test_empty_and_unaligned_ranges():
    bm = SectorBitmap(bytearray(b"\xff" * 4), 3, 1)
    assert bm.all_clear(0, 0) and bm.all_set(0, 0)
    assert not bm.all_clear(0, 2) and bm.all_set(30, 2)
    with pytest.raises(ValueError, match="not block aligned"):
        bm.all_clear(1, 2)
    with pytest.raises(ValueError, match="not block aligned"):
        bm.set(0, 3)
