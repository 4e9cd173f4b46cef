"""Readers for the published vector files in tests/vectors/crypt (see its README section)."""

import re
from pathlib import Path

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "crypt"


def _blocks(text: str):
    return [b for b in re.split(r"\n\s*\n", text) if b.strip()]


def _fields(block: str) -> dict:
    return {k.strip(): v.strip() for k, v in
            (line.split("=", 1) for line in block.splitlines()
             if "=" in line and not line.lstrip().startswith(("#", "[")))}


def xts_vectors():
    """(name, key, data_unit_seq, pt, ct) from the NIST XTSVS files."""
    out = []
    for ks in ("128", "256"):
        text = (VECTORS / f"xts_aes{ks}_dataunitseqno.rsp").read_text()
        section = ""
        for b in _blocks(text):
            if b.strip().startswith("["):
                section = b.strip()[1:-1]
                continue
            d = _fields(b)
            if "COUNT" not in d:
                continue
            out.append((f"xts{ks}-{section}-{d['COUNT']}", bytes.fromhex(d["Key"]),
                        int(d["DataUnitSeqNumber"]), bytes.fromhex(d["PT"]),
                        bytes.fromhex(d["CT"])))
    return out


def chacha_vectors():
    """(name, key, iv, aad, pt, ct, tag, ok)."""
    out = []
    for b in _blocks((VECTORS / "chacha20poly1305_rfc7539.txt").read_text()):
        d = _fields(b)
        if "COUNT" not in d:
            continue
        out.append((f"chacha-{d['COUNT']}", bytes.fromhex(d["Key"]), bytes.fromhex(d["IV"]),
                    bytes.fromhex(d.get("AAD", "")), bytes.fromhex(d["Plaintext"]),
                    bytes.fromhex(d["Ciphertext"]), bytes.fromhex(d["Tag"]),
                    d.get("Result") != "CIPHERFINAL_ERROR"))
    return out


def gcm_vectors():
    """(name, key, iv, aad, pt, ct, tag)."""
    out = []
    text = (VECTORS / "gcm_aes_encrypt_extiv.rsp").read_text()
    for b in _blocks(text):
        d = _fields(b)
        if "Count" not in d:
            continue
        out.append((f"gcm-{len(d['Key']) * 4}-{len(out)}", bytes.fromhex(d["Key"]),
                    bytes.fromhex(d["IV"]), bytes.fromhex(d["AAD"]), bytes.fromhex(d["PT"]),
                    bytes.fromhex(d["CT"]), bytes.fromhex(d["Tag"])))
    return out
