"""The crypt target: kernel-made images, IV generators against independent computations,
round trips against a model, AEAD over integrity metadata, table errors, keys, messages."""

import base64
import hashlib
import json
import struct

import numpy as np
import pytest
import zstandard
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from dmkit.block import Bio, IntegrityProfile, MemoryDevice
from dmkit.dm import DeviceResolver, MappedDevice
from dmkit.errors import BlockIOError, IntegrityError, NotSupportedError, TableError

from ..conftest import pattern
from ._vectors import VECTORS

KEY64 = bytes(range(64))
KEY32 = bytes(range(32))
ENC_MANIFEST = {im["name"]: im for im in json.loads((VECTORS / "manifest.json").read_text())["images"]}
ORACLE = VECTORS / "oracle"  # small images the kernel + cryptsetup made (see the vectors README)
ORACLE_MANIFEST = {im["name"]: im for im in
                   json.loads((ORACLE / "manifest.json").read_text())["images"]}
PLAIN_LUKS = sorted(n for n, im in ORACLE_MANIFEST.items() if im["kind"] in ("luks1", "luks2"))
AEAD_LUKS = sorted(n for n, im in ORACLE_MANIFEST.items() if im["kind"] == "luks2-integrity")


def crypt_dev(table_args: str, dev, nr: int | None = None, name: str = "lower", keyring=None):
    r = DeviceResolver({name: dev})
    if keyring is not None:
        r.keyring = keyring
    nr = dev.nr_sectors if nr is None else nr
    return MappedDevice.from_table(f"0 {nr} crypt {table_args}\n", resolver=r)


def image(tmp_path, name: str, src=VECTORS) -> str:
    out = tmp_path / name.replace(".zst", "")
    with open(src / name, "rb") as fi, open(out, "wb") as fo:
        zstandard.ZstdDecompressor().copy_stream(fi, fo)
    return str(out)


def check_ranges(dev, im):
    for r in im["written_ranges"]:
        got = dev.read(r["start_sector"], r["sectors"])
        assert got == pattern(r["start_sector"], r["sectors"])
        assert hashlib.sha256(got).hexdigest() == r["pattern_sha256"]


# -- images the kernel made ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["luks2-aes-xts-pbkdf2", "luks2-aes-xts-4k"])
def test_luks_data_area_decrypts(tmp_path, name):
    im = ENC_MANIFEST[name]
    path = image(tmp_path, f"{name}.img.zst")
    unit = 4096 if "4k" in name else 512
    feats = f" 1 sector_size:{unit}" if unit != 512 else ""
    n = im["provided_size_sectors"]
    dev = MappedDevice.from_table(
        f"0 {n} crypt aes-xts-plain64 {im['volume_key_hex']} 0 {path} 2048{feats}\n")
    try:
        assert dev.logical_block_size == unit
        check_ranges(dev, im)
        assert hashlib.sha256(dev.read(0, n)).hexdigest() == im["provided_sha256"]
    finally:
        dev.close()


def luks_header(path: str) -> dict:
    """The few header fields a kernel table needs, read here with struct and json (unlocking
    keyslots is dmkit.luks's job, not these tests'): cipher spec, data offset in 512-byte
    sectors, the LUKS2 segment's integrity type, and a check of a volume key against the
    header's digest."""
    with open(path, "rb") as f:
        hdr = f.read(4096)
        assert hdr[:6] == b"LUKS\xba\xbe"
        version = struct.unpack(">H", hdr[6:8])[0]
        if version == 1:
            text = lambda a, b: hdr[a:b].rstrip(b"\0").decode()  # noqa: E731
            offset, key_bytes = struct.unpack(">II", hdr[104:112])
            digest, salt = hdr[112:132], hdr[132:164]
            iters = struct.unpack(">I", hdr[164:168])[0]
            hname = text(72, 104)
            return {"version": 1, "cipher": f"{text(8, 40)}-{text(40, 72)}", "offset": offset,
                    "key_bytes": key_bytes, "integrity": None,
                    "vk_ok": lambda vk: hashlib.pbkdf2_hmac(hname, vk, salt, iters, 20) == digest}
        assert version == 2
        hdr_size = struct.unpack(">Q", hdr[8:16])[0]
        meta = json.loads(f.read(hdr_size - 4096).rstrip(b"\0"))
    seg, dg = meta["segments"]["0"], meta["digests"]["0"]
    assert seg["type"] == "crypt" and dg["type"] == "pbkdf2" and int(seg["offset"]) % 512 == 0
    want = base64.b64decode(dg["digest"])
    return {"version": 2, "cipher": seg["encryption"], "offset": int(seg["offset"]) // 512,
            "sector_size": seg["sector_size"],
            "integrity": seg.get("integrity", {}).get("type"),
            "vk_ok": lambda vk: hashlib.pbkdf2_hmac(
                dg["hash"], vk, base64.b64decode(dg["salt"]), dg["iterations"], len(want)) == want}


