"""The Python data path: ``luks.format`` (with integrity: superblock and wipe) and
``luks.open`` (the decrypted volume as a file over dmkit's integrity and crypt targets).

Known plaintext everywhere (sector ``i`` = a pattern of ``i``), every cipher x integrity
combination cryptsetup offers; tampering with any ciphertext byte, tag byte or random IV of
an authenticated volume fails exactly that sector, and so does moving a sector (data and
metadata) to another place.
"""

from __future__ import annotations

import hashlib
import io

import pytest

import dmkit.luks as luks
from dmkit.block import MemoryDevice
from dmkit.errors import FormatError, IntegrityError
from dmkit.luks import NoKeyError
from dmkit.luks.data import _Overlay, integrity_params
from dmkit.targets.integrity import Geometry, read_superblock

from ..conftest import pattern
from ._util import FAST, seeded_rng

MiB = 1 << 20

#: (id, format keyword arguments); every combination cryptsetup's --integrity offers
COMBOS = [
    ("luks2-aes-xts", dict(cipher="aes-xts-plain64")),
    ("luks2-aes-xts-4k", dict(cipher="aes-xts-plain64", sector_size=4096)),
    ("luks2-aes-cbc-essiv", dict(cipher="aes-cbc-essiv:sha256")),
    ("luks2-hmac-sha256", dict(cipher="aes-xts-plain64", integrity="hmac-sha256")),
    ("luks2-hmac-sha512", dict(cipher="aes-xts-plain64", integrity="hmac-sha512")),
    ("luks2-hmac-sha256-4k", dict(cipher="aes-xts-plain64", integrity="hmac-sha256",
                                  sector_size=4096)),
    ("luks2-aes-gcm-aead", dict(cipher="aes-gcm-random", integrity="aead")),
    ("luks2-chacha20-poly1305", dict(cipher="chacha20-random", integrity="poly1305")),
    ("luks1-aes-xts", dict(type="luks1", cipher="aes-xts-plain64")),
    ("luks1-aes-cbc-essiv", dict(type="luks1", cipher="aes-cbc-essiv:sha256")),
]
AUTHENTICATED = [c for c in COMBOS if "integrity" in c[1]]


