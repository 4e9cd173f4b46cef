"""``dmkit keyring``: a whole CLI session, and no key byte in anything it prints or logs."""

from __future__ import annotations

import json
import logging
import os
import stat

import pytest
from click.testing import CliRunner

from dmkit.errors import DmkitError
from dmkit.keys import Blob, EncryptedKey, KeyStore, SecretBytes
from dmkit.keys import encrypted as enc
from dmkit.keys.cli import keyring, main

from ._util import assert_no_secret, seeded_rng


class Session:
    """Runs commands like the dmkit frontend and keeps everything they showed."""

    def __init__(self, store: str):
        self.store = store
        self.runner = CliRunner()
        self.shown: list[bytes] = []

    def __call__(self, *args: str, ok: bool = True, input: bytes | None = None):
        r = self.runner.invoke(keyring, ["--keyring", self.store, *args], input=input)
        self.shown += [r.stdout_bytes, r.stderr_bytes or b""]
        message = None
        if isinstance(r.exception, DmkitError):
            message = f"dmkit: {r.exception}"  # what the frontend prints
            self.shown.append(message.encode())
        elif r.exception is not None and not isinstance(r.exception, SystemExit):
            raise r.exception
        assert (r.exit_code == 0) == ok, (args, r.output, message)
        return r, message


