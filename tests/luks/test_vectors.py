"""The cryptsetup-made headers in tests/vectors/luks/: every one opens with its passphrase to
exactly the recorded volume key, dumps like cryptsetup, and yields the tables that were
loaded while it was open (through the data path, the integrity values read from the
kernel's superblock, whose area dmkit's integrity format reproduces byte for byte)."""

from __future__ import annotations

import hashlib

import pytest

import dmkit.luks as luks
from dmkit.block import MemoryDevice
from dmkit.luks import NoKeyError, load
from dmkit.luks.data import format_integrity, integrity_params, plan_integrity
from dmkit.luks.dumptext import dump_luks2_json
from dmkit.luks.luks2 import build_luks2_copies, read_luks2_header
from dmkit.targets.integrity import Geometry, read_superblock
from dmkit.targets.integrity.format import empty_journal

from ._util import ALL_NAMES, IMAGES, LUKS2_NAMES, VECTORS, image_bytes, image_device


@pytest.mark.parametrize("name", ALL_NAMES)
def test_opens_to_recorded_volume_key(name):
    im = IMAGES[name]
    vol = load(image_device(name))
    with vol.unlock(im["passphrase"]) as opened:
        assert opened.volume_key.reveal().hex() == im["volume_key_hex"]
        assert opened.keyslot == 0
        assert vol.verify_volume_key(opened.volume_key)
        assert str(len(opened.volume_key) * 8) in repr(opened)
        assert im["volume_key_hex"] not in repr(opened)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_stored_bytes_are_the_recorded_ones(name):
    raw = image_bytes(name)
    assert len(raw) == IMAGES[name]["stored_bytes"]
    assert hashlib.sha256(raw).hexdigest() == IMAGES[name]["stored_sha256"]


