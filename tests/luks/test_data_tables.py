"""The data path against images the real kernel wrote, and the tables it loads.

Key slot areas are what dm-crypt would write: the crypt target reads them back (as
cryptsetup's LUKS1 code reads key slots through a temporary dm-crypt mapping).  The small
kernel-made LUKS images in tests/vectors/crypt (LUKS1, LUKS2 with pbkdf2/argon2id, 4 KiB
sectors, and LUKS2 with integrity hmac-sha256 / aes-gcm-random / chacha20-poly1305) are
unlocked by passphrase, exported with ``dmkit luks export``, and compared with the content
the kernel recorded: the whole device's sha256, or for the no-wipe integrity images the
pattern in the written ranges and an authentication failure for every other sector.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import dmkit.luks as luks
from dmkit.block import MemoryDevice
from dmkit.cli import cli
from dmkit.dm import DeviceResolver, MappedDevice
from dmkit.luks import format_luks2
from dmkit.luks.storage import encrypt_area

from ..conftest import pattern
from ._util import FAST, seeded_rng

CRYPT_VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "crypt"


def _images() -> list[dict]:
    """Every kernel-made LUKS image committed under tests/vectors/crypt, normalised to
    name, file, passphrase, kind, size and the recorded content."""
    out = []
    top = json.loads((CRYPT_VECTORS / "manifest.json").read_text())
    for im in top["images"]:
        if not im["kind"].startswith("luks"):
            continue
        out.append({"name": im["name"], "path": CRYPT_VECTORS / Path(im["files"][0]["file"]).name,
                    "raw_sha256": im["files"][0]["raw_sha256"],
                    "passphrase": im["keys"]["pass"]["passphrase"], "integrity": False,
                    "sectors": im["provided_size_sectors"],
                    "provided_sha256": im["provided_sha256"],
                    "ranges": im["written_ranges"], "tables": im["dm_table_while_open"],
                    "volume_key_hex": im["volume_key_hex"]})
    oracle = json.loads((CRYPT_VECTORS / "oracle" / "manifest.json").read_text())
    for im in oracle["images"]:
        out.append({"name": "oracle-" + im["name"], "path": CRYPT_VECTORS / "oracle" / im["file"],
                    "raw_sha256": im["raw_sha256"], "passphrase": im["passphrase"],
                    "integrity": im["kind"] == "luks2-integrity",
                    "sectors": im["provided_size_sectors"],
                    "provided_sha256": im.get("provided_sha256"),
                    "ranges": im["written_ranges"], "tables": im["dm_table_while_open"],
                    "volume_key_hex": im["volume_key_hex"],
                    "kernel_failed": im.get("kernel_unwritten_page_reads", [])})
    return out


IMAGES = {im["name"]: im for im in _images()}


def _unpack(im: dict, tmp_path) -> Path:
    import zstandard
    path = tmp_path / (im["name"] + ".img")
    with open(im["path"], "rb") as fi, open(path, "wb") as fo:
        zstandard.ZstdDecompressor().copy_stream(fi, fo)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == im["raw_sha256"]
    return path


def _mapped(table: str, devices: dict, read_only: bool = False) -> MappedDevice:
    return MappedDevice.from_table(table + "\n", resolver=DeviceResolver(devices),
                                   read_only=read_only)


def test_the_kernel_images_are_all_here():
    kinds = sorted(n for n in IMAGES)
    assert len(kinds) == 7, kinds
    assert sum(im["integrity"] for im in IMAGES.values()) == 3


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


def _substitute(table: str, device: str) -> str:
    words = table.split()
    return " ".join(device if ":" in w and w.replace(":", "").isdigit() else w for w in words)


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_kernel_image_tables(name, tmp_path):
    """luks.open by passphrase stacks the tables the kernel had loaded."""
    im = IMAGES[name]
    path = _unpack(im, tmp_path)
    recorded = dict(line.split(": ", 1) for line in im["tables"])
    with luks.open(path, im["passphrase"]) as vol:
        got = dict(vol.tables())
        assert vol.nr_sectors == im["sectors"]
        key_ref = got["luks"].split()[4]
    crypt_rec = next(t for n, t in recorded.items() if not n.endswith("_dif"))
    crypt_rec = crypt_rec.replace("0" * 128, key_ref)  # a LUKS1 key, masked by the kernel
    if im["integrity"]:
        dif_rec = next(t for n, t in recorded.items() if n.endswith("_dif"))
        assert got == {"luks_dif": _substitute(dif_rec, "luks_data"),
                       "luks": _substitute(crypt_rec, "luks_dif")}
    else:
        assert got == {"luks": _substitute(crypt_rec, "luks_data")}


def _export(path, out, keyfile, *extra):
    return CliRunner().invoke(cli, ["luks", "export", str(path), str(out), "--key-file",
                                    str(keyfile), "--json", *extra])


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_kernel_image_exports_the_recorded_content(name, tmp_path):
    """Unlock by passphrase, export, compare with what the kernel recorded; the image is
    not changed."""
    im = IMAGES[name]
    path = _unpack(im, tmp_path)
    keyfile = tmp_path / "pass"
    keyfile.write_bytes(im["passphrase"].encode())
    out = tmp_path / "out.bin"
    n = im["sectors"]
    if not im["integrity"]:
        r = _export(path, out, keyfile)
        assert r.exit_code == 0, r.stderr
        assert json.loads(r.stdout)["bad_sectors"] == []
        data = out.read_bytes()
        assert len(data) == n * 512
        assert hashlib.sha256(data).hexdigest() == im["provided_sha256"]
    else:
        # never-written sectors carry no valid tag (--integrity-no-wipe): the export stops
        # at the first one, naming it ...
        first_bad = next(s for s in range(n)
                         if not any(r["start_sector"] <= s < r["start_sector"] + r["sectors"]
                                    for r in im["ranges"]))
        r = _export(path, out, keyfile)
        assert r.exit_code == 1
        assert r.stderr.strip() == (f"dmkit: {path}: sector {first_bad} failed authentication "
                                    "(INTEGRITY AEAD ERROR); export stopped (--zero-on-error "
                                    "writes zeros for such sectors and lists them)")
        assert not out.exists()
        # ... and --zero-on-error lists exactly the sectors outside the written ranges
        r = _export(path, out, keyfile, "--zero-on-error")
        assert r.exit_code == 0, r.stderr
        bad = json.loads(r.stdout)["bad_sectors"]
        written = {s for rg in im["ranges"]
                   for s in range(rg["start_sector"], rg["start_sector"] + rg["sectors"])}
        assert bad == [s for s in range(n) if s not in written]
        for f in im["kernel_failed"]:   # the pages the kernel failed to read fail here too
            assert set(range(f["start_sector"], f["start_sector"] + f["sectors"])) <= set(bad)
        assert f"zero-filled {len(bad)} sector(s) that failed authentication" in r.stderr
        data = out.read_bytes()
        assert len(data) == n * 512
        for s in (bad[0], bad[-1]):
            assert data[s * 512:(s + 1) * 512] == bytes(512)
    for rg in im["ranges"]:
        lo, cnt = rg["start_sector"], rg["sectors"]
        chunk = data[lo * 512:(lo + cnt) * 512]
        assert chunk == pattern(lo, cnt)
        assert hashlib.sha256(chunk).hexdigest() == rg.get("kernel_read_sha256",
                                                           rg["pattern_sha256"])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == im["raw_sha256"]


@pytest.mark.parametrize("name", sorted(n for n in IMAGES if IMAGES[n]["integrity"]))
def test_kernel_integrity_image_takes_writes_and_reads_them_back(name, tmp_path):
    """dmkit writes a kernel-formatted authenticated volume through the journal; what it
    wrote reads back, the kernel's sectors still do, and the volume key is unchanged."""
    im = IMAGES[name]
    path = _unpack(im, tmp_path)
    with luks.open(path, im["passphrase"], writable=True) as vol:
        vol.seek(128 * 512)
        vol.write(pattern(10_000, 64))
    with luks.open(path, volume_key=bytes.fromhex(im["volume_key_hex"])) as vol:
        assert vol.read(192 * 512) == pattern(0, 128) + pattern(10_000, 64)
