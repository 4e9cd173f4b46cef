"""`dmkit integrity dump / verify / export` against the kernel's images, tampered copies
and bad input.  Read-only commands never change an image: every test that runs one
checks the image's hash before and after."""

import hashlib
import json
import os
import struct

import pytest
from click.testing import CliRunner
from integrity_vectors import ALGORITHM, IMAGES, NEEDS_REPLAY, VECTORS, key_of, pattern

from dmkit.block import FileDevice
from dmkit.cli import cli
from dmkit.targets.integrity import IntegrityReader

ALL = sorted(IMAGES)


def run(*args, input=None):
    return CliRunner().invoke(cli, ["integrity", *map(str, args)], input=input,
                              catch_exceptions=False)


def one_line(result, *needles):
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dmkit: ") and "Traceback" not in result.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def digest(*paths):
    return [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths]


@pytest.fixture
def keyfile(tmp_path):
    def make(name):
        k = key_of(name)
        if k is None:
            return []
        p = tmp_path / f"{name}.key"
        p.write_bytes(k)
        return ["--integrity-key-file", str(p)]
    return make


def dev_args(files):
    """(DEV, options) for an image's files: DEV is the metadata device when separate."""
    if "device" in files:
        return str(files["device"]), []
    return str(files["meta"]), ["--data-device", str(files["data"])]


def read_args(name, files, keyfile):
    dev, opts = dev_args(files)
    return dev, opts + ["--integrity", ALGORITHM[name]] + keyfile(name)


def check_content(data: bytes, name: str):
    im = IMAGES[name]
    assert len(data) == im["provided_size_sectors"] * 512
    pos = 0
    for r in sorted(im["written_ranges"], key=lambda r: r["start_sector"]):
        a, n = r["start_sector"], r["sectors"]
        assert data[pos * 512:a * 512].count(0) == (a - pos) * 512
        assert data[a * 512:(a + n) * 512] == pattern(a, n)
        pos = a + n
    assert data[pos * 512:].count(0) == len(data) - pos * 512
    assert hashlib.sha256(data).hexdigest() == im["provided_sha256"]


# -- dump ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_dump_equals_integritysetup(name, kernel_images):
    files = kernel_images.files(name)
    dev, _ = dev_args(files)
    result = run("dump", dev)
    assert result.exit_code == 0, result.stderr
    want = (VECTORS / f"{name}.dump.txt").read_text().splitlines(keepends=True)
    got = result.stdout.splitlines(keepends=True)
    assert got[0] == f"Info for integrity device {dev}.\n"
    assert want[0].startswith("Info for integrity device /dev/vd")
    assert got[1:] == want[1:]          # every field line byte for byte, trailing space too


def test_dump_json(kernel_images):
    dev = str(kernel_images.files("sha256-journal-4k")["device"])
    result = run("dump", "--json", dev)
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "device": dev, "superblock_version": 5, "log2_interleave_sectors": 15,
        "integrity_tag_size": 32, "journal_sections": 1, "provided_data_sectors": 11760,
        "sector_size": 4096, "log2_blocks_per_bitmap": 12, "flags": ["fix_padding", "fix_hmac"]}


def test_dump_shows_recalc_sector(kernel_images, tmp_path):
    path = kernel_images.copy("crc32c-journal", tmp_path)["device"]
    with open(path, "r+b") as f:
        f.seek(24)
        f.write(struct.pack("<I", 0x8 | 0x10 | 0x2))   # + recalculating
        f.seek(32)
        f.write(struct.pack("<Q", 4096))
    out = run("dump", path).stdout.splitlines()
    assert out[7:] == ["recalc_sector 4096", "log2_blocks_per_bitmap 15",
                       "flags recalculating fix_padding fix_hmac "]


# -- bad input -------------------------------------------------------------------------------

def _patched(kernel_images, tmp_path, offset, data, name="crc32c-journal"):
    path = kernel_images.copy(name, tmp_path)["device"]
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
    return path


