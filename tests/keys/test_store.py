"""The keyring store file: 0600, atomic, crash-safe, and never an encrypted key's plaintext."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import threading

import pytest

from dmkit.keys import (EncryptedKey, Keyring, KeyNotFoundError, KeyStore,
                        KeyStoreError)

from ._util import assert_no_secret, seeded_rng

MASTER = bytes(range(200, 232))


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def populate(store: KeyStore) -> bytes:
    """A master and an encrypted key in ``store``; returns the encrypted key's plaintext."""
    with store.transaction() as ring:
        ring.add("user", "kmk", MASTER)
        ring.new_encrypted("ek", "user:kmk", 64)
        return ring.material("encrypted", "ek").reveal()


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_file_mode_0600(tmp_path, umask):
    old = os.umask(umask)
    try:
        store = KeyStore(tmp_path / "sub" / "keys.json")
        populate(store)
    finally:
        os.umask(old)
    assert mode(store.path) == 0o600
    assert mode(store.path + ".lock") == 0o600
    assert mode(tmp_path / "sub") & 0o077 == 0


def test_roundtrip_and_no_plaintext(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    plaintext = populate(store)
    raw = open(store.path, "rb").read()
    doc = json.loads(raw)
    assert [e["type"] for e in doc["keys"]] == ["user", "encrypted"]
    assert doc["keys"][1]["blob"].startswith("default user:kmk 64 ")
    assert_no_secret(raw, {"encrypted key plaintext": plaintext}, "the store file")
    ring = store.load()
    assert ring.get(ring.search("encrypted", "ek")).sealed
    assert ring.material("encrypted", "ek") == plaintext
    assert ring.read(ring.search("user", "kmk")) == MASTER


def test_sealed_keys_are_kept_verbatim(tmp_path):
    """A key whose master is not around survives load and save untouched."""
    store = KeyStore(tmp_path / "keys.json")
    other = Keyring()
    other.add("user", "elsewhere", MASTER)
    blob = EncryptedKey.new("ek", "user:elsewhere", 32, rng=seeded_rng(1)).blob(other.master_key)
    with store.transaction() as ring:
        ring.add_key(EncryptedKey.from_blob("ek", blob.to_text()))
    with store.transaction() as ring:
        ring.add("user", "unrelated", b"u" * 16)
        with pytest.raises(KeyNotFoundError, match="master key user:elsewhere not found"):
            ring.material("encrypted", "ek")
    assert json.load(open(store.path))["keys"][0]["blob"] == blob.to_text()


def test_logon_keys_are_never_stored(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    populate(store)
    before = open(store.path, "rb").read()
    with pytest.raises(KeyStoreError, match="logon keys never leave the keyring"):
        with store.transaction() as ring:
            ring.add("logon", "dmkit:x", b"L" * 32)
    assert open(store.path, "rb").read() == before


def test_missing_master_stores_nothing(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    populate(store)
    before = open(store.path, "rb").read()
    with pytest.raises(KeyNotFoundError):
        with store.transaction() as ring:
            ring.new_encrypted("ek2", "user:nope", 32)
    assert open(store.path, "rb").read() == before


def test_lax_mode_refused(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    populate(store)
    os.chmod(store.path, 0o644)
    with pytest.raises(KeyStoreError, match="mode 0644 lets others at the keys"):
        store.load()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "magic", "version", "type"])
def test_damaged_store_refused_and_kept(tmp_path, damage):
    store = KeyStore(tmp_path / "keys.json")
    populate(store)
    raw = open(store.path, "rb").read()
    doc = json.loads(raw)
    bad = {
        "truncate": raw[: len(raw) // 2],
        "garbage": b"\xff\xfe" + raw,
        "magic": json.dumps({**doc, "magic": "x"}).encode(),
        "version": json.dumps({**doc, "version": 2}).encode(),
        "type": json.dumps({**doc, "keys": [{"type": "logon", "description": "a:b"}]}).encode(),
    }[damage]
    with open(store.path, "wb") as f:
        f.write(bad)
    with pytest.raises(KeyStoreError, match=f"keyring {store.path}: "):
        with store.transaction() as ring:
            ring.add("user", "new", b"n" * 8)
    assert open(store.path, "rb").read() == bad  # nothing already stored is overwritten


def test_failure_between_write_and_rename(tmp_path, monkeypatch):
    """rename fails after the temp file is written and synced: the old store stays."""
    store = KeyStore(tmp_path / "keys.json")
    populate(store)
    before = open(store.path, "rb").read()

    def broken_replace(src, dst):
        assert os.path.getsize(src) > 0  # written and synced before the rename
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("dmkit.keys.store.os.replace", broken_replace)
    with pytest.raises(KeyStoreError, match="cannot write: Input/output error"):
        with store.transaction() as ring:
            ring.add("user", "new", b"n" * 8)
    assert open(store.path, "rb").read() == before
    assert store.stale_temp_files() == []


def _crash_child(store_path: str, how: str) -> subprocess.CompletedProcess:
    """A process that dies (os._exit, no cleanup) in the middle of saving the store."""
    code = textwrap.dedent(f"""
        import os
        import dmkit.keys.store as st
        how = {how!r}
        if how == "before-rename":
            st.os.replace = lambda src, dst: os._exit(99)
        else:  # half of the data written, then the power goes
            real_write = os.write
            def write(fd, data):
                real_write(fd, bytes(data)[: len(data) // 2])
                os._exit(99)
            st.os.write = write
        with st.KeyStore({store_path!r}).transaction() as ring:
            ring.add("user", "added-by-crashing-process", b"c" * 16)
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)


@pytest.mark.parametrize("how", ["before-rename", "mid-write"])
def test_crash_mid_save(tmp_path, how):
    store = KeyStore(tmp_path / "keys.json")
    plaintext = populate(store)
    before = open(store.path, "rb").read()
    r = _crash_child(store.path, how)
    assert r.returncode == 99, r.stderr.decode()
    # the store is the old one, whole
    assert open(store.path, "rb").read() == before
    stale = store.stale_temp_files()
    assert len(stale) == 1 and mode(stale[0]) == 0o600
    tmp_raw = open(stale[0], "rb").read()
    if how == "mid-write":
        with pytest.raises(ValueError):
            json.loads(tmp_raw)  # a truncated temp file
    ring = store.load()  # the leftover is ignored
    assert ring.material("encrypted", "ek") == plaintext
    assert ring.find("user", "added-by-crashing-process") is None
    # the next write works and removes the leftover
    with store.transaction() as ring:
        ring.add("user", "after", b"a" * 8)
    assert store.stale_temp_files() == []
    assert store.load().find("user", "after") is not None


def test_truncated_temp_file_is_ignored(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    populate(store)
    before = open(store.path, "rb").read()
    leftover = tmp_path / ".keys.json.tmp-0123456789abcdef"
    leftover.write_bytes(before[:17])
    assert store.load().find("user", "kmk") is not None
    with store.transaction():
        pass
    assert not leftover.exists()


def test_concurrent_transactions_lose_nothing(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    errors = []

    def add(i: int):
        try:
            with KeyStore(store.path).transaction() as ring:
                ring.add("user", f"k{i}", bytes([i]) * 8)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(i.description for i in store.load().list_keys()) == [f"k{i}" for i in range(8)]


def test_missing_store_is_empty_and_reads_create_nothing(tmp_path):
    store = KeyStore(tmp_path / "nothere" / "keys.json")
    with store.transaction(write=False) as ring:
        assert len(ring) == 0
    assert not (tmp_path / "nothere").exists()

