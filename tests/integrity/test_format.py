"""Offline format: the superblock the kernel writes for the same parameters (every kernel
image, salt aside), the empty journal, wiping, and the layouts that are refused."""

import json
import shlex

import pytest
from click.testing import CliRunner
from integrity_vectors import IMAGES, VECTORS, ImageCache, _decompress

import dmkit.cli.integrity as cli_integrity
from dmkit.block import MemoryDevice
from dmkit.cli import cli
from dmkit.errors import FormatError
from dmkit.targets.integrity import IntegrityReader, JournalStatus, scan_journal
from dmkit.targets.integrity.format import (
    FormatParams,
    JournalCipher,
    format_device,
    plan_format,
)
from dmkit.targets.integrity.layout import (
    COMMIT_IDS,
    JournalEntry,
    SbFlags,
    Superblock,
)

ORACLE = VECTORS / "oracle"
ORACLE_CASES = {e["name"]: e for e in
                json.loads((ORACLE / "manifest.json").read_text())["images"]}


class _OracleCache(ImageCache):
    def path(self, file):
        dst = self.root / file[:-4]
        if not dst.exists():
            _decompress(ORACLE / file, dst)
        return dst


@pytest.fixture(scope="module")
def oracle_images(tmp_path_factory):
    return _OracleCache(tmp_path_factory.mktemp("oracle-format"))