@pytest.mark.parametrize("offset,data,needle", [
    (0, b"notanint", "magic"),
    (8, b"\x09", "version: 9 is unknown"),
    (8, b"\x06", "version: 6 (inline tags"),
    (10, b"\x00\x00", "integrity_tag_size: 0"),
    (12, b"\x00\x00\x00\x00", "journal_sections: is 0"),
    (16, struct.pack("<Q", 0), "provided_data_sectors: is 0"),
    (16, struct.pack("<Q", 1 << 40), "too small for the superblock's provided_data_sectors"),
    (28, b"\x05", "log2_sectors_per_block: 5"),
    (9, b"\x02", "log2_interleave_sectors: 2"),
    (24, struct.pack("<I", 0x18 | 0x100), "flags: 0x118 has unknown bits"),
])
@pytest.mark.parametrize("verb", ["dump", "verify", "export", "detect"])
def test_impossible_superblock_fields(verb, offset, data, needle, kernel_images, tmp_path):
    path = _patched(kernel_images, tmp_path, offset, data)
    if verb == "dump" and "too small" in needle:
        pytest.skip("dump reads only the superblock")
    before = digest(path)
    args = [verb, path] + ([str(tmp_path / "out.bin")] if verb == "export" else [])
    result = run(*args)
    assert result.exit_code == 2, result.output
    one_line(result, str(path), needle)
    assert digest(path) == before
    assert not (tmp_path / "out.bin").exists()


@pytest.mark.parametrize("verb", ["dump", "verify", "export", "detect"])
def test_truncated_and_missing_images(verb, kernel_images, tmp_path):
    path = kernel_images.copy("crc32c-journal", tmp_path)["device"]
    with open(path, "r+b") as f:
        f.truncate(5 << 20)
    before = digest(path)
    out = [str(tmp_path / "out.bin")] if verb == "export" else []
    result = run(verb, path, *out)
    if verb == "dump":   # the superblock itself is intact
        assert result.exit_code == 0
    else:
        assert result.exit_code == 2
        one_line(result, str(path), "too small")
    assert digest(path) == before
    tiny = tmp_path / "tiny.img"
    tiny.write_bytes(b"integrt\0")
    result = run(verb, tiny, *out)
    assert result.exit_code == 2
    one_line(result, "tiny.img", "too small to hold a dm-integrity superblock")
    result = run(verb, tmp_path / "missing.img", *out)
    assert result.exit_code == 2
    one_line(result, "missing.img", "No such file")


def test_not_integrity(tmp_path):
    p = tmp_path / "zeros.img"
    p.write_bytes(bytes(1 << 20))
    for verb in ("dump", "verify", "detect"):
        result = run(verb, p)
        assert result.exit_code == 2
        one_line(result, "not a dm-integrity device")


@pytest.mark.parametrize("opts,code,needle", [
    (["--tag-size", "8"], 2, "tag size 8 does not match the superblock's 4"),
    (["--sector-size", "4096"], 2, "block size 4096 does not match the superblock's 512"),
    (["--integrity", "nosuchhash"], 2, "unknown or unavailable tag algorithm 'nosuchhash'"),
    (["--integrity", "hmac-sha256"], 2, "hmac(sha256) needs a key"),
    (["--integrity-key-file", "/nonexistent/key"], 2, "cannot read key file"),
    (["--integrity", "crc32"], 1, "11848 block(s) failed verification, the first at sector 0 "
                                  "(every block: wrong --integrity algorithm or key?)"),
])
def test_verify_wrong_parameters(opts, code, needle, kernel_images):
    dev = str(kernel_images.files("crc32c-journal")["device"])
    before = digest(dev)
    result = run("verify", dev, *opts)
    assert result.exit_code == code, result.output
    one_line(result, needle)
    assert digest(dev) == before