def _table_fields(line: str) -> list[str]:
    """A `dmsetup table` line of the manifest without its device name."""
    return line.split(": ", 1)[1].split()


@pytest.mark.parametrize("name", PLAIN_LUKS)
def test_kernel_luks_images_decrypt(tmp_path, name):
    """LUKS1 and LUKS2 (argon2id) made by cryptsetup in the kernel: the table built from the
    header is the kernel's (key and device aside), and the data area decrypts to exactly what
    the kernel read: the pattern over the written ranges and the whole device's sha256."""
    im = ORACLE_MANIFEST[name]
    path = image(tmp_path, im["file"], ORACLE)
    hdr = luks_header(path)
    vk = bytes.fromhex(im["volume_key_hex"])
    assert hdr["version"] == (1 if im["kind"] == "luks1" else 2)
    assert hdr["vk_ok"](vk) and not hdr["vk_ok"](bytes(len(vk)))
    assert hdr["cipher"] == "aes-xts-plain64" and hdr["integrity"] is None
    n = im["raw_size"] // 512 - hdr["offset"]
    assert n == im["provided_size_sectors"]
    table = f"0 {n} crypt {hdr['cipher']} {vk.hex()} 0 {path} {hdr['offset']}"
    kernel = _table_fields(im["dm_table_while_open"][0])
    mine = table.split()
    assert mine[:4] + mine[5:6] + mine[7:] == kernel[:4] + kernel[5:6] + kernel[7:]
    dev = MappedDevice.from_table(table + "\n", read_only=True)
    try:
        check_ranges(dev, im)
        assert hashlib.sha256(dev.read(0, n)).hexdigest() == im["provided_sha256"]
    finally:
        dev.close()


def aead_stack(path: str, im: dict):
    """The kernel's two tables for a LUKS2 image with integrity (dm-integrity named
    NAME_dif below, crypt with integrity:N:aead above), over the image with the volume key."""
    crypt_line, dif_line = im["dm_table_while_open"]
    assert dif_line.startswith(f"{im['name']}_dif: ")
    dif, c = _table_fields(dif_line), _table_fields(crypt_line)
    dif[3] = path
    r = DeviceResolver()
    lower = MappedDevice.from_table(" ".join(dif) + "\n", resolver=r, read_only=True, name="dif")
    r.register("dif", lower)
    assert c[4].startswith(f":{len(im['volume_key_hex']) // 2}:logon:")
    c[4], c[6] = im["volume_key_hex"], "dif"
    top = MappedDevice.from_table(" ".join(c) + "\n", resolver=r, read_only=True)
    return r, lower, top


def unwritten_sectors(im) -> list[int]:
    written = set()
    for rg in im["written_ranges"]:
        written.update(range(rg["start_sector"], rg["start_sector"] + rg["sectors"]))
    return [s for s in range(im["provided_size_sectors"]) if s not in written]


@pytest.mark.parametrize("name", AEAD_LUKS)
def test_kernel_aead_images_through_the_integrity_target(tmp_path, name):
    """LUKS2 with --integrity (aes-gcm-random aead, chacha20-poly1305, aes-xts + hmac-sha256),
    formatted with --integrity-no-wipe: the kernel's tables, rebuilt over dmkit's integrity
    target, read the written ranges as the pattern; every never-written sector fails
    authentication with IntegrityError naming it, as the kernel failed those pages."""
    im = ORACLE_MANIFEST[name]
    path = image(tmp_path, im["file"], ORACLE)
    hdr = luks_header(path)
    assert hdr["vk_ok"](bytes.fromhex(im["volume_key_hex"]))
    assert hdr["integrity"] in ("aead", "poly1305", "hmac(sha256)")
    assert int(_table_fields(im["dm_table_while_open"][1])[4]) == hdr["offset"]
    r, lower, top = aead_stack(path, im)
    try:
        assert top.nr_sectors == im["provided_size_sectors"]
        check_ranges(top, im)
        for rg in im["written_ranges"]:
            assert hashlib.sha256(top.read(rg["start_sector"], rg["sectors"])).hexdigest() \
                == rg["kernel_read_sha256"]
        unwritten = unwritten_sectors(im)
        assert len(unwritten) > im["provided_size_sectors"] // 2
        for s in unwritten:
            with pytest.raises(IntegrityError, match=rf"sector {s}\b") as e:
                top.read(s, 1)
            assert e.value.sector == s
        for probe in im["kernel_unwritten_page_reads"]:
            assert probe["result"] == "fail"
            with pytest.raises(IntegrityError) as e:
                top.read(probe["start_sector"], probe["sectors"])
            assert e.value.sector == probe["start_sector"]
        # a read running off the end of the first written range fails at its first unwritten
        # sector and hands back nothing
        end = im["written_ranges"][0]["start_sector"] + im["written_ranges"][0]["sectors"]
        buf = bytearray(b"\xee" * 16 * 512)
        with pytest.raises(IntegrityError, match=rf"sector {end}\b") as e:
            top.readinto(end - 8, buf)
        assert e.value.sector == end
        assert buf == bytes(len(buf))
    finally:
        top.close()
        lower.close()
        r.close()


