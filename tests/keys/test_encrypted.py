"""The encrypted key type: grammar, length rules, and clear errors for each bad input."""

from __future__ import annotations

import pickle

import pytest

from dmkit.errors import DmkitError, FormatError, IntegrityError
from dmkit.keys import (Blob, EncryptedKey, KeyAuthError, KeyFormatError, KeyNotSupportedError,
                        SecretBytes)
from dmkit.keys import encrypted as enc

from ._util import seeded_rng

MASTER = bytes(range(1, 33))
OTHER = bytes(range(2, 34))


def look(master_desc: str) -> SecretBytes:
    return SecretBytes({"user:m": MASTER, "user:m2": OTHER}[master_desc])


def make(fmt="default", n=32, desc="k", seed=1) -> EncryptedKey:
    if fmt == "ecryptfs":
        desc = "0123456789abcdef"
    return EncryptedKey.new(desc, "user:m", n, format=fmt, rng=seeded_rng(seed))


@pytest.mark.parametrize("fmt,n", [("default", 20), ("default", 33), ("default", 4096),
                                   ("enc32", 32), ("ecryptfs", 64)])
def test_roundtrip(fmt, n):
    key = make(fmt, n)
    text = key.read(look).decode()
    assert text.startswith(f"{fmt} user:m {n} ")
    hexpart = text.rsplit(" ", 1)[1]
    assert hexpart == hexpart.lower()
    assert len(hexpart) == 2 * (16 + 1 + enc.encrypted_datalen(n) + 32)
    assert hexpart[32:34] == "00"
    again = EncryptedKey.instantiate(key.description, "load " + text, look)
    assert again.material() == key.material()
    assert again.read(look).decode() == text
    assert Blob.from_text(text).to_text() == text
    assert Blob.from_text(text + "\n").to_text() == text


def test_new_is_deterministic_with_injected_rng():
    assert make(seed=7).read(look) == make(seed=7).read(look)
    assert make(seed=7).read(look) != make(seed=8).read(look)


def test_wrong_master():
    text = make().read(look).decode()
    with pytest.raises(KeyAuthError, match="HMAC check failed: wrong master key user:m") as ei:
        EncryptedKey.instantiate("k", "load " + text, lambda d: SecretBytes(OTHER))
    assert isinstance(ei.value, IntegrityError) and isinstance(ei.value, DmkitError)


@pytest.mark.parametrize("where", ["format", "master", "datalen", "iv", "gap", "data", "hmac"])
def test_tampered_blob(where):
    text = make(n=33).read(look).decode()
    fmt, master, datalen, hx = text.split(" ")
    flip = {"0": "1"}.get
    if where == "format":
        bad = f"enc32 {master} {datalen} {hx}"  # enc32 needs 32: refused before the HMAC
        err = KeyFormatError
    elif where == "master":
        bad = f"{fmt} user:m2 {datalen} {hx}"
        err = KeyAuthError
    elif where == "datalen":
        bad = f"{fmt} {master} 034 {hx}"  # same length in blocks, different text
        err = KeyAuthError
    else:
        pos = {"iv": 5, "gap": 33, "data": 40, "hmac": len(hx) - 3}[where]
        c = hx[pos]
        hx2 = hx[:pos] + (flip(c) or "0") + hx[pos + 1:]
        bad = f"{fmt} {master} {datalen} {hx2}"
        err = KeyAuthError
    if where == "gap":  # the kernel skips the gap byte: not covered, not an error
        assert EncryptedKey.instantiate("k", "load " + bad, look).read(look).decode() == text
        return
    with pytest.raises(err):
        EncryptedKey.instantiate("k", "load " + bad, look)


@pytest.mark.parametrize("payload,match", [
    ("new default user:m 19", "outside 20..4096"),
    ("new default user:m 4097", "outside 20..4096"),
    ("new default user:m -32", "outside 20..4096"),
    ("new default user:m 3x", "not a decimal number"),
    ("new default user:m 0x20", "not a decimal number"),
    ("new default user:m ", "not a decimal number"),
    ("new enc32 user:m 64", "enc32 format needs a key length of 32"),
    ("new ecryptfs user:m 32", "ecryptfs format needs a key length of 64"),
    ("new default user:m", "key length is missing"),
])
def test_wrong_length(payload, match):
    with pytest.raises(KeyFormatError, match=match):
        EncryptedKey.instantiate("0123456789abcdef", payload, look)


@pytest.mark.parametrize("payload,match", [
    ("new aes user:m 32", "'aes' is neither a format"),
    ("new Default user:m 32", "'Default' is neither a format"),
    ("new  default user:m 32", "'' is neither a format"),  # two spaces: an empty token
    ("new logon:m 32", "must be 'user:NAME' or 'trusted:NAME'"),
    ("new user: 32", "has no name"),
    ("create default user:m 32", "unknown command 'create'"),
    ("update user:m2", "not a new one"),
    ("new", "missing parameters"),
    ("load default user:m 32", "hex blob is missing"),
])
def test_unknown_format_and_grammar(payload, match):
    with pytest.raises(KeyFormatError, match=match):
        EncryptedKey.instantiate("k", payload, look)


def test_format_constructor_rejects_unknown_format():
    with pytest.raises(KeyFormatError, match="unknown format 'aes'"):
        EncryptedKey.new("k", "user:m", 32, format="aes")


def test_ecryptfs_description_rule():
    for desc, match in [("0123456789abcde", "16 hexadecimal characters long"),
                        ("0123456789abcdeg", "only hexadecimal")]:
        with pytest.raises(KeyFormatError, match=match):
            EncryptedKey.new(desc, "user:m", 64, format="ecryptfs")
    EncryptedKey.new("0123456789ABCDEF", "user:m", 64, format="ecryptfs")


