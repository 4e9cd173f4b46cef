"""flakey: argument checking, the up/down cycle on a fake clock, and each feature."""

import random

import pytest

from tests.conftest import pattern
from dmkit.block import Bio, BioFlags, BioOp, CryptoCapabilities, MemoryDevice
from dmkit.dm import DeviceResolver, MappedDevice
from dmkit.errors import BlockIOError, TableError
from dmkit.targets.flakey import PROBABILITY_BASE

DEV_SECTORS = 128
SECTOR = 512


class FakeClock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class RecordingDevice(MemoryDevice):
    """A RAM disk that records the ops it receives."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.ops: list[BioOp] = []

    def _submit(self, bio):
        self.ops.append(bio.op)
        super()._submit(bio)


@pytest.fixture
def mem():
    return RecordingDevice(initial=pattern(0, DEV_SECTORS), name="mem")


def build(mem, args, length=64, rng=None):
    """A mapped device ``0 length flakey <args>`` over ``mem``; clock at 0, 2s up, 3s down
    unless ``args`` say otherwise.  Returns (mapped device, target, clock)."""
    dev = MappedDevice.from_table(f"0 {length} flakey {args}\n",
                                  resolver=DeviceResolver({"mem": mem}))
    target = dev.targets[0]
    clock = FakeClock()
    target.clock = clock
    if rng is not None:
        target.rng = rng
    return dev, target, clock


# -- table arguments -------------------------------------------------------------------------

BAD_ARGS = [
    ("mem 0 1", "got 3 arguments"),
    ("mem x 1 1", "invalid device sector 'x'"),
    ("mem 0 -1 1", "invalid up interval '-1'"),
    ("mem 0 1 4294967296", "invalid down interval 4294967296"),
    ("mem 0 0 0", "total (up + down) interval is zero"),
    ("mem 0 4294967295 1", "up + down interval 4294967296 overflows 32 bits"),
    ("mem 0 1 1 x", "invalid number of feature arguments 'x'"),
    ("mem 0 1 1 3 drop_writes", "invalid number of feature arguments 3"),
    ("mem 0 1 1 12 " + " ".join(["drop_writes"] * 12), "must be in 0..11"),
    ("mem 0 1 1 1 drop_writes extra", "too many arguments: 'extra'"),
    ("mem 0 1 1 1 bogus", "unknown feature 'bogus'"),
    ("mem 0 1 1 2 drop_writes drop_writes", "duplicate feature 'drop_writes'"),
    ("mem 0 1 1 2 error_reads ERROR_READS", "duplicate feature 'error_reads'"),
    ("mem 0 1 1 4 random_read_corrupt 0 random_read_corrupt 1",
     "duplicate feature 'random_read_corrupt'"),
    ("mem 0 1 1 10 corrupt_bio_byte 1 r 0 0 corrupt_bio_byte 2 r 0 0",
     "duplicate feature 'corrupt_bio_byte'"),
    ("mem 0 1 1 2 drop_writes error_writes", "feature 'error_writes' conflicts with 'drop_writes'"),
    ("mem 0 1 1 2 error_writes drop_writes", "feature 'drop_writes' conflicts with 'error_writes'"),
    ("mem 0 1 1 6 drop_writes corrupt_bio_byte 1 w 0 0",
     "feature 'drop_writes' conflicts with write corruption"),
    ("mem 0 1 1 3 random_write_corrupt 5 error_writes",
     "feature 'error_writes' conflicts with write corruption"),
    ("mem 0 1 1 6 corrupt_bio_byte 1 r 0 0 error_reads",
     "feature 'error_reads' conflicts with read corruption"),
    ("mem 0 1 1 3 error_reads random_read_corrupt 1",
     "feature 'error_reads' conflicts with read corruption"),
    ("mem 0 1 1 5 corrupt_bio_byte 1 x 0 0",
     "invalid corrupt_bio_byte direction 'x': must be r or w"),
    ("mem 0 1 1 5 corrupt_bio_byte 0 r 0 0", "invalid corrupt_bio_byte byte number 0"),
    ("mem 0 1 1 5 corrupt_bio_byte 1 r 256 0",
     "invalid corrupt_bio_byte value 256: must be in 0..255"),
    ("mem 0 1 1 5 corrupt_bio_byte 1 r 0 4294967296", "invalid corrupt_bio_byte flags 4294967296"),
    ("mem 0 1 1 4 corrupt_bio_byte 1 r 0", "feature 'corrupt_bio_byte' needs 4 arguments"),
    ("mem 0 1 1 1 random_write_corrupt", "feature 'random_write_corrupt' needs a <probability>"),
    ("mem 0 1 1 2 random_read_corrupt 1000000001",
     "invalid random_read_corrupt probability 1000000001: must be in 0..1000000000"),
    ("mem 0 1 1 2 random_write_corrupt 0.5", "invalid random_write_corrupt probability '0.5'"),
    ("nosuch 0 1 1", "cannot open device 'nosuch'"),
    ("mem 100 1 1", "sectors 100+64 go past its end"),
]


@pytest.mark.parametrize("args,message", BAD_ARGS)
def test_bad_arguments_are_rejected_by_name(mem, args, message):
    with pytest.raises(TableError) as exc:
        MappedDevice.from_table(f"0 64 flakey {args}\n", resolver=DeviceResolver({"mem": mem}))
    text = str(exc.value)
    assert text.startswith("table:1: flakey: ")
    assert message in text
    assert "\n" not in text


@pytest.mark.parametrize("args,printed", [
    ("mem 0 5 5", "mem 0 5 5 2 error_reads error_writes"),
    ("mem 0 5 5 0", "mem 0 5 5 2 error_reads error_writes"),
    ("mem 0 5 5 2 random_read_corrupt 0", "mem 0 5 5 2 error_reads error_writes"),
    ("mem 8 1 2 1 Drop_Writes", "mem 8 1 2 1 drop_writes"),
    ("mem 0 1 1 9 random_write_corrupt 7 random_read_corrupt 1 corrupt_bio_byte 9 W 3 4096",
     "mem 0 1 1 9 corrupt_bio_byte 9 w 3 4096 random_read_corrupt 1 random_write_corrupt 7"),
    ("mem 0 1 1 7 random_read_corrupt 7 corrupt_bio_byte 9 W 3 4096",
     "mem 0 1 1 7 corrupt_bio_byte 9 w 3 4096 random_read_corrupt 7"),
    ("mem 0 1 1 3 drop_writes random_read_corrupt 7",
     "mem 0 1 1 3 drop_writes random_read_corrupt 7"),
    ("mem 0 1 1 2 error_writes error_reads", "mem 0 1 1 2 error_reads error_writes"),
])
def test_table_status_is_the_kernels_canonical_form(mem, args, printed):
    dev = MappedDevice.from_table(f"0 64 flakey {args}\n", resolver=DeviceResolver({"mem": mem}))
    assert dev.table() == f"0 64 flakey {printed}\n"


# -- the up/down cycle ----------------------------------------------------------------------

def test_cycle_is_measured_in_whole_seconds_from_clock_assignment(mem):
    dev, target, clock = build(mem, "mem 0 2 3")
    states = {}
    for t in (0, 1.999, 2, 4.999, 5, 6.5, 7, 9.99, 10):
        clock.t = t
        states[t] = target.is_down()
    assert states == {0: False, 1.999: False, 2: True, 4.999: True, 5: False, 6.5: False,
                      7: True, 9.99: True, 10: False}
    later = FakeClock(1000.0)
    target.clock = later  # restarts the cycle at the new clock's time
    assert not target.is_down()
    later.t = 1002
    assert target.is_down()


def test_zero_up_interval_is_always_down_and_zero_down_never(mem):
    dev, target, clock = build(mem, "mem 0 0 1")
    dev2, target2, clock2 = build(RecordingDevice(DEV_SECTORS), "mem 0 1 0")
    for t in (0, 0.5, 1, 17):
        clock.t = clock2.t = t
        assert target.is_down() and not target2.is_down()


def test_default_down_interval_fails_all_io_naming_the_sector(mem):
    dev, target, clock = build(mem, "mem 16 2 3", length=64)
    assert dev.read(4, 2) == pattern(20, 2)  # up: a linear mapping
    clock.t = 2
    with pytest.raises(BlockIOError, match=r"^flakey: read at sector 4 failed"):
        dev.read(4, 2)
    with pytest.raises(BlockIOError, match=r"^flakey: write at sector 9 failed"):
        dev.write(9, b"x" * SECTOR)
    with pytest.raises(BlockIOError, match=r"^flakey: discard at sector 3 failed"):
        dev.discard(3, 1)
    with pytest.raises(BlockIOError, match=r"^flakey: flush failed"):
        dev.flush()
    assert bytes(mem.buf) == pattern(0, DEV_SECTORS)
    assert target.status("info") == "dropped_writes=0 errored=4 corrupted=0"
    clock.t = 5
    dev.write(9, b"y" * SECTOR)
    assert mem.read(25, 1) == b"y" * SECTOR


def test_flushes_pass_through_while_up(mem):
    dev, target, clock = build(mem, "mem 0 2 3")
    dev.flush()
    dev.write(0, b"z" * SECTOR, BioFlags.PREFLUSH | BioFlags.FUA)
    assert mem.ops == [BioOp.FLUSH, BioOp.FLUSH, BioOp.WRITE]


def test_drop_writes(mem):
    dev, target, clock = build(mem, "mem 0 2 3 1 drop_writes")
    clock.t = 3
    dev.write(1, b"w" * SECTOR)
    dev.discard(2, 4)
    dev.flush()
    assert bytes(mem.buf) == pattern(0, DEV_SECTORS)
    assert mem.ops == []  # nothing reached the device, not even the flush
    assert dev.read(0, 8) == pattern(0, 8)  # reads are handled correctly
    assert target.status("info") == "dropped_writes=3 errored=0 corrupted=0"
    clock.t = 5
    dev.write(1, b"w" * SECTOR)
    assert mem.read(1, 1) == b"w" * SECTOR


def test_error_writes(mem):
    dev, target, clock = build(mem, "mem 0 2 3 1 error_writes")
    clock.t = 2
    with pytest.raises(BlockIOError, match="write at sector 1 failed"):
        dev.write(1, b"w" * SECTOR)
    with pytest.raises(BlockIOError, match="flush failed"):
        dev.flush()
    assert dev.read(0, 4) == pattern(0, 4)
    assert bytes(mem.buf) == pattern(0, DEV_SECTORS)


def test_error_reads(mem):
    dev, target, clock = build(mem, "mem 0 2 3 1 error_reads")
    clock.t = 2
    with pytest.raises(BlockIOError, match="read at sector 6 failed"):
        dev.read(6, 1)
    dev.write(6, b"w" * SECTOR)  # writes are handled correctly
    dev.flush()
    assert mem.ops == [BioOp.WRITE, BioOp.FLUSH]
    assert mem.read(6, 1) == b"w" * SECTOR


def test_corrupt_bio_byte_on_reads_changes_the_buffer_not_the_device(mem):
    dev, target, clock = build(mem, "mem 0 2 3 5 corrupt_bio_byte 32 r 1 0")
    assert dev.read(0, 2) == pattern(0, 2)
    clock.t = 2
    got = dev.read(0, 2)
    want = bytearray(pattern(0, 2))
    want[31] = 1
    assert got == want
    assert bytes(mem.buf) == pattern(0, DEV_SECTORS)
    dev.write(3, b"w" * SECTOR)  # a read-only corruption leaves writes alone
    assert mem.read(3, 1) == b"w" * SECTOR
    assert target.status("info") == "dropped_writes=0 errored=0 corrupted=1"


def test_corrupt_bio_byte_past_the_end_of_the_bio_does_nothing(mem):
    value = pattern(2, 1)[0] ^ 0xFF
    dev, target, clock = build(mem, f"mem 0 2 3 5 corrupt_bio_byte 1025 r {value} 0")
    clock.t = 2
    assert dev.read(0, 2) == pattern(0, 2)
    assert target.corrupted == 0
    got = dev.read(0, 3)
    assert got[1024] == value and got[:1024] == pattern(0, 2)
    assert got[1025:] == pattern(2, 1)[1:]


def test_corrupt_bio_byte_read_flags_must_all_match(mem):
    meta = int(BioFlags.META)
    dev, target, clock = build(mem, f"mem 0 2 3 5 corrupt_bio_byte 1 r 255 {meta | 1 << 11}")
    clock.t = 2
    assert dev.read(0, 1, BioFlags.META) == pattern(0, 1)  # SYNC missing
    got = dev.read(0, 1, BioFlags.META | BioFlags.SYNC)
    assert got[0] == 255 and got[1:] == pattern(0, 1)[1:]


def test_corrupt_bio_byte_on_writes_corrupts_a_copy(mem):
    # flags 1 is REQ_OP_WRITE: bi_opf carries the op, so every write matches
    dev, target, clock = build(mem, "mem 0 2 3 5 corrupt_bio_byte 2 w 7 1")
    clock.t = 4
    data = bytearray(b"d" * SECTOR)
    dev.write(5, data)
    assert data == b"d" * SECTOR  # the caller's buffer is untouched
    assert mem.read(5, 1) == b"d" + b"\x07" + b"d" * (SECTOR - 2)
    assert dev.read(5, 1) == mem.read(5, 1)  # reads are not corrupted


def test_corrupt_bio_byte_on_writes_honours_the_flags_mask(mem):
    fua = int(BioFlags.FUA)
    dev, target, clock = build(mem, f"mem 0 2 3 5 corrupt_bio_byte 1 w 0 {fua}")
    clock.t = 2
    dev.write(0, b"a" * SECTOR)
    assert mem.read(0, 1) == b"a" * SECTOR
    dev.write(0, b"b" * SECTOR, BioFlags.FUA)
    assert mem.read(0, 1) == b"\0" + b"b" * (SECTOR - 1)
    assert target.corrupted == 1


def test_kernel_doc_meta_example_never_matches_on_current_flag_bits(mem):
    # dm-flakey.rst: "corrupt_bio_byte 224 w 0 32" -- REQ_META was 32 once; in Linux 6.x
    # bit 5 is part of the op number, so no data write has it.
    dev, target, clock = build(mem, "mem 0 2 3 5 corrupt_bio_byte 224 w 0 32")
    clock.t = 2
    dev.write(0, b"m" * SECTOR, BioFlags.META)
    assert mem.read(0, 1) == b"m" * SECTOR


def _predict(rng: random.Random, probability: int, length: int):
    """The draws dm-flakey makes: u64 for the chance, then u32 position, u8 value."""
    if rng.getrandbits(64) % PROBABILITY_BASE >= probability:
        return None
    return rng.getrandbits(32) % length, rng.getrandbits(8)


def test_random_read_corrupt_with_a_seeded_rng(mem):
    probability = PROBABILITY_BASE // 2
    dev, target, clock = build(mem, f"mem 0 2 3 2 random_read_corrupt {probability}",
                               rng=random.Random(1234))
    twin = random.Random(1234)
    clock.t = 2
    hits = 0
    for i in range(40):
        got = dev.read(i, 2)
        want = bytearray(pattern(i, 2))
        hit = _predict(twin, probability, len(want))
        if hit:
            want[hit[0]] = hit[1]
            hits += 1
        assert got == want
    assert 5 < hits < 35  # both outcomes happened
    assert bytes(mem.buf) == pattern(0, DEV_SECTORS)
    clock.t = 0
    state = target.rng.getstate()
    assert dev.read(0, 2) == pattern(0, 2)
    assert target.rng.getstate() == state  # no draws while up


def test_random_write_corrupt_with_a_seeded_rng(mem):
    dev, target, clock = build(mem, f"mem 0 2 3 2 random_write_corrupt {PROBABILITY_BASE}",
                               rng=random.Random(99))
    twin = random.Random(99)
    clock.t = 3
    data = bytes(range(256)) * 4
    dev.write(10, data)
    pos, value = _predict(twin, PROBABILITY_BASE, len(data))
    want = bytearray(data)
    want[pos] = value
    assert mem.read(10, 2) == want
    assert dev.read(10, 2) == want  # reads are not corrupted


def test_random_corrupt_probability_zero_never_draws(mem):
    dev, target, clock = build(mem, "mem 0 2 3 3 drop_writes random_read_corrupt 0",
                               rng=random.Random(5))
    clock.t = 2
    state = target.rng.getstate()
    assert dev.read(0, 4) == pattern(0, 4)
    assert target.rng.getstate() == state


# -- what the mapped device stacks --------------------------------------------------------------

def test_passes_crypto_and_discard_but_not_write_zeroes(mem):
    mem.crypto = CryptoCapabilities({"AES-256-XTS": 4096})
    dev, target, clock = build(mem, "mem 0 2 3")
    assert dev.crypto == mem.crypto
    assert dev.can_discard and mem.can_write_zeroes and not dev.can_write_zeroes
    assert target.devices() == [mem]


def test_read_corruption_happens_after_the_read_fills_the_buffer(mem):
    dev, target, clock = build(mem, "mem 0 2 3 5 corrupt_bio_byte 3 r 9 0")
    clock.t = 2
    buf = bytearray(b"\xee" * SECTOR)
    dev.submit(Bio.read(7, buf))
    want = bytearray(pattern(7, 1))
    want[2] = 9
    assert buf == want


# -- the kernel's documented examples -------------------------------------------------------------

@pytest.mark.parametrize("features", [
    "5 corrupt_bio_byte 32 r 1 0",  # dm-flakey.rst
    "5 corrupt_bio_byte 224 w 0 32",  # dm-flakey.rst
    "4 random_write_corrupt 100000000 random_read_corrupt 100000000",  # dm-devel, 2023
])
def test_kernel_doc_examples_load_unchanged(make_image, features):
    img = make_image(DEV_SECTORS, content=pattern(0, DEV_SECTORS))
    line = f"0 {DEV_SECTORS} flakey {img} 0 0 1 {features}"
    if features.startswith("4 "):  # the kernel prints features in its own order
        printed = f"0 {DEV_SECTORS} flakey {img} 0 0 1 4 random_read_corrupt 100000000 " \
                  "random_write_corrupt 100000000"
    else:
        printed = line
    dev = MappedDevice.from_table(line + "\n")
    try:
        assert dev.table() == printed + "\n"
        if "32 r 1" in features:  # up interval 0: always down
            got = dev.read(0, 1)
            assert got[31] == 1 and got[:31] == pattern(0, 1)[:31]
    finally:
        dev.close()
