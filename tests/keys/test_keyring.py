"""The in-process keyring and ``:<size>:<type>:<description>`` resolution."""

from __future__ import annotations

import errno

import pytest

from dmkit.keys import (EncryptedKey, KeyAccessError, KeyExistsError, KeyFormatError, Keyring,
                        KeyNotFoundError, KeyNotSupportedError, KeyReference, KeyRevokedError,
                        SecretBytes, is_key_reference, resolve_key_reference)
from dmkit.keys.types import LogonKey, UserKey

from ._util import seeded_rng

MASTER = bytes(range(100, 132))


@pytest.fixture
def ring() -> Keyring:
    r = Keyring(rng=seeded_rng(5))
    r.add("user", "kmk", MASTER)
    return r


def test_add_search_read(ring):
    s = ring.search("user", "kmk")
    assert ring.read(s) == MASTER
    with pytest.raises(KeyNotFoundError, match="user key 'nope' not found") as ei:
        ring.search("user", "nope")
    assert ei.value.errno == errno.ENOKEY
    with pytest.raises(KeyNotFoundError):
        ring.search("logon", "kmk")  # the type is part of the identity
    ring.add("logon", "kmk:x", b"L" * 32)
    assert {i.type for i in ring.list_keys()} == {"user", "logon"}


def test_logon_is_never_read(ring):
    s = ring.add("logon", "dmkit:vol", b"\x11" * 64)
    with pytest.raises(KeyAccessError, match="logon key 'dmkit:vol' cannot be read back") as ei:
        ring.read(s)
    assert ei.value.errno == errno.EOPNOTSUPP
    with pytest.raises(KeyAccessError):
        ring.get(s).read()
    # ... but a target gets it
    assert resolve_key_reference(":64:logon:dmkit:vol", ring) == b"\x11" * 64


def test_logon_description_rule():
    with pytest.raises(KeyFormatError, match="'prefix:name'"):
        LogonKey("novol", b"x")
    with pytest.raises(KeyFormatError, match="'prefix:name'"):
        LogonKey(":vol", b"x")


def test_user_payload_and_description_rules():
    with pytest.raises(KeyFormatError, match="payload is 0 bytes"):
        UserKey("k", b"")
    with pytest.raises(KeyFormatError, match="payload is 32768 bytes"):
        UserKey("k", b"x" * 32768)
    UserKey("k", b"x" * 32767)
    with pytest.raises(KeyFormatError, match="empty"):
        UserKey("", b"x")
    with pytest.raises(KeyFormatError, match="NUL"):
        UserKey("a\0b", b"x")
    with pytest.raises(KeyFormatError, match="longer than 4095"):
        UserKey("d" * 4096, b"x")


def test_existing_key(ring):
    with pytest.raises(KeyExistsError, match="user key 'kmk' already exists"):
        ring.add("user", "kmk", b"other")
    s = ring.search("user", "kmk")
    assert ring.add("user", "kmk", b"other", replace=True) == s
    assert ring.read(s) == b"other"


def test_encrypted_in_keyring(ring):
    s = ring.new_encrypted("ek", "user:kmk", 64)
    blob = ring.read(s).decode()
    assert blob.startswith("default user:kmk 64 ")
    data = ring.material("encrypted", "ek")
    assert len(data) == 64
    # load it elsewhere: the same key
    other = Keyring()
    other.add("user", "kmk", MASTER)
    other.load_encrypted("ek", blob)
    assert other.material("encrypted", "ek") == data
    # a missing master is named
    # as in the kernel, the master is needed when the key is read, not when it is made
    s2 = ring.new_encrypted("ek2", "user:nope", 32)
    with pytest.raises(KeyNotFoundError, match="master key user:nope not found"):
        ring.read(s2)


def test_master_from_fallback():
    """Masters are looked up here first, then in the fallback (the kernel keyring)."""
    outside = Keyring()
    outside.add("user", "kmk", MASTER)
    ring = Keyring(fallback=outside)
    s = ring.new_encrypted("ek", "user:kmk", 32)
    assert ring.read(s).decode().startswith("default user:kmk 32 ")
    assert resolve_key_reference(":32:user:kmk", ring) == MASTER


def test_update_to_new_master(ring):
    ring.add("user", "kmk2", b"\x07" * 16)
    s = ring.new_encrypted("ek", "user:kmk", 32)
    data = ring.material("encrypted", "ek")
    before = ring.read(s)
    ring.update(s, "update user:kmk2")
    after = ring.read(s)
    assert after.startswith(b"default user:kmk2 32 ") and after != before
    assert ring.material("encrypted", "ek") == data
    assert ring.dependents(ring.search("user", "kmk2")) == ["ek"]
    assert ring.dependents(ring.search("user", "kmk")) == []