def test_dmcrypt_image_with_encrypted_keyring_key(tmp_path):
    keys = pytest.importorskip("dmkit.keys")
    im = ENC_MANIFEST["dmcrypt-enckey"]
    path = image(tmp_path, "dmcrypt-enckey.img.zst")
    ring = keys.Keyring()
    ring.add("user", "kmk", (VECTORS / "dmcrypt-enckey.kmk.bin").read_bytes())
    ring.load_encrypted("dmkey_s1k1", (VECTORS / "dmcrypt-enckey.blob").read_text().strip())
    r = DeviceResolver()
    r.keyring = ring
    table = f"0 8192 crypt aes-xts-plain64 :64:encrypted:dmkey_s1k1 0 {path} 0\n"
    dev = MappedDevice.from_table(table, resolver=r)
    try:
        check_ranges(dev, im)
        assert hashlib.sha256(dev.read(0, 8192)).hexdigest() == im["provided_sha256"]
        # the table prints the reference, as the kernel does, never the key
        assert dev.table() == table
        assert im["volume_key_hex"] not in dev.table()
    finally:
        dev.close()
        r.close()


# -- IV generators against independent computations ------------------------------------------

def _ecb(key: bytes, block: bytes) -> bytes:
    return Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(block)


def _cbc_unit(key: bytes, iv: bytes, data: bytes) -> bytes:
    return Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor().update(data)


def _ivs_for(ivmode: str, sector: int, key: bytes, sector_size: int = 512) -> bytes:
    if ivmode == "plain":
        return struct.pack("<I", sector & 0xFFFFFFFF) + bytes(12)
    if ivmode == "plain64":
        return struct.pack("<Q", sector) + bytes(8)
    if ivmode == "plain64be":
        return bytes(8) + struct.pack(">Q", sector)
    if ivmode == "null":
        return bytes(16)
    if ivmode == "benbi":
        return bytes(8) + struct.pack(">Q", (sector << 5) + 1)
    if ivmode == "essiv:sha256":
        return _ecb(hashlib.sha256(key).digest(), struct.pack("<Q", sector) + bytes(8))
    if ivmode == "eboiv":
        return _ecb(key, struct.pack("<Q", sector * sector_size) + bytes(8))
    raise AssertionError(ivmode)


@pytest.mark.parametrize("ivmode", ["plain", "plain64", "plain64be", "null", "benbi",
                                    "essiv:sha256", "eboiv"])
def test_cbc_iv_modes(ivmode):
    lower = MemoryDevice(64)
    iv_offset = (1 << 32) - 3  # plain truncates at 32 bits, plain64 does not
    dev = crypt_dev(f"aes-cbc-{ivmode} {KEY32.hex()} {iv_offset} lower 0", lower)
    data = pattern(0, 64)
    dev.write(0, data)
    for s in (0, 2, 3, 63):
        want = _cbc_unit(KEY32, _ivs_for(ivmode, s + iv_offset, KEY32), data[s * 512:(s + 1) * 512])
        assert lower.buf[s * 512:(s + 1) * 512] == want
    assert dev.read(0, 64) == data


