"""Block layer: backends, request checks, byte access and the file-like view."""

import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmkit.block import (Bio, BioOp, BlockDeviceIO, FileDevice, MemoryDevice, QueueLimits,
                         read_bytes, write_bytes)
from dmkit.errors import DeviceError, InvalidBioError, NotSupportedError, ReadOnlyError


def test_file_device_reads_writes_in_place(make_image):
    path = make_image(64)
    with FileDevice(path) as dev:
        assert dev.nr_sectors == 64 and dev.logical_block_size == 512
        dev.write(3, b"z" * 1024)
        buf = bytearray(2048)
        dev.readinto(2, buf)
        assert buf == bytes(512) + b"z" * 1024 + bytes(512)
        dev.flush()
    with open(path, "rb") as f:
        assert f.read()[3 * 512:5 * 512] == b"z" * 1024


def test_file_device_discard_and_write_zeroes_read_back_zero(make_image):
    path = make_image(64, content=b"\xff" * 64 * 512)
    with FileDevice(path) as dev:
        dev.discard(8, 16)
        dev.write_zeroes(40, 3)
        data = dev.read(0, 64)
    assert data[8 * 512:24 * 512] == bytes(16 * 512)
    assert data[40 * 512:43 * 512] == bytes(3 * 512)
    assert data[:8 * 512] == b"\xff" * 8 * 512 and data[24 * 512:40 * 512] == b"\xff" * 16 * 512


def test_file_device_read_only_and_errors(make_image, tmp_path):
    path = make_image(8)
    with FileDevice(path, read_only=True) as dev:
        with pytest.raises(ReadOnlyError, match="read-only"):
            dev.write(0, bytes(512))
        with pytest.raises(ReadOnlyError):
            dev.discard(0, 1)
        assert dev.read(0, 8) == bytes(4096)
    with pytest.raises(DeviceError, match="missing.img: cannot open"):
        FileDevice(tmp_path / "missing.img")
    with pytest.raises(DeviceError, match="cannot open: Is a directory"):
        FileDevice(tmp_path)
    with pytest.raises(DeviceError, match="not a regular file or block device"):
        FileDevice(tmp_path, read_only=True)


def test_image_size_rounds_down_to_logical_blocks(tmp_path):
    p = tmp_path / "odd.img"
    p.write_bytes(bytes(3 * 4096 + 1000))
    assert FileDevice(p).nr_sectors == 3 * 8 + 1
    assert FileDevice(p, logical_block_size=4096).nr_sectors == 3 * 8


@pytest.mark.parametrize("make_bio,exc,needle", [
    (lambda: Bio.read(7, bytearray(1024)), InvalidBioError, "sectors 7+2 is outside"),
    (lambda: Bio.read(-1, bytearray(512)), InvalidBioError, "outside"),
    (lambda: Bio(BioOp.READ, 0, 0, memoryview(bytearray(0))), InvalidBioError, "outside"),
    (lambda: Bio(BioOp.WRITE, 0, 2, memoryview(bytes(512))), InvalidBioError, "buffer size"),
    (lambda: Bio(BioOp.READ, 0, 1, memoryview(bytes(512))), InvalidBioError, "read-only"),
])
def test_check_bio(make_bio, exc, needle):
    dev = MemoryDevice(8, name="mem0")
    with pytest.raises(exc) as ei:
        dev.submit(make_bio())
    assert needle in str(ei.value) and str(ei.value).startswith("mem0: ")


def test_unsupported_ops_are_refused():
    dev = MemoryDevice(8)
    dev.can_discard = False
    with pytest.raises(NotSupportedError, match="discard not supported"):
        dev.discard(0, 1)


def test_bio_read_rejects_partial_sector_buffers():
    with pytest.raises(ValueError, match="not a whole number of sectors"):
        Bio.read(0, bytearray(100))