@pytest.mark.parametrize("name", ALL_NAMES)
def test_wrong_passphrase(name):
    vol = load(image_device(name))
    with pytest.raises(NoKeyError) as ei:
        vol.unlock(IMAGES[name]["passphrase"] + "x")
    assert str(ei.value) == "No key available with this passphrase."
    assert ei.value.exit_code == 2
    assert isinstance(ei.value, PermissionError)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_open_recipe_from_path(name, tmp_path):
    path = tmp_path / "img"
    path.write_bytes(image_bytes(name))
    with luks.unlock(path, IMAGES[name]["passphrase"].encode()) as opened:
        assert opened.volume_key.reveal().hex() == IMAGES[name]["volume_key_hex"]
    with luks.unlock(path, volume_key=bytes.fromhex(IMAGES[name]["volume_key_hex"])) as opened:
        assert opened.keyslot is None
    with pytest.raises(NoKeyError):
        luks.unlock(path, volume_key=bytes(len(IMAGES[name]["volume_key_hex"]) // 2))


@pytest.mark.parametrize("name", ALL_NAMES)
def test_dump_matches_cryptsetup(name):
    expected = (VECTORS / IMAGES[name]["dump_file"]).read_text()
    text, _, js = expected.partition("---- luksDump --dump-json-metadata ----\n")
    dev = image_device(name)
    assert luks.dump(dev, name="/dev/vdm") == text
    if IMAGES[name]["kind"] == "luks2":
        assert luks.dump_json(dev) == js
        assert dump_luks2_json(read_luks2_header(dev)) == js


@pytest.mark.parametrize("name", LUKS2_NAMES)
def test_both_copies_rebuild_byte_for_byte(name):
    raw = image_bytes(name)
    h = read_luks2_header(raw)
    assert h.problems == () and h.used == "primary"
    primary, secondary = build_luks2_copies(h)
    assert primary == raw[:h.hdr_size]
    assert secondary == raw[h.hdr_size:2 * h.hdr_size]


def _substitute(table: str, device: str) -> str:
    """The recorded table with its device number replaced by a name."""
    words = table.split()
    return " ".join(device if ":" in w and w.replace(":", "").isdigit() else w for w in words)


def _full_device(name: str) -> MemoryDevice:
    """The stored header bytes in a device of the original image's size, with the kernel's
    dm-integrity superblock area put back at the data offset (integrity images) and an
    empty journal after it."""
    im = IMAGES[name]
    buf = bytearray(im["original_raw_size"])
    raw = image_bytes(name)
    buf[:len(raw)] = raw
    sb = im.get("dif_superblock")
    if sb is not None:
        off = sb["offset_sectors"] * 512
        buf[off:off + 64] = bytes.fromhex(sb["head_hex"])
        assert hashlib.sha256(buf[off:off + 4096]).hexdigest() == sb["area_sha256"]
    dev = MemoryDevice(initial=bytes(buf), name=name)
    if sb is not None:  # and an empty journal after it, as the format left it
        start = sb["offset_sectors"]
        geo = Geometry.from_superblock(read_superblock(dev, start), dev.nr_sectors,
                                       start_sector=start)
        dev.write(geo.journal_start_sector, empty_journal(geo))
    return dev


@pytest.mark.parametrize("name", ALL_NAMES)
def test_dm_tables_as_cryptsetup_loaded_them(name):
    """The tables (integrity values read from the kernel's superblock) are the ones
    ``dmsetup table`` showed while cryptsetup had the image open."""
    im = IMAGES[name]
    dev = _full_device(name)
    vol = load(dev)
    recorded = [line.split(": ", 1) for line in im["dm_table_while_open"]]
    with vol.unlock(im["passphrase"]) as opened:
        seg = opened.segment
        if im["kind"] == "luks1":
            key = "0" * 128  # dmsetup table masks the key of a LUKS1 mapping
        else:
            key = opened.key_reference()
        if seg.integrity:
            params = integrity_params(dev, seg)
            assert params.provided_data_sectors == im["provided_size_sectors"]
            tables = opened.dm_tables("DATA", dev.nr_sectors, key=key, dif_device="DIF",
                                      integrity=params)
            assert [s for s, _ in tables] == ["_dif", ""]
            by_suffix = dict(tables)
            crypt_rec = next(t for n, t in recorded if not n.endswith("_dif"))
            dif_rec = next(t for n, t in recorded if n.endswith("_dif"))
            assert by_suffix[""] == _substitute(crypt_rec, "DIF")
            assert by_suffix["_dif"] == _substitute(dif_rec, "DATA")
        else:
            (suffix, table), = opened.dm_tables("DATA", dev.nr_sectors, key=key)
            assert table == _substitute(recorded[0][1], "DATA")
        assert opened.keyring_description() in opened.key_reference()


@pytest.mark.parametrize("name", ALL_NAMES)
def test_data_path_loads_the_recorded_tables(name):
    """``luks.open`` stacks dmkit's targets with exactly those tables (device names aside:
    the data device is ``luks_data``, the integrity device ``luks_dif``)."""
    im = IMAGES[name]
    recorded = dict(line.split(": ", 1) for line in im["dm_table_while_open"])
    with luks.open(_full_device(name), im["passphrase"]) as vol:
        assert vol.nr_sectors == im["provided_size_sectors"]
        got = dict(vol.tables())
        assert vol.readable() and not vol.writable()
    crypt_rec = next(t for n, t in recorded.items() if not n.endswith("_dif"))
    if im["kind"] == "luks1":  # the kernel masks a LUKS1 hex key; dmkit shows the reference
        crypt_rec = crypt_rec.replace("0" * 128, got["luks"].split()[4])
    if vol.segment.integrity:
        dif_rec = next(t for n, t in recorded.items() if n.endswith("_dif"))
        assert got == {"luks_dif": _substitute(dif_rec, "luks_data"),
                       "luks": _substitute(crypt_rec, "luks_dif")}
    else:
        assert got == {"luks": _substitute(crypt_rec, "luks_data")}
    assert im["volume_key_hex"] not in repr(got)


@pytest.mark.parametrize("name", [n for n in ALL_NAMES if "dif_superblock" in IMAGES[n]])
def test_integrity_format_equals_the_kernels_superblock(name):
    """What ``format_integrity`` writes at the data offset of a zeroed device of the
    image's size is byte for byte the superblock area the kernel wrote there."""
    im = IMAGES[name]
    sb = im["dif_superblock"]
    with load(image_device(name)).unlock(im["passphrase"]) as opened:
        seg = opened.segment
    nr = im["original_raw_size"] // 512
    planned = plan_integrity(nr, seg).to_area_bytes()
    assert hashlib.sha256(planned).hexdigest() == sb["area_sha256"]
    dev = MemoryDevice(nr)
    format_integrity(dev, seg)
    off = sb["offset_sectors"] * 512
    assert hashlib.sha256(dev.buf[off:off + 4096]).hexdigest() == sb["area_sha256"]
    assert integrity_params(dev, seg).journal_sectors == 88


def test_dm_tables_embed_hex_key_by_default():
    im = IMAGES["luks2-aes-xts-pbkdf2"]
    with load(image_device(im["name"])).unlock(im["passphrase"]) as opened:
        (_, table), = opened.dm_tables("DATA", 10240)
        assert im["volume_key_hex"] in table
        assert table.startswith("0 8192 crypt aes-xts-plain64 ")