@pytest.mark.parametrize("large", [False, True])
def test_sector_size_and_iv_large_sectors(large):
    lower = MemoryDevice(64)
    feats = "2 sector_size:4096 iv_large_sectors" if large else "1 sector_size:4096"
    dev = crypt_dev(f"aes-xts-plain64 {KEY64.hex()} 16 lower 0 {feats}", lower)
    data = pattern(0, 64)
    dev.write(0, data)
    for u in range(8):
        cc = 16 + 8 * u
        iv = (cc >> 3) if large else cc
        c = Cipher(algorithms.AES(KEY64), modes.XTS(struct.pack("<Q", iv) + bytes(8))).encryptor()
        assert lower.buf[u * 4096:(u + 1) * 4096] == c.update(data[u * 4096:(u + 1) * 4096])
    assert dev.read(8, 16) == data[4096:3 * 4096]


def test_keycount_uses_key_of_sector_modulo_count():
    lower = MemoryDevice(16)
    key = bytes(range(128))  # 4 keys of 32 bytes
    dev = crypt_dev(f"aes:4-cbc-plain64 {key.hex()} 1 lower 0", lower)
    data = pattern(0, 16)
    dev.write(0, data)
    for s in range(16):
        cc = s + 1
        k = key[32 * (cc & 3):32 * (cc & 3) + 32]
        assert lower.buf[s * 512:(s + 1) * 512] == _cbc_unit(k, _ivs_for("plain64", cc, k),
                                                               data[s * 512:(s + 1) * 512])
    assert dev.read(0, 16) == data
    assert dev.table().split()[3] == "aes:4-cbc-plain64"


def test_capi_forms_equal_the_old_forms():
    data = pattern(0, 8)
    outs = []
    for spec in ("aes-xts-plain64", "capi:xts(aes)-plain64"):
        lower = MemoryDevice(8)
        crypt_dev(f"{spec} {KEY64.hex()} 0 lower 0", lower).write(0, data)
        outs.append(bytes(lower.buf))
    assert outs[0] == outs[1]
    lower = MemoryDevice(8)
    crypt_dev(f"capi:cbc(aes)-essiv:sha256 {KEY32.hex()} 0 lower 0", lower).write(0, data)
    assert lower.buf[:512] == _cbc_unit(KEY32, _ivs_for("essiv:sha256", 0, KEY32), data[:512])


def test_ecb_ignores_iv_and_null_cipher_with_no_key():
    lower = MemoryDevice(4)
    crypt_dev(f"aes-ecb {KEY32.hex()} 0 lower 0", lower).write(0, bytes(2048))
    assert lower.buf[:16] == _ecb(KEY32, bytes(16)) == lower.buf[512:528]
    lower = MemoryDevice(4)
    dev = crypt_dev("cipher_null-ecb - 0 lower 0", lower)
    dev.write(0, b"q" * 2048)
    assert lower.buf == b"q" * 2048
    assert dev.table().split()[4] == "-"


# -- round trips against a model ----------------------------------------------------------------

SPECS = [
    ("aes-xts-plain64", KEY64.hex(), "", 512),
    ("aes-xts-plain64", KEY64.hex(), " 1 sector_size:4096", 4096),
    ("aes-cbc-essiv:sha256", KEY32.hex(), "", 512),
    ("capi:gcm(aes)-random", KEY32.hex(), " 1 integrity:28:aead", 512),
    ("capi:rfc7539(chacha20,poly1305)-random", KEY32.hex(), " 2 integrity:28:aead sector_size:4096", 4096),
    ("capi:authenc(hmac(sha256),xts(aes))-random", (KEY64 + KEY32).hex(), " 1 integrity:48:aead", 512),
    ("capi:authenc(hmac(sha512),cbc(aes))-plain64", (KEY32 + KEY64).hex(), " 1 integrity:64:aead", 512),
    ("capi:xts(aes)-random", KEY64.hex(), " 1 integrity:16:none", 512),
]


def lower_for(feats: str, nr: int) -> MemoryDevice:
    prof = None
    for word in feats.split():
        if word.startswith("integrity:"):
            size = int(word.split(":")[1])
            interval = 4096 if "sector_size:4096" in feats else 512
            prof = IntegrityProfile("DM-DIF-EXT-TAG", size, size, interval)
    return MemoryDevice(nr, integrity=prof)


@pytest.mark.parametrize("spec,key,feats,unit", SPECS, ids=[s[0] + s[2] for s in SPECS])
@settings(max_examples=15, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(0, 31), st.integers(1, 8),
                              st.integers(0, 255)), min_size=1, max_size=8))
