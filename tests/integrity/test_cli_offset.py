"""`dmkit integrity ... --offset SECTORS`: the table's reserved_sectors.  The superblock is
at that sector of DEV (the metadata device with --data-device, whose data device is used
from sector 0, as the kernel's get_data_sector does), and nothing before it is written.

Checked against the kernel: its start16 image (a table with 16 reserved sectors) and every
kernel image of tests/vectors/integrity moved down by a prefix of zero sectors."""

import hashlib
import json
import shutil

import pytest
from integrity_vectors import (
    ALGORITHM,
    IMAGES,
    NEEDS_REPLAY,
    VECTORS,
    OracleImageCache,
    key_of,
    pattern,
)

import dmkit.cli.integrity as integrity_cli
from dmkit.block import FileDevice
from dmkit.targets.integrity import IntegrityReader
from dmkit.targets.integrity.format import FormatParams, plan_format
from dmkit.targets.integrity.geometry import compute_provided_data_sectors, format_superblock
from dmkit.targets.integrity.layout import Superblock

from test_cli_read import digest, one_line, run  # noqa: E402  (the same CLI helpers)

ORACLE = VECTORS / "oracle"
ORACLE_CASES = {e["name"]: e for e in
                json.loads((ORACLE / "manifest.json").read_text())["images"]}
SB_MAGIC = b"integrt\0"
READ_VERBS = ["dump", "verify", "export", "detect", "import"]



@pytest.fixture(scope="module")
def oracle_images(tmp_path_factory):
    return OracleImageCache(tmp_path_factory.mktemp("oracle-offset"))




def prefix_bytes(n):
    """``n`` sectors no two of which are alike (so any write shows)."""
    return pattern(1_000_000, n)


def verb_args(verb, dev, tmp_path, *opts):
    """Arguments for ``verb`` on ``dev``: an output path for export, an input for import."""
    if verb == "export":
        return [verb, dev, tmp_path / "out.bin", *opts]
    if verb == "import":
        src = tmp_path / "in.bin"
        src.write_bytes(pattern(0, 8))
        return [verb, dev, src, *opts]
    return [verb, dev, *opts]


# -- format ----------------------------------------------------------------------------------

@pytest.fixture
def offset_dev(tmp_path):
    """A 2 MiB device behind ``n`` sectors of a known pattern, formatted at ``--offset n``."""
    def make(n=64, *opts, mib=2):
        dev = tmp_path / "dev.img"
        dev.write_bytes(prefix_bytes(n) + b"\x99" * (mib << 20))
        r = run("format", "--batch-mode", "--offset", n, *opts, dev)
        assert r.exit_code == 0, r.output
        return dev
    return make


@pytest.mark.parametrize("n", [1, 64, 32768])
def test_format_writes_nothing_before_the_offset(n, tmp_path):
    dev = tmp_path / "dev.img"
    head = prefix_bytes(n)
    dev.write_bytes(head + b"\x99" * (2 << 20))
    r = run("format", "--batch-mode", "--offset", n, dev)
    assert r.exit_code == 0, r.output
    img = dev.read_bytes()
    assert img[:n * 512] == head                       # not a single byte changed
    assert img[n * 512:n * 512 + 8] == SB_MAGIC         # the superblock is at sector n
    sb = Superblock.from_bytes(img[n * 512:n * 512 + 64])
    # what the kernel provides with reserved_sectors n on this device
    total = len(img) // 512
    assert sb.provided_data_sectors == compute_provided_data_sectors(
        data_device_sectors=total, meta_device_sectors=None, tag_size=4,
        log2_sectors_per_block=0, log2_interleave_sectors=15,
        journal_sections=sb.journal_sections, have_journal_mac=False, fixed_padding=True,
        start_sector=n)
    assert 0 < sb.provided_data_sectors < total - n
    # the same format at offset 0 of a device that is only what follows the offset
    # gives the same superblock but for the salt
    tail = tmp_path / "tail.img"
    tail.write_bytes(b"\x99" * (2 << 20))
    assert run("format", "--batch-mode", tail).exit_code == 0
    sb0 = Superblock.from_bytes(tail.read_bytes()[:64])
    assert sb0.provided_data_sectors == sb.provided_data_sectors
    assert sb0.journal_sections == sb.journal_sections


