"""Rebuild the published-vector files of tests/vectors/crypt/kat/ from their sources.

    python extract.py CRYPTOGRAPHY_VECTORS_DIR BOTAN_XTS_VEC GO_XTS_TEST_GO [DEST]

- CRYPTOGRAPHY_VECTORS_DIR: the ``cryptography_vectors`` folder of the PyPI wheel
  ``cryptography_vectors-50.0.2-py3-none-any.whl`` (``pip download --no-deps
  cryptography-vectors==50.0.2``, then unzip);
- BOTAN_XTS_VEC: ``src/tests/data/modes/xts.vec`` of github.com/randombit/botan;
- GO_XTS_TEST_GO: ``xts/xts_test.go`` of github.com/golang/crypto (a cross-check only).

The NIST SP 800-38A Appendix F values are written out below; they are checked here against
pycryptodome's self-test copies (``Crypto/SelfTest/Cipher/test_AES.py`` and
``test_CBC.py``, when pycryptodome is installed) and against Botan's ``cbc.vec`` (when
``BOTAN_CBC_VEC`` names it). Every file written starts with a header naming its source.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

SOURCE_WHEEL = "cryptography_vectors 50.0.2 (PyPI)"

# --- NIST SP 800-38A (2001), Appendix F.1 (ECB) and F.2 (CBC) ---------------------------
SP_KEYS = {
    128: "2b7e151628aed2a6abf7158809cf4f3c",
    192: "8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b",
    256: "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
}
SP_IV = "000102030405060708090a0b0c0d0e0f"
SP_PT = ["6bc1bee22e409f96e93d7e117393172a", "ae2d8a571e03ac9c9eb76fac45af8e51",
         "30c81c46a35ce411e5fbc1191a0a52ef", "f69f2445df4f9b17ad2b417be66c3710"]
SP_ECB = {
    128: ["3ad77bb40d7a3660a89ecaf32466ef97", "f5d3d58503b9699de785895a96fdbaaf",
          "43b1cd7f598ece23881b00e3ed030688", "7b0c785e27e8ad3f8223207104725dd4"],
    192: ["bd334f1d6e45f25ff712a214571fa5cc", "974104846d0ad3ad7734ecb3ecee4eef",
          "ef7afd2270e2e60adce0ba2face6444e", "9a4b41ba738d6c72fb16691603c18e0e"],
    256: ["f3eed1bdb5d2a03c064b5a7e3db181f8", "591ccb10d410ed26dc5ba74a31362870",
          "b6ed21b99ca6f4f9f153e7b1beafed1d", "23304b7a39f9f3ff067d8d8f9e24ecc7"],
}
SP_CBC = {
    128: ["7649abac8119b246cee98e9b12e9197d", "5086cb9b507219ee95db113a917678b2",
          "73bed6b8e3c1743b7116e69e22229516", "3ff1caa1681fac09120eca307586e1a7"],
    192: ["4f021db243bc633d7178183a9fa071e8", "b4d9ada9ad7dedf4e5e738763f69145a",
          "571b242012fb7ae07fa9baac3df102e0", "08b0e27988598881d920a9e64f5615cd"],
    256: ["f58c4c04d6e5f1ba779eabfb5f7bfbd6", "9cfc4e967edb808d679f777bc6702c7d",
          "39f23369a9d9bacfa530e26304231461", "b2eb05e2c39be9fcda6c19078c6a9d1b"],
}


def _cross_check_sp800_38a() -> list[str]:
    checked = []
    try:
        import Crypto.SelfTest.Cipher as st  # pycryptodome's copies of the same tables
    except ImportError:
        st = None
    if st is not None:
        d = Path(st.__file__).parent
        flat = re.sub(r"[\s'\"+]", "", (d / "test_AES.py").read_text()).lower()
        for ks in (128, 192, 256):
            assert "".join(SP_PT) + "," + "".join(SP_ECB[ks]) + "," + SP_KEYS[ks] in flat, ks
        flat = re.sub(r"[\s'\"+()]", "", (d / "test_CBC.py").read_text()).lower()
        for ks in (128, 192, 256):
            assert "ciphertext=" + "".join(SP_CBC[ks]) in flat, ks
        checked.append("pycryptodome Crypto/SelfTest/Cipher/test_AES.py (F.1) and test_CBC.py "
                       "(F.2)")
    import os
    cbc = os.environ.get("BOTAN_CBC_VEC")
    if cbc:
        text = Path(cbc).read_text().lower()
        for ks in (128, 192, 256):
            assert f"key = {SP_KEYS[ks]}\nnonce = {SP_IV}\nin = {''.join(SP_PT)}\nout = " \
                   f"{''.join(SP_CBC[ks])}" in text, ks
        checked.append("Botan src/tests/data/modes/cbc.vec (F.2.1, F.2.3, F.2.5)")
    return checked


def write_sp800_38a(dest: Path) -> None:
    checked = _cross_check_sp800_38a()
    out = ["# NIST SP 800-38A (2001), Appendix F: F.1 ECB-AES and F.2 CBC-AES, key sizes 128/192/256.",
           "# Each section's example: four 16-byte blocks; Encrypt and Decrypt sections use the same",
           "# values (F.1.1/F.1.2 ... F.2.5/F.2.6). Written out in extract.py from the published",
           "# Appendix F tables, as also carried by OpenSSL's",
           "# test/recipes/30-test_evp_data/evpciph_aes_common.txt (\"AES tests from NIST document",
           "# SP800-38A\"). extract.py checked them against:"]
    out += [f"#   {c}" for c in checked] or ["#   (no second copy was available)"]
    n = 1
    for mode, table in (("ECB", SP_ECB), ("CBC", SP_CBC)):
        sec = 1 if mode == "ECB" else 2
        for ks in (128, 192, 256):
            for direction in ("Encrypt", "Decrypt"):
                out += ["", f"Section = F.{sec}.{n}", f"Name = {mode}-AES{ks}.{direction}",
                        f"Mode = {mode}", f"Key = {SP_KEYS[ks]}"]
                if mode == "CBC":
                    out.append(f"IV = {SP_IV}")
                out += [f"Plaintext = {''.join(SP_PT)}", f"Ciphertext = {''.join(table[ks])}"]
                n += 1
        n = 1
    (dest / "sp800_38a_aes_ecb_cbc.txt").write_text("\n".join(out) + "\n")


# --- NIST CAVP AESAVS (ECB, CBC), copied unchanged --------------------------------------
AESAVS = [f"{m}{kind}{ks}.rsp" for m in ("CBC", "ECB") for kind in ("GFSbox", "KeySbox", "MMT")
          for ks in (128, 192, 256)]


def copy_aesavs(cv: Path, dest: Path) -> None:
    d = dest / "aesavs"
    d.mkdir(exist_ok=True)
    for f in AESAVS:
        shutil.copyfile(cv / "ciphers" / "AES" / f[:3] / f, d / f)


# --- IEEE 1619-2007 Annex B XTS-AES vectors 1-14 (whole blocks) -------------------------
def write_ieee1619(botan_xts: Path, go_test: Path, dest: Path) -> None:
    text = botan_xts.read_text()
    seen: dict[int, dict] = {}
    for sect in re.split(r"\n(?=\[)", text):
        head = sect.split("\n", 1)[0]
        if head not in ("[AES-128/XTS]", "[AES-256/XTS]"):
            continue
        for m in re.finditer(r"# IEEE 1619-2007 VECTOR (\d+)\nKey = (\w+)\nNonce = (\w+)\n"
                             r"In = (\w+)\nOut = (\w+)", sect):
            num = int(m.group(1))
            v = {"key": m.group(2).lower(), "tweak": m.group(3).lower(),
                 "pt": m.group(4).lower(), "ct": m.group(5).lower()}
            if num > 14 or len(v["pt"]) % 32:
                continue  # 15-19: partial last blocks (ciphertext stealing), not dm-crypt's
            if num in seen:
                assert seen[num] == v, num
            seen[num] = v
    assert sorted(seen) == list(range(1, 15)), sorted(seen)
    # Go's copy (vectors 1-5 and 10, sector number as an integer) must agree
    go = go_test.read_text()
    go_vecs = re.findall(r'\{\s*"(\w+)",\s*(0x[0-9a-f]+|\d+),\s*"(\w+)",\s*"(\w+)",\s*\}', go)
    go_map = {(k, int(s, 0), p): c for k, s, p, c in go_vecs}
    matched = []
    for num, v in seen.items():
        seq = int.from_bytes(bytes.fromhex(v["tweak"]), "little")
        c = go_map.get((v["key"], seq, v["pt"]))
        if c is not None:
            assert c == v["ct"], num
            matched.append(num)
    assert sorted(matched) == [1, 2, 3, 4, 5, 10], matched
    out = ["# IEEE Std 1619-2007, Annex B: XTS-AES test vectors 1-14 (whole 16-byte blocks; 15-19,",
           "# which end in a partial block, are left out: dm-crypt sectors are whole blocks).",
           "# 1-9 XTS-AES-128 (32-byte key), 10-14 XTS-AES-256 (64-byte key); 4-14 are 512-byte data",
           "# units. Tweak = the data unit sequence number as 16 little-endian bytes (dm-crypt's",
           "# plain64 IV). Extracted from Botan src/tests/data/modes/xts.vec (randombit/botan commit",
           "# 081417e4eba70f27f946c115f3b555f63961c5f6, \"IEEE 1619-2007 VECTOR n\" entries); vectors",
           "# 1-5 and 10 cross-checked against golang/crypto xts/xts_test.go (commit",
           "# 82adefa711cb8d9a1f12c7ea91b491007d21819f, \"taken from IEEE P1619/D16, Annex B\")."]
    for num in sorted(seen):
        v = seen[num]
        seq = int.from_bytes(bytes.fromhex(v["tweak"]), "little")
        out += ["", f"Vector = {num}", f"Key = {v['key']}", f"DataUnitSeqNumber = {seq:#x}",
                f"Tweak = {v['tweak']}", f"PT = {v['pt']}", f"CT = {v['ct']}"]
    (dest / "ieee1619_xts_aes.txt").write_text("\n".join(out) + "\n")


# --- NIST CAVP XTSVS with 128-bit hex tweaks (arbitrary IVs, as ESSIV makes) ------------
def _rsp_blocks(text: str):
    return [b for b in re.split(r"\n\s*\n", text) if b.strip()]


def write_xts_hexstr(cv: Path, dest: Path, per: int = 25) -> None:
    for ks in (128, 256):
        src = cv / "ciphers" / "AES" / "XTS" / "tweak-128hexstr" / f"XTSGenAES{ks}.rsp"
        out = [f"# Extracted from {SOURCE_WHEEL}, ciphers/AES/XTS/tweak-128hexstr/XTSGenAES{ks}.rsp",
               "# (NIST CAVP XTSVS, XTS-AES of IEEE Std 1619-2007; CAVS 11.0; tweak i = a 128-bit value",
               "# used as the IV as is). Kept: DataUnitLen a multiple of 128 (whole blocks: 128, 256,",
               f"# 384), first {per} of each per section."]
        section, counts = None, {}
        for b in _rsp_blocks(src.read_text()):
            s = b.strip()
            if s.startswith("#"):
                continue
            if s.startswith("["):
                section = s
                out += ["", s]
                continue
            m = re.search(r"DataUnitLen = (\d+)", s)
            if not m or int(m.group(1)) % 128:
                continue
            k = (section, m.group(1))
            counts[k] = counts.get(k, 0) + 1
            if counts[k] <= per:
                out += ["", s]
        (dest / f"xts_aes{ks}_tweak128hexstr.rsp").write_text("\n".join(out) + "\n")


# --- NIST CAVP GCMVS: AES-192 encrypt, decrypt (with FAIL) for all key sizes ---------------
def write_gcm(cv: Path, dest: Path, per: int = 2) -> None:
    out = [f"# Extracted from {SOURCE_WHEEL}, ciphers/AES/GCM/gcmEncryptExtIV192.rsp and",
           "# gcmDecrypt{128,192,256}.rsp (NIST CAVP GCMVS, CAVS 14.0). Kept: IVlen 96, PTlen 128 and",
           "# 408, AADlen 0 and 160 (dm-crypt's AAD is 20 bytes), every Taglen (128..32), first",
           f"# {per} per section. Each file's vectors follow a '# FILE name' line; decrypt vectors",
           "# marked FAIL must not authenticate."]
    for name in ["gcmEncryptExtIV192.rsp", "gcmDecrypt128.rsp", "gcmDecrypt192.rsp",
                 "gcmDecrypt256.rsp"]:
        out += ["", f"# FILE {name}"]
        params: dict[str, int] = {}
        taken = 0
        for b in _rsp_blocks((cv / "ciphers" / "AES" / "GCM" / name).read_text()):
            lines = [ln for ln in b.strip().splitlines() if not ln.startswith("#")]
            if not lines:
                continue
            if lines[0].startswith("["):
                for ln in lines:
                    k, v = ln.strip("[]").split("=")
                    params[k.strip()] = int(v)
                taken = 0
                continue
            if (params.get("IVlen") != 96 or params.get("PTlen") not in (128, 408)
                    or params.get("AADlen") not in (0, 160)):
                continue
            taken += 1
            if taken <= per:
                hdr = (f"[Keylen = {params['Keylen']}] [PTlen = {params['PTlen']}] "
                       f"[AADlen = {params['AADlen']}] [Taglen = {params['Taglen']}]")
                out += ["", hdr, *lines]
    (dest / "gcm_aes_more.rsp").write_text("\n".join(out) + "\n")


# --- ChaCha20-Poly1305 (RFC 7539 / RFC 8439 AEAD) from BoringSSL's list --------------------
def _hexval(v: str) -> str:
    v = v.strip()
    if v.startswith('"'):
        return v[1:-1].encode().hex()
    return v.lower()


def write_chacha(cv: Path, dest: Path) -> None:
    src = cv / "ciphers" / "ChaCha20Poly1305" / "boringssl.txt"
    out = [f"# Extracted from {SOURCE_WHEEL}, ciphers/ChaCha20Poly1305/boringssl.txt (BoringSSL's",
           "# chacha20_poly1305 AEAD tests; COUNT 1 is the AEAD example of RFC 7539/RFC 8439 section",
           "# 2.8.2, \"Ladies and Gentlemen of the class of '99...\"). Quoted strings are written as",
           "# hex. Kept: non-empty plaintexts (all have 12-byte nonces and 16-byte tags)."]
    for b in _rsp_blocks(src.read_text()):
        comments = [ln for ln in b.splitlines() if ln.startswith("#")]
        d = {}
        for ln in b.splitlines():
            if "=" in ln and not ln.startswith("#"):
                k, v = ln.split("=", 1)
                d[k.strip()] = v.strip()
        if "KEY" not in d or not _hexval(d["IN"]):
            continue
        assert len(_hexval(d["NONCE"])) == 24 and len(_hexval(d["TAG"])) == 32
        out += [""] + comments + [f"COUNT = {d['COUNT']}", f"Key = {_hexval(d['KEY'])}",
                                  f"IV = {_hexval(d['NONCE'])}", f"AAD = {_hexval(d['AD'])}",
                                  f"Plaintext = {_hexval(d['IN'])}",
                                  f"Ciphertext = {_hexval(d['CT'])}", f"Tag = {_hexval(d['TAG'])}"]
    (dest / "chacha20poly1305_boringssl.txt").write_text("\n".join(out) + "\n")


def main(argv: list[str]) -> int:
    if len(argv) not in (4, 5):
        print(__doc__, file=sys.stderr)
        return 2
    cv, botan_xts, go_test = Path(argv[1]), Path(argv[2]), Path(argv[3])
    dest = Path(argv[4]) if len(argv) == 5 else Path(__file__).resolve().parent
    dest.mkdir(parents=True, exist_ok=True)
    write_sp800_38a(dest)
    copy_aesavs(cv, dest)
    write_ieee1619(botan_xts, go_test, dest)
    write_xts_hexstr(cv, dest)
    write_gcm(cv, dest)
    write_chacha(cv, dest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