@pytest.fixture
def session(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DMKIT_KEYRING", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    caplog.set_level(logging.DEBUG, logger="dmkit")
    return Session(str(tmp_path / "keys.json"))


def write_secret(path, data: bytes) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return str(path)


def test_session_prints_no_key_bytes(session, tmp_path, caplog):
    rng = seeded_rng(11)
    kmk, kmk2, wrong = rng(32), rng(64), rng(32)
    s = session
    s("add", "user", "kmk", "--key-file", write_secret(tmp_path / "kmk.bin", kmk))
    s("add", "user", "kmk2", "--key-file", "-", input=kmk2)
    s("new-encrypted", "ek", "--master", "user:kmk", "--length", "64")
    s("new-encrypted", "ek32", "--master", "user:kmk", "--length", "32", "--format", "enc32")
    s("new-encrypted", "0123456789abcdef", "--master", "user:kmk", "--length", "64",
      "--format", "ecryptfs")
    r, _ = s("pipe", "ek")
    blob_text = r.stdout
    assert not blob_text.endswith("\n")  # exactly what keyctl pipe prints
    blob = Blob.from_text(blob_text)
    assert (blob.format, blob.master_desc, blob.datalen) == ("default", "user:kmk", "64")

    # unlink and load it back: the same key, the same blob
    (tmp_path / "ek.blob").write_text(blob_text)
    s("unlink", "ek")
    s("load", "ek", "--blob-file", str(tmp_path / "ek.blob"))
    assert s("pipe", "ek")[0].stdout == blob_text

    # another master
    s("update", "ek", "--master", "user:kmk2")
    after = s("pipe", "ek")[0].stdout
    assert after.startswith("default user:kmk2 64 ") and after[-200:] != blob_text[-200:]

    r, _ = s("list")
    assert "encrypted" in r.stdout and "master user:kmk2" in r.stdout
    r, _ = s("list", "--json")
    listed = {(k["type"], k["description"]): k for k in json.loads(r.stdout)}
    assert listed[("encrypted", "ek32")]["format"] == "enc32"
    assert listed[("user", "kmk")]["length"] == 32

    # every refusal, with its one-line message
    msgs = {}
    msgs["user pipe"] = s("pipe", "kmk", ok=False)[1]
    msgs["logon add"] = s("add", "logon", "dmkit:vol", "--key-file",
                          write_secret(tmp_path / "logon.bin", rng(32)), ok=False)[1]
    msgs["short"] = s("new-encrypted", "x", "--master", "user:kmk", "--length", "19",
                      ok=False)[1]
    msgs["enc32 64"] = s("new-encrypted", "x", "--master", "user:kmk", "--length", "64",
                         "--format", "enc32", ok=False)[1]
    msgs["no master"] = s("new-encrypted", "x", "--master", "user:dmkit-test-absent",
                          "--length", "32", ok=False)[1]
    msgs["logon master"] = s("new-encrypted", "x", "--master", "logon:kmk", "--length", "32",
                             ok=False)[1]
    msgs["trusted master"] = s("new-encrypted", "x", "--master", "trusted:kmk", "--length",
                               "32", ok=False)[1]
    hx = blob_text.rsplit(" ", 1)[1]
    tampered = blob_text[:-len(hx)] + hx[:50] + ("0" if hx[50] != "0" else "1") + hx[51:]
    (tmp_path / "bad.blob").write_text(tampered)
    msgs["tampered"] = s("load", "t", "--blob-file", str(tmp_path / "bad.blob"), ok=False)[1]
    # a blob made with other master bytes under the name user:kmk
    key = EncryptedKey.new("w", "user:kmk", 32, rng=seeded_rng(3))
    (tmp_path / "wrong.blob").write_text(key.blob(lambda d: SecretBytes(wrong)).to_text())
    msgs["wrong master"] = s("load", "w", "--blob-file", str(tmp_path / "wrong.blob"),
                             ok=False)[1]
    msgs["in use"] = s("unlink", "kmk2", ok=False)[1]
    msgs["absent"] = s("pipe", "nothere", ok=False)[1]
    msgs["exists"] = s("add", "user", "kmk", "--key-file", str(tmp_path / "kmk.bin"),
                       ok=False)[1]
    assert msgs == {
        "user pipe": "dmkit: user key 'kmk': refusing to print key material; use --output FILE",
        "logon add": "dmkit: logon key 'dmkit:vol': logon keys never leave the keyring, so a "
                     "store file cannot hold them; use --kernel",
        "short": "dmkit: encrypted key: key length 19 is outside 20..4096",
        "enc32 64": "dmkit: encrypted key: the enc32 format needs a key length of 32 bytes, "
                    "not 64",
        "no master": msgs["no master"],  # from the store, or from the kernel keyring
        "logon master": "dmkit: encrypted key: master key 'logon:kmk' must be 'user:NAME' or "
                        "'trusted:NAME'",
        "trusted master": "dmkit: encrypted key 'x': master key 'trusted:kmk' is a trusted key: "
                          "trusted keys need a TPM, not supported",
        "tampered": "dmkit: encrypted key 't': HMAC check failed: wrong master key user:kmk or "
                    "an altered blob",
        "wrong master": "dmkit: encrypted key 'w': HMAC check failed: wrong master key user:kmk "
                        "or an altered blob",
        "in use": "dmkit: user key 'kmk2' is the master of encrypted key(s) 'ek'; they could "
                  "never be opened again (unlink them first, or use --force)",
        "absent": f"dmkit: key 'nothere' not found in {s.store}",
        "exists": f"dmkit: user key 'kmk' already exists in {s.store}; unlink it first",
    }
    assert "not found" in msgs["no master"] and "dmkit-test-absent" in msgs["no master"]
    assert all("\n" not in m for m in msgs.values())
    # click's own usage errors
    r, _ = s("new-encrypted", "x", "--master", "user:kmk", "--length", "32", "--format", "aes",
             ok=False)
    assert r.exit_code == 2 and "'aes' is not one of" in r.output

    # a user payload leaves only into a 0600 file
    s("pipe", "kmk", "--output", str(tmp_path / "out.bin"))
    assert (tmp_path / "out.bin").read_bytes() == kmk
    assert stat.S_IMODE(os.stat(tmp_path / "out.bin").st_mode) == 0o600
    s("unlink", "kmk2", "--force")

    # the secrets, as the keyring holds them now
    ring = KeyStore(s.store).load()
    ring.add("user", "kmk2", kmk2)
    secrets = {"master kmk": kmk, "master kmk2": kmk2, "wrong master": wrong}
    for t, d in [("encrypted", "ek"), ("encrypted", "ek32"), ("encrypted", "0123456789abcdef")]:
        secrets[f"plaintext of {d}"] = ring.material(t, d).reveal()
    secrets["derived enc key of kmk"] = enc.derive_key("ENC_KEY", kmk)
    secrets["derived auth key of kmk"] = enc.derive_key("AUTH_KEY", kmk)
    assert caplog.records, "the session logged nothing at all"
    assert_no_secret(b"\n".join(s.shown), secrets, "the CLI's output")
    assert_no_secret(caplog.text, secrets, "the logs")
    for rec in caplog.records:
        assert_no_secret(repr(rec.args), secrets, "log record arguments")
    # the store holds the masters (user payloads) but no encrypted key's plaintext
    raw = open(s.store, "rb").read()
    assert_no_secret(raw, {k: v for k, v in secrets.items() if k.startswith("plaintext")},
                     "the store file")


def test_main_prints_dmkit_prefix(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DMKIT_KEYRING", raising=False)
    store = str(tmp_path / "keys.json")
    assert main(["--keyring", store, "pipe", "nothere"]) == 1
    err = capsys.readouterr().err
    assert err == f"dmkit: key 'nothere' not found in {store}\n"


def test_store_defaults_to_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DMKIT_KEYRING", str(tmp_path / "env.json"))
    r = CliRunner().invoke(keyring, ["add", "user", "k", "--key-file", "-"], input=b"x" * 16)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "env.json").exists()


def test_kernel_and_keyring_exclusive(tmp_path):
    r = CliRunner().invoke(keyring, ["--keyring", str(tmp_path / "k"), "--kernel", "list"])
    assert r.exit_code == 2 and "exclusive" in r.output
