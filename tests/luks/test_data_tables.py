"""The tables dmkit.luks builds, loaded into dmkit's own crypt (and integrity) targets.

Key slot areas are what dm-crypt would write: the crypt target reads them back (as
cryptsetup's LUKS1 code reads key slots through a temporary dm-crypt mapping).  And a
kernel-made image, unlocked with its passphrase, reads through the tables to exactly the
content the kernel recorded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import dmkit.luks as luks
from dmkit.block import MemoryDevice
from dmkit.dm import DeviceResolver, MappedDevice
from dmkit.luks import IntegrityTableParams, format_luks2
from dmkit.luks.storage import encrypt_area

from ..conftest import pattern
from ._util import FAST, seeded_rng

SHARED = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "kernel"


def _mapped(table: str, devices: dict, read_only: bool = False) -> MappedDevice:
    return MappedDevice.from_table(table + "\n", resolver=DeviceResolver(devices),
                                   read_only=read_only)


@pytest.mark.parametrize("spec,key_bytes", [
    ("aes-xts-plain64", 64), ("aes-xts-plain64", 32), ("aes-xts-plain", 64),
    ("aes-cbc-essiv:sha256", 32), ("aes-cbc-plain64", 16), ("aes-cbc-plain64be", 32),
    ("aes-cbc-benbi", 32), ("aes-cbc-null", 32), ("aes-cbc-plain", 32), ("aes-ecb", 32)])
def test_keyslot_areas_read_back_through_the_crypt_target(spec, key_bytes):
    key = hashlib.sha512(spec.encode()).digest()[:key_bytes]
    plain = pattern(0, 64)
    lower = MemoryDevice(initial=bytes(encrypt_area(spec, key, plain)), name="lower")
    dev = _mapped(f"0 64 crypt {spec} {key.hex()} 0 lower 0", {"lower": lower}, True)
    try:
        assert bytes(dev.read(0, 64)) == plain
    finally:
        dev.close()


def test_formatted_volume_through_its_table():
    disk = MemoryDevice(4096, name="disk")
    opened = format_luks2(disk, "pw", pbkdf=FAST, keyslots_size=256 << 10, rng=seeded_rng(4))
    header = bytes(disk.buf[:1 << 20])
    (_, table), = opened.dm_tables("disk", disk.nr_sectors)
    dev = _mapped(table, {"disk": disk})
    try:
        assert dev.nr_sectors == 4096 - 2048
        dev.write(0, pattern(0, 16))
        assert bytes(dev.read(0, 16)) == pattern(0, 16)
    finally:
        dev.close()
    assert bytes(disk.buf[:1 << 20]) == header
    assert bytes(disk.buf[1 << 20:(1 << 20) + 8192]) != pattern(0, 16)
    with luks.unlock(disk, "pw") as again:
        (_, table2), = again.dm_tables("disk", disk.nr_sectors)
    assert table2 == table


@pytest.mark.parametrize("name", ["luks2-aes-xts-pbkdf2", "luks2-aes-xts-argon2id",
                                  "luks2-aes-xts-4k", "luks1-aes-xts",
                                  "luks2-aes-xts-hmac-sha256", "luks2-aes-gcm-random-aead",
                                  "luks2-chacha20-poly1305"])
def test_kernel_images_read_through_the_tables(tmp_path, name):
    manifest = SHARED / "manifest.json"
    if not manifest.exists():
        pytest.skip("needs the full kernel images in ../shared/fixtures/kernel/luks")
    import zstandard
    im = next(i for i in json.loads(manifest.read_text())["images"] if i["name"] == name)
    path = tmp_path / "img"
    with open(SHARED / im["files"][0]["file"], "rb") as fi, open(path, "wb") as fo:
        zstandard.ZstdDecompressor().copy_stream(fi, fo)
    from dmkit.block import FileDevice
    disk = FileDevice(path, read_only=True, name="disk")
    resolver = DeviceResolver({"disk": disk})
    devs = []
    try:
        with luks.unlock(disk, im["keys"]["pass"]["passphrase"]) as opened:
            params = None
            if opened.segment.integrity:
                params = IntegrityTableParams(provided_data_sectors=im["provided_size_sectors"],
                                              journal_sectors=88)
            tables = opened.dm_tables("disk", disk.nr_sectors, integrity=params,
                                      dif_device="dif")
        for suffix, table in tables:
            dev = MappedDevice.from_table(table + "\n", resolver=resolver, read_only=True,
                                          name="dif" if suffix else "top")
            devs.append(dev)
            if suffix:
                resolver.register("dif", dev)
        top = devs[-1]
        n = im["provided_size_sectors"]
        assert top.nr_sectors == n
        assert hashlib.sha256(top.read(0, n)).hexdigest() == im["provided_sha256"]
    finally:
        for d in reversed(devs):
            d.close()
        disk.close()
