"""Model tests: random writes, reads, flushes, discards and clock ticks against a bytearray,
per mode and layout; then close, reopen and read everything back; and the independent
verified reader (reader.py) agrees with the model, block for block."""

import hashlib
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from target_util import FakeClock, mapped, memdisk

from dmkit.targets.integrity import IntegrityReader
from dmkit.targets.integrity.layout import SbFlags

KEY = "5a" * 32

LAYOUTS = {
    # name: (algorithm, other options, needs a meta device, block size)
    "crc32c": ("crc32c", "journal_sectors:600", False, 512),         # 3 journal sections
    "crc32c-il64": ("crc32c", "interleave_sectors:64 fix_padding journal_sectors:100",
                    False, 512),
    "sha256-4k": ("sha256", "block_size:4096 fix_padding journal_sectors:300", False, 4096),
    "hmac-fixhmac": (f"hmac(sha256):{KEY}", "fix_hmac fix_padding journal_sectors:80 "
                     "interleave_sectors:1024",
                     False, 512),
    "meta-sha1-1k": ("sha1", "meta_device:meta block_size:1024 journal_sectors:64", True,
                     1024),
    "crc32c-il8": ("crc32c", "interleave_sectors:8 buffer_sectors:8 journal_sectors:40",
                   False, 512),
}


def block_data(seed: int, nbytes: int) -> bytes:
    return hashlib.shake_256(seed.to_bytes(8, "little")).digest(nbytes)


op_st = st.one_of(
    st.tuples(st.just("w"), st.integers(0, 10_000), st.integers(1, 48), st.integers(0, 2**32),
              st.booleans()),
    st.tuples(st.just("r"), st.integers(0, 10_000), st.integers(1, 64)),
    st.tuples(st.just("f")),
    st.tuples(st.just("t"), st.floats(0, 20)),
    st.tuples(st.just("d"), st.integers(0, 10_000), st.integers(1, 16)),
)


def run_model(mode, layout, ops, watermark, tag_size=None):
    alg, opts, with_meta, bs = LAYOUTS[layout]
    spb = bs // 512
    words = [f"internal_hash:{alg}", *opts.split(), "allow_discards"]
    words += [f"journal_watermark:{watermark}", "commit_time:5000",
              "bitmap_flush_interval:3000", "sectors_per_bit:64"]
    ts = "-" if tag_size is None else str(tag_size)
    args = f"disk 0 {ts} {mode} {len(words)} {' '.join(words)}"
    disk = memdisk(2048)
    devs = {"disk": disk}
    if with_meta:
        devs["meta"] = memdisk(1024)
    clock = FakeClock()
    dev = mapped(devs, args, clock=clock)
    n = dev.nr_sectors
    dev.write(0, bytes(n * 512))             # what integritysetup's wipe does
    model = bytearray(n * 512)
    discarded = set()
    nblocks = n // spb
    for op in ops:
        kind = op[0]
        if kind == "w":
            _, start, count, seed, fua = op
            b0 = start % nblocks
            count = min(count, nblocks - b0)
            data = block_data(seed, count * bs)
            dev.write(b0 * spb, data, 1 << 17 if fua else 0)
            model[b0 * bs:(b0 + count) * bs] = data
            discarded.difference_update(range(b0, b0 + count))
        elif kind == "r":
            _, start, count = op
            b0 = start % nblocks
            count = min(count, nblocks - b0)
            got = dev.read(b0 * spb, count * spb)
            for k in range(count):
                if b0 + k not in discarded:
                    assert got[k * bs:(k + 1) * bs] == model[(b0 + k) * bs:(b0 + k + 1) * bs], \
                        f"block {b0 + k}"
        elif kind == "f":
            dev.flush()
        elif kind == "t":
            clock.advance(op[1])
            dev.targets[0].tick()
        elif kind == "d":
            _, start, count = op
            b0 = start % nblocks
            count = min(count, nblocks - b0)
            dev.discard(b0 * spb, count * spb)
            discarded.update(range(b0, b0 + count))
    target = dev.targets[0]
    assert target.number_of_mismatches == 0
    dev.close()

    def same(data):
        for k in range(nblocks):
            if k not in discarded:
                assert data[k * bs:(k + 1) * bs] == model[k * bs:(k + 1) * bs], f"block {k}"

    dev = mapped(devs, args, n, clock=clock)
    same(dev.read(0, n))
    dev.close()
    meta = devs.get("meta")
    name, _, key = alg.partition(":")
    reader = IntegrityReader(disk, meta, internal_hash=name,
                             key=bytes.fromhex(key) if key else None,
                             buffer_sectors=8 if "buffer_sectors:8" in opts else 128,
                             allow_discards=True)
    assert not reader.superblock.has(SbFlags.DIRTY_BITMAP)
    same(reader.read(0, n))
    assert reader.scrub() == []


@pytest.mark.parametrize("mode", ["J", "D", "B"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@settings(max_examples=int(os.environ.get("DMKIT_MODEL_EXAMPLES", "12")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op_st, max_size=40), watermark=st.sampled_from([0, 10, 50, 90, 100]))
def test_model(mode, layout, ops, watermark):
    run_model(mode, layout, ops, watermark)


def test_model_truncated_and_padded_tags():
    ops = [("w", 3, 40, 7, False), ("f",), ("w", 20, 30, 8, True), ("r", 0, 64),
           ("d", 5, 3), ("w", 100, 48, 9, False)]
    for mode in "JDB":
        run_model(mode, "crc32c", ops, 50, tag_size=5)       # crc32c padded with zeros
        run_model(mode, "sha256-4k", ops, 50, tag_size=13)   # sha256 truncated