def _format(kw: dict, *, size: int = 6 * MiB, seed: int = 1, **extra) -> MemoryDevice:
    dev = MemoryDevice(size // 512, name="disk")
    kw = dict(kw)
    if kw.get("type", "luks2") == "luks2":
        kw.setdefault("keyslots_size", MiB - 32768)
    luks.format(dev, "pw", pbkdf=FAST, rng=seeded_rng(seed), **kw, **extra).wipe()
    return dev


@pytest.mark.parametrize("kw", [c[1] for c in COMBOS], ids=[c[0] for c in COMBOS])
def test_round_trip(kw):
    dev = _format(kw)
    with luks.open(dev, "pw", writable=True) as vol:
        n = vol.nr_sectors
        assert vol.size_bytes == n * 512 and vol.writable()
        vol.write(pattern(0, n))
    image = bytes(dev.buf)
    with luks.open(dev, "pw") as vol:
        assert not vol.writable()
        assert vol.read() == pattern(0, n)
        vol.seek(4096 + 7)
        assert vol.read(100) == pattern(8, 1)[7:107]
        assert vol.tell() == 4096 + 107
    assert bytes(dev.buf) == image          # a read-only open writes nothing
    assert pattern(3, 1) not in image       # and the data is encrypted


@pytest.mark.parametrize("kw", [c[1] for c in AUTHENTICATED], ids=[c[0] for c in AUTHENTICATED])
def test_format_wipes_every_tag(kw):
    """After format every sector authenticates and reads as zeros; with
    integrity_wipe=False none does, until written."""
    calls = []
    dev = _format(kw, progress=lambda done, total: calls.append((done, total)))
    with luks.open(dev, "pw") as vol:
        assert vol.read() == bytes(vol.size_bytes)
        assert calls[-1] == (vol.size_bytes, vol.size_bytes)
        assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    dev = _format(kw, integrity_wipe=False)
    with luks.open(dev, "pw", writable=True) as vol:
        unit = vol.sector_size
        with pytest.raises(IntegrityError, match="INTEGRITY AEAD ERROR, sector 0$"):
            vol.read(unit)
        vol.seek(0)
        vol.write(pattern(0, unit // 512))
        vol.seek(0)
        assert vol.read(unit) == pattern(0, unit // 512)
        with pytest.raises(IntegrityError) as ei:
            vol.read(unit)
        assert ei.value.sector == unit // 512


def _locate(dev: MemoryDevice, logical_sector: int) -> tuple[int, int, int]:
    """(byte offset of the data, byte offset of the tag, tag size) of a logical sector."""
    with luks.unlock(dev, "pw") as opened:
        seg = opened.segment
    sb = read_superblock(dev, seg.offset_sectors)
    geo = Geometry.from_superblock(sb, dev.nr_sectors, start_sector=seg.offset_sectors)
    data_sector, tag_offset = geo.locate(logical_sector)
    return data_sector * 512, tag_offset, sb.integrity_tag_size


def _filled(kw):
    dev = _format(kw, integrity_wipe=False)
    with luks.open(dev, "pw", writable=True) as vol:
        vol.write(pattern(0, vol.nr_sectors))
    return dev


def _check_only(dev, bad: set[int]) -> None:
    """Exactly the sectors in ``bad`` fail, each naming itself; everything between them
    reads back (in large requests)."""
    with luks.open(dev, "pw") as vol:
        unit = vol.sector_size // 512
        start = 0
        for s in sorted(bad) + [vol.nr_sectors]:
            if s > start:
                vol.seek(start * 512)
                assert vol.read((s - start) * 512) == pattern(start, s - start)
            if s == vol.nr_sectors:
                break
            vol.seek(s * 512)
            with pytest.raises(IntegrityError) as ei:
                vol.read(unit * 512)
            assert ei.value.sector == s
            assert str(ei.value).endswith(f"INTEGRITY AEAD ERROR, sector {s}")
            start = s + unit


TAMPER = [(name, kw, what) for name, kw in AUTHENTICATED
          for what in ("ciphertext-first", "ciphertext-last", "tag")
          + (("iv",) if "random" in kw["cipher"] else ())]  # plain64 IVs are not stored


@pytest.mark.parametrize("kw,what", [(kw, what) for _, kw, what in TAMPER],
                         ids=[f"{n}-{w}" for n, _, w in TAMPER])
def test_tampering_fails_that_sector(kw, what):
    dev = _filled(kw)
    unit = kw.get("sector_size", 512) // 512
    victim = 5 * unit
    data, tag, tag_size = _locate(dev, victim)
    iv_bytes = 12 if "random" in kw["cipher"] else 0
    pos = {"ciphertext-first": data, "ciphertext-last": data + unit * 512 - 1,
           "tag": tag + (tag_size - iv_bytes) // 2,
           "iv": tag + tag_size - 1}[what]
    dev.buf[pos] ^= 0x01
    _check_only(dev, {victim})
    # the whole-volume read fails too, and never hands back unauthenticated data
    with luks.open(dev, "pw") as vol:
        buf = bytearray(b"\xaa" * vol.size_bytes)
        with pytest.raises(IntegrityError):
            vol.readinto(buf)


@pytest.mark.parametrize("kw", [c[1] for c in AUTHENTICATED], ids=[c[0] for c in AUTHENTICATED])
def test_moving_a_sector_with_its_metadata_fails(kw):
    """Swap two sectors, data and tag (and IV) together: both fail, as the sector number
    is authenticated."""
    dev = _filled(kw)
    unit = kw.get("sector_size", 512) // 512
    a, b = 2 * unit, 9 * unit
    da, ta, ts = _locate(dev, a)
    db, tb, _ = _locate(dev, b)
    n = unit * 512
    buf = dev.buf
    buf[da:da + n], buf[db:db + n] = bytes(buf[db:db + n]), bytes(buf[da:da + n])
    buf[ta:ta + ts], buf[tb:tb + ts] = bytes(buf[tb:tb + ts]), bytes(buf[ta:ta + ts])
    _check_only(dev, {a, b})


def test_crashed_journal_is_replayed_in_memory_read_only():
    """A volume left with committed journal entries (no clean close): a read-only open
    replays them into an overlay, reads the new data, and leaves the image as it was."""
    dev = _format(dict(cipher="aes-gcm-random", integrity="aead"))
    vol = luks.open(dev, "pw", writable=True)
    vol.seek(64 * 512)
    vol.write(pattern(64, 16))
    vol.device.flush()                     # committed to the journal ...
    crashed = bytes(dev.buf)               # ... and the power goes out here
    vol.close()
    image = MemoryDevice(initial=crashed, name="crashed")
    with luks.open(image, "pw") as ro:
        assert isinstance(ro.dif.targets[0].data_dev, _Overlay)
        ro.seek(64 * 512)
        assert ro.read(16 * 512) == pattern(64, 16)
    assert bytes(image.buf) == crashed
    with luks.open(MemoryDevice(initial=bytes(dev.buf)), "pw") as clean:
        assert not isinstance(clean.dif.targets[0].data_dev, _Overlay)


def test_integrity_table_shows_the_buffer_the_kernel_uses():
    """With 4 KiB sectors and 28-byte tags the tag run of an interleave area is 224
    sectors: the kernel shrinks its 128-sector tag buffer to 32 and prints that."""
    dev = _format(dict(cipher="aes-gcm-random", integrity="aead", sector_size=4096))
    with luks.open(dev, "pw") as vol:
        dif = dict(vol.tables())["luks_dif"]
    assert " 28 J 7 block_size:4096 " in dif and " buffer_sectors:32 " in dif


def test_writes_without_journal():
    dev = _format(dict(cipher="chacha20-random", integrity="poly1305"))
    with luks.open(dev, "pw", writable=True, integrity_journal=False) as vol:
        assert " D " in dict(vol.tables())["luks_dif"]
        vol.write(pattern(0, 32))
    with luks.open(dev, "pw") as vol:
        assert " J " in dict(vol.tables())["luks_dif"]
        assert vol.read(32 * 512) == pattern(0, 32)


def test_read_only_open_refuses_writes():
    dev = _format(COMBOS[0][1])
    with luks.open(dev, "pw") as vol:
        with pytest.raises(io.UnsupportedOperation):
            vol.write(b"x")
    ro = MemoryDevice(initial=bytes(dev.buf), read_only=True)
    with pytest.raises(OSError, match="read-only"):
        luks.open(ro, "pw", writable=True)


def test_unaligned_writes_merge_with_their_sector():
    dev = _format(dict(cipher="aes-xts-plain64", integrity="hmac-sha256", sector_size=4096))
    with luks.open(dev, "pw", writable=True) as vol:
        vol.seek(5000)
        vol.write(b"hello")
    with luks.open(dev, "pw") as vol:
        data = vol.read(3 * 4096)
    assert data[5000:5005] == b"hello"
    assert data.count(0) == len(data) - 5


@pytest.mark.parametrize("kind", ["luks2", "luks1"])
def test_from_paths_with_key_files_and_detached_header(tmp_path, kind):
    img, hdr = tmp_path / "data.img", tmp_path / "hdr.img"
    with open(img, "wb") as f:
        f.truncate(4 * MiB)
    keyfile = tmp_path / "key"
    keyfile.write_bytes(b"junk" + b"pass\nphrase" + b"trailing")
    kw = dict(integrity="hmac-sha256") if kind == "luks2" else {}
    luks.format(img, key_file=keyfile, keyfile_offset=4, keyfile_size=11, header=hdr,
                type=kind, pbkdf=FAST, **kw).wipe()
    assert hdr.stat().st_mode & 0o777 == 0o600
    assert luks.probe(MemoryDevice(initial=img.read_bytes())) is None  # data only
    with luks.open(img, "pass\nphrase", header=hdr, writable=True) as vol:
        vol.write(pattern(0, 100))
    with luks.open(img, key_file=keyfile, keyfile_offset=4, keyfile_size=11,
                   header=hdr) as vol:
        assert vol.read(100 * 512) == pattern(0, 100)
        assert vol.segment.offset_sectors == 0
    with pytest.raises(NoKeyError):
        luks.open(img, key_file=keyfile, header=hdr)


def test_wrong_passphrase_closes_what_it_opened(tmp_path):
    img = tmp_path / "img"
    with open(img, "wb") as f:
        f.truncate(3 * MiB)
    luks.format(img, "pw", pbkdf=FAST, keyslots_size=512 << 10).wipe()
    import os
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(NoKeyError, match=r"^No key available with this passphrase\.$"):
            luks.open(img, "nope")
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_device_too_small_for_integrity_is_refused_before_any_write():
    dev = MemoryDevice((MiB + 8192) // 512)
    dev.buf[:] = b"\x5a" * len(dev.buf)
    with pytest.raises(FormatError, match="Cannot format integrity"):
        luks.format(dev, "pw", pbkdf=FAST, keyslots_size=512 << 10,
                    integrity="hmac-sha256")
    assert dev.buf == b"\x5a" * len(dev.buf)


def test_integrity_superblock_must_be_there_and_match():
    dev = _format(dict(cipher="aes-gcm-random", integrity="aead"))
    with luks.unlock(dev, "pw") as opened:
        seg = opened.segment
        assert integrity_params(dev, seg).provided_data_sectors > 0
    off = seg.offset_sectors * 512
    broken = MemoryDevice(initial=bytes(dev.buf))
    broken.buf[off + 10] ^= 0xFF           # the tag size
    with pytest.raises(FormatError, match="tag size"):
        luks.open(broken, "pw")
    broken.buf[off:off + 8] = bytes(8)
    with pytest.raises(FormatError, match="no dm-integrity superblock at sector 2048"):
        luks.open(broken, "pw")


def test_the_key_never_appears_in_tables_or_repr():
    dev = _format(dict(cipher="aes-xts-plain64", integrity="hmac-sha512"))
    with luks.unlock(dev, "pw") as opened:
        key = opened.volume_key.reveal()
    with luks.open(dev, "pw") as vol:
        text = repr(vol) + repr(vol.tables()) + vol.device.table() + vol.dif.table()
        assert key.hex() not in text and key.hex().upper() not in text
        assert ":128:logon:cryptsetup:" in text
    assert vol.unlocked.volume_key.wiped


def test_deterministic_format():
    """Same rng, same image (what the oracle scripts rely on to rebuild images)."""
    a = _format(dict(cipher="aes-xts-plain64", integrity="hmac-sha256"), seed=7)
    b = _format(dict(cipher="aes-xts-plain64", integrity="hmac-sha256"), seed=7)
    assert hashlib.sha256(a.buf).digest() == hashlib.sha256(b.buf).digest()


def test_export_stops_or_zero_fills():
    dev = _filled(dict(cipher="aes-gcm-random", integrity="aead"))
    data, _, _ = _locate(dev, 700)
    dev.buf[data + 3] ^= 1
    with luks.open(dev, "pw") as vol:
        out = io.BytesIO()
        with pytest.raises(IntegrityError) as ei:
            vol.export(out, chunk_bytes=64 << 10)
        assert ei.value.sector == 700
        assert out.getvalue() == pattern(0, 640)     # the chunks before the failing one
        out = io.BytesIO()
        seen = []
        bad = vol.export(out, zero_on_error=True,
                         progress=lambda done, total, n: seen.append((done, total, n)))
        assert bad == [700]
        n = vol.nr_sectors
        assert out.getvalue() == pattern(0, 700) + bytes(512) + pattern(701, n - 701)
        assert seen[-1][0] == seen[-1][1] == n * 512


@pytest.mark.parametrize("kw,parallel", [
    (dict(cipher="aes-xts-plain64"), True),
    (dict(cipher="aes-xts-plain64", sector_size=4096), True),
    (dict(type="luks1", cipher="aes-xts-plain64"), True),
    (dict(cipher="aes-cbc-essiv:sha256"), False),          # the general (numpy) path
    (dict(cipher="aes-gcm-random", integrity="aead"), False),  # integrity: one thread
], ids=["xts", "xts-4k", "luks1-xts", "cbc-essiv", "gcm-aead"])
def test_export_to_a_file_on_threads_equals_one_thread(tmp_path, kw, parallel):
    """A plain XTS volume exported to a regular file is read on several threads; the file
    is byte for byte what one thread writes, after what the file already held, and the
    file position ends after it."""
    from dmkit.block.parallel import parallel_reads_safe
    from dmkit.crypto import fastxts

    dev = _filled(kw)
    with luks.open(dev, "pw") as vol:
        assert parallel_reads_safe(vol.device) == (parallel and fastxts.available())
        outs = {}
        for workers in (1, 3):
            p = tmp_path / f"out{workers}"
            seen = []
            with open(p, "wb") as f:
                f.write(b"HEAD")
                assert vol.export(f, workers=workers, chunk_bytes=64 << 10,
                                  progress=lambda done, total, n: seen.append((done, n))) == []
                assert f.tell() == 4 + vol.size_bytes
                f.write(b"TAIL")
            outs[workers] = p.read_bytes()
            assert seen[-1][0] == vol.size_bytes == sum(n for _, n in seen)
        assert outs[1] == outs[3] == b"HEAD" + pattern(0, vol.nr_sectors) + b"TAIL"