def test_format_matches_the_kernels_superblock_with_16_reserved_sectors(
        oracle_images, tmp_path, monkeypatch):
    """start16: the kernel formatted a zeroed 1 MiB device on the first load of
    ``integrity /dev/vde 16 4 J 3 fix_padding fix_hmac internal_hash:crc32c``."""
    e = ORACLE_CASES["start16"]
    kernel = oracle_images.path(e["files"][0]["file"]).read_bytes()
    area = kernel[16 * 512:16 * 512 + 4096]
    salt = Superblock.from_bytes(area).salt
    monkeypatch.setattr(integrity_cli, "random_bytes", lambda n: salt)
    dev = tmp_path / "dev.img"
    dev.write_bytes(bytes(len(kernel)))
    r = run("format", "--batch-mode", "--no-wipe", "--offset", 16, dev)
    assert r.exit_code == 0, r.output
    ours = dev.read_bytes()
    assert ours[16 * 512:16 * 512 + 4096] == area          # byte for byte
    assert ours[:16 * 512] == bytes(16 * 512)
    out = json.loads(run("dump", "--json", "--offset", 16, dev).stdout)
    assert out["provided_data_sectors"] == e["provided_size_sectors"] == 1592
    assert out["offset"] == 16


def test_format_with_a_data_device(tmp_path):
    """The offset applies to the metadata device; the data device is used from sector 0."""
    meta, data = tmp_path / "meta.img", tmp_path / "data.img"
    head = prefix_bytes(40)
    meta.write_bytes(head + bytes(472 * 512))
    data.write_bytes(b"\x66" * (4 << 20))
    r = run("format", "--batch-mode", "--offset", 40, "--data-device", data, meta)
    assert r.exit_code == 0, r.output
    img = meta.read_bytes()
    assert img[:40 * 512] == head and img[40 * 512:40 * 512 + 8] == SB_MAGIC
    assert data.read_bytes() == bytes(4 << 20)               # wiped from sector 0
    out = json.loads(run("dump", "--json", "--offset", 40, meta).stdout)
    assert out["provided_data_sectors"] == 8192 and out["log2_interleave_sectors"] == 0
    src = tmp_path / "in.bin"
    src.write_bytes(pattern(0, 300))
    args = ["--offset", 40, "--data-device", data]
    assert run("import", meta, src, *args).exit_code == 0
    assert data.read_bytes()[:300 * 512] == pattern(0, 300)  # logical sector s = sector s
    assert meta.read_bytes()[:40 * 512] == head
    assert run("verify", meta, *args).exit_code == 0
    assert run("export", meta, tmp_path / "out.bin", *args).exit_code == 0
    assert (tmp_path / "out.bin").read_bytes() == pattern(0, 300) + bytes((8192 - 300) * 512)
    d = run("detect", "--json", meta, *args)
    assert d.exit_code == 0 and json.loads(d.stdout)["algorithm"] == "crc32c"
    # a data byte flipped at logical sector 4000 is on the data device's sector 4000
    with open(data, "r+b") as f:
        f.seek(4000 * 512 + 7)
        f.write(b"\x01")
    v = run("verify", "--json", meta, *args)
    assert v.exit_code == 1 and json.loads(v.stdout)["mismatches"] == [4000]


