"""Kernel-made vectors: every blob unwraps, verifies and re-wraps byte for byte.

Vectors: tests/vectors/keys/ (provenance in tests/vectors/README.md, section "keys").
"""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from dmkit.keys import (Blob, EncryptedKey, KeyAuthError, KeyFormatError, Keyring,
                        KeyNotFoundError, KeyNotSupportedError, resolve_key_reference)
from dmkit.keys import encrypted as enc

from ._util import VECTORS, load_vector

KERNEL = load_vector("encrypted-keys.json")
KERNEL_BLOBS = KERNEL["kernel_blobs"]
REFERENCE_LOADS = KERNEL["reference_loads"]
REFUSALS = KERNEL["refusals_and_oddities"]


def _id(e: dict) -> str:
    return e.get("case") or e["key_description"]


def test_vectors_present():
    assert len(KERNEL_BLOBS) == 11 and all(e["accepted"] for e in KERNEL_BLOBS)
    assert {e["parsed"]["format"] for e in KERNEL_BLOBS} == {"default", "ecryptfs", "enc32"}


@pytest.mark.parametrize("name", sorted(KERNEL["masters"]))
def test_derived_keys(name):
    m = KERNEL["masters"][name]
    master = bytes.fromhex(m["raw_hex"])
    assert enc.derive_key("ENC_KEY", master).hex() == m["ref_enc_key_hex"]
    assert enc.derive_key("AUTH_KEY", master).hex() == m["ref_auth_key_hex"]


@pytest.mark.parametrize("e", KERNEL_BLOBS, ids=_id)
def test_kernel_blob_unwraps_and_rewraps(e, masters):
    master = masters[e["master"]]
    blob = Blob.from_text(e["blob"])
    p = e["parsed"]
    assert (blob.format, blob.master_desc, blob.datalen) == (p["format"], p["master_desc"],
                                                             p["datalen"])
    assert blob.iv.hex() == p["iv_hex"]
    assert blob.encrypted_data.hex() == p["ciphertext_hex"]
    assert blob.hmac.hex() == p["hmac_hex"]
    # the HMAC, computed independently of unwrap()
    auth_key = bytes.fromhex(e["ref_auth_key_hex"])
    expect = hmac.new(auth_key, blob.hmac_input(), hashlib.sha256).digest()
    assert expect == blob.hmac

    plaintext = enc.unwrap(blob, master)
    assert plaintext == bytes.fromhex(e["ref_plaintext_hex"])

    again = enc.wrap(plaintext, master_key=master, master_desc=blob.master_desc,
                     fmt=blob.format, datalen=blob.datalen, iv=blob.iv)
    assert again.to_text() == e["blob"]  # byte for byte, as keyctl pipe printed it


@pytest.mark.parametrize("e", KERNEL_BLOBS, ids=_id)
def test_kernel_blob_as_key(e, masters, lookup):
    """Through the key type: load, read back (keyctl pipe), update to another master."""
    key = EncryptedKey.instantiate(e["key_description"], "load " + e["blob"], lookup)
    assert key.format == e["parsed"]["format"]
    assert key.read(lookup).decode() == e["blob"]
    assert key.material() == bytes.fromhex(e["ref_plaintext_hex"])
    x = e["update_crosscheck"]
    updated = key.update(f"update {x['updated_to']}")
    assert updated.read(lookup).decode() == x["blob_after_update"]


def test_kernel_update(lookup):
    u = KERNEL["kernel_update"]
    key = EncryptedKey.instantiate("ek_update", "load " + u["blob_before"], lookup)
    after = key.update("update user:kmk64")
    assert after.read(lookup).decode() == u["blob_after"]
    # the kernel refused to change the master's type; so do we
    with pytest.raises(KeyFormatError, match="type"):
        key.update("update trusted:kmk")


@pytest.mark.parametrize("e", REFERENCE_LOADS, ids=_id)
def test_reference_loads(e, lookup):
    """Blobs made outside the kernel, accepted or refused by it: dmkit agrees on each."""
    if e["accepted"]:
        key = EncryptedKey.instantiate(e["key_description"], e["payload"], lookup)
        assert key.material() == bytes.fromhex(e["plaintext_hex"])
        assert key.read(lookup).decode() == e["kernel_pipe"]
        x = e["update_crosscheck"]
        assert key.update(f"update {x['updated_to']}").read(lookup).decode() == \
            x["blob_after_update"]
    else:
        with pytest.raises((KeyAuthError, KeyFormatError)):
            EncryptedKey.instantiate(e["key_description"], e["payload"], lookup)


@pytest.mark.parametrize("e", REFUSALS, ids=_id)
def test_refusals(e, lookup):
    """What the kernel refused at add_key time, dmkit refuses; see the trusted note."""
    desc, payload = e["key_description"], e["payload"]
    if e["accepted"]:
        if "trusted:" in payload:
            # the kernel accepts 'new' with a trusted master (and fails every read later);
            # dmkit cannot ever use one, and says so at once
            with pytest.raises(KeyNotSupportedError, match="TPM"):
                EncryptedKey.instantiate(desc, payload, lookup)
        else:
            # a missing master only matters when the key is read, as in the kernel
            key = EncryptedKey.instantiate(desc, payload, lookup)
            with pytest.raises(KeyNotFoundError, match="no-such-key"):
                key.read(lookup)
        return
    with pytest.raises(KeyFormatError):
        EncryptedKey.instantiate(desc, payload, lookup)


def test_dmcrypt_image_key():
    """The kernel's encrypted key of a dm-crypt image: resolved from the table's reference,
    it decrypts the image's sectors to the known pattern."""
    v = load_vector("dmcrypt-enckey.json")
    assert (VECTORS / "dmcrypt-enckey.blob").read_text() == v["blob"]
    master = (VECTORS / "dmcrypt-enckey.kmk.bin").read_bytes()
    assert master.hex() == v["master_key_hex"]
    ring = Keyring()
    ring.add("user", "kmk", master)
    ring.load_encrypted("dmkey_s1k1", v["blob"])
    ref = v["dm_table"].split()[5]
    assert ref == ":64:encrypted:dmkey_s1k1"
    key = resolve_key_reference(ref, ring)
    assert key.hex() == v["volume_key_hex"]
    for sector, ct_hex in v["ciphertext_sectors"].items():
        s = int(sector)
        d = Cipher(algorithms.AES(key), modes.XTS(s.to_bytes(16, "little"))).decryptor()
        plain = d.update(bytes.fromhex(ct_hex)) + d.finalize()
        assert plain == hashlib.sha256(b"dmkit-fixture:%d" % s).digest() * 16
