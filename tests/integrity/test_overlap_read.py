"""Large verified reads on a plain image file: the copy out of the page cache overlapped
with the hashing (``DataPath._read_overlapped``, ``TagFunction.read_tags``).

The path is taken only for reads of at least 512 KiB within one interleave area, with a
hash or hmac(hash) tag function the C accelerator computes, on a data device that is a
plain FileDevice, when nothing in the journal lies over the range.  These tests check that
it is taken when it should be (by counting calls), that it returns the written bytes in
every mode and layout, and that a tampered block, a file cut short and ``zero_on_error``
behave exactly as on the other path.
"""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmkit.block import FileDevice
from dmkit.dm import MappedDevice
from dmkit.errors import BlockIOError, IntegrityError
from dmkit.targets.integrity import datapath
from dmkit.targets.integrity import tags as tags_mod
from dmkit.targets.integrity.format import FormatParams, format_device
from dmkit.targets.integrity.tags import TagFunction

pytestmark = pytest.mark.skipif(
    tags_mod._tagsevp is None or datapath.default_workers() < 2,
    reason="the overlapped read needs the optional C accelerator _tagsevp (not built: no "
           "compiler or libcrypto headers at install) and a second CPU")

KEY = bytes(range(32))
MiB = 1 << 20


def _image(path, *, alg="hmac(sha256)", block_size=4096, interleave=4096, mib=24):
    """A formatted image; returns (table arguments after the mode, provided sectors)."""
    with open(path, "wb") as f:
        f.truncate(mib * MiB)
    key = KEY if alg.startswith("hmac") else None
    params = FormatParams(internal_hash=alg, key=key, block_size=block_size,
                          interleave_sectors=interleave)
    with FileDevice(path) as dev:
        plan = format_device(dev, params=params)
    sb = plan.superblock
    h = f"{alg}:{key.hex()}" if key else alg
    return (sb.integrity_tag_size, f"block_size:{block_size} internal_hash:{h} fix_padding "
            f"fix_hmac"), plan.provided_data_sectors


def _open(path, nr, tag_size, opts, mode, extra=(), read_only=False):
    words = opts.split() + list(extra)
    table = f"0 {nr} integrity {path} 0 {tag_size} {mode} {len(words)} {' '.join(words)}"
    return MappedDevice.from_table(table, read_only=read_only)


@pytest.fixture
def count_overlapped(monkeypatch):
    """Counts the requests that took the overlapped path."""
    calls = []
    real = TagFunction.read_tags

    def counting(self, fd, offset, buf, first_sector, piece):
        calls.append((offset, len(memoryview(buf).cast("B"))))
        return real(self, fd, offset, buf, first_sector, piece)
    monkeypatch.setattr(TagFunction, "read_tags", counting)
    return calls


