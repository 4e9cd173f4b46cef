"""The cryptsetup-made headers in tests/vectors/luks/: every one opens with its passphrase to
exactly the recorded volume key, dumps like cryptsetup, and yields the tables that were
loaded while it was open."""

from __future__ import annotations

import hashlib

import pytest

import dmkit.luks as luks
from dmkit.luks import IntegrityTableParams, NoKeyError, load
from dmkit.luks.dump import dump_luks2_json
from dmkit.luks.luks2 import build_luks2_copies, read_luks2_header

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


@pytest.mark.parametrize("name", ALL_NAMES)
def test_dm_tables_as_cryptsetup_loaded_them(name):
    im = IMAGES[name]
    vol = load(image_device(name))
    recorded = [line.split(": ", 1) for line in im["dm_table_while_open"]]
    with vol.unlock(im["passphrase"]) as opened:
        seg = opened.segment
        # the images were 6 MiB (integrity) or 5-6 MiB (plain); the data device size
        # only matters for the dynamic crypt segment
        device_sectors = seg.offset_sectors + im["provided_size_sectors"]
        if im["kind"] == "luks1":
            key = "0" * 128  # dmsetup table masks the key of a LUKS1 mapping
        else:
            key = opened.key_reference()
        if seg.integrity:
            tables = opened.dm_tables(
                "DATA", device_sectors, key=key, dif_device="DIF",
                integrity=IntegrityTableParams(provided_data_sectors=im["provided_size_sectors"],
                                               journal_sectors=88))
            assert [s for s, _ in tables] == ["_dif", ""]
            by_suffix = dict(tables)
            crypt_rec = next(t for n, t in recorded if not n.endswith("_dif"))
            dif_rec = next(t for n, t in recorded if n.endswith("_dif"))
            assert by_suffix[""] == _substitute(crypt_rec, "DIF")
            assert by_suffix["_dif"] == _substitute(dif_rec, "DATA")
        else:
            (suffix, table), = opened.dm_tables("DATA", device_sectors, key=key)
            assert table == _substitute(recorded[0][1], "DATA")
        assert opened.keyring_description() in opened.key_reference()


def test_dm_tables_embed_hex_key_by_default():
    im = IMAGES["luks2-aes-xts-pbkdf2"]
    with load(image_device(im["name"])).unlock(im["passphrase"]) as opened:
        (_, table), = opened.dm_tables("DATA", 10240)
        assert im["volume_key_hex"] in table
        assert table.startswith("0 8192 crypt aes-xts-plain64 ")