def test_revoke_and_unlink(ring):
    s = ring.new_encrypted("ek", "user:kmk", 32)
    key = ring.get(s)
    ring.revoke(s)
    assert key._data.wiped  # revoke wipes the key bytes
    for call in (lambda: ring.read(s), lambda: ring.search("encrypted", "ek"),
                 lambda: ring.material("encrypted", "ek")):
        with pytest.raises(KeyRevokedError, match="revoked") as ei:
            call()
        assert ei.value.errno == errno.EKEYREVOKED
    assert [i.revoked for i in ring.list_keys()] == [False, True]
    ring.unlink(s)
    with pytest.raises(KeyNotFoundError):
        ring.search("encrypted", "ek")
    m = ring.search("user", "kmk")
    mk = ring.get(m)
    ring.unlink(m)
    assert mk._payload.wiped
    assert len(ring) == 0


def test_trusted_type_is_refused(ring):
    with pytest.raises(KeyNotSupportedError, match="trusted keys need a TPM, not supported") as ei:
        ring.add("trusted", "tk", "new 32")
    assert ei.value.errno == errno.EOPNOTSUPP
    with pytest.raises(KeyNotSupportedError, match="TPM"):
        ring.new_encrypted("ek", "trusted:tk", 32)
    with pytest.raises(KeyNotSupportedError, match="TPM"):
        resolve_key_reference(":32:trusted:tk", ring)
    with pytest.raises(KeyFormatError, match="not supported"):
        ring.add("asymmetric", "a", b"x")


def test_info_never_shows_bytes(ring):
    ring.new_encrypted("ek", "user:kmk", 32)
    text = repr(ring.list_keys()) + repr(list(ring))
    assert MASTER.hex() not in text
    assert ring.material("encrypted", "ek").reveal().hex() not in text


# --- key references ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,expect", [
    (":32:user:kmk", (32, "user", "kmk")),
    (":64:logon:cryptsetup:abc:def", (64, "logon", "cryptsetup:abc:def")),
    (":64:encrypted:dmkey", (64, "encrypted", "dmkey")),
])
def test_reference_parse(text, expect):
    ref = KeyReference.parse(text)
    assert (ref.key_size, ref.key_type, ref.description) == expect
    assert str(ref) == text
    assert is_key_reference(text) and not is_key_reference("00ff")


@pytest.mark.parametrize("text,match", [
    ("32:user:kmk", "must start with ':'"),
    (":x:user:kmk", "decimal number"),
    (":-1:user:kmk", "decimal number"),
    (":32", "decimal number"),
    (":32:user", "needs a type and a description"),
    (":32:user:", "needs a type and a description"),
    (":32::kmk", "needs a type and a description"),
    (":32:keyring:kmk", "unknown key type 'keyring'"),
    (":32:user:k mk", "whitespace"),
    (":0:user:kmk", "must not be 0"),
])
def test_reference_errors(text, match, ring):
    with pytest.raises(KeyFormatError, match=match):
        resolve_key_reference(text, ring)


def test_reference_size_is_checked(ring):
    assert resolve_key_reference(":32:user:kmk", ring) == MASTER
    with pytest.raises(KeyFormatError, match="the user key is 32 bytes, the reference says 64"):
        resolve_key_reference(":64:user:kmk", ring)
    ring.new_encrypted("ek", "user:kmk", 48)
    assert len(resolve_key_reference(":48:encrypted:ek", ring)) == 48
    with pytest.raises(KeyFormatError, match="encrypted key is 48 bytes"):
        resolve_key_reference(":32:encrypted:ek", ring)
    with pytest.raises(KeyNotFoundError, match="encrypted key 'nope' not found"):
        resolve_key_reference(":32:encrypted:nope", ring)


def test_reference_resolve_returns_wipeable(ring):
    m = KeyReference.parse(":32:user:kmk").resolve(ring)
    assert isinstance(m, SecretBytes) and m == MASTER
    m.wipe()
    assert ring.read(ring.search("user", "kmk")) == MASTER  # the keyring's copy is intact


def test_sealed_key_opened_once(ring):
    blob = EncryptedKey.new("ek", "user:kmk", 32, rng=seeded_rng(2)).blob(ring.master_key)
    ring.add_key(EncryptedKey.from_blob("ek", blob.to_text()))
    s = ring.search("encrypted", "ek")
    assert ring.get(s).sealed
    resolve_key_reference(":32:encrypted:ek", ring)
    assert not ring.get(s).sealed


# --- the kernel bridge's view of an unusable keyring ---------------------------------------------

@pytest.mark.parametrize("err,says", [
    (errno.ENOSYS, "the kernel has no keyring (built without CONFIG_KEYS)"),
    (errno.EPERM, "keyctl system calls are blocked here"),
])
def test_kernel_status_reasons(monkeypatch, err, says):
    from dmkit.keys import kernel

    class Blocked:
        nr_keyctl = 0

        def call(self, nr, *args):
            raise OSError(err, "x")

    monkeypatch.setattr(kernel, "_syscalls", lambda: Blocked())
    ok, why = kernel.kernel_keyring_status()
    assert not ok and says in why