def test_separate_metadata_journal_fits_after_the_offset():
    """The kernel's size check for a separate metadata device leaves the reserved sectors
    out; format sizes the journal so that journal and tags end on the device: the kernel's
    journal whenever that fits, a smaller one where the kernel's would run off the end."""
    data = 1 << 20                       # 8192 sectors of 4-byte tags
    for meta, start, sections, kernel_sections in [
            (20000, 0, 46, 46), (20000, 500, 46, 46), (20000, 3000, 46, 46),
            (10200, 0, 11, 11), (10200, 500, 8, 11)]:
        plan = plan_format(data, meta, params=FormatParams(start_sector=start),
                           salt=bytes(16))
        g = plan.geometry
        assert g.tag_offset(data - 1) + 4 <= meta * 512
        kernel = format_superblock(data, meta, tag_size=4, start_sector=start,
                                   fix_padding=True, fix_hmac=True, salt=bytes(16))
        assert (plan.superblock.journal_sections, kernel.journal_sections) == \
            (sections, kernel_sections)
        kernel_end = ((start + 8 + g.journal.section_sectors * kernel.journal_sections)
                      * 512 + data * 4)
        assert (kernel_end <= meta * 512) == (plan.superblock == kernel)


def test_format_refusals_write_nothing(tmp_path):
    dev = tmp_path / "dev.img"
    dev.write_bytes(prefix_bytes(8) + bytes(1 << 20))
    before = digest(dev)
    small = ("device too small for dm-integrity with these parameters (--offset 2000 leaves "
             "56 of its 2056 sectors)")
    for offset, needle in [("-8", "--offset -8: a number of sectors cannot be negative"),
                           ("2056", "--offset 2056 is beyond the end of the device (2056"),
                           ("2050", "--offset 2050 is beyond the end"),
                           ("2000", small)]:
        r = run("format", "--batch-mode", "--offset", offset, dev)
        assert r.exit_code == 2, (offset, r.output)
        one_line(r, needle)
        assert digest(dev) == before
    r = run("format", "--batch-mode", "--offset=-1", dev)
    assert r.exit_code == 2
    one_line(r, "cannot be negative")
    assert digest(dev) == before


def test_format_question_names_the_offset(offset_dev):
    dev = offset_dev(64)
    before = digest(dev)
    r = run("format", "--offset", 64, dev, input="no\n")
    assert r.exit_code == 1
    assert "Its first 64 sectors (--offset) are left as they are." in r.stderr
    assert "holds a dm-integrity superblock at sector 64" in r.stderr
    assert digest(dev) == before


# -- dump, import, export, verify, detect -----------------------------------------------------

def test_dump(offset_dev):
    dev = offset_dev(64)
    r = run("dump", "--offset", 64, dev)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == f"Info for integrity device {dev}."
    assert lines[1:5] == ["superblock_version 5", "log2_interleave_sectors 15",
                          "integrity_tag_size 4", "journal_sections 1"]
    assert lines[-1] == "flags fix_padding fix_hmac "
    out = json.loads(run("dump", "--json", "--offset", 64, dev).stdout)
    assert out["device"] == str(dev) and out["offset"] == 64
    assert f"provided_data_sectors {out['provided_data_sectors']}" in lines
    # without --offset the device's sector 0 is the prefix, not a superblock
    r = run("dump", dev)
    assert r.exit_code == 2
    one_line(r, str(dev), "no dm-integrity superblock at sector 0", "magic")


@pytest.mark.parametrize("mode", ["journal", "bitmap", "direct"])
def test_import_export_round_trip(mode, offset_dev, tmp_path):
    dev = offset_dev(64)
    head = dev.read_bytes()[:64 * 512]
    n = json.loads(run("dump", "--json", "--offset", 64, dev).stdout)["provided_data_sectors"]
    src = tmp_path / "in.bin"
    src.write_bytes(pattern(0, 1000))
    r = run("import", "--mode", mode, "--json", "--offset", 64, dev, src)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["bytes"] == 1000 * 512
    assert dev.read_bytes()[:64 * 512] == head
    r = run("export", "--offset", 64, dev, tmp_path / "out.bin")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out.bin").read_bytes() == pattern(0, 1000) + bytes((n - 1000) * 512)
    # the reader agrees, through the library, with start_sector=64
    with FileDevice(dev, read_only=True) as d:
        rd = IntegrityReader(d, internal_hash="crc32c", start_sector=64)
        assert rd.read(0, 1000) == pattern(0, 1000)