def test_wrong_key(kernel_images, tmp_path):
    dev = str(kernel_images.files("hmac-sha256-journal")["device"])
    key = tmp_path / "wrong.key"
    key.write_bytes(b"\x01" * 32)
    result = run("verify", "--json", dev, "--integrity", "hmac-sha256",
                 "--integrity-key-file", key)
    assert result.exit_code == 1
    assert len(json.loads(result.stdout)["mismatches"]) == 10144
    one_line(result, "10144 block(s) failed", "wrong --integrity algorithm or key?")
    result = run("export", dev, tmp_path / "out.bin", "--integrity", "hmac-sha256",
                 "--integrity-key-file", key)
    assert result.exit_code == 1
    one_line(result, "checksum mismatch at sector 0")
    assert not (tmp_path / "out.bin").exists()
    short = tmp_path / "short.key"
    short.write_bytes(b"\x01" * 16)
    result = run("verify", dev, "--integrity", "hmac-sha256", "--integrity-key-file", short,
                 "--integrity-key-size", "32")
    assert result.exit_code == 2
    one_line(result, "key file has 16 bytes, --integrity-key-size asks for 32")


def test_separate_metadata_needs_the_data_device(kernel_images):
    files = kernel_images.files("sha256-separate-meta")
    result = run("verify", files["meta"], "--integrity", "sha256")
    assert result.exit_code == 2
    one_line(result, "belongs to a separate metadata device (give the data device too)")
    result = run("verify", files["data"], "--integrity", "sha256")
    assert result.exit_code == 2
    one_line(result, "magic")


# -- verify --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_every_kernel_image_verifies_clean(name, kernel_images, keyfile):
    files = kernel_images.files(name)
    dev, opts = read_args(name, files, keyfile)
    before = digest(*files.values())
    result = run("verify", "--json", dev, *opts)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    n = IMAGES[name]["provided_size_sectors"]
    assert out["checked_sectors"] == out["provided_sectors"] == n
    assert out["mismatches"] == [] and out["unverified"] == []
    assert (out["journal_replayed_blocks"] > 0) == (name in NEEDS_REPLAY)
    assert out["algorithm"] == {"hmac-sha256": "hmac(sha256)"}.get(ALGORITHM[name],
                                                                  ALGORITHM[name])
    assert digest(*files.values()) == before
    text = run("verify", dev, *opts)
    assert text.exit_code == 0
    assert text.stdout.startswith(f"{dev}: {n} of {n} sectors checked, 0 block(s) failed")
    assert text.stderr == ""


def test_kernel_spelling_of_the_algorithm(kernel_images, keyfile):
    dev = str(kernel_images.files("hmac-sha256-journal")["device"])
    result = run("verify", dev, "--integrity", "hmac(sha256)",
                 *keyfile("hmac-sha256-journal"))
    assert result.exit_code == 0


def _flip(path, offset, xor=0x01):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ xor]))


@pytest.fixture
def tampered(kernel_images, tmp_path):
    """A copy of an image with data bytes flipped in some blocks and a tag byte flipped
    in another; returns (files, bad first sectors)."""
    def make(name, data_sectors, tag_sectors):
        files = kernel_images.copy(name, tmp_path)
        dev = FileDevice(files.get("device") or files["data"], read_only=True)
        meta = FileDevice(files["meta"], read_only=True) if "meta" in files else None
        geo = IntegrityReader(dev, meta, internal_hash=ALGORITHM[name],
                              key=key_of(name), replay_journal=True).geometry
        dev.close()
        if meta:
            meta.close()
        data_file = files.get("device") or files["data"]
        meta_file = files.get("device") or files["meta"]
        for s in data_sectors:
            _flip(data_file, geo.data_sector(s) * 512 + 300)
        for s in tag_sectors:
            _flip(meta_file, geo.tag_offset(s) + geo.tag_size - 1, 0x80)
        return files, sorted(set(data_sectors) | set(tag_sectors))
    return make