def test_round_trip_matches_model(spec, key, feats, unit, ops):
    step = unit // 512
    lower = lower_for(feats, 256)
    dev = crypt_dev(f"{spec} {key} 0 lower 0{feats}", lower)
    model = bytearray(256 * 512)
    written = set()
    for is_write, start, count, fill in ops:
        s, n = start * step, min(count * step, 256 - start * step)
        if n <= 0:
            continue
        if is_write:
            data = bytes([fill]) * (n * 512)
            dev.write(s, data)
            model[s * 512:(s + n) * 512] = data
            written.update(range(s, s + n))
            assert lower.buf[s * 512:(s + n) * 512] != data
        else:
            cover = [x for x in range(s, s + n) if x in written]
            if len(cover) == n:
                assert dev.read(s, n) == model[s * 512:(s + n) * 512]


# -- AEAD over integrity metadata ---------------------------------------------------------------

def gcm_device(nr=16, unit=512):
    feats = "1 integrity:28:aead" if unit == 512 else "2 integrity:28:aead sector_size:4096"
    lower = MemoryDevice(nr, integrity=IntegrityProfile("DM-DIF-EXT-TAG", 28, 28, unit))
    return lower, crypt_dev(f"capi:gcm(aes)-random {KEY32.hex()} 0 lower 0 {feats}", lower)


def test_gcm_layout_is_the_kernels():
    lower, dev = gcm_device()
    dev.targets[0].rng = lambda n: bytes((i * 7) & 0xFF for i in range(n))  # injected
    data = pattern(0, 16)
    dev.write(0, data)
    for s in (0, 5, 15):
        meta = bytes(lower.meta[s * 28:(s + 1) * 28])
        tag, iv = meta[:16], meta[16:]
        aad = struct.pack("<Q", s) + iv
        sealed = AESGCM(KEY32).encrypt(iv, data[s * 512:(s + 1) * 512], aad)
        assert lower.buf[s * 512:(s + 1) * 512] == sealed[:512] and tag == sealed[512:]
    assert dev.read(0, 16) == data


@pytest.mark.parametrize("what", ["data", "tag", "iv"])
def test_tamper_fails_that_sector(what):
    lower, dev = gcm_device()
    dev.write(0, pattern(0, 16))
    if what == "data":
        lower.buf[9 * 512 + 100] ^= 1
    elif what == "tag":
        lower.meta[9 * 28 + 3] ^= 0x80
    else:
        lower.meta[9 * 28 + 20] ^= 1
    assert dev.read(0, 8) == pattern(0, 8)
    buf = bytearray(b"\xee" * 16 * 512)
    with pytest.raises(IntegrityError, match="sector 9") as e:
        dev.readinto(0, buf)
    assert e.value.sector == 9
    assert buf == bytes(len(buf))  # no unauthenticated data handed back


def test_moving_a_sector_with_its_metadata_fails():
    lower, dev = gcm_device()
    dev.write(0, pattern(0, 16))
    lower.buf[3 * 512:4 * 512] = lower.buf[7 * 512:8 * 512]
    lower.meta[3 * 28:4 * 28] = lower.meta[7 * 28:8 * 28]
    with pytest.raises(IntegrityError, match="sector 3"):
        dev.read(3, 1)


def test_authenc_hmac_sector_named_with_4k_sectors():
    lower = MemoryDevice(32, integrity=IntegrityProfile("DM-DIF-EXT-TAG", 32, 32, 4096))
    dev = crypt_dev(f"capi:authenc(hmac(sha256),xts(aes))-plain64 {(KEY64 + KEY32).hex()} 0 "
                    "lower 0 2 integrity:32:aead sector_size:4096", lower)
    dev.write(0, pattern(0, 32))
    lower.buf[2 * 4096 + 7] ^= 1
    with pytest.raises(IntegrityError, match="sector 16"):
        dev.read(8, 16)


# -- tables -------------------------------------------------------------------------------------

