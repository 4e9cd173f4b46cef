"""striped: argument checking, data placement against a model, flushes, discards, status."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmkit.block import (BioFlags, BioOp, CryptoCapabilities, IntegrityProfile, MemoryDevice,
                         QueueLimits)
from dmkit.dm import DeviceResolver, MappedDevice
from dmkit.errors import BlockIOError, TableError
from tests.conftest import pattern

SECTOR = 512


class RecordingDevice(MemoryDevice):
    """A RAM disk that records (op, sector, nr_sectors) of each request, and can fail."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.log: list[tuple[BioOp, int, int]] = []
        self.failing = False

    def _submit(self, bio):
        self.log.append((bio.op, bio.sector, bio.nr_sectors))
        if self.failing:
            raise BlockIOError(f"{self.name}: failed at sector {bio.sector}")
        super()._submit(bio)


def devices(*sizes, **kw):
    return {f"d{i}": RecordingDevice(n, name=f"d{i}", **kw) for i, n in enumerate(sizes)}


def build(table_args, length, devs):
    return MappedDevice.from_table(f"0 {length} striped {table_args}\n",
                                   resolver=DeviceResolver(devs))


# -- table arguments -------------------------------------------------------------------------

BAD_ARGS = [
    (64, "", "expected <num stripes> <chunk size> [<dev path> <offset>]+"),
    (64, "2", "expected <num stripes> <chunk size>"),
    (64, "0 8 d0 0", "invalid stripe count 0: must be in 1..4294967295"),
    (64, "two 8 d0 0 d1 0", "invalid stripe count 'two'"),
    (64, "2 0 d0 0 d1 0", "invalid chunk size 0"),
    (64, "2 -8 d0 0 d1 0", "invalid chunk size '-8'"),
    (99, "2 8 d0 0 d1 0", "target length 99 is not divisible by the number of stripes 2"),
    (96, "2 5 d0 0 d1 0", "stripe width 48 (target length / stripes) is not divisible by the "
                          "chunk size 5"),
    (64, "2 8 d0 0", "2 stripes need 4 device arguments (<dev path> <offset> each), got 2"),
    (64, "2 8 d0 0 d1 0 d0", "got 5"),
    (64, "1 8 d0 0 d1 0", "1 stripes need 2 device arguments"),
    (64, "2 8 d0 x d1 0", "invalid offset of stripe 0 'x'"),
    (64, "2 8 d0 0 d1 1.5", "invalid offset of stripe 1 '1.5'"),
    (64, "2 8 d0 0 nosuch 0", "cannot open stripe 1 device 'nosuch'"),
    (64, "2 8 d0 0 d1 100", "stripe 1 device d1: sectors 100+32 go past its end"),
]


@pytest.mark.parametrize("length,args,message", BAD_ARGS)
def test_bad_arguments_are_rejected_by_name(length, args, message):
    with pytest.raises(TableError) as exc:
        build(args, length, devices(128, 128))
    text = str(exc.value)
    assert text.startswith("table:1: striped: ")
    assert message in text
    assert "\n" not in text


def test_chunk_must_hold_whole_logical_blocks():
    devs = devices(128, 128, limits=QueueLimits(logical_block_size=4096))
    with pytest.raises(TableError, match="chunk size 4 sectors is not a multiple of the "
                                         "4096-byte logical block size"):
        build("2 4 d0 0 d1 0", 64, devs)
    assert build("2 8 d0 0 d1 0", 64, devs).logical_block_size == 4096


# -- placement against a model ----------------------------------------------------------------

def model_location(sector, chunk, stripes, offsets):
    chunk_nr, in_chunk = divmod(sector, chunk)
    row, stripe = divmod(chunk_nr, stripes)
    return stripe, offsets[stripe] + row * chunk + in_chunk