@pytest.mark.parametrize("name,data_sectors,tag_sectors", [
    ("crc32c-journal", [100, 5921], [11847]),
    ("sha256-journal-4k", [0, 6000], [11752]),
    ("hmac-sha256-journal", [5000], [0]),
    ("sha256-separate-meta", [4100], [8191]),
    # 1448..2047 come from the journal (replayed in memory): damage to their stale copy in
    # the data area does not matter, as after the kernel's replay
    ("crc32c-journal-crash", [1500, 100], [3000]),
])
def test_tampering_is_found(name, data_sectors, tag_sectors, tampered, keyfile, tmp_path):
    files, bad = tampered(name, data_sectors, tag_sectors)
    if name == "crc32c-journal-crash":
        bad = [100, 3000]
    dev, opts = read_args(name, files, keyfile)
    before = digest(*files.values())
    result = run("verify", "--json", dev, *opts)
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["mismatches"] == bad
    one_line(result, f"{len(bad)} block(s) failed verification, the first at sector {bad[0]}")
    text = run("verify", dev, *opts)
    assert [ln for ln in text.stdout.splitlines() if ln.startswith("mismatch")] == \
        [f"mismatch at sector {s}" for s in bad]
    # export stops at the first bad block and leaves an existing OUT alone
    out = tmp_path / "out.bin"
    out.write_bytes(b"previous content")
    result = run("export", dev, out, *opts)
    assert result.exit_code == 1
    one_line(result, f"checksum mismatch at sector {bad[0]}")
    assert out.read_bytes() == b"previous content"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".dmkit-tmp")]
    # --zero-on-error: every bad block zeroed and listed, everything else exact
    result = run("export", "--zero-on-error", "--json", dev, out, *opts)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["bad_sectors"] == bad
    one_line(result, f"zero-filled {len(bad)} block(s) that failed verification, at "
                     f"sectors: {', '.join(map(str, bad))}")
    data = out.read_bytes()
    spb = IMAGES[name]["provided_logical_block_size"] // 512
    expected = bytearray(_expected_content(name))
    for s in bad:
        expected[s * 512:(s + spb) * 512] = bytes(spb * 512)
    assert data == bytes(expected)
    assert digest(*files.values()) == before


def _expected_content(name):
    im = IMAGES[name]
    n = im["provided_size_sectors"]
    data = bytearray(n * 512)
    for r in im["written_ranges"]:
        a, k = r["start_sector"], r["sectors"]
        data[a * 512:(a + k) * 512] = pattern(a, k)
    return bytes(data)


# -- export ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_every_kernel_image_exports_its_content(name, kernel_images, keyfile, tmp_path):
    files = kernel_images.files(name)
    dev, opts = read_args(name, files, keyfile)
    before = digest(*files.values())
    out = tmp_path / "out.bin"
    result = run("export", "--json", dev, out, *opts)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["bad_sectors"] == []
    assert (summary["journal_replayed_blocks"] > 0) == (name in NEEDS_REPLAY)
    data = out.read_bytes()
    check_content(data, name)
    assert digest(*files.values()) == before       # the crash image is not replayed on disk
    if name in NEEDS_REPLAY:
        assert hashlib.sha256(data).hexdigest() == \
            IMAGES[name]["crash"]["replay_sha256_after_clean_open_of_a_copy"]


def test_export_to_stdout(kernel_images):
    dev = str(kernel_images.files("crc32c-direct")["device"])
    result = CliRunner().invoke(cli, ["integrity", "export", dev, "-", "--json"])
    assert result.exit_code == 0
    check_content(result.stdout_bytes, "crc32c-direct")
    assert json.loads(result.stderr)["bytes"] == 11848 * 512


def test_export_refuses_to_overwrite_the_device(kernel_images, tmp_path):
    files = kernel_images.copy("sha256-separate-meta", tmp_path)
    before = digest(*files.values())
    for out in (files["data"], files["meta"]):
        result = run("export", files["meta"], out, "--integrity", "sha256",
                     "--data-device", files["data"])
        assert result.exit_code == 2
        one_line(result, "this is the device being exported")
    assert digest(*files.values()) == before


def test_progress_bars_on_a_terminal(kernel_images, tmp_path, monkeypatch):
    """A bar is drawn on stderr when it is a terminal, and never otherwise."""
    import dmkit.cli.progress as progress_mod
    dev = str(kernel_images.files("crc32c-journal")["device"])
    plain = run("verify", dev)
    assert plain.stderr == ""
    monkeypatch.setattr(progress_mod, "_stderr_is_terminal", lambda: True)
    result = run("verify", dev)
    assert result.exit_code == 0 and "verify" in result.stderr and "|" in result.stderr
    result = run("export", dev, tmp_path / "out.bin")
    assert result.exit_code == 0 and "export" in result.stderr