def test_kernel_quirks():
    key = make(n=32)
    _, master, _, hx = key.read(look).decode().split(" ")
    # extra tokens after the hex blob are ignored, upper-case hex is read
    k2 = EncryptedKey.instantiate("k", f"load default {master} 32 {hx.upper()} trailing", look)
    assert k2.material() == key.material()
    # tab separates tokens like a space
    k3 = EncryptedKey.instantiate("k", f"load\tdefault\t{master}\t32\t{hx}", look)
    assert k3.material() == key.material()
    # "+32" and "032" are the length 32; the text is kept and authenticated as written
    for text in ("032", "+32"):
        k = EncryptedKey.new("k", "user:m", 32, rng=seeded_rng(3))
        blob = enc.wrap(k.material(), master_key=MASTER, master_desc="user:m", fmt="default",
                        datalen=text, iv=k.iv)
        loaded = EncryptedKey.instantiate("k", blob.load_payload(), look)
        assert loaded.datalen == text
        assert loaded.read(look).decode() == blob.to_text()
    # a payload is a C string: what follows a NUL is not seen
    k4 = EncryptedKey.instantiate("k", b"new default user:m 32\0junk", look, rng=seeded_rng(1))
    assert k4.decrypted_datalen == 32


def test_load_without_format():
    """Old blobs: HMAC from master_desc on; the key is 'default' afterwards."""
    key = make(n=32)
    blob = enc.wrap(key.material(), master_key=MASTER, master_desc="user:m", fmt=None,
                    datalen="32", iv=key.iv)
    assert blob.load_payload().startswith("load user:m 32 ")
    loaded = EncryptedKey.instantiate("k", blob.load_payload(), look)
    assert loaded.format == "default"
    assert loaded.read(look) == key.read(look)
    # the same bytes with a format word do not verify (the HMAC did not cover it)
    with pytest.raises(KeyAuthError):
        EncryptedKey.instantiate("k", "load default " + blob.load_payload()[5:], look)
    with pytest.raises(KeyFormatError, match="no keyctl pipe form"):
        blob.to_text()


@pytest.mark.parametrize("bad,match", [("zz", "not a hex digit"), ("0g", "not a hex digit"),
                                       ("0 ", "hex blob is 41 characters")])
def test_non_hex_blob(bad, match):
    text = make().read(look).decode()
    head, hx = text.rsplit(" ", 1)
    with pytest.raises(KeyFormatError, match=match):
        EncryptedKey.instantiate("k", f"load {head} {hx[:40]}{bad}{hx[42:]}", look)


def test_user_provided_data_is_off_by_default():
    data = "00" * 32
    with pytest.raises(KeyFormatError, match="CONFIG_USER_DECRYPTED_DATA"):
        EncryptedKey.instantiate("k", f"new default user:m 32 {data}", look)
    key = EncryptedKey.instantiate("k", f"new default user:m 32 {data}", look,
                                   allow_user_decrypted_data=True)
    assert key.material() == bytes(32)
    with pytest.raises(KeyFormatError, match="66 hex characters, key length 32 needs 64") as ei:
        EncryptedKey.instantiate("k", f"new default user:m 32 {data}00", look,
                                 allow_user_decrypted_data=True)
    assert data not in str(ei.value)


def test_trusted_needs_a_tpm():
    for payload in ("new default trusted:tk 32", "load default trusted:tk 32 " + "0" * 162):
        with pytest.raises(KeyNotSupportedError, match="need a TPM, not supported"):
            EncryptedKey.instantiate("k", payload, look)
    with pytest.raises(KeyFormatError, match="not its type"):
        make().update("update trusted:tk")
    with pytest.raises(KeyFormatError, match="only 'update user:NAME'"):
        make().update("new default user:m 32")


def test_update_keeps_data_and_iv():
    key = make()
    up = key.update("update user:m2")
    assert up.material() == key.material() and up.iv == key.iv
    assert up.master_desc == "user:m2"
    assert up.read(look) != key.read(look)
    # the kernel lets the new master be missing until the next read
    gone = key.update("update user:nothere")
    with pytest.raises(KeyError):
        gone.read(look)


def test_sealed_key():
    text = make().read(look).decode()
    sealed = EncryptedKey.from_blob("k", text)
    assert sealed.sealed
    assert sealed.material(look) == make().material()
    with pytest.raises(DmkitError, match="sealed"):
        sealed.material()


def test_payload_size_limits():
    with pytest.raises(KeyFormatError, match="payload is 0 bytes"):
        EncryptedKey.instantiate("k", "", look)
    with pytest.raises(KeyFormatError, match="payload is 32768 bytes"):
        EncryptedKey.instantiate("k", "n" * 32768, look)


def test_errors_are_formaterrors_and_valueerrors():
    with pytest.raises(FormatError):
        enc.parse_datalen("x")
    with pytest.raises(ValueError):
        enc.parse_datalen("x")


def test_secret_bytes_hygiene():
    s = SecretBytes(b"\x01" * 32)
    assert "01" not in repr(s) and "01" not in str(s) and "01" not in f"{s}"
    assert s == b"\x01" * 32 and s != b"\x02" * 32
    with pytest.raises(TypeError):
        hash(s)
    with pytest.raises(TypeError):
        pickle.dumps(s)
    s.wipe()
    assert s.wiped and repr(s) == "<SecretBytes wiped>"
    with pytest.raises(ValueError):
        s.reveal()


def test_key_repr_shows_no_bytes():
    key = make()
    assert repr(key) == "<EncryptedKey 'k'>"
    assert "abab" not in repr(enc.parse_payload("new default user:m 32 " + "ab" * 32))