def test_verify_names_the_logical_sector(offset_dev, tmp_path):
    dev = offset_dev(64)
    src = tmp_path / "in.bin"
    src.write_bytes(pattern(0, 2048))
    assert run("import", "--offset", 64, dev, src).exit_code == 0
    r = run("verify", "--offset", 64, dev)
    assert r.exit_code == 0, r.output
    assert ", 0 block(s) failed (crc32c)" in r.stdout
    # logical sector 1234 lives after the 64 reserved sectors, the superblock, the journal
    # and area 0's tag run
    with FileDevice(dev, read_only=True) as d:
        g = IntegrityReader(d, internal_hash="crc32c", start_sector=64).geometry
    assert g.initial_sectors == 8 + g.journal_sectors and g.metadata_run == 256
    on_disk = 64 + g.initial_sectors + g.metadata_run + 1234
    assert g.data_sector(1234) == on_disk
    raw = bytearray(dev.read_bytes())
    assert raw[on_disk * 512:(on_disk + 1) * 512] == pattern(1234, 1)
    raw[on_disk * 512 + 100] ^= 0x40
    dev.write_bytes(bytes(raw))
    r = run("verify", "--offset", 64, dev)
    assert r.exit_code == 1
    assert "mismatch at sector 1234" in r.stdout
    one_line(r, "1 block(s) failed verification, the first at sector 1234")
    v = run("verify", "--json", "--offset", 64, dev)
    assert json.loads(v.stdout)["mismatches"] == [1234]
    r = run("export", "--offset", 64, dev, tmp_path / "out.bin")
    assert r.exit_code == 1
    one_line(r, "checksum mismatch at sector 1234")
    r = run("export", "--zero-on-error", "--offset", 64, dev, tmp_path / "out.bin")
    assert r.exit_code == 0
    out = (tmp_path / "out.bin").read_bytes()
    assert out[1234 * 512:1235 * 512] == bytes(512)
    assert out[:1234 * 512] == pattern(0, 1234)


@pytest.mark.parametrize("alg,kernel_name", [("crc32c", "crc32c"), ("sha256", "sha256")])
def test_detect(alg, kernel_name, offset_dev, tmp_path):
    dev = offset_dev(64, "--integrity", alg)
    src = tmp_path / "in.bin"
    src.write_bytes(pattern(0, 600))
    assert run("import", "--offset", 64, "--integrity", alg, dev, src).exit_code == 0
    r = run("detect", "--json", "--offset", 64, dev)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["algorithm"] == kernel_name and out["data_blocks"] > 0
    assert out["matched"] == out["sampled"]


# -- the wrong offset --------------------------------------------------------------------------

@pytest.mark.parametrize("verb", READ_VERBS)
def test_image_at_offset_0_opened_with_offset_8(verb, tmp_path):
    dev = tmp_path / "dev.img"
    dev.write_bytes(bytes(2 << 20))
    assert run("format", "--batch-mode", dev).exit_code == 0
    before = digest(dev)
    r = run(*verb_args(verb, dev, tmp_path, "--offset", 8))
    assert r.exit_code == 2, r.output
    one_line(r, str(dev), "no dm-integrity superblock at sector 8",
             "sector 0 holds one: drop --offset")
    assert digest(dev) == before
    assert not (tmp_path / "out.bin").exists()


@pytest.mark.parametrize("verb", READ_VERBS)
def test_offset_beyond_the_device_or_negative(verb, offset_dev, tmp_path):
    dev = offset_dev(64)
    before = digest(dev)
    size = dev.stat().st_size // 512
    beyond = f"--offset {size} is beyond the end of the device ({size} sectors"
    for offset, needle in [(size, beyond),
                           (size - 4, "beyond the end"),
                           (10 ** 12, "beyond the end"),
                           (-64, "--offset -64: a number of sectors cannot be negative")]:
        r = run(*verb_args(verb, dev, tmp_path, "--offset", offset))
        assert r.exit_code == 2, (offset, r.output)
        one_line(r, needle)
        assert digest(dev) == before
        assert not (tmp_path / "out.bin").exists()