def _format_like(command: str, files: dict, salt: bytes, tmp_path, monkeypatch):
    """Run `dmkit integrity format` with the options of an `integritysetup format`
    command line on zero images of the kernel images' sizes; returns the new
    metadata device's superblock area."""
    args = shlex.split(command)
    args = args[args.index("format") + 1:-1]          # options, without the device
    sizes = {role: p.stat().st_size for role, p in files.items()}
    meta_role = "device" if "device" in files else "meta"
    dev = tmp_path / "dev.img"
    dev.write_bytes(bytes(sizes[meta_role]))
    out = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--integrity-key-file":
            kf = tmp_path / "key"
            kf.write_bytes(b"\x11" * 64)
            out += [a, str(kf)]
            i += 2
        elif a == "--data-device":
            data = tmp_path / "data.img"
            data.write_bytes(bytes(sizes["data"]))
            out += [a, str(data)]
            i += 2
        else:
            out.append(a)
            i += 1
    monkeypatch.setattr(cli_integrity, "random_bytes", lambda n: salt)
    result = CliRunner().invoke(cli, ["integrity", "format", *out, str(dev)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return dev.read_bytes()[:4096]


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_superblock_equals_the_shared_fixtures(name, kernel_images, tmp_path, monkeypatch):
    files = kernel_images.files(name)
    meta = files.get("device") or files["meta"]
    kernel = meta.read_bytes()[:4096]
    salt = Superblock.from_bytes(kernel).salt
    cmd = IMAGES[name]["commands"]["format_and_open"][0]
    assert _format_like(cmd, files, salt, tmp_path, monkeypatch) == kernel


@pytest.mark.parametrize("name", sorted(n for n in ORACLE_CASES
                                        if ORACLE_CASES[n]["format"].startswith("integritysetup")
                                        and n != "legacy-pad-il8-crc32c"))
def test_superblock_equals_the_oracle_images(name, oracle_images, tmp_path, monkeypatch):
    e = ORACLE_CASES[name]
    files = {f["role"]: oracle_images.path(f["file"]) for f in e["files"]}
    meta = files.get("device") or files["meta"]
    kernel = meta.read_bytes()[:4096]
    salt = Superblock.from_bytes(kernel).salt
    assert _format_like(e["format"], files, salt, tmp_path, monkeypatch) == kernel


def test_superblock_with_reserved_sectors(oracle_images):
    """start16: the kernel formatted a zeroed device on first load of a table with 16
    reserved sectors."""
    e = ORACLE_CASES["start16"]
    img = oracle_images.path(e["files"][0]["file"]).read_bytes()
    kernel = img[16 * 512:16 * 512 + 4096]
    plan = plan_format(len(img) // 512, params=FormatParams(start_sector=16),
                       salt=Superblock.from_bytes(kernel).salt)
    assert plan.superblock_area == kernel
    assert plan.geometry.journal_start_sector == 24


def test_old_padding_small_interleave_is_refused(oracle_images):
    """The kernel formats it, then puts area 1's tags on area 0's data (see
    test_oracle_images.py); dmkit refuses to make it."""
    with pytest.raises(FormatError, match="inside area 0's data"):
        plan_format(2048, params=FormatParams(fix_padding=False, interleave_sectors=8),
                    salt=bytes(16))
    # with one area there is nothing to overlap, and fixed padding never has the problem
    plan_format(256 * 2, params=FormatParams(fix_padding=False, interleave_sectors=8),
                salt=bytes(16))
    plan_format(2048, params=FormatParams(interleave_sectors=8), salt=bytes(16))
    # smaller tag buffers avoid it too, as the kernel's buffer_sectors would
    plan_format(2048, params=FormatParams(fix_padding=False, interleave_sectors=8,
                                          buffer_sectors=8), salt=bytes(16))


# -- the empty journal -------------------------------------------------------------------------

@pytest.mark.parametrize("params", [
    FormatParams(),
    FormatParams(internal_hash="sha256", block_size=4096, journal_sectors=4096),
    FormatParams(journal_mac="hmac-sha256", journal_mac_key=b"k" * 32, journal_sectors=2048),
])
def test_empty_journal_is_empty(params):
    plan = plan_format(16384, params=params, salt=b"s" * 16)
    jg = plan.geometry.journal
    assert len(plan.journal) == jg.total_sectors * 512
    scan = scan_journal(plan.journal, plan.geometry)
    assert scan.status is JournalStatus.EMPTY
    assert scan.used_commit_seqs == (True, False, False, False)
    raw = plan.journal
    for n in (0, 1, jg.section_entries - 1):
        sec, off = jg.entry_position(n)
        e = JournalEntry.from_bytes(raw[sec * 512 + off:], jg.sectors_per_block, jg.tag_size)
        assert e.is_unused and e.sector == 0xFFFFFFFF << 32 and e.tag == bytes(jg.tag_size)
    assert int.from_bytes(raw[504:512], "little") == COMMIT_IDS[0]
    last = jg.total_sectors - 1
    i, j = divmod(last, jg.section_sectors)
    assert int.from_bytes(raw[-8:], "little") == COMMIT_IDS[0] ^ ((i << 32) ^ j)


def test_journal_mac_changes_the_geometry_and_the_superblock():
    plain = plan_format(16384, params=FormatParams(), salt=b"s" * 16)
    mac = plan_format(16384, params=FormatParams(journal_mac="hmac-sha256",
                                                  journal_mac_key=b"k" * 32), salt=b"s" * 16)
    assert mac.superblock.has(SbFlags.HAVE_JOURNAL_MAC)
    assert mac.geometry.journal.entries_per_sector < plain.geometry.journal.entries_per_sector
    # the superblock MAC sits at the end of the first sector (fix_hmac + journal MAC)
    assert mac.superblock_area[512 - 32:512] != bytes(32)
    assert mac.superblock_area[64:512 - 32] == bytes(512 - 32 - 64)
    legacy = plan_format(16384, params=FormatParams(fix_hmac=False, journal_mac="hmac-sha256",
                                                     journal_mac_key=b"k" * 32))
    assert legacy.superblock_area[64:] == bytes(4096 - 64)


def test_journal_encryption_is_not_a_plain_journal():
    plan = plan_format(16384, params=FormatParams(journal_crypt="ctr-aes",
                                                   journal_crypt_key=b"k" * 32),
                       salt=b"s" * 16)
    assert scan_journal(plan.journal, plan.geometry).status is JournalStatus.UNREADABLE
    # decrypting with the cipher's pad gives init_journal's content with encrypted ids
    c = JournalCipher("ctr(aes)", b"k" * 32)
    pages = -(-plan.geometry.journal_sectors // 8)
    pad, ids = c.pad_and_commit_ids(pages)
    plain = bytes(a ^ b for a, b in zip(plan.journal, pad))
    assert scan_journal(plain, plan.geometry, commit_ids=ids).status is JournalStatus.EMPTY


@pytest.mark.parametrize("name,key,err", [
    ("ecb(aes)", b"k" * 32, "not supported"),
    ("ctr-aes", b"k" * 20, "key of 20 bytes"),
    ("xts-aes", b"k" * 16, "key of 16 bytes"),
    ("chacha20", b"k" * 16, "key of 16 bytes"),
])
def test_journal_cipher_errors(name, key, err):
    with pytest.raises(ValueError, match=err):
        JournalCipher(name, key)


@pytest.mark.parametrize("params,exc,err", [
    (FormatParams(internal_hash="hmac-sha256"), ValueError, "needs a key"),
    (FormatParams(tag_size=500), FormatError, "tag_size 500 is not in"),
    (FormatParams(block_size=1000), FormatError, "block_size 1000"),
    (FormatParams(internal_hash="hmac-sha256", key=b"k" * 32), FormatError, "too small"),
    (FormatParams(journal_crypt="ctr-aes"), ValueError, "needs a key"),
    (FormatParams(journal_mac="hmac-sha256"), ValueError, "needs a key"),
])
def test_plan_errors(params, exc, err):
    with pytest.raises(exc, match=err):
        plan_format(2048, params=params, salt=bytes(16))


# -- writing -------------------------------------------------------------------------------

def test_format_then_read_zeros_in_memory():
    dev = MemoryDevice(8192, initial=b"\xa5" * (8192 * 512))
    plan = format_device(dev, params=FormatParams(internal_hash="sha256"),
                         random=lambda n: b"r" * n)
    assert plan.superblock.salt == b"r" * 16
    r = IntegrityReader(dev, internal_hash="sha256")
    assert r.read(0, r.nr_sectors) == bytes(r.nr_sectors * 512)
    assert r.scrub() == []


def test_separate_metadata_device_in_memory():
    data = MemoryDevice(4096, initial=b"\x5a" * (4096 * 512))
    meta = MemoryDevice(1024)
    done = []
    format_device(data, meta, params=FormatParams(block_size=4096),
                  progress=lambda d, t: done.append((d, t)))
    assert done[-1] == (4096, 4096)
    r = IntegrityReader(data, meta, internal_hash="crc32c")
    assert r.read(0, 4096) == bytes(4096 * 512)


def test_no_wipe_leaves_data_and_tags():
    dev = MemoryDevice(8192, initial=b"\xa5" * (8192 * 512))
    plan = format_device(dev, params=FormatParams(), wipe=False)
    geo = plan.geometry
    assert dev.read(geo.data_sector(0), 1) == b"\xa5" * 512
    r = IntegrityReader(dev, internal_hash="crc32c")
    assert len(r.scrub()) == r.nr_sectors


def test_progress_is_cumulative():
    dev = MemoryDevice(70000)
    seen = []
    format_device(dev, params=FormatParams(), progress=lambda d, t: seen.append((d, t)))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert seen[-1][0] == seen[-1][1] == IntegrityReader(
        dev, internal_hash="crc32c").nr_sectors