@pytest.mark.parametrize("cipher,key_size", [("ctr-aes", 32), ("chacha20", 32),
                                             ("cbc-aes", 16), ("xts-aes", 64)])
def test_encrypted_journal_is_replayed(cipher, key_size, kernel_images, tmp_path):
    """The kernel's crash image with its (committed, unreplayed) journal encrypted as the
    kernel encrypts journals (format.encrypt_journal: the same code that writes
    byte-for-byte what integritysetup format writes; real kernel crashes with encrypted
    journals are checked by oracle-format/crash.py): export with --journal-crypt gives the
    kernel's post-replay content; without it, a warning and the stale data area."""
    from dmkit.targets.integrity.format import JournalCipher, encrypt_journal
    name = "crc32c-journal-crash"
    path = kernel_images.copy(name, tmp_path)["device"]
    key = hashlib.shake_256(b"journal key").digest(key_size)
    kf = tmp_path / "jkey"
    kf.write_bytes(key)
    with FileDevice(path, read_only=True) as dev:
        geo = IntegrityReader(dev, internal_hash="crc32c", replay_journal=True).geometry
    with open(path, "r+b") as f:
        f.seek(geo.journal_start_sector * 512)
        plain = f.read(geo.journal_sectors * 512)
        f.seek(geo.journal_start_sector * 512)
        f.write(encrypt_journal(plain, geo, JournalCipher(cipher, key)))
    before = digest(path)
    out = tmp_path / "out.bin"
    r = run("export", "--json", path, out, "--journal-crypt", cipher,
            "--journal-crypt-key-file", kf)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["journal_replayed_blocks"] == 984
    check_content(out.read_bytes(), name)
    v = run("verify", "--json", path, "--journal-crypt", cipher, "--journal-crypt-key-file", kf)
    assert v.exit_code == 0 and json.loads(v.stdout)["journal"] == "replay-needed"
    r = run("export", path, out)
    assert r.exit_code == 0
    assert "the journal does not read as a plain journal" in r.stderr
    assert "give --journal-crypt" in r.stderr
    assert hashlib.sha256(out.read_bytes()).hexdigest() != IMAGES[name]["provided_sha256"]
    assert digest(path) == before
    wrong = tmp_path / "wrong"
    wrong.write_bytes(bytes(range(1, key_size + 1)))
    r = run("verify", path, "--journal-crypt", cipher, "--journal-crypt-key-file", wrong)
    assert "does not read as a plain journal" in r.stderr    # a wrong key: noise


def test_regions_the_kernel_would_not_trust_are_reported(kernel_images, tmp_path):
    """A dirty bitmap and a recalculation in progress: those sectors cannot be verified;
    verify says which and why, and exits 1."""
    name = "crc32c-bitmap"
    path = kernel_images.copy(name, tmp_path)["device"]
    with FileDevice(path, read_only=True) as dev:
        geo = IntegrityReader(dev, internal_hash="crc32c").geometry
    with open(path, "r+b") as f:
        f.seek(24)
        f.write(struct.pack("<I", 0x8 | 0x10 | 0x4))          # + dirty_bitmap
        f.seek(geo.journal_start_sector * 512)
        f.write(b"\x01")                                        # sectors 0..32767
    result = run("verify", "--json", path)
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert out["checked_sectors"] == 0 and out["mismatches"] == []
    assert out["unverified"] == [{"start_sector": 0, "sectors": 11848, "reason":
                                  "dirty bitmap region (bitmap mode, not closed cleanly)"}]
    one_line(result, "11848 sector(s) could not be verified")
    with open(path, "r+b") as f:
        f.seek(24)
        f.write(struct.pack("<I", 0x8 | 0x10 | 0x2))          # recalculating instead
        f.seek(32)
        f.write(struct.pack("<Q", 8000))
        f.seek(geo.journal_start_sector * 512)
        f.write(b"\x00")
    out = json.loads(run("verify", "--json", path).stdout)
    assert out["checked_sectors"] == 8000
    assert out["unverified"][0]["start_sector"] == 8000
    assert "recalculated" in out["unverified"][0]["reason"]