@st.composite
def stripe_sets(draw):
    stripes = draw(st.integers(1, 4))
    chunk = draw(st.sampled_from([1, 2, 3, 5, 8, 16]))
    rows = draw(st.integers(1, 4))
    ndevs = draw(st.integers(1, stripes))  # fewer devices than stripes: shared devices
    width = rows * chunk
    # stripe i lives on device i % ndevs, in its own region of it
    offsets = [(i // ndevs) * (width + 16) + draw(st.integers(0, 16)) for i in range(stripes)]
    return stripes, chunk, width, ndevs, offsets


def requests(length):
    return st.lists(st.tuples(st.sampled_from(["read", "write", "discard", "write_zeroes"]),
                              st.integers(0, length - 1), st.integers(1, length)),
                    min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(layout=stripe_sets(), data=st.data())
def test_requests_land_where_the_model_says(layout, data):
    stripes, chunk, width, ndevs, offsets = layout
    length = width * stripes
    dev_sectors = (stripes // ndevs + 1) * (width + 16) + 16
    devs = {f"d{i}": RecordingDevice(initial=os.urandom(dev_sectors * SECTOR), name=f"d{i}")
            for i in range(ndevs)}
    names = [f"d{i % ndevs}" for i in range(stripes)]
    table = f"{stripes} {chunk} " + " ".join(f"{n} {o}" for n, o in zip(names, offsets))
    mapped = build(table, length, devs)
    model = {name: bytearray(dev.buf) for name, dev in devs.items()}

    for op, start, n in data.draw(requests(length)):
        n = min(n, length - start)
        places = [model_location(s, chunk, stripes, offsets) for s in range(start, start + n)]
        for dev in devs.values():
            dev.log.clear()
        if op == "read":
            want = b"".join(model[names[st_]][at * SECTOR:(at + 1) * SECTOR]
                            for st_, at in places)
            assert mapped.read(start, n) == want
        elif op == "write":
            payload = os.urandom(n * SECTOR)
            mapped.write(start, payload)
            for i, (st_, at) in enumerate(places):
                piece = payload[i * SECTOR:(i + 1) * SECTOR]
                model[names[st_]][at * SECTOR:(at + 1) * SECTOR] = piece
        else:
            getattr(mapped, op)(start, n)
            for st_, at in places:
                model[names[st_]][at * SECTOR:(at + 1) * SECTOR] = bytes(SECTOR)
        for name, dev in devs.items():
            assert dev.buf == model[name], f"{op} {start}+{n}: {name} differs from the model"
        sent = sum(len(dev.log) for dev in devs.values())
        if op in ("read", "write"):  # one request per piece of a chunk (one if 1 stripe)
            pieces = (len({(s // chunk) for s in range(start, start + n)})
                      if stripes > 1 else 1)
            assert sent == pieces
        else:  # one request per stripe that the range touches
            assert sent == len({st_ for st_, _ in places})
    mapped.close()


def test_three_stripe_layout_by_hand():
    devs = devices(64, 64, 64)
    mapped = build("3 2 d0 0 d1 10 d2 20", 12, devs)
    mapped.write(0, pattern(0, 12))
    # chunks 0..5 of 2 sectors: 0->d0 row0, 1->d1 row0, 2->d2 row0, 3->d0 row1, ...
    assert devs["d0"].read(0, 4) == pattern(0, 2) + pattern(6, 2)
    assert devs["d1"].read(10, 4) == pattern(2, 2) + pattern(8, 2)
    assert devs["d2"].read(20, 4) == pattern(4, 2) + pattern(10, 2)
    assert mapped.read(1, 10) == pattern(1, 10)


# -- flushes, discards, stacking ----------------------------------------------------------------

def test_each_flush_reaches_each_device_once():
    devs = devices(64, 64, 64)
    mapped = build("4 4 d0 0 d1 0 d2 0 d0 32", 64, devs)  # d0 holds two stripes
    for _ in range(3):
        for dev in devs.values():
            dev.log.clear()
        mapped.flush()
        assert [dev.log for dev in devs.values()] == [[(BioOp.FLUSH, 0, 0)]] * 3
    for dev in devs.values():
        dev.log.clear()
    mapped.write(5, pattern(0, 1), BioFlags.PREFLUSH)
    assert devs["d0"].log == [(BioOp.FLUSH, 0, 0)]
    assert devs["d1"].log == [(BioOp.FLUSH, 0, 0), (BioOp.WRITE, 1, 1)]
    assert devs["d2"].log == [(BioOp.FLUSH, 0, 0)]


def test_discard_and_write_zeroes_need_every_device():
    devs = devices(64, 64)
    assert build("2 8 d0 0 d1 0", 64, devs).can_discard
    devs["d1"].can_discard = False
    mapped = build("2 8 d0 0 d1 0", 64, devs)
    assert not mapped.can_discard and mapped.can_write_zeroes
    mapped.write_zeroes(4, 20)  # chunks 0 (4..7) d0, 1 d1, 2 d0 (16..23)
    assert devs["d0"].log == [(BioOp.WRITE_ZEROES, 4, 12)]
    assert devs["d1"].log == [(BioOp.WRITE_ZEROES, 0, 8)]


def test_limits_integrity_and_crypto():
    profile = IntegrityProfile("DM-DIF-EXT-TAG", 8, 8, 512)
    devs = devices(64, 64, integrity=profile)
    for dev in devs.values():
        dev.crypto = CryptoCapabilities({"AES-256-XTS": 4096})
    mapped = build("2 8 d0 0 d1 0", 64, devs)
    assert mapped.limits.io_min == 8 * SECTOR and mapped.limits.io_opt == 2 * 8 * SECTOR
    assert mapped.integrity == profile  # DM_TARGET_PASSES_INTEGRITY
    assert mapped.crypto is None  # dm-stripe does not pass inline crypto


# -- status --------------------------------------------------------------------------------------

def test_info_status_marks_the_stripes_of_a_failing_device():
    devs = devices(64, 64)
    mapped = build("3 4 d0 0 d1 0 d0 32", 48, devs)
    assert mapped.status() == "0 48 striped 3 d0 d1 d0 1 AAA\n"
    devs["d0"].failing = True
    mapped.read(4, 4)  # chunk 1: on d1, fine
    with pytest.raises(BlockIOError, match="d0: failed at sector 0"):
        mapped.read(0, 8)
    assert mapped.status() == "0 48 striped 3 d0 d1 d0 1 DAD\n"
    assert mapped.table() == "0 48 striped 3 4 d0 0 d1 0 d0 32\n"


# -- the kernel's documented example ------------------------------------------------------------

def test_kernel_doc_perl_script_table_loads_unchanged(make_image):
    # striped.rst: a chunk size of 128k over every device given, sized by the smallest.
    chunk_size = 128 * 2
    sizes = [3000, 2600, 4100]
    devs = [make_image(n, content=pattern(1000 * i, n)) for i, n in enumerate(sizes)]
    num_devs = len(devs)
    min_dev_size = min(sizes)
    stripe_dev_size = min_dev_size * num_devs
    stripe_dev_size -= stripe_dev_size % (chunk_size * num_devs)
    table = f"0 {stripe_dev_size} striped {num_devs} {chunk_size}"
    for dev in devs:
        table += f" {dev} 0"
    with MappedDevice.from_table(table + "\n", name="stripe_dev") as mapped:
        assert mapped.table() == table + "\n"
        assert mapped.nr_sectors == 7680
        # chunk 4 is the second chunk of device 1
        assert mapped.read(4 * chunk_size, 2) == pattern(1000 + chunk_size, 2)
        mapped.write(7680 - 1, pattern(0, 1))  # chunk 29, device 2, row 9
        assert mapped.read(7679, 1) == pattern(0, 1)
    with open(devs[2], "rb") as f:
        f.seek((9 * chunk_size + chunk_size - 1) * SECTOR)
        assert f.read(SECTOR) == pattern(0, 1)
