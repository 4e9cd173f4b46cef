"""Round trips with the real cryptsetup on image files (no device-mapper needed).

cryptsetup formats, dmkit opens (and the volume keys agree with ``luksDump
--dump-volume-key``); dmkit formats, cryptsetup dumps the same text and opens it with
``--test-passphrase``; key slots added, changed and killed by either are used by the
other; header backups of either are restored by the other; detached headers; tokens.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

import dmkit.luks as luks
from dmkit.block import FileDevice
from dmkit.luks import NoKeyError, Pbkdf, load

from ._util import FAST, FAST_ARGON2I, FAST_ARGON2ID, seeded_rng

pytestmark = pytest.mark.interop

MiB = 1 << 20
FAST_ARGS = {
    "pbkdf2": ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"],
    "argon2id": ["--pbkdf", "argon2id", "--pbkdf-memory", "64", "--pbkdf-force-iterations", "4",
                 "--pbkdf-parallel", "1"],
    "argon2i": ["--pbkdf", "argon2i", "--pbkdf-memory", "64", "--pbkdf-force-iterations", "4",
                "--pbkdf-parallel", "1"],
}
PBKDF = {"pbkdf2": FAST, "argon2id": FAST_ARGON2ID, "argon2i": FAST_ARGON2I}


@pytest.fixture(scope="module")
def cryptsetup():
    if not sys.platform.startswith("linux"):
        pytest.skip(f"cryptsetup exists only on Linux (this is {sys.platform})")
    path = shutil.which("cryptsetup") or shutil.which("cryptsetup", path="/sbin:/usr/sbin")
    if path is None:
        pytest.fail("cryptsetup is not installed; install cryptsetup-bin "
                    "(apt-get install -y cryptsetup-bin)")
    return path


class Tool:
    def __init__(self, path: str, tmp):
        self.path = path
        self.tmp = tmp
        self.n = 0

    def keyfile(self, passphrase: str) -> str:
        self.n += 1
        p = self.tmp / f"key{self.n}"
        p.write_bytes(passphrase.encode())
        return str(p)

    def run(self, *args, ok: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([self.path, "--batch-mode", *map(str, args)], capture_output=True,
                           text=True, timeout=120)
        if ok:
            assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r

    def test_passphrase(self, image, passphrase: str, *extra) -> int:
        return self.run("open", "--test-passphrase", "--key-file", self.keyfile(passphrase),
                        *extra, image, ok=False).returncode

    def volume_key(self, image, passphrase: str, *extra) -> bytes:
        out = self.tmp / f"vk{self.n}"
        if out.exists():
            out.unlink()
        self.run("luksDump", "--dump-volume-key", "--key-file", self.keyfile(passphrase),
                 "--volume-key-file", out, *extra, image)
        return out.read_bytes()

    def dump(self, image, *extra) -> str:
        return self.run("luksDump", *extra, image).stdout


@pytest.fixture
def tool(cryptsetup, tmp_path):
    return Tool(cryptsetup, tmp_path)


def blank(tmp_path, name="img", size=8 * MiB):
    p = tmp_path / name
    with open(p, "wb") as f:
        f.truncate(size)
    return p


# -- cryptsetup formats, dmkit opens ----------------------------------------------------------

CS_FORMATS = [
    ("luks2", "pbkdf2", ["--cipher", "aes-xts-plain64", "--key-size", "512"]),
    ("luks2", "argon2id", ["--cipher", "aes-xts-plain64", "--key-size", "256"]),
    ("luks2", "argon2i", ["--cipher", "aes-cbc-essiv:sha256", "--key-size", "256"]),
    ("luks2", "pbkdf2", ["--cipher", "aes-xts-plain64", "--hash", "sha512",
                         "--sector-size", "4096"]),
    ("luks2", "pbkdf2", ["--integrity", "hmac-sha256", "--integrity-no-wipe"]),
    ("luks2", "pbkdf2", ["--cipher", "aes-gcm-random", "--integrity", "aead",
                         "--integrity-no-wipe"]),
    ("luks1", "pbkdf2", ["--cipher", "aes-xts-plain64", "--key-size", "512"]),
    ("luks1", "pbkdf2", ["--cipher", "aes-cbc-essiv:sha256", "--key-size", "256",
                         "--hash", "sha1"]),
]


@pytest.mark.parametrize("kind,kdf,args", CS_FORMATS,
                         ids=[f"{k}-{d}-{'-'.join(a[1::2])}" for k, d, a in CS_FORMATS])
def test_cryptsetup_formats_dmkit_opens(tool, tmp_path, kind, kdf, args):
    img = blank(tmp_path)
    extra = ["--luks2-keyslots-size", "1m"] if kind == "luks2" else []
    r = tool.run("luksFormat", "--type", kind, *FAST_ARGS[kdf], *extra, *args,
                 "--key-file", tool.keyfile("pw one"), img, ok=False)
    if r.returncode and "--integrity" in args and (
            "device-mapper" in r.stderr or "is not available" in r.stderr):
        pytest.skip("cryptsetup formats integrity only through the kernel (device-mapper and "
                    f"AF_ALG), which this machine lacks: {r.stderr.strip().splitlines()[-1]} "
                    "(the kernel-made integrity headers in tests/vectors/luks cover this)")
    assert r.returncode == 0, r.stderr
    vk = tool.volume_key(img, "pw one")
    with luks.unlock(img, "pw one") as opened:
        assert opened.volume_key.reveal() == vk
    with pytest.raises(NoKeyError):
        luks.unlock(img, "pw two")
    name = str(img)
    assert luks.dump(img, name=name) == tool.dump(img)
    if kind == "luks2":
        assert luks.dump_json(img) == tool.dump(img, "--dump-json-metadata")


# -- dmkit formats, cryptsetup opens -----------------------------------------------------------

DM_FORMATS = [
    dict(type="luks2", pbkdf=FAST),
    dict(type="luks2", pbkdf=FAST_ARGON2ID),
    dict(type="luks2", pbkdf=FAST_ARGON2I, cipher="aes-cbc-essiv:sha256"),
    dict(type="luks2", pbkdf=FAST, integrity="hmac-sha256"),
    dict(type="luks2", pbkdf=FAST, integrity="hmac-sha512"),
    dict(type="luks2", pbkdf=FAST, cipher="aes-gcm-random", integrity="aead"),
    dict(type="luks2", pbkdf=FAST, cipher="chacha20-random", integrity="poly1305"),
    dict(type="luks2", pbkdf=FAST, sector_size=4096, label="lbl", subsystem="sub"),
    dict(type="luks2", pbkdf=Pbkdf(type="pbkdf2", hash="sha512", iterations=1000),
         metadata_size=65536),
    dict(type="luks1", pbkdf=FAST),
    dict(type="luks1", pbkdf=FAST, cipher="aes-cbc-essiv:sha256", hash="sha1"),
]


def _ids(kw):
    return "-".join(str(v if not isinstance(v, Pbkdf) else v.type) for v in kw.values())


@pytest.mark.parametrize("kw", DM_FORMATS, ids=[_ids(k) for k in DM_FORMATS])
def test_dmkit_formats_cryptsetup_opens(tool, tmp_path, kw):
    img = blank(tmp_path)
    kw = dict(kw)
    if kw["type"] == "luks2":
        kw.setdefault("keyslots_size", 2 * MiB)
    opened = luks.format(img, "pw one", rng=seeded_rng(5), **kw)
    assert tool.test_passphrase(img, "pw one") == 0
    assert tool.test_passphrase(img, "pw two") == 2
    assert tool.volume_key(img, "pw one") == opened.volume_key.reveal()
    assert tool.dump(img) == luks.dump(img, name=str(img))
    if kw["type"] == "luks2":
        assert tool.dump(img, "--dump-json-metadata") == luks.dump_json(img)
        assert tool.run("repair", img).returncode == 0  # nothing for cryptsetup to mend
        assert tool.dump(img) == luks.dump(img)


# -- key slots both ways -------------------------------------------------------------------------

@pytest.mark.parametrize("kind,kdf", [("luks1", "pbkdf2"), ("luks2", "pbkdf2"),
                                      ("luks2", "argon2id"), ("luks2", "argon2i")])
def test_key_slots_both_ways(tool, tmp_path, kind, kdf):
    img = blank(tmp_path)
    extra = ["--luks2-keyslots-size", "2m"] if kind == "luks2" else []
    tool.run("luksFormat", "--type", kind, *FAST_ARGS[kdf], *extra,
             "--key-file", tool.keyfile("first"), img)
    vk = tool.volume_key(img, "first")
    # dmkit adds a slot to cryptsetup's volume; cryptsetup uses it (by number too)
    with FileDevice(img) as dev:
        slot = load(dev).add_key("first", "second", pbkdf=PBKDF[kdf])
    assert slot == 1
    assert tool.test_passphrase(img, "second") == 0
    assert tool.test_passphrase(img, "second", "--key-slot", "1") == 0
    assert tool.test_passphrase(img, "second", "--key-slot", "0") != 0
    # cryptsetup adds a slot; dmkit opens with it
    tool.run("luksAddKey", *FAST_ARGS[kdf], "--key-file", tool.keyfile("second"), img,
             tool.keyfile("third"))
    with luks.unlock(img, "third") as opened:
        assert opened.keyslot == 2 and opened.volume_key.reveal() == vk
    # dmkit changes the key of slot 0; cryptsetup sees the change
    with FileDevice(img) as dev:
        vol = load(dev)
        new_slot = vol.change_key("first", "fourth", pbkdf=PBKDF[kdf])
    assert tool.test_passphrase(img, "fourth") == 0
    assert tool.test_passphrase(img, "first") == 2
    # cryptsetup changes dmkit's key; dmkit follows
    tool.run("luksChangeKey", *FAST_ARGS[kdf], "--key-file", tool.keyfile("fourth"), img,
             tool.keyfile("fifth"))
    assert luks.unlock(img, "fifth").volume_key.reveal() == vk
    with pytest.raises(NoKeyError):
        luks.unlock(img, "fourth")
    # kills both ways
    tool.run("luksKillSlot", img, "2")
    with pytest.raises(NoKeyError):
        luks.unlock(img, "third")
    with FileDevice(img) as dev:
        load(dev).remove_key("second")
    assert tool.test_passphrase(img, "second") == 2
    assert tool.test_passphrase(img, "fifth") == 0
    assert tool.dump(img) == luks.dump(img, name=str(img))
    if kind == "luks2":
        assert new_slot == 0
        assert "Keyslots:\n  0: luks2\n" in tool.dump(img)


# -- header backup and restore -----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["luks1", "luks2"])
def test_header_backup_restore_both_ways(tool, tmp_path, kind):
    img = blank(tmp_path)
    kw = dict(keyslots_size=MiB) if kind == "luks2" else {}
    opened = luks.format(img, "pw", type=kind, pbkdf=FAST, rng=seeded_rng(3), **kw)
    head = img.read_bytes()[:4 * MiB]
    # dmkit's backup, cryptsetup's restore
    ours = tmp_path / "ours.bak"
    luks.header_backup(img, ours)
    theirs = tmp_path / "theirs.bak"
    tool.run("luksHeaderBackup", "--header-backup-file", theirs, img)
    assert ours.read_bytes() == theirs.read_bytes()
    with open(img, "r+b") as f:
        f.write(bytes(2 * MiB))
    tool.run("luksHeaderRestore", "--header-backup-file", ours, img)
    assert tool.test_passphrase(img, "pw") == 0
    # cryptsetup's backup, dmkit's restore
    with open(img, "r+b") as f:
        f.write(bytes(2 * MiB))
    luks.header_restore(img, theirs)
    assert luks.unlock(img, "pw").volume_key == opened.volume_key
    assert img.read_bytes()[:4 * MiB][:len(theirs.read_bytes())] == \
        head[:len(theirs.read_bytes())]


# -- detached headers ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["luks1", "luks2"])
def test_detached_headers_both_ways(tool, tmp_path, kind):
    data = blank(tmp_path, "data", 2 * MiB)
    hdr = tmp_path / "hdr"
    kw = dict(keyslots_size=256 << 10) if kind == "luks2" else {}
    opened = luks.format(data, "pw", type=kind, header=hdr, pbkdf=FAST, **kw)
    assert tool.test_passphrase(data, "pw", "--header", hdr) == 0
    assert tool.volume_key(data, "pw", "--header", hdr) == opened.volume_key.reveal()
    data2 = blank(tmp_path, "data2", 2 * MiB)
    hdr2 = blank(tmp_path, "hdr2", 4 * MiB)
    extra = ["--luks2-keyslots-size", "1m"] if kind == "luks2" else []
    tool.run("luksFormat", "--type", kind, *FAST_ARGS["pbkdf2"], *extra, "--header", hdr2,
             "--key-file", tool.keyfile("pw2"), data2)
    vk = tool.volume_key(data2, "pw2", "--header", hdr2)
    with luks.unlock(data2, "pw2", header=hdr2) as o:
        assert o.volume_key.reveal() == vk and o.segment.offset_sectors == 0


# -- tokens and labels written by cryptsetup -----------------------------------------------------

def test_cryptsetup_token_and_label(tool, tmp_path):
    img = blank(tmp_path)
    tool.run("luksFormat", "--type", "luks2", *FAST_ARGS["pbkdf2"], "--luks2-keyslots-size",
             "1m", "--label", "my label", "--subsystem", "sys", "--key-file",
             tool.keyfile("pw"), img)
    tool.run("token", "add", "--key-description", "dmkit:interop", "--key-slot", "0", img)
    tool.run("config", "--priority", "prefer", "--key-slot", "0", img)
    assert luks.dump(img) == tool.dump(img)
    assert luks.dump_json(img) == tool.dump(img, "--dump-json-metadata")
    vol = luks.load(FileDevice(img, read_only=True))
    assert vol.metadata.tokens[0].key_description == "dmkit:interop"
    assert vol.metadata.keyslots[0].priority == 2
    assert (vol.header.label, vol.header.subsystem) == ("my label", "sys")
    # and the other way: a token dmkit adds is what cryptsetup shows
    with FileDevice(img) as dev:
        load(dev).add_keyring_token("dmkit:second", [0])
    assert "  1: luks2-keyring\n\tKey description: dmkit:second\n\tKeyslot:    0\n" in \
        tool.dump(img)