BAD = [
    ("aes-xts-plain64 00 0", "Not enough arguments"),
    (f"aes-xts-plain64 {KEY64.hex()} 0 lower 0 1 bogus", "unknown optional parameter 'bogus'"),
    (f"aes-xts-plain64 {KEY64.hex()} 0 lower 0 2 allow_discards allow_discards", "duplicate"),
    (f"aes-xts-plain64 {KEY64.hex()} 0 lower 0 3 allow_discards", "number of optional"),
    (f"aes-xts-plain64 {KEY64.hex()} 0 lower 0 1 sector_size:1000", "sector_size"),
    (f"aes-xts-plain64 {KEY64.hex()} 0 lower 0 1 sector_size:8192", "sector_size"),
    (f"aes-xts-plain64 {KEY64.hex()} 0 lower 0 1 integrity:0:aead", "Invalid integrity arguments"),
    (f"aes-xts-plain64 {KEY64.hex()} 0 lower 0 1 integrity:16:hmac", "Unknown integrity profile"),
    (f"aes-xts-plain64 {KEY64.hex()} 0 lower 0 1 integrity:16:aead", "needs the capi: form"),
    (f"aes-xts-plain64 {KEY64.hex()[:-1]} 0 lower 0", "not a hex key"),
    (f"aes-xts-plain64 {'zz' * 64} 0 lower 0", "not a hex key"),
    (f"aes-xts-plain64 {KEY64.hex()[:40]} 0 lower 0", "key of 20 bytes"),
    (f"aes:3-cbc-plain {KEY32.hex()} 0 lower 0", "power of 2"),
    (f"aes:2-cbc-plain {KEY32.hex()[:-2]} 0 lower 0", "equal parts"),
    (f"aes-cbc {KEY32.hex()} 0 lower 0", "IV mechanism required"),
    (f"aes-cbc-essiv {KEY32.hex()} 0 lower 0", "Digest algorithm missing"),
    (f"aes-cbc-essiv:nohash {KEY32.hex()} 0 lower 0", "unknown hash"),
    (f"aes-cbc-wibble {KEY32.hex()} 0 lower 0", "Invalid IV mode"),
    (f"aes:64-cbc-lmk {'00' * 2048} 0 lower 0", "not supported by dmkit"),
    (f"serpent-xts-plain64 {KEY64.hex()} 0 lower 0", "unknown or unsupported cipher"),
    (f"capi:gcm(aes)-random {KEY32.hex()} 0 lower 0", "it needs integrity"),
    (f"aes-xts-random {KEY64.hex()} 0 lower 0 1 integrity:32:aead", "capi: form"),
    (f"capi:xts(aes)-random {KEY64.hex()} 0 lower 0 1 integrity:16:none", "Integrity profile not supported"),
    (f"capi:xts(aes)-plain64 {KEY64.hex()} 0 lower 0 1 integrity:16:none", "stores only random IVs"),
    (f"aes-xts-plain64 {KEY64.hex()} x lower 0", "iv_offset"),
    (f"aes-xts-plain64 {KEY64.hex()} 1 lower 0 1 sector_size:4096", "iv_offset"),
    (f"aes-xts-plain64 {KEY64.hex()} 0 nosuch 0", "nosuch"),
    (f"aes-xts-plain64 {KEY64.hex()} 0 lower -1", "device sector"),
    (f"aes-xts-plain64 {KEY64.hex()} 0 lower 1", "past its end"),
    (f"aes-xts-plain64 a 0 lower 0", "empty key"),
    (f"aes-xts-plain64 :64logon:x 0 lower 0", "Cannot parse key size"),
    (f"capi:gcm(aes)-random {KEY32.hex()} 0 lower 0 1 integrity:12:aead", "auth tag size"),
    (f"capi:rfc7539(chacha20,poly1305)-random {KEY32.hex()} 0 lower 0 1 integrity:24:aead", "tag size 12"),
    (f"aes-cbc-eboiv {KEY32.hex()} 0 lower 0 1 bogus:1", "unknown optional"),
]


@pytest.mark.parametrize("args,match", BAD)
def test_bad_tables_are_rejected(args, match):
    with pytest.raises(TableError, match=match) as e:
        crypt_dev(args, MemoryDevice(64))
    assert KEY64.hex() not in str(e.value)  # never the key


def test_sector_size_must_divide_the_target():
    with pytest.raises(TableError, match="not multiple of sector_size"):
        crypt_dev(f"aes-xts-plain64 {KEY64.hex()} 0 lower 0 1 sector_size:4096", MemoryDevice(64), nr=12)


@pytest.mark.parametrize("prof,match", [
    (IntegrityProfile("T10-DIF-TYPE1-CRC", 28, 28, 512), "Integrity profile not supported"),
    (IntegrityProfile("DM-DIF-EXT-TAG", 32, 32, 512), "tag size mismatch"),
    (IntegrityProfile("DM-DIF-EXT-TAG", 28, 28, 4096), "sector size mismatch"),
])
def test_integrity_profile_must_match(prof, match):
    with pytest.raises(TableError, match=match):
        crypt_dev(f"capi:gcm(aes)-random {KEY32.hex()} 0 lower 0 1 integrity:28:aead",
                  MemoryDevice(64, integrity=prof))


