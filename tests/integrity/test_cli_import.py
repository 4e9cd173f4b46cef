"""`dmkit integrity import`: data written through dmkit's integrity target in each mode,
then verified and exported; onto the kernel's images; and refusals before any write."""

import hashlib
import json

import pytest
from click.testing import CliRunner
from integrity_vectors import IMAGES, key_of, pattern

from dmkit.block import FileDevice
from dmkit.cli import cli
from dmkit.targets.integrity import IntegrityReader, JournalStatus


def run(*args, input=None):
    return CliRunner().invoke(cli, ["integrity", *map(str, args)], input=input,
                              catch_exceptions=False)


def digest(*paths):
    return [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths]


def gen2(start, n):
    return b"".join(hashlib.sha256(b"dmkit-fixture:2:%d" % s).digest() * 16
                    for s in range(start, start + n))


@pytest.fixture
def formatted(tmp_path):
    def make(*opts, kib=4096, data_kib=None):
        dev = tmp_path / "dev.img"
        dev.write_bytes(b"\x99" * (kib * 1024))
        args = list(map(str, opts))
        if data_kib:
            data = tmp_path / "data.img"
            data.write_bytes(b"\x66" * (data_kib * 1024))
            args += ["--data-device", str(data)]
        r = run("format", "--batch-mode", *args, dev)
        assert r.exit_code == 0, r.output
        n = json.loads(run("dump", "--json", dev).stdout)["provided_data_sectors"]
        return dev, args, n
    return make


@pytest.mark.parametrize("mode", ["journal", "bitmap", "direct"])
@pytest.mark.parametrize("fmt,data_kib", [
    ([], None),
    (["--integrity", "sha256", "--sector-size", "4096"], None),
    (["--integrity", "sha1", "--sector-size", "1024"], 2048),
])
def test_import_in_every_mode(mode, fmt, data_kib, formatted, tmp_path):
    dev, args, n = formatted(*fmt, data_kib=data_kib)
    read = [a for a in args if a not in ("--sector-size", "4096", "1024")]
    src = tmp_path / "in.bin"
    part = n - 24 if n > 100 else n   # shorter than the device: the rest stays zero
    part -= part % 8
    src.write_bytes(pattern(0, part))
    r = run("import", "--mode", mode, "--json", dev, src, *read)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["bytes"] == part * 512
    v = run("verify", "--json", dev, *read)
    assert v.exit_code == 0, v.output
    assert json.loads(v.stdout)["checked_sectors"] == n
    out = tmp_path / "out.bin"
    assert run("export", dev, out, *read).exit_code == 0
    assert out.read_bytes() == pattern(0, part) + bytes((n - part) * 512)
    # closed cleanly: nothing left in the journal, no dirty bitmap
    dump = json.loads(run("dump", "--json", dev).stdout)
    assert "dirty_bitmap" not in dump["flags"]
    data = FileDevice(args[args.index("--data-device") + 1] if data_kib else dev,
                      read_only=True)
    meta = FileDevice(dev, read_only=True) if data_kib else None
    alg = fmt[1] if fmt else "crc32c"
    r = IntegrityReader(data, meta, internal_hash=alg)
    assert r.journal.status is JournalStatus.EMPTY


def test_import_onto_a_kernel_image(kernel_images, tmp_path):
    """New data over part of the kernel's hmac image, through the target; the rest of the
    kernel's data stays, and everything verifies."""
    name = "hmac-sha256-journal"
    files = kernel_images.copy(name, tmp_path)
    key = tmp_path / "key"
    key.write_bytes(key_of(name))
    opts = ["--integrity", "hmac-sha256", "--integrity-key-file", key]
    src = tmp_path / "in.bin"
    src.write_bytes(gen2(0, 1000) + b"tail")     # not a whole sector: merged (RMW)
    r = run("import", files["device"], src, *opts)
    assert r.exit_code == 0, r.output
    out = tmp_path / "out.bin"
    assert run("export", files["device"], out, *opts).exit_code == 0
    data = out.read_bytes()
    assert data[:1000 * 512] == gen2(0, 1000)
    assert data[1000 * 512:1000 * 512 + 4] == b"tail"
    assert data[1000 * 512 + 4:1001 * 512] == pattern(1000, 1)[4:]
    assert data[1001 * 512:2048 * 512] == pattern(1001, 1047)
    n = IMAGES[name]["provided_size_sectors"]
    assert data[(n - 128) * 512:] == pattern(n - 128, 128)


def test_import_from_stdin(formatted):
    dev, args, n = formatted()
    r = CliRunner().invoke(cli, ["integrity", "import", str(dev), "-"],
                           input=pattern(0, 64))
    assert r.exit_code == 0, r.output
    out = CliRunner().invoke(cli, ["integrity", "export", str(dev), "-"])
    assert out.exit_code == 0
    assert out.stdout_bytes == pattern(0, 64) + bytes((n - 64) * 512)


def test_import_refusals(formatted, tmp_path):
    dev, args, n = formatted()
    before = digest(dev)
    big = tmp_path / "big.bin"
    big.write_bytes(bytes((n + 1) * 512))
    r = run("import", dev, big)
    assert r.exit_code == 2
    assert "larger than the mapped device" in r.stderr and "nothing was written" in r.stderr
    r = run("import", dev, dev)
    assert r.exit_code == 2 and "refusing to copy it onto itself" in r.stderr
    r = run("import", dev, big, "--tag-size", "8")
    assert r.exit_code == 2 and "tag size 8 does not match" in r.stderr
    zero = tmp_path / "zero.img"
    zero.write_bytes(bytes(1 << 20))
    r = run("import", zero, big)
    assert r.exit_code == 2 and "magic" in r.stderr     # never formats on the fly
    assert zero.read_bytes() == bytes(1 << 20)
    assert digest(dev) == before


def test_journal_mac_must_be_given(formatted, tmp_path):
    key = tmp_path / "k"
    key.write_bytes(b"j" * 32)
    dev, args, n = formatted("--journal-integrity", "hmac-sha256",
                             "--journal-integrity-key-file", key, "--integrity-legacy-hmac")
    src = tmp_path / "in.bin"
    src.write_bytes(pattern(0, 16))
    before = digest(dev)
    r = run("import", dev, src)
    assert r.exit_code == 2 and "give --journal-integrity" in r.stderr
    assert digest(dev) == before
    r = run("import", dev, src, "--journal-integrity", "hmac-sha256",
            "--journal-integrity-key-file", key)
    assert r.exit_code == 0, r.output
    assert run("verify", dev).exit_code == 0


def test_journal_mac_with_fix_hmac(formatted, tmp_path):
    key = tmp_path / "k"
    key.write_bytes(b"j" * 32)
    dev, args, n = formatted("--journal-integrity", "hmac-sha256",
                             "--journal-integrity-key-file", key)
    src = tmp_path / "in.bin"
    src.write_bytes(pattern(0, 16))
    r = run("import", dev, src, "--journal-integrity", "hmac-sha256",
            "--journal-integrity-key-file", key)
    assert r.exit_code == 0, r.output