def test_luks_header_hint(tmp_path):
    dev = tmp_path / "luks.img"
    dev.write_bytes(b"LUKS\xba\xbe\x00\x02" + bytes((1 << 20) - 8))
    r = run("verify", dev)
    assert r.exit_code == 2
    one_line(r, "no dm-integrity superblock at sector 0", "LUKS header", "give --offset")


def test_other_superblock_faults_name_the_sector(offset_dev):
    dev = offset_dev(64)
    with open(dev, "r+b") as f:
        f.seek(64 * 512 + 8)
        f.write(b"\x09")                       # version 9
    r = run("verify", "--offset", 64, dev)
    assert r.exit_code == 2
    one_line(r, f"{dev} at sector 64: superblock version: 9 is unknown")


def test_separate_metadata_short_after_the_offset(tmp_path):
    """The kernel's check (journal + tags <= metadata device) passes; with the offset the
    last tags would lie past the end: refused with a clear error, not a read failure."""
    meta, data = tmp_path / "meta.img", tmp_path / "data.img"
    meta.write_bytes(bytes(512 * 512))
    data.write_bytes(bytes(4 << 20))
    args = ["--offset", 32, "--data-device", data]
    assert run("format", "--batch-mode", *args, meta).exit_code == 0
    with open(meta, "r+b") as f:
        f.truncate(260 * 512)                  # 32 + 184 + 64 = 280 sectors needed
    for verb in READ_VERBS[1:]:
        r = run(*verb_args(verb, meta, tmp_path, *args))
        assert r.exit_code == 2, (verb, r.output)
        one_line(r, "the tags end at byte 143360, past the end of the metadata device "
                    "(260 sectors) with the superblock at sector 32")


# -- kernel images at an offset ----------------------------------------------------------------

def _embedded(kernel_images, name, tmp_path, n):
    """The kernel image's files, the (metadata) device behind ``n`` zero sectors."""
    files = dict(kernel_images.files(name))
    role = "device" if "device" in files else "meta"
    moved = tmp_path / f"{name}.at{n}.img"
    with open(moved, "wb") as out, open(files[role], "rb") as src:
        out.write(bytes(n * 512))
        shutil.copyfileobj(src, out)
    return files, {**files, role: moved}


def _read_args(name, files, tmp_path):
    if "device" in files:
        dev, opts = files["device"], []
    else:
        dev, opts = files["meta"], ["--data-device", files["data"]]
    opts += ["--integrity", ALGORITHM[name]]
    k = key_of(name)
    if k is not None:
        kf = tmp_path / "key"
        kf.write_bytes(k)
        opts += ["--integrity-key-file", kf]
    return dev, opts


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_kernel_image_behind_a_prefix(name, kernel_images, tmp_path):
    n = 2048
    plain, moved = _embedded(kernel_images, name, tmp_path, n)
    dev0, opts0 = _read_args(name, plain, tmp_path)
    dev, opts = _read_args(name, moved, tmp_path)
    before = digest(*moved.values())
    v = run("verify", "--json", "--offset", n, dev, *opts)
    assert v.exit_code == 0, v.output
    out = json.loads(v.stdout)
    assert out["checked_sectors"] == IMAGES[name]["provided_size_sectors"]
    assert out["mismatches"] == [] and out["unverified"] == []
    assert (out["journal_replayed_blocks"] > 0) == (name in NEEDS_REPLAY)
    assert run("export", dev0, tmp_path / "plain.bin", *opts0).exit_code == 0
    e = run("export", "--offset", n, dev, tmp_path / "moved.bin", *opts)
    assert e.exit_code == 0, e.output
    got = (tmp_path / "moved.bin").read_bytes()
    assert got == (tmp_path / "plain.bin").read_bytes()
    assert hashlib.sha256(got).hexdigest() == IMAGES[name]["provided_sha256"]
    d0, d = run("dump", dev0), run("dump", "--offset", n, dev)
    assert d.exit_code == 0
    assert d.stdout.splitlines()[1:] == d0.stdout.splitlines()[1:]
    i = opts.index("--integrity")
    det = run("detect", "--json", "--offset", n, dev, *opts[:i], *opts[i + 2:])
    assert det.exit_code == 0, det.output
    assert json.loads(det.stdout)["algorithm"] == \
        {"hmac-sha256": "hmac(sha256)"}.get(ALGORITHM[name], ALGORITHM[name])
    assert digest(*moved.values()) == before
    # without the offset it is not found
    r = run("verify", dev, *opts)
    assert r.exit_code == 2
    one_line(r, "no dm-integrity superblock at sector 0")


