"""The real kernel keyring: it accepts dmkit's blobs, refuses tampered ones, and decrypts
exactly dmkit's plaintext.

These tests use keyctl(1) (keyutils) as the independent client and dmkit's own bridge.
They run in a dedicated keyring linked into the session keyring for the duration of the
module and then cleared and unlinked; every description carries a random tag.  They skip
only when the kernel keyring or its ``encrypted`` key type cannot exist here (no
CONFIG_KEYS, a seccomp filter that blocks the system calls, no CONFIG_ENCRYPTED_KEYS);
a missing keyctl is a failure: install keyutils.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass

import pytest
from click.testing import CliRunner

from dmkit.errors import DmkitError
from dmkit.keys import (Blob, EncryptedKey, KernelKeyring, KeyAccessError, KeyFormatError,
                        KeyNotSupportedError, KeyStore, SecretBytes, kernel_keyring_status,
                        resolve_key_reference)
from dmkit.keys import encrypted as enc
from dmkit.keys.cli import keyring as keyring_cli
from dmkit.keys.kernel import KEY_SPEC_SESSION_KEYRING

from ._util import assert_no_secret, seeded_rng

pytestmark = pytest.mark.interop


@dataclass
class Env:
    kr: KernelKeyring  # adds go to the test keyring
    ring: int
    tag: str
    keyctl_path: str

    def name(self, what: str) -> str:
        return f"dmkit-test-{self.tag}-{what}"

    def keyctl(self, *args: str, input: bytes | None = None, ok: bool = True
               ) -> subprocess.CompletedProcess:
        r = subprocess.run([self.keyctl_path, *args], input=input, capture_output=True,
                           timeout=30)
        if ok:
            assert r.returncode == 0, (args[:3], r.stderr.decode())
        return r

    def add_master(self, name: str, data: bytes) -> int:
        """A user key added with keyctl(1) itself."""
        out = self.keyctl("padd", "user", name, str(self.ring), input=data).stdout
        return int(out)


@pytest.fixture(scope="module")
def env():
    ok, why = kernel_keyring_status()
    if not ok:
        pytest.skip(f"the kernel keyring cannot be used here: {why}")
    path = shutil.which("keyctl")
    if path is None:
        pytest.fail("keyctl(1) is not installed; install keyutils (apt-get install -y keyutils)")
    session = KernelKeyring(KEY_SPEC_SESSION_KEYRING)
    tag = secrets.token_hex(4)
    ring = session.add("keyring", f"dmkit-test-{tag}", b"")
    try:
        try:
            probe = session.add("encrypted", f"dmkit-test-{tag}-probe",
                                f"new default user:dmkit-test-{tag}-none 32", ring)
        except KeyNotSupportedError as e:
            pytest.skip(f"the kernel has no 'encrypted' key type (CONFIG_ENCRYPTED_KEYS): {e}")
        session.unlink(probe, ring)
        yield Env(KernelKeyring(ring), ring, tag, path)
    finally:
        session.clear(ring)
        session.unlink(ring)


CASES = [  # (format, key length, master length); format None: 'load' without a format word
    ("default", 20, 32),
    ("default", 32, 8),
    ("default", 33, 23),
    ("default", 64, 32),
    ("default", 4096, 64),
    ("enc32", 32, 32),
    ("ecryptfs", 64, 32),
    (None, 32, 32),
]


@pytest.mark.parametrize("fmt,length,master_len", CASES,
                         ids=[f"{f}-{n}-m{m}" for f, n, m in CASES])
def test_kernel_loads_dmkit_blob(env, fmt, length, master_len):
    rng = seeded_rng(length * 1000 + master_len)
    case = f"{fmt}-{length}-{master_len}"
    m1, m2 = rng(master_len), rng(48)
    m1_name, m2_name = env.name(f"m1-{case}"), env.name(f"m2-{case}")
    env.add_master(m1_name, m1)
    env.kr.add("user", m2_name, m2)  # and one through dmkit's bridge
    masters = {f"user:{m1_name}": m1, f"user:{m2_name}": m2}

    def look(d: str) -> SecretBytes:
        return SecretBytes(masters[d])

    desc = secrets.token_hex(8) if fmt == "ecryptfs" else env.name(f"ek-{case}")
    key = EncryptedKey.new(desc, f"user:{m1_name}", length, format=fmt or "default", rng=rng)
    blob = enc.wrap(key.material(), master_key=m1, master_desc=key.master_desc, fmt=fmt,
                    datalen=key.datalen, iv=key.iv)

    serial = int(env.keyctl("add", "encrypted", desc, blob.load_payload(), str(env.ring)).stdout)
    # the kernel re-encrypts what it decrypted, with the same IV and master: identical
    # text means identical plaintext (for a format-less load, it is now a 'default' key)
    piped = env.keyctl("pipe", str(serial)).stdout.decode()
    assert piped == key.read(look).decode()

    # the proof that goes through another master: the kernel re-wraps, dmkit unwraps
    env.keyctl("update", str(serial), f"update user:{m2_name}")
    piped2 = env.keyctl("pipe", str(serial)).stdout.decode()
    assert piped2.startswith(f"{fmt or 'default'} user:{m2_name} {length} ")
    assert enc.unwrap(Blob.from_text(piped2), m2) == key.material()
    assert key.update(f"update user:{m2_name}").read(look).decode() == piped2

    # and dmkit's bridge reads it back the same way (blob from the kernel, master too)
    assert env.kr.material("encrypted", desc) == key.material()
    assert resolve_key_reference(f":{length}:encrypted:{desc}", env.kr) == \
        key.material().reveal()


@pytest.mark.parametrize("where", ["data", "hmac", "iv", "master", "datalen"])
def test_kernel_refuses_tampered_blob(env, where):
    rng = seeded_rng(sum(where.encode()))
    m1, m2 = rng(32), rng(32)
    n1, n2 = env.name(f"t1-{where}"), env.name(f"t2-{where}")
    env.add_master(n1, m1)
    env.add_master(n2, m2)
    key = EncryptedKey.new(env.name(f"te-{where}"), f"user:{n1}", 32, rng=rng)
    text = key.read(lambda d: SecretBytes(m1)).decode()
    fmt, master, datalen, hx = text.split(" ")
    if where == "master":
        bad = f"{fmt} user:{n2} {datalen} {hx}"
    elif where == "datalen":
        bad = f"{fmt} {master} 032 {hx}"
    else:
        pos = {"iv": 3, "data": 40, "hmac": len(hx) - 5}[where]
        hx = hx[:pos] + ("1" if hx[pos] == "0" else "0") + hx[pos + 1:]
        bad = f"{fmt} {master} {datalen} {hx}"
    # dmkit refuses it
    lookup = {f"user:{n1}": m1, f"user:{n2}": m2}
    with pytest.raises(DmkitError):
        EncryptedKey.instantiate("x", "load " + bad, lambda d: SecretBytes(lookup[d]))
    # the kernel refuses it
    r = env.keyctl("add", "encrypted", env.name(f"bad-{where}"), "load " + bad, str(env.ring),
                   ok=False)
    assert r.returncode != 0 and b"Invalid argument" in r.stderr
    with pytest.raises(KeyFormatError, match="refused by the kernel"):
        env.kr.add("encrypted", env.name(f"bad2-{where}"), "load " + bad)
    # ... and accepts the original (the refusal is about the change)
    env.keyctl("add", "encrypted", env.name(f"good-{where}"), "load " + text, str(env.ring))


@pytest.mark.parametrize("fmt,length", [("default", 64), ("enc32", 32), ("ecryptfs", 64)])
def test_kernel_made_key_unwraps(env, fmt, length):
    m = seeded_rng(length)(32)
    mname = env.name(f"km-{fmt}")
    env.add_master(mname, m)
    desc = secrets.token_hex(8) if fmt == "ecryptfs" else env.name(f"kek-{fmt}")
    serial = int(env.keyctl("add", "encrypted", desc, f"new {fmt} user:{mname} {length}",
                            str(env.ring)).stdout)
    piped = env.keyctl("pipe", str(serial)).stdout.decode()
    blob = Blob.from_text(piped)
    data = enc.unwrap(blob, m)
    assert len(data) == length
    again = enc.wrap(data, master_key=m, master_desc=blob.master_desc, fmt=blob.format,
                     datalen=blob.datalen, iv=blob.iv)
    assert again.to_text() == piped
    assert resolve_key_reference(f":{length}:encrypted:{desc}", env.kr) == data.reveal()
    with pytest.raises(KeyFormatError, match=f"is {length} bytes, the reference says 16"):
        resolve_key_reference(f":16:encrypted:{desc}", env.kr)


def test_logon_stays_in_the_kernel(env):
    desc = f"dmkit:{env.tag}-logon"
    serial = env.kr.add("logon", desc, b"\x5a" * 32)
    with pytest.raises(KeyAccessError):
        env.kr.read(serial)
    with pytest.raises(KeyAccessError, match="cannot be read from userspace"):
        resolve_key_reference(f":32:logon:{desc}", env.kr)
    r = env.keyctl("pipe", str(serial), ok=False)
    assert r.returncode != 0  # keyctl cannot either


def test_cli_with_kernel(env, tmp_path):
    """The CLI's --kernel mode, checked with keyctl(1)."""
    rng = seeded_rng(99)
    m, m2 = rng(32), rng(32)
    (tmp_path / "m.bin").write_bytes(m)
    (tmp_path / "m2.bin").write_bytes(m2)
    mname, m2name, ek = env.name("cli-m"), env.name("cli-m2"), env.name("cli-ek")
    shown: list[bytes] = []

    def run(*args, ok=True, input=None):
        r = CliRunner().invoke(keyring_cli, ["--kernel", "--kernel-keyring", str(env.ring),
                                             *args], input=input)
        shown.extend([r.stdout_bytes, r.stderr_bytes or b""])
        if isinstance(r.exception, DmkitError):
            shown.append(f"dmkit: {r.exception}".encode())
        elif r.exception is not None and not isinstance(r.exception, SystemExit):
            raise r.exception
        assert (r.exit_code == 0) == ok, (args, r.output, r.exception)
        return r

    run("add", "user", mname, "--key-file", str(tmp_path / "m.bin"))
    run("add", "user", m2name, "--key-file", "-", input=m2)
    assert env.keyctl("pipe", env.keyctl("search", str(env.ring), "user", mname)
                      .stdout.decode().strip()).stdout == m
    serial = int(run("new-encrypted", ek, "--master", f"user:{mname}", "--length", "64").stdout)
    kernel_blob = env.keyctl("pipe", str(serial)).stdout.decode()
    data = enc.unwrap(Blob.from_text(kernel_blob), m)
    assert run("pipe", ek).stdout == kernel_blob

    # load a dmkit blob through the CLI; the kernel's pipe is the same text
    other = EncryptedKey.new("o", f"user:{mname}", 32, format="enc32", rng=rng)
    (tmp_path / "o.blob").write_text(other.read(lambda d: SecretBytes(m)).decode())
    s2 = int(run("load", env.name("cli-o"), "--blob-file", str(tmp_path / "o.blob")).stdout)
    assert env.keyctl("pipe", str(s2)).stdout.decode() == (tmp_path / "o.blob").read_text()
    run("update", env.name("cli-o"), "--master", f"user:{m2name}")
    assert env.keyctl("pipe", str(s2)).stdout.decode().startswith(f"enc32 user:{m2name} 32 ")

    listed = run("list", "--json").stdout
    for name in (mname, ek, env.name("cli-o")):
        assert name in listed
    run("add", "logon", f"dmkit:{env.tag}-cli", "--key-file", str(tmp_path / "m.bin"))
    r = run("pipe", f"dmkit:{env.tag}-cli", ok=False)
    assert "logon key" in str(r.exception) and "cannot be read back" in str(r.exception)
    r = run("pipe", mname, ok=False)
    assert "refusing to print key material" in str(r.exception)
    run("unlink", ek)
    assert env.keyctl("search", str(env.ring), "encrypted", ek, ok=False).returncode != 0

    assert_no_secret(b"\n".join(shown), {"master": m, "master 2": m2, "key": data.reveal(),
                                         "enc32 key": other.material().reveal()}, "CLI output")


def test_push_store_to_kernel(env, tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    mname, ek = env.name("push-m"), env.name("push-ek")
    with store.transaction() as ring:
        ring.add("user", mname, seeded_rng(5)(32))
        ring.new_encrypted(ek, f"user:{mname}", 48)
        blob = ring.read(ring.search("encrypted", ek)).decode()
        data = ring.material("encrypted", ek)

    def run(*args):
        r = CliRunner().invoke(keyring_cli, ["--keyring", store.path,
                                             "--kernel-keyring", str(env.ring), *args])
        assert r.exit_code == 0, (r.output, r.exception)
        return r

    run("push", mname)
    serial = int(run("push", ek).stdout)
    assert env.keyctl("pipe", str(serial)).stdout.decode() == blob
    assert env.kr.material("encrypted", ek) == data