@settings(max_examples=200, deadline=None)
@given(lbs=st.sampled_from([512, 4096]), data=st.data())
def test_rmw_matches_bytearray_model(lbs, data):
    size = 16 * 4096
    dev = MemoryDevice(size // 512, limits=QueueLimits(logical_block_size=lbs))
    model = bytearray(size)
    for _ in range(data.draw(st.integers(1, 8))):
        off = data.draw(st.integers(0, size - 1))
        n = data.draw(st.integers(0, min(size - off, 3 * lbs + 7)))
        if data.draw(st.booleans()):
            payload = data.draw(st.binary(min_size=n, max_size=n))
            write_bytes(dev, off, payload)
            model[off:off + n] = payload
        else:
            assert read_bytes(dev, off, n) == model[off:off + n]
    assert dev.buf == model


def test_rmw_out_of_range():
    dev = MemoryDevice(2)
    with pytest.raises(InvalidBioError, match="byte range 1000\\+100 is outside"):
        read_bytes(dev, 1000, 100)
    with pytest.raises(InvalidBioError):
        write_bytes(dev, -1, b"x")


class CountingDevice(MemoryDevice):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.bios = []

    def _submit(self, bio):
        self.bios.append((bio.op, bio.sector, bio.nr_sectors))
        super()._submit(bio)


def test_large_unaligned_write_reads_only_head_and_tail_blocks():
    dev = CountingDevice(64, limits=QueueLimits(logical_block_size=4096))
    write_bytes(dev, 100, b"x" * 20000)
    reads = [b for b in dev.bios if b[0] is BioOp.READ]
    assert reads == [(BioOp.READ, 0, 8), (BioOp.READ, 32, 8)]
    assert dev.buf[100:20100] == b"x" * 20000 and dev.buf[:100] == bytes(100)


@settings(max_examples=100, deadline=None)
@given(ops=st.lists(st.tuples(st.integers(0, 9000), st.binary(max_size=3000), st.booleans()),
                    max_size=10))
def test_file_like_object_against_model(ops):
    size = 8192
    dev = MemoryDevice(size // 512)
    model = bytearray(size)
    f = BlockDeviceIO(dev)
    for pos, payload, is_write in ops:
        f.seek(pos)
        if is_write:
            if pos + len(payload) > size:
                with pytest.raises(OSError):
                    f.write(payload)
                assert f.tell() == pos
                continue
            assert f.write(payload) == len(payload)
            model[pos:pos + len(payload)] = payload
            assert f.tell() == pos + len(payload)
        else:
            got = f.read(len(payload))
            assert got == bytes(model[pos:pos + len(payload)])
            assert f.tell() == pos + len(got)
    assert dev.buf == model


def test_file_like_semantics(make_image):
    dev = MemoryDevice(4)
    f = BlockDeviceIO(dev)
    assert f.seekable() and f.readable() and f.writable()
    assert f.seek(-10, io.SEEK_END) == 2038
    assert f.read() == bytes(10)
    assert f.read(5) == b""
    f.seek(5, io.SEEK_SET)
    f.seek(3, io.SEEK_CUR)
    assert f.tell() == 8
    with pytest.raises(OSError):
        f.seek(-1)
    with pytest.raises(io.UnsupportedOperation):
        f.truncate(10)
    # buffered wrappers work on top
    with io.BufferedRandom(BlockDeviceIO(dev)) as b:
        b.seek(700)
        b.write(b"hello")
    assert dev.buf[700:705] == b"hello"
    ro = BlockDeviceIO(MemoryDevice(1, read_only=True))
    assert not ro.writable()
    with pytest.raises(io.UnsupportedOperation):
        ro.write(b"x")


def test_closing_a_written_view_flushes(make_image):
    dev = CountingDevice(4)
    f = BlockDeviceIO(dev)
    f.read(10)
    f.close()
    assert all(op is not BioOp.FLUSH for op, *_ in dev.bios)
    f = BlockDeviceIO(dev)
    f.write(b"abc")
    f.close()
    assert dev.bios[-1][0] is BioOp.FLUSH


def test_file_device_vectored_io_matches_single_buffers(make_image, monkeypatch):
    path = make_image(64)
    with FileDevice(path) as dev:
        bufs = [memoryview(bytes([i + 1]) * (512 * (i + 1))) for i in range(4)]  # 10 sectors
        dev.submit_vec(BioOp.WRITE, 5, bufs)
        assert dev.read(5, 10) == b"".join(bytes(b) for b in bufs)
        out = [memoryview(bytearray(512 * 3)), memoryview(bytearray(512 * 7))]
        dev.submit_vec(BioOp.READ, 5, out)
        assert bytes(out[0]) + bytes(out[1]) == b"".join(bytes(b) for b in bufs)
        # a short transfer from the kernel is completed buffer by buffer
        real = os.preadv
        monkeypatch.setattr(os, "preadv", lambda fd, bl, off: real(fd, [bl[0][:700]], off)
                            if len(bl) > 1 else real(fd, bl, off))
        out = [memoryview(bytearray(512 * 3)), memoryview(bytearray(512 * 7))]
        dev.submit_vec(BioOp.READ, 5, out)
        assert bytes(out[0]) + bytes(out[1]) == b"".join(bytes(b) for b in bufs)
        monkeypatch.undo()
        with pytest.raises(InvalidBioError, match=r"sectors 60\+8 is outside"):
            dev.submit_vec(BioOp.READ, 60, [memoryview(bytearray(4096))])
    with FileDevice(path, read_only=True) as ro:
        with pytest.raises(ReadOnlyError):
            ro.submit_vec(BioOp.WRITE, 0, [memoryview(bytes(512))])


def test_striped_over_files_large_requests_use_one_call_per_stripe(make_image):
    from dmkit.dm import MappedDevice
    from tests.conftest import pattern
    a, b = make_image(256), make_image(256)
    with MappedDevice.from_table(f"0 512 striped 2 8 {a} 0 {b} 0\n") as md:
        md.write(4, pattern(4, 500))
        assert md.read(0, 512) == bytes(2048) + pattern(4, 500) + bytes(4096)
        calls = []
        for dev in {id(t): t for t in md.targets[0].devs}.values():
            orig = dev.submit_vec
            dev.submit_vec = lambda *a, _o=orig, **k: (calls.append(a[1]), _o(*a, **k))[1]
        md.read(4, 500)
        assert len(calls) == 2
    raw_a, raw_b = open(a, "rb").read(), open(b, "rb").read()
    # chunk k of the mapped device is on stripe k % 2, row k // 2
    mapped = bytes(2048) + pattern(4, 500) + bytes(4096)
    for k in range(64):
        dev_raw = raw_a if k % 2 == 0 else raw_b
        row = k // 2
        assert dev_raw[row * 4096:(row + 1) * 4096] == mapped[k * 4096:(k + 1) * 4096]


def test_start_writeback_asks_the_page_cache_for_the_byte_range(tmp_path, monkeypatch):
    """FileDevice.start_writeback is sync_file_range(fd, offset, length, WRITE) on the
    sector range; the data is unchanged; other devices take the hint as a no-op."""
    import dmkit.block.file as file_mod
    path = tmp_path / "img"
    path.write_bytes(bytes(64 * 512))
    with FileDevice(path) as dev:
        dev.write(8, b"\x5a" * 4096)
        assert file_mod._sync_file_range is not None, "the C library has sync_file_range"
        dev.start_writeback(8, 8)                  # the real call: no error, data intact
        calls = []
        monkeypatch.setattr(file_mod, "_sync_file_range", lambda *a: calls.append(a) or 0)
        dev.start_writeback(8, 8)
        dev.start_writeback(8, 0)
        assert calls == [(dev.fileno(), 8 * 512, 8 * 512, 2)]
        assert dev.read(8, 8) == b"\x5a" * 4096
    mem = MemoryDevice(16)
    mem.start_writeback(0, 16)                      # the default: nothing happens
    assert mem.read(0, 16) == bytes(16 * 512)