def test_status_table_and_info():
    lower = MemoryDevice(64)
    args = (f"aes-xts-plain64 {KEY64.hex()} 8 lower 0 6 no_write_workqueue allow_discards "
            "same_cpu_crypt submit_from_crypt_cpus no_read_workqueue iv_large_sectors")
    dev = crypt_dev(args, lower)
    assert dev.table() == (f"0 64 crypt aes-xts-plain64 {KEY64.hex()} 8 lower 0 6 allow_discards "
                           "same_cpu_crypt submit_from_crypt_cpus no_read_workqueue "
                           "no_write_workqueue iv_large_sectors\n")
    assert dev.status() == "0 64 crypt\n"
    assert dev.can_discard
    dev.discard(0, 8)
    assert not dev.can_write_zeroes
    with pytest.raises(NotSupportedError):
        dev.targets[0].map(Bio.write_zeroes(0, 8))


def test_discard_refused_without_allow_discards():
    dev = crypt_dev(f"aes-xts-plain64 {KEY64.hex()} 0 lower 0", MemoryDevice(8))
    assert not dev.can_discard


def test_key_messages_need_suspend_and_keep_the_size():
    lower = MemoryDevice(8)
    dev = crypt_dev(f"aes-xts-plain64 {KEY64.hex()} 0 lower 0", lower)
    t = dev.targets[0]
    dev.write(0, pattern(0, 8))
    with pytest.raises(TableError, match="not suspended"):
        dev.message(0, ["key", "wipe"])
    t.suspend()
    with pytest.raises(Exception, match="suspended"):
        dev.read(0, 1)
    dev.message(0, ["key", "wipe"])
    assert dev.table().split()[4] == "00" * 64
    with pytest.raises(TableError, match="crypt key is not set"):
        t.resume()
    with pytest.raises(TableError, match="may not be changed"):
        dev.message(0, ["key", "set", KEY32.hex()])
    dev.message(0, ["key", "set", KEY64.hex()])
    t.resume()
    assert dev.read(0, 8) == pattern(0, 8)
    with pytest.raises(TableError, match="unrecognised message"):
        dev.message(0, ["frob", "x"])


def test_keyring_references(tmp_path):
    keys = pytest.importorskip("dmkit.keys")
    ring = keys.Keyring()
    ring.add("logon", "cryptsetup:vk", KEY64)
    lower = MemoryDevice(8)
    dev = crypt_dev("aes-xts-plain64 :64:logon:cryptsetup:vk 0 lower 0", lower, keyring=ring)
    dev.write(0, pattern(0, 8))
    assert dev.table() == "0 8 crypt aes-xts-plain64 :64:logon:cryptsetup:vk 0 lower 0\n"
    plain = crypt_dev(f"aes-xts-plain64 {KEY64.hex()} 0 lower 0", lower)
    assert plain.read(0, 8) == pattern(0, 8)
    with pytest.raises(TableError, match="32") as e:
        crypt_dev("aes-xts-plain64 :32:logon:cryptsetup:vk 0 lower 0", lower, keyring=ring)
    assert KEY64.hex() not in str(e.value)
    with pytest.raises(TableError, match="nope"):
        crypt_dev("aes-xts-plain64 :64:user:nope 0 lower 0", lower, keyring=ring)
    with pytest.raises(TableError, match="trusted|not supported"):
        crypt_dev("aes-xts-plain64 :64:trusted:x 0 lower 0", lower, keyring=ring)


# -- the numpy-free XTS path (dmkit.crypto.fastxts) against the general path -------------------

@pytest.mark.skipif(not __import__("dmkit.crypto.fastxts", fromlist=["x"]).available(),
                    reason="the optional libcrypto accelerator (dmkit.crypto._xtsevp) was not "
                           "built")
@settings(max_examples=40, deadline=None)
@given(ivmode=st.sampled_from(["plain64", "plain", "plain64be"]),
       key=st.sampled_from([KEY32, KEY64, bytes(range(100, 164))]),
       sector_size=st.sampled_from([512, 4096]), large=st.booleans(),
       iv_offset=st.sampled_from([0, 8, 2**32 - 8, 2**40]),
       ops=st.lists(st.tuples(st.integers(0, 31), st.integers(1, 8), st.integers(0, 255)),
                    min_size=1, max_size=6))
