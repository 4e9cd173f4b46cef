"""The data of LUKS volumes with real tools: cryptsetup 2.6 on image files and qemu-img.

- volumes ``dmkit luks format`` makes and fills (every cipher x integrity combination) pass
  ``cryptsetup luksDump`` (same text) and ``cryptsetup open --test-passphrase``, and
  ``luksDump --dump-volume-key`` prints what ``dmkit luks dump --dump-volume-key`` prints;
  key slots cryptsetup adds to them open them in dmkit;
- volumes cryptsetup formats export through dmkit (the ciphertext decrypted independently
  with the volume key cryptsetup reports), and what dmkit imports into them is the
  ciphertext dm-crypt would write.  cryptsetup here cannot format with ``--integrity``
  (that needs device-mapper and the kernel's crypto API): those cases skip saying so, and
  the kernel-made integrity images in tests/vectors/crypt cover them;
- qemu-img (qemu's LUKS1 driver) reads LUKS1 volumes dmkit wrote, and dmkit reads LUKS1
  volumes qemu-img created and wrote.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

import dmkit.luks as luks
from dmkit.cli import cli

from ..conftest import pattern

pytestmark = pytest.mark.interop

MiB = 1 << 20
FAST = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]
PASS = "interop passphrase"


def _tool(name: str, package: str) -> str:
    if not sys.platform.startswith("linux"):
        pytest.skip(f"{name} here is Debian's Linux build (this is {sys.platform})")
    path = shutil.which(name) or shutil.which(name, path="/sbin:/usr/sbin")
    if path is None:
        pytest.fail(f"{name} is not installed; install {package} "
                    f"(apt-get install -y {package})")
    return path


@pytest.fixture(scope="module")
def cryptsetup():
    return _tool("cryptsetup", "cryptsetup-bin")


@pytest.fixture(scope="module")
def qemu_img():
    return _tool("qemu-img", "qemu-utils")


def dmkit(*args, ok: bool = True, input=None):
    r = CliRunner().invoke(cli, ["luks", *map(str, args)], input=input)
    if ok:
        assert r.exit_code == 0, (args, r.output)
    return r


def sh(*args, ok: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300)
    if ok:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


@pytest.fixture
def keyfile(tmp_path):
    p = tmp_path / "pass.key"
    p.write_bytes(PASS.encode())
    return p


def _image(tmp_path, size=8 * MiB, name="disk.img"):
    p = tmp_path / name
    with open(p, "wb") as f:
        f.truncate(size)
    return p


def _fill(img, keyfile, tmp_path, nr_sectors: int, *extra):
    src = tmp_path / "pattern.bin"
    src.write_bytes(pattern(0, nr_sectors))
    dmkit("import", img, src, "--key-file", keyfile, *extra)


def _export(img, keyfile, tmp_path, *extra) -> bytes:
    out = tmp_path / "export.bin"
    dmkit("export", img, out, "--key-file", keyfile, *extra)
    return out.read_bytes()


# -- dmkit formats and fills, cryptsetup checks ---------------------------------------------------

DM_FORMATS = [
    ("luks2-aes-xts", []),
    ("luks2-hmac-sha256-512", ["--integrity", "hmac-sha256", "--sector-size", "512"]),
    ("luks2-hmac-sha512", ["--integrity", "hmac-sha512"]),
    ("luks2-aes-gcm-random-aead-512", ["--cipher", "aes-gcm-random", "--integrity", "aead",
                                       "--sector-size", "512"]),
    ("luks2-chacha20-random-poly1305", ["--cipher", "chacha20-random", "--integrity",
                                        "poly1305"]),
    ("luks2-hmac-sha256-4k", ["--integrity", "hmac-sha256", "--sector-size", "4096"]),
    ("luks2-argon2id", ["--pbkdf", "argon2id", "--pbkdf-memory", "64"]),
    ("luks1-aes-xts", ["--type", "luks1"]),
    ("luks1-aes-cbc-essiv", ["--type", "luks1", "--cipher", "aes-cbc-essiv:sha256",
                             "--key-size", "256"]),
]


@pytest.mark.parametrize("opts", [c[1] for c in DM_FORMATS], ids=[c[0] for c in DM_FORMATS])
def test_dmkit_volumes_pass_cryptsetup(cryptsetup, tmp_path, keyfile, opts):
    img = _image(tmp_path)
    fast = ["--pbkdf-force-iterations", "4", "--pbkdf-parallel", "1"] if "--pbkdf" in opts \
        else FAST
    extra = [] if "luks1" in opts else ["--luks2-keyslots-size", "2m"]
    dmkit("format", "-q", *fast, *extra, *opts, "--key-file", keyfile, img)
    with luks.open(img, PASS) as vol:
        n = vol.nr_sectors
    _fill(img, keyfile, tmp_path, n)
    assert _export(img, keyfile, tmp_path) == pattern(0, n)
    # cryptsetup: same dump text, opens with the passphrase, refuses another
    assert sh(cryptsetup, "luksDump", img).stdout == dmkit("dump", img).stdout
    assert sh(cryptsetup, "open", "--test-passphrase", "--key-file", keyfile, img).returncode == 0
    wrong = tmp_path / "wrong"
    wrong.write_bytes(b"wrong")
    r = sh(cryptsetup, "open", "--test-passphrase", "--key-file", wrong, img, ok=False)
    assert r.returncode == 2 and "No key available with this passphrase." in r.stderr
    # --dump-volume-key: the same text (the key cryptsetup unseals is dmkit's)
    ours = dmkit("dump", "--dump-volume-key", "-q", "--key-file", keyfile, img).stdout
    theirs = sh(cryptsetup, "luksDump", "--dump-volume-key", "-q", "--key-file", keyfile,
                img).stdout
    assert ours == theirs
    # a key slot cryptsetup adds opens dmkit's volume, data and all
    k2 = tmp_path / "k2"
    k2.write_bytes(b"added by cryptsetup")
    sh(cryptsetup, "luksAddKey", "-q", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations",
       "1000", "--key-file", keyfile, img, k2)
    assert _export(img, k2, tmp_path) == pattern(0, n)
    assert sh(cryptsetup, "luksDump", img).stdout == dmkit("dump", img).stdout


def test_cryptsetup_cannot_format_integrity_here(cryptsetup, tmp_path, keyfile):
    """Why the cryptsetup-formats direction has no integrity cases: cryptsetup formats the
    dm-integrity superblock through the kernel, which this machine does not offer."""
    img = _image(tmp_path)
    r = sh(cryptsetup, "luksFormat", "-q", "--type", "luks2", *FAST, "--integrity",
           "hmac-sha256", "--key-file", keyfile, img, ok=False)
    if r.returncode == 0:
        pytest.fail("cryptsetup formatted with --integrity: this machine has device-mapper; "
                    "add integrity cases to test_cryptsetup_volumes_export_through_dmkit")
    pytest.skip("cryptsetup luksFormat --integrity needs device-mapper and the kernel crypto "
                f"API, absent here ({r.stderr.strip().splitlines()[-1]}); the kernel-made "
                "integrity images in tests/vectors/crypt are the cryptsetup-formatted ones")


# -- cryptsetup formats, dmkit reads and writes ---------------------------------------------------

CS_FORMATS = [
    ("luks2-aes-xts-512", ["--type", "luks2", "--cipher", "aes-xts-plain64", "--key-size", "512",
                           "--sector-size", "512"], 512),
    ("luks2-aes-xts-256-argon2id", ["--type", "luks2", "--cipher", "aes-xts-plain64",
                                    "--key-size", "256", "--pbkdf", "argon2id",
                                    "--pbkdf-memory", "64", "--pbkdf-force-iterations", "4"],
     None),   # cryptsetup's own choice of sector size for an image file
    ("luks2-aes-xts-4k", ["--type", "luks2", "--sector-size", "4096"], 4096),
    ("luks1-aes-xts-512", ["--type", "luks1", "--cipher", "aes-xts-plain64", "--key-size",
                           "512"], 512),
]


def _xts(key: bytes, sector_size: int, data: bytes, *, decrypt: bool) -> bytes:
    """aes-xts-plain64, done here with pyca/cryptography alone: unit ``i`` of
    ``sector_size`` bytes has the tweak le64(512-byte sector number)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    out = bytearray()
    for off in range(0, len(data), sector_size):
        tweak = (off // 512).to_bytes(16, "little")
        c = Cipher(algorithms.AES(key), modes.XTS(tweak))
        op = c.decryptor() if decrypt else c.encryptor()
        out += op.update(data[off:off + sector_size]) + op.finalize()
    return bytes(out)


@pytest.mark.parametrize("opts,sector_size", [(c[1], c[2]) for c in CS_FORMATS],
                         ids=[c[0] for c in CS_FORMATS])
def test_cryptsetup_volumes_export_through_dmkit(cryptsetup, tmp_path, keyfile, opts,
                                                 sector_size):
    img = _image(tmp_path)
    fast = [] if "--pbkdf" in opts else FAST
    extra = ["--luks2-keyslots-size", "1m"] if "luks2" in opts else []
    sh(cryptsetup, "luksFormat", "-q", *fast, *extra, *opts, "--key-file", keyfile, img)
    vkf = tmp_path / "vk"
    sh(cryptsetup, "luksDump", "-q", "--dump-volume-key", "--key-file", keyfile,
       "--volume-key-file", vkf, img)
    vk = vkf.read_bytes()
    dump = sh(cryptsetup, "luksDump", img).stdout
    if sector_size is None:   # as cryptsetup's dump says
        sector_size = int(dump.split("\tsector: ")[1].split()[0])
    offset = luks.unlock(img, PASS).segment.offset_sectors * 512
    raw = img.read_bytes()
    # what is on disk now (zeros, as the file was) decrypts to what dmkit exports
    exported = _export(img, keyfile, tmp_path)
    assert exported == _xts(vk, sector_size, raw[offset:], decrypt=True)
    # what dmkit writes is dm-crypt's ciphertext of the pattern
    n = len(exported) // 512
    _fill(img, keyfile, tmp_path, n)
    assert img.read_bytes()[offset:] == _xts(vk, sector_size, pattern(0, n), decrypt=False)
    assert _export(img, keyfile, tmp_path) == pattern(0, n)
    out = tmp_path / "by-volume-key.bin"
    dmkit("export", img, out, "--volume-key-file", vkf)
    assert out.read_bytes() == pattern(0, n)
    # cryptsetup still opens it, with the slot dmkit adds too
    k2 = tmp_path / "k2"
    k2.write_bytes(b"added by dmkit")
    dmkit("add-key", img, k2, "--key-file", keyfile, *FAST)
    assert sh(cryptsetup, "open", "--test-passphrase", "--key-file", k2, img).returncode == 0


# -- qemu-img ---------------------------------------------------------------------------------

def _secret(tmp_path) -> str:
    p = tmp_path / "qemu.secret"
    p.write_bytes(PASS.encode())
    return f"secret,id=s0,file={p}"


LUKS1_FOR_QEMU = [
    ("aes-xts-plain64-512", []),
    ("aes-xts-plain64-256-sha1", ["--key-size", "256", "--hash", "sha1"]),
    ("aes-cbc-essiv-256", ["--cipher", "aes-cbc-essiv:sha256", "--key-size", "256"]),
]


@pytest.mark.parametrize("opts", [c[1] for c in LUKS1_FOR_QEMU],
                         ids=[c[0] for c in LUKS1_FOR_QEMU])
def test_qemu_img_reads_what_dmkit_wrote(qemu_img, tmp_path, keyfile, opts):
    img = _image(tmp_path, 6 * MiB)
    dmkit("format", "-q", "--type", "luks1", *FAST, *opts, "--key-file", keyfile, img)
    with luks.open(img, PASS) as vol:
        n = vol.nr_sectors
    _fill(img, keyfile, tmp_path, n)
    out = tmp_path / "qemu.raw"
    sh(qemu_img, "convert", "--object", _secret(tmp_path), "--image-opts",
       f"driver=luks,key-secret=s0,file.filename={img}", "-O", "raw", out)
    assert out.read_bytes() == pattern(0, n)


QEMU_CREATE = [
    ("default", []),
    ("aes-256-cbc-essiv", ["cipher-alg=aes-256", "cipher-mode=cbc", "ivgen-alg=essiv",
                           "ivgen-hash-alg=sha256"]),
    ("aes-128-xts-sha512", ["cipher-alg=aes-128", "cipher-mode=xts", "hash-alg=sha512"]),
]


@pytest.mark.parametrize("opts", [c[1] for c in QEMU_CREATE], ids=[c[0] for c in QEMU_CREATE])
def test_dmkit_reads_what_qemu_img_wrote(qemu_img, tmp_path, keyfile, opts):
    img = tmp_path / "qemu.luks"
    size = 4 * MiB
    sh(qemu_img, "create", "-f", "luks", "--object", _secret(tmp_path), "-o",
       ",".join(["key-secret=s0", "iter-time=10", *opts]), img, str(size))
    src = tmp_path / "pattern.raw"
    src.write_bytes(pattern(0, size // 512))
    sh(qemu_img, "convert", "-n", "--object", _secret(tmp_path), "-f", "raw", src,
       "--target-image-opts", f"driver=luks,key-secret=s0,file.filename={img}")
    assert dmkit("test-passphrase", img, "--key-file", keyfile).exit_code == 0
    assert "Version:       \t1\n" in dmkit("dump", img).stdout
    assert _export(img, keyfile, tmp_path) == pattern(0, size // 512)
    # and qemu-img reads what dmkit writes over it
    src.write_bytes(pattern(5000, size // 512))
    dmkit("import", img, src, "--key-file", keyfile)
    out = tmp_path / "back.raw"
    sh(qemu_img, "convert", "--object", _secret(tmp_path), "--image-opts",
       f"driver=luks,key-secret=s0,file.filename={img}", "-O", "raw", out)
    assert out.read_bytes() == pattern(5000, size // 512)