def _pattern(seed: int, n: int) -> bytes:
    return (seed.to_bytes(4, "little") * (n // 4 + 1))[:n] if n else b""


@pytest.mark.parametrize("mode", ["D", "B", "J"])
def test_written_data_reads_back_through_the_overlapped_path(tmp_path, mode,
                                                             count_overlapped):
    path = tmp_path / "img"
    (ts, opts), nr = _image(path)
    model = bytearray(nr << 9)
    with _open(path, nr, ts, opts, mode) as dev:
        for at in range(0, nr - 2048, 3000):    # not aligned to the requests below
            data = os.urandom(MiB)
            dev.write(at, data)
            model[at << 9:(at << 9) + MiB] = data
        dev.flush()
    with _open(path, nr, ts, opts, mode, read_only=True) as dev:
        assert dev.targets[0]._overlap_fd is not None
        buf = bytearray(MiB)
        for at in range(0, nr - 2048 + 1, 2048):
            dev.readinto(at, memoryview(buf))
            assert buf == model[at << 9:(at << 9) + MiB], at
    # every 1 MiB request that stays in one 2 MiB interleave area took the path
    assert len(count_overlapped) >= (nr // 2048) // 2


@pytest.fixture(scope="module")
def patterned(tmp_path_factory):
    """An image with 1 MiB interleave areas, every MiB written with its own pattern."""
    path = tmp_path_factory.mktemp("anyreq") / "img"
    (ts, opts), nr = _image(path, interleave=2048)
    with _open(path, nr, ts, opts, "D") as dev:
        for at in range(0, nr, 2048):
            dev.write(at, _pattern(at, min(MiB, (nr - at) << 9)))
    return path, ts, opts, nr


@settings(max_examples=40, deadline=None)
@given(start=st.integers(0, 10_000), size=st.integers(1, 700))
def test_any_request_agrees_with_the_other_path(patterned, start, size):
    """Requests of 4 KiB..2.8 MiB anywhere, crossing interleave areas or not: the bytes are
    those the unaccelerated path returns."""
    path, ts, opts, nr = patterned
    s = min(start * 8, nr - 8)
    n = min(size * 8, nr - s)
    with _open(path, nr, ts, opts, "D", read_only=True) as dev:
        fast = bytearray(n << 9)
        dev.readinto(s, memoryview(fast))
        dev.targets[0]._overlap_fd = None
        slow = bytearray(n << 9)
        dev.readinto(s, memoryview(slow))
    assert fast == slow
    for at in range(s - s % 2048, s + n, 2048):   # and they are what was written
        lo, hi = max(at, s), min(at + 2048, s + n)
        want = _pattern(at, min(MiB, (nr - at) << 9))
        assert fast[(lo - s) << 9:(hi - s) << 9] == want[(lo - at) << 9:(hi - at) << 9]


def _data_byte(dev, logical_sector: int) -> int:
    t = dev.targets[0]
    return t.geo.locate(logical_sector)[0] << 9


def test_tampered_block_fails_naming_its_sector(tmp_path, count_overlapped):
    path = tmp_path / "img"
    (ts, opts), nr = _image(path)
    with _open(path, nr, ts, opts, "D") as dev:
        dev.write(0, os.urandom(MiB))
        dev.write(2048, os.urandom(MiB))
        where = _data_byte(dev, 2048 + 40 * 8) + 123
    with open(path, "r+b") as f:
        f.seek(where)
        b = f.read(1)
        f.seek(where)
        f.write(bytes([b[0] ^ 0x10]))
    before = path.read_bytes()
    with _open(path, nr, ts, opts, "D", read_only=True) as dev:
        buf = bytearray(MiB)
        with pytest.raises(IntegrityError, match=r"checksum mismatch at sector 2368$"):
            dev.readinto(2048, memoryview(buf))
        assert buf == bytes(MiB)      # never the unverified data
        dev.readinto(0, memoryview(buf))   # the block before is fine
        assert dev.targets[0].number_of_mismatches == 1
    assert len(count_overlapped) == 2
    # zero_on_error: the bad block reads as zeros, the others as written
    with _open(path, nr, ts, opts, "D", extra=["zero_on_error"], read_only=True) as dev:
        got = bytearray(MiB)
        dev.readinto(2048, memoryview(got))
        dev.targets[0]._overlap_fd = None
        want = bytearray(MiB)
        dev.readinto(2048, memoryview(want))
        assert got == want and got[40 * 4096:41 * 4096] == bytes(4096)
        assert dev.targets[0].zeroed_blocks == 2
    assert len(count_overlapped) == 3
    assert path.read_bytes() == before   # reads never write


def test_file_cut_short_is_an_error_naming_the_sector(tmp_path, count_overlapped):
    path = tmp_path / "img"
    (ts, opts), nr = _image(path)
    with _open(path, nr, ts, opts, "D") as dev:
        dev.write(nr - 2048, os.urandom(MiB))
        last = _data_byte(dev, nr - 2048)
        dev.flush()
        # another program cuts the image short under the open device
        os.truncate(path, last + 200 * 1024)
        with pytest.raises(BlockIOError, match=rf"read at sector {last >> 9} failed: short "
                           rf"read at byte {last + 200 * 1024}") as e:
            dev.readinto(nr - 2048, memoryview(bytearray(MiB)))
        assert e.value.errno == 5
    assert len(count_overlapped) == 1


def test_not_taken_where_it_does_not_apply(tmp_path, count_overlapped):
    path = tmp_path / "img"
    (ts, opts), nr = _image(path)
    with _open(path, nr, ts, opts, "D") as dev:
        dev.readinto(0, memoryview(bytearray(256 * 1024)))    # below 512 KiB
    with _open(path, nr, ts, opts, "R", read_only=True) as dev:   # no checks in mode R
        dev.readinto(0, memoryview(bytearray(MiB)))
    with _open(path, nr, ts, opts, "J") as dev:   # the journal lies over what was written
        dev.write(0, os.urandom(MiB))
        assert dev.targets[0].journal.newest
        buf = bytearray(MiB)
        dev.readinto(0, memoryview(buf))
    crc_path = tmp_path / "crc"
    (ts, opts), nr = _image(crc_path, alg="crc32c")
    with _open(crc_path, nr, ts, opts, "D") as dev:   # no accelerator for the CRCs
        assert dev.targets[0]._overlap_fd is None
        dev.readinto(0, memoryview(bytearray(MiB)))
    assert not count_overlapped