def test_fast_xts_path_equals_the_general_path(ivmode, key, sector_size, large, iv_offset,
                                               ops):
    """The same table through the C path and the numpy path writes the same ciphertext to
    the device below, and each reads what the other wrote."""
    from dmkit.targets.crypt import target as crypt_target

    step = sector_size // 512
    feats = [f"sector_size:{sector_size}"] if sector_size != 512 else []
    if large:
        feats.append("iv_large_sectors")
    opt = f" {len(feats)} {' '.join(feats)}" if feats else ""
    args = f"aes-xts-{ivmode} {key.hex()} {iv_offset} lower 0{opt}"
    fast_lower, slow_lower = MemoryDevice(256), MemoryDevice(256)
    fast = crypt_dev(args, fast_lower)
    assert fast.targets[0]._fast is not None
    with pytest.MonkeyPatch.context() as m:
        m.setattr(crypt_target, "fast_xts", lambda *a: None)
        slow = crypt_dev(args, slow_lower)
    assert slow.targets[0]._fast is None
    for start, count, fill in ops:
        s, n = start * step, min(count * step, 256 - start * step)
        if n <= 0:
            continue
        data = bytes((fill + i) & 0xFF for i in range(n * 512))
        fast.write(s, data)
        slow.write(s, data)
        assert fast_lower.buf == slow_lower.buf
        assert fast.read(s, n) == data
        assert slow.read(s, n) == data
    assert fast.read(0, 256) == slow.read(0, 256)
    # each reads what the other wrote
    fast_lower.buf[:], slow_lower.buf[:] = bytes(slow_lower.buf), bytes(fast_lower.buf)
    assert fast.read(0, 256) == slow.read(0, 256)


def test_fast_xts_read_failure_hands_back_no_ciphertext():
    lower = MemoryDevice(64)
    dev = crypt_dev(f"aes-xts-plain64 {KEY64.hex()} 0 lower 0", lower)
    dev.write(0, bytes(range(256)) * 2 * 64)
    assert dev.targets[0]._fast is not None
    r = DeviceResolver({"lower": lower})
    stack = MappedDevice.from_table("0 32 linear lower 0\n32 32 error\n", resolver=r)
    top = crypt_dev(f"aes-xts-plain64 {KEY64.hex()} 0 lower 0", stack, name="lower")
    buf = bytearray(b"\xAA" * (64 * 512))
    with pytest.raises(BlockIOError):
        top.readinto(0, memoryview(buf))
    assert buf == bytes(len(buf))


def test_spec_size_table_matches_the_cipher_classes():
    """spec.py keeps (iv_size, block_size) without importing the ciphers; they agree."""
    from dmkit import crypto
    from dmkit.targets.crypt import spec

    for table in (spec._SKCIPHERS, spec._AEADS):
        for api, (iv_size, block_size, name) in table.items():
            cls = getattr(crypto, name)
            assert (cls.iv_size, cls.block_size) == (iv_size, block_size), api


def test_reading_a_plain_xts_volume_does_not_load_numpy(tmp_path):
    """The CLI's export of an aes-xts-plain64 LUKS2 volume runs without numpy (its import
    is most of a new process's start-up), without pyca/cryptography (the key slot area
    is decrypted by the same C XTS), the encrypted-key module, the kernel keyring bridge
    or tempfile; any other cipher still works through them."""
    import subprocess
    import sys

    from dmkit.crypto import fastxts

    if not fastxts.available():
        pytest.skip("the optional libcrypto accelerator (dmkit.crypto._xtsevp) was not built")
    import dmkit.luks as luks

    img = tmp_path / "v.img"
    img.write_bytes(bytes(20 << 20))
    from tests.luks._util import FAST

    luks.format(str(img), "pw", pbkdf=FAST, keyslots_size=(1 << 20) - 32768).wipe()
    (tmp_path / "pw").write_bytes(b"pw")
    code = ("import sys, runpy; sys.argv = ['dmkit', 'luks', 'export', sys.argv[1], "
            "sys.argv[2], '--key-file', sys.argv[3]]\n"
            "try:\n    runpy.run_module('dmkit', run_name='__main__')\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "bad = sorted(m for m in ('numpy', 'dmkit.targets.integrity', 'crc32c', "
            "'cryptography', 'dmkit.keys.encrypted', 'dmkit.keys.kernel', 'tempfile') "
            "if m in sys.modules)\n"
            "print('loaded:', bad)\n")
    out = subprocess.run([sys.executable, "-c", code, str(img), str(tmp_path / "o"),
                          str(tmp_path / "pw")], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "loaded: []", out.stdout + out.stderr
    assert (tmp_path / "o").stat().st_size > 0