def test_kernel_start16_image(oracle_images, tmp_path):
    """Made by the kernel with 16 reserved sectors; the whole provided device written."""
    e = ORACLE_CASES["start16"]
    dev = oracle_images.path(e["files"][0]["file"])
    before = digest(dev)
    v = run("verify", "--json", "--offset", 16, dev)
    assert v.exit_code == 0, v.output
    assert json.loads(v.stdout)["checked_sectors"] == e["provided_size_sectors"]
    assert run("export", "--offset", 16, dev, tmp_path / "out.bin").exit_code == 0
    data = (tmp_path / "out.bin").read_bytes()
    assert hashlib.sha256(data).hexdigest() == e["kernel_sha256"]
    assert data == pattern(0, e["provided_size_sectors"])
    d = run("detect", "--json", "--offset", 16, dev)
    assert d.exit_code == 0 and json.loads(d.stdout)["algorithm"] == "crc32c"
    assert digest(dev) == before
    r = run("verify", dev)
    assert r.exit_code == 2
    one_line(r, "no dm-integrity superblock at sector 0")
    # import onto a copy: the kernel's table line with 16 reserved sectors, the first 16
    # sectors left alone
    copy = tmp_path / "start16.img"
    shutil.copyfile(dev, copy)
    copy.chmod(0o644)
    head = copy.read_bytes()[:16 * 512]
    src = tmp_path / "in.bin"
    src.write_bytes(pattern(5000, 100))
    assert run("import", "--offset", 16, copy, src).exit_code == 0
    assert copy.read_bytes()[:16 * 512] == head
    assert run("export", "--offset", 16, copy, tmp_path / "out2.bin").exit_code == 0
    assert (tmp_path / "out2.bin").read_bytes() == pattern(5000, 100) + data[100 * 512:]


def test_luks2_integrity_superblock_at_the_data_offset(tmp_path):
    """cryptsetup's LUKS2 --integrity volume: the kernel's dm-integrity superblock at the
    data segment offset (2048 sectors here), put back behind the stored LUKS2 header."""
    from integrity_vectors import _decompress
    luks = VECTORS.parent / "luks"
    im = {e["name"]: e for e in json.loads((luks / "manifest.json").read_text())["images"]}
    e = im["luks2-aes-xts-hmac-sha256"]
    sb = e["dif_superblock"]
    vol = tmp_path / "vol.img"
    _decompress(luks / e["file"], vol)
    with open(vol, "r+b") as f:
        f.truncate(e["original_raw_size"])
        f.seek(sb["offset_sectors"] * 512)
        f.write(bytes.fromhex(sb["head_hex"]))
    r = run("dump", "--json", "--offset", sb["offset_sectors"], vol)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["offset"] == 2048
    assert (out["integrity_tag_size"], out["provided_data_sectors"], out["superblock_version"],
            out["flags"]) == (32, 8096, 4, ["fix_padding"])
    r = run("dump", vol)
    assert r.exit_code == 2
    one_line(r, "no dm-integrity superblock at sector 0", "LUKS header", "give --offset")
