"""Published known-answer vectors for every cipher dm-crypt has in dmkit
(tests/vectors/crypt/kat/, provenance in each file's header and in the crypt section of
tests/vectors/README.md):

- NIST SP 800-38A Appendix F.1/F.2: AES-ECB and AES-CBC, 128/192/256-bit keys;
- NIST CAVP AESAVS (GFSbox, KeySbox, MMT) for ECB and CBC, all three key sizes;
- IEEE Std 1619-2007 Annex B XTS-AES vectors 1-14 (4-14 are 512-byte data units), also
  through the crypt target with ``aes-xts-plain64`` (and ``plain``) tables, the vector's
  data unit number being the IV sector;
- NIST CAVP XTSVS with arbitrary 128-bit tweaks (what ESSIV produces);
- NIST CAVP GCMVS: AES-192 encryption and decryption (with forgeries to refuse) for all key
  sizes and every tag length the kernel's gcm(aes) takes;
- BoringSSL's ChaCha20-Poly1305 AEAD list, with RFC 7539/8439 section 2.8.2.

The batched paths are fed the same vectors as many units at once.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from dmkit.block import MemoryDevice
from dmkit.crypto import (AesCbc, AesEcb, AesGcm, AesXts, AuthenticationFailed,
                          ChaCha20Poly1305Rfc7539)
from dmkit.dm import DeviceResolver, MappedDevice

KAT = Path(__file__).resolve().parents[1] / "vectors" / "crypt" / "kat"


def _blocks(text: str) -> list[str]:
    return [b for b in re.split(r"\n\s*\n", text) if b.strip()]


def _fields(block: str) -> dict[str, str]:
    out = {}
    for line in block.splitlines():
        line = line.strip()
        if line.startswith(("#", "[")) or "=" not in line:
            continue
        k, v = line.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _ids(v):
    return v if isinstance(v, str) else ""


def _ivs(*rows: bytes) -> np.ndarray:
    return np.frombuffer(b"".join(rows), np.uint8).reshape(len(rows), -1)


def crypt_over(data: bytes, table_args: str, *, read_only: bool = False):
    lower = MemoryDevice(initial=data)
    r = DeviceResolver({"lower": lower})
    dev = MappedDevice.from_table(f"0 {len(data) // 512} crypt {table_args}\n", resolver=r,
                                  read_only=read_only)
    return lower, dev


# -- NIST SP 800-38A, Appendix F ---------------------------------------------------------

def sp800_38a():
    out = []
    for b in _blocks((KAT / "sp800_38a_aes_ecb_cbc.txt").read_text()):
        d = _fields(b)
        if "Section" in d:
            out.append((f"{d['Section']}-{d['Name']}", d["Mode"], bytes.fromhex(d["Key"]),
                        bytes.fromhex(d.get("IV", "")), bytes.fromhex(d["Plaintext"]),
                        bytes.fromhex(d["Ciphertext"])))
    return out


SP800_38A = sp800_38a()


def test_sp800_38a_has_every_section():
    assert sorted(v[0].split("-")[0] for v in SP800_38A) == sorted(
        f"F.{m}.{i}" for m in (1, 2) for i in range(1, 7))


@pytest.mark.parametrize("name,mode,key,iv,pt,ct", SP800_38A, ids=_ids)
def test_sp800_38a(name, mode, key, iv, pt, ct):
    out = bytearray(len(pt))
    back = bytearray(len(ct))
    if mode == "ECB":
        AesEcb(key).encrypt(pt, out, None, len(pt))
        AesEcb(key).decrypt(ct, back, None, len(ct))
        assert bytes(out) == ct and bytes(back) == pt
        AesEcb(key).encrypt(pt, out, None, 16)  # the unit size does not matter to ECB
        assert bytes(out) == ct
        return
    c = AesCbc(key)
    c.encrypt(pt, out, _ivs(iv), len(pt))
    c.decrypt(ct, back, _ivs(iv), len(ct))
    assert bytes(out) == ct and bytes(back) == pt
    # the same chain cut into one-block units, each unit's IV the previous ciphertext block
    # (4 units: one context per unit; 40 units: the column-wise ECB path)
    ivs = [iv] + [ct[i:i + 16] for i in range(0, 48, 16)]
    for copies in (1, 10):
        big_ct, big_pt = ct * copies, pt * copies
        iv_rows = _ivs(*(ivs * copies))
        out = bytearray(len(big_pt))
        c.encrypt(big_pt, out, iv_rows, 16)
        assert bytes(out) == big_ct
        back = bytearray(len(big_ct))
        c.decrypt(big_ct, back, iv_rows, 16)
        assert bytes(back) == big_pt


# -- NIST CAVP AESAVS (ECB and CBC: GFSbox, KeySbox, MMT) -------------------------------------

def aesavs():
    out = []
    for f in sorted((KAT / "aesavs").glob("*.rsp")):
        section = ""
        for b in _blocks(f.read_text()):
            s = b.strip()
            if s.startswith("["):
                section = s.strip("[]").split("]")[0]
                b = s.split("]", 1)[1]
            d = _fields(b)
            if "COUNT" not in d:
                continue
            out.append((f"{f.stem}-{section}-{d['COUNT']}", f.name[:3], bytes.fromhex(d["KEY"]),
                        bytes.fromhex(d.get("IV", "")), bytes.fromhex(d["PLAINTEXT"]),
                        bytes.fromhex(d["CIPHERTEXT"])))
    return out


AESAVS = aesavs()


def test_aesavs_files_are_all_read():
    assert len(AESAVS) >= 18 * 10
    for mode in ("CBC", "ECB"):
        for ks in (16, 24, 32):
            assert any(v[1] == mode and len(v[2]) == ks and len(v[4]) > 16 for v in AESAVS)


@pytest.mark.parametrize("name,mode,key,iv,pt,ct", AESAVS, ids=_ids)
def test_aesavs(name, mode, key, iv, pt, ct):
    c = AesEcb(key) if mode == "ECB" else AesCbc(key)
    ivs = None if mode == "ECB" else _ivs(iv)
    out, back = bytearray(len(pt)), bytearray(len(ct))
    c.encrypt(pt, out, ivs, len(pt))
    c.decrypt(ct, back, ivs, len(ct))
    assert bytes(out) == ct and bytes(back) == pt


@pytest.mark.parametrize("table", ["aes-cbc-null", "aes-cbc-plain64", "aes-ecb"])
def test_aesavs_single_blocks_through_the_crypt_target(table):
    """GFSbox/KeySbox vectors have a zero IV: dm-crypt's ``null`` IV, and ``plain64`` at
    sector 0. Each is the first block of a sector of its own device; CBC's first block does
    not depend on the rest of the sector."""
    mode = "ECB" if table.endswith("ecb") else "CBC"
    vecs = [v for v in AESAVS if v[1] == mode and ("Sbox" in v[0]) and len(v[4]) == 16]
    assert len(vecs) > 40
    for name, _, key, iv, pt, ct in vecs:
        assert iv in (b"", bytes(16))
        lower, dev = crypt_over(ct + bytes(496), f"{table} {key.hex()} 0 lower 0")
        try:
            assert dev.read(0, 1)[:16] == pt, name
            dev.write(0, pt + bytes(496))
            assert bytes(lower.buf[:16]) == ct, name
        finally:
            dev.close()


# -- IEEE Std 1619-2007 Annex B --------------------------------------------------------------

def ieee1619():
    out = {}
    for b in _blocks((KAT / "ieee1619_xts_aes.txt").read_text()):
        d = _fields(b)
        if "Vector" in d:
            out[int(d["Vector"])] = (bytes.fromhex(d["Key"]), int(d["DataUnitSeqNumber"], 16),
                                     bytes.fromhex(d["Tweak"]), bytes.fromhex(d["PT"]),
                                     bytes.fromhex(d["CT"]))
    return out


IEEE1619 = ieee1619()


def test_ieee1619_vectors_1_to_14_are_there():
    assert sorted(IEEE1619) == list(range(1, 15))
    assert all(len(v[3]) == 512 for n, v in IEEE1619.items() if n >= 4)
    assert all(len(v[0]) == (32 if n <= 9 else 64) for n, v in IEEE1619.items())


@pytest.mark.parametrize("num", sorted(IEEE1619))
def test_ieee1619_xts(num):
    key, seq, tweak, pt, ct = IEEE1619[num]
    assert tweak == seq.to_bytes(16, "little")
    c = AesXts(key)
    out, back = bytearray(len(pt)), bytearray(len(ct))
    c.encrypt(pt, out, _ivs(tweak), len(pt))
    c.decrypt(ct, back, _ivs(tweak), len(ct))
    assert bytes(out) == ct and bytes(back) == pt


# runs of consecutive data units under one key: (first vector, last vector)
_RUNS = [(4, 6), (7, 9), (10, 10), (11, 11), (12, 12), (13, 13), (14, 14)]


@pytest.mark.parametrize("first,last", _RUNS, ids=lambda v: str(v))
@pytest.mark.parametrize("ivmode", ["plain64", "plain"])
def test_ieee1619_through_the_crypt_target(first, last, ivmode):
    """Vectors 4-14 as dm-crypt sectors: the ciphertexts of consecutive data units laid out
    as consecutive sectors, iv_offset = the first data unit number; one read decrypts the
    run and one write re-encrypts it. ``plain`` keeps 32 bits of the sector, so it agrees
    below 2^32 and must not for vector 14 (data unit 0xffffffffff)."""
    vecs = [IEEE1619[n] for n in range(first, last + 1)]
    key, seq0 = vecs[0][0], vecs[0][1]
    assert all(v[0] == key for v in vecs)
    assert [v[1] for v in vecs] == list(range(seq0, seq0 + len(vecs)))
    ct = b"".join(v[4] for v in vecs)
    pt = b"".join(v[3] for v in vecs)
    lower, dev = crypt_over(ct, f"aes-xts-{ivmode} {key.hex()} {seq0} lower 0")
    try:
        got = bytes(dev.read(0, len(vecs)))
        if ivmode == "plain" and seq0 + len(vecs) > 1 << 32:
            assert got != pt
            return
        assert got == pt
        lower.buf[:] = bytes(len(ct))
        dev.write(0, pt)
        assert bytes(lower.buf) == ct
    finally:
        dev.close()


# -- NIST CAVP XTSVS, 128-bit hex tweaks --------------------------------------------------------

def xts_hexstr():
    out = []
    for ks in (128, 256):
        section = ""
        for b in _blocks((KAT / f"xts_aes{ks}_tweak128hexstr.rsp").read_text()):
            s = b.strip()
            if s.startswith("["):
                section = s.strip("[]")
                continue
            d = _fields(b)
            if "COUNT" in d:
                out.append((f"xts{ks}-{section}-{d['COUNT']}", bytes.fromhex(d["Key"]),
                            bytes.fromhex(d["i"]), bytes.fromhex(d["PT"]),
                            bytes.fromhex(d["CT"])))
    return out


XTS_HEXSTR = xts_hexstr()


def test_xts_hexstr_count():
    assert len(XTS_HEXSTR) == 200


@pytest.mark.parametrize("name,key,tweak,pt,ct", XTS_HEXSTR, ids=_ids)
def test_xts_arbitrary_tweaks(name, key, tweak, pt, ct):
    c = AesXts(key)
    out, back = bytearray(len(pt)), bytearray(len(ct))
    c.encrypt(pt, out, _ivs(tweak), len(pt))
    c.decrypt(ct, back, _ivs(tweak), len(ct))
    assert bytes(out) == ct and bytes(back) == pt
    # the batched path: 37 copies of the unit in one call, each restarting from the tweak
    out = bytearray(37 * len(pt))
    c.encrypt(pt * 37, out, _ivs(*[tweak] * 37), len(pt))
    assert bytes(out) == ct * 37


# -- NIST CAVP GCMVS -------------------------------------------------------------------------

def gcm():
    out = []
    text = (KAT / "gcm_aes_more.rsp").read_text()
    current = ""
    for b in _blocks(text):
        lines = b.strip().splitlines()
        if lines[0].startswith("# FILE"):
            current = lines[0].split()[-1]
            continue
        if not lines[0].startswith("[Keylen"):
            continue
        taglen = int(re.search(r"\[Taglen = (\d+)\]", lines[0]).group(1))
        d = _fields(b)
        fail = "FAIL" in (ln.strip() for ln in lines)
        out.append((f"{current[:-4]}-{taglen}-{len(out)}", "Decrypt" in current,
                    bytes.fromhex(d["Key"]), bytes.fromhex(d["IV"]), bytes.fromhex(d["AAD"]),
                    bytes.fromhex(d.get("PT", "")), bytes.fromhex(d["CT"]),
                    bytes.fromhex(d["Tag"]), fail, taglen // 8))
    return out


GCM = gcm()


def test_gcm_vectors_cover_every_tag_length_and_key_size():
    assert {(len(v[2]), v[9]) for v in GCM} >= {(k, t) for k in (16, 24, 32)
                                               for t in (4, 8, 12, 13, 14, 15, 16)}
    assert sum(v[8] for v in GCM) > 20
    assert any(len(v[4]) == 20 for v in GCM)  # dm-crypt's AAD: le64(sector) || 12-byte IV


@pytest.mark.parametrize("name,decrypt,key,iv,aad,pt,ct,tag,fail,tag_size", GCM, ids=_ids)
def test_gcm(name, decrypt, key, iv, aad, pt, ct, tag, fail, tag_size):
    c = AesGcm(key, tag_size)
    ivs = _ivs(iv)
    n = len(ct)
    back = bytearray(n)
    if fail:
        with pytest.raises(AuthenticationFailed):
            c.open(ct, back, ivs, [aad], _ivs(tag), n)
        return
    out = bytearray(n)
    tags = c.seal(pt, out, ivs, [aad], n)
    assert bytes(out) == ct and tags.tobytes() == tag
    c.open(ct, back, ivs, [aad], _ivs(tag), n)
    assert bytes(back) == pt
    bad = bytearray(ct)
    bad[-1] ^= 0x80
    with pytest.raises(AuthenticationFailed):
        c.open(bytes(bad), back, ivs, [aad], _ivs(tag), n)


# -- ChaCha20-Poly1305 ---------------------------------------------------------------------------

def chacha():
    out = []
    for b in _blocks((KAT / "chacha20poly1305_boringssl.txt").read_text()):
        d = _fields(b)
        if "COUNT" in d:
            out.append((f"chacha-{d['COUNT']}", bytes.fromhex(d["Key"]), bytes.fromhex(d["IV"]),
                        bytes.fromhex(d["AAD"]), bytes.fromhex(d["Plaintext"]),
                        bytes.fromhex(d["Ciphertext"]), bytes.fromhex(d["Tag"])))
    return out


CHACHA = chacha()


def test_rfc8439_section_2_8_2_is_there():
    v = CHACHA[0]
    assert v[4].startswith(b"Ladies and Gentlemen of the class of '99")
    assert v[6].hex() == "1ae10b594f09e26a7e902ecbd0600691"
    assert len(CHACHA) > 60


@pytest.mark.parametrize("name,key,iv,aad,pt,ct,tag", CHACHA, ids=_ids)
def test_chacha20_poly1305(name, key, iv, aad, pt, ct, tag):
    c = ChaCha20Poly1305Rfc7539(key)
    n = len(pt)
    out, back = bytearray(n), bytearray(n)
    tags = c.seal(pt, out, _ivs(iv), [aad], n)
    assert bytes(out) == ct and tags.tobytes() == tag
    c.open(ct, back, _ivs(iv), [aad], _ivs(tag), n)
    assert bytes(back) == pt
    bad = bytearray(tag)
    bad[0] ^= 1
    with pytest.raises(AuthenticationFailed):
        c.open(ct, back, _ivs(iv), [aad], _ivs(bytes(bad)), n)
