"""`dmkit integrity format`: round trips through dump/verify/export/detect for several
option sets, the confirmation question, refusals that leave the device untouched, and
keys that never appear in any output."""

import hashlib
import json
import logging

import pytest
from click.testing import CliRunner

from dmkit.cli import cli


def run(*args, input=None):
    return CliRunner().invoke(cli, ["integrity", *map(str, args)], input=input,
                              catch_exceptions=False)


def digest(*paths):
    return [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths]


@pytest.fixture
def img(tmp_path):
    def make(kib, name="dev.img", fill=b"\x00"):
        p = tmp_path / name
        p.write_bytes(fill * (kib * 1024 // len(fill)))
        return p
    return make


@pytest.fixture
def key32(tmp_path):
    p = tmp_path / "k32"
    p.write_bytes(bytes(range(0xA0, 0xC0)))
    return p


# (format options, image KiB, data KiB or None, expected dump fields, detect name)
ROUND_TRIPS = {
    "defaults": ([], 2048, None,
                 {"superblock_version": 5, "integrity_tag_size": 4, "sector_size": 512,
                  "flags": ["fix_padding", "fix_hmac"]}, "crc32c"),
    "sha256-4k": (["--integrity", "sha256", "--sector-size", "4096"], 2048, None,
                  {"integrity_tag_size": 32, "sector_size": 4096,
                   "log2_blocks_per_bitmap": 12}, "sha256"),
    "hmac-sha256": (["--integrity", "hmac-sha256", "--integrity-key-file", "@k32",
                     "--interleave-sectors", "1024"], 2048, None,
                    {"integrity_tag_size": 32, "log2_interleave_sectors": 10},
                    "hmac(sha256)"),
    "kernel-name": (["--integrity", "hmac(sha256)", "--integrity-key-file", "@k32",
                     "--integrity-key-size", "32", "--integrity-legacy-hmac",
                     "--interleave-sectors", "2048"], 2048, None,
                    {"superblock_version": 4, "flags": ["fix_padding"]}, "hmac(sha256)"),
    "legacy-both": (["--integrity-legacy-padding", "--integrity-legacy-hmac"], 2048, None,
                    {"superblock_version": 1, "flags": []}, "crc32c"),
    "journal": (["--journal-size", "262144", "--journal-integrity", "hmac-sha256",
                 "--journal-integrity-key-file", "@k32", "--journal-crypt", "ctr-aes",
                 "--journal-crypt-key-file", "@k32"], 4096, None,
                {"journal_sections": 3,      # 512 sectors / 168 (20 entries a sector)
                 "flags": ["have_journal_mac", "fix_padding", "fix_hmac"]}, "crc32c"),
    "data-device": (["--integrity", "sha1", "--sector-size", "2048", "--data-device", "@data"],
                    256, 2048, {"log2_interleave_sectors": 0, "superblock_version": 5,
                                "integrity_tag_size": 20, "provided_data_sectors": 4096,
                                "flags": ["fix_hmac"]}, "sha1"),
    "xxhash64-tag12": (["--integrity", "xxhash64", "--tag-size", "12"], 2048, None,
                       {"integrity_tag_size": 12}, "xxhash64"),
    "crc32-tag2": (["--integrity", "crc32", "--tag-size", "2", "--sector-size", "1024"],
                   1024, None, {"integrity_tag_size": 2, "sector_size": 1024}, "crc32"),
}


@pytest.mark.parametrize("case", sorted(ROUND_TRIPS))
def test_round_trip(case, img, key32, tmp_path):
    opts, kib, data_kib, fields, alg = ROUND_TRIPS[case]
    dev = img(kib, fill=b"\xa5\x5a")
    data = img(data_kib, "data.img", fill=b"\x3c") if data_kib else None
    opts = [str(key32) if o == "@k32" else str(data) if o == "@data" else o for o in opts]
    result = run("format", "--batch-mode", *opts, dev)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""          # quiet in batch mode, as integritysetup
    dump = json.loads(run("dump", "--json", dev).stdout)
    for k, v in fields.items():
        assert dump[k] == v, k
    read_opts = _read_options(opts)
    v = run("verify", "--json", dev, *read_opts)
    assert v.exit_code == 0, v.output
    out = json.loads(v.stdout)
    assert out["checked_sectors"] == dump["provided_data_sectors"] and not out["mismatches"]
    e = run("export", dev, tmp_path / "out.bin", *read_opts)
    assert e.exit_code == 0, e.output
    assert (tmp_path / "out.bin").read_bytes() == bytes(dump["provided_data_sectors"] * 512)
    d = run("detect", "--json", dev, *_detect_options(read_opts))
    assert d.exit_code == 0, d.output
    assert json.loads(d.stdout)["algorithm"] == alg


def _read_options(opts):
    keep = {"--integrity": 1, "--integrity-key-file": 1, "--integrity-key-size": 1,
            "--data-device": 1}
    out, i = [], 0
    while i < len(opts):
        n = keep.get(opts[i])
        if n is None:
            i += 1
            continue
        out += opts[i:i + 1 + n]
        i += 1 + n
    return out


def _detect_options(read_opts):
    out, i = [], 0
    while i < len(read_opts):
        if read_opts[i] == "--integrity":
            i += 2
            continue
        out.append(read_opts[i])
        i += 1
    return out


def test_defaults_are_integritysetups(img):
    dev = img(8192)
    run("format", "--batch-mode", dev)
    text = run("dump", dev).stdout
    assert text == (f"Info for integrity device {dev}.\nsuperblock_version 5\n"
                    "log2_interleave_sectors 15\nintegrity_tag_size 4\njournal_sections 1\n"
                    "provided_data_sectors 15944\nsector_size 512\n"
                    "log2_blocks_per_bitmap 15\nflags fix_padding fix_hmac \n")


# -- asking first ----------------------------------------------------------------------------

def test_asks_before_formatting(img):
    dev = img(2048, fill=b"\x77")
    before = digest(dev)
    result = run("format", dev, input="yes\n")
    assert result.exit_code == 1
    assert "Are you sure? (Type 'yes' in capital letters)" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == \
        "dmkit: operation aborted; nothing was written"
    assert digest(dev) == before
    result = run("format", dev, input="")           # no answer at all
    assert result.exit_code == 1 and digest(dev) == before
    result = run("format", dev, input="YES\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Formatted with tag size 4, internal integrity crc32c.\n"
    assert run("verify", dev).exit_code == 0


def test_existing_superblock_is_named_in_the_question(img):
    dev = img(2048)
    run("format", "--batch-mode", "--integrity", "sha256", dev)
    before = digest(dev)
    result = run("format", dev, input="no\n")
    assert result.exit_code == 1
    assert "holds a dm-integrity superblock (version 5, 1952 provided sectors, tag size 32)" \
        in result.stderr
    assert digest(dev) == before
    result = run("format", "-q", dev)              # --batch-mode: no question
    assert result.exit_code == 0 and "Are you sure" not in result.stderr
    assert json.loads(run("dump", "--json", dev).stdout)["integrity_tag_size"] == 4


# -- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize("opts,kib,needle", [
    (["--integrity", "hmac-sha256", "--integrity-key-file", "@k32"], 1024, "device too small"),
    ([], 16, "too small"),
    (["--integrity-legacy-padding", "--interleave-sectors", "8"], 1024,
     "inside area 0's data"),
    (["--sector-size", "1000"], 1024, "--sector-size 1000 is not 512, 1024, 2048 or 4096"),
    (["--tag-size", "600"], 1024, "tag_size 600 is not in"),
    (["--integrity", "hmac-sha256"], 1024, "hmac(sha256) needs a key"),
    (["--integrity", "nosuch"], 1024, "unknown or unavailable tag algorithm 'nosuch'"),
    (["--integrity-key-file", "/nonexistent"], 1024, "cannot read key file"),
    (["--journal-crypt", "ctr-aes"], 1024, "--journal-crypt needs --journal-crypt-key-file"),
    (["--journal-crypt", "ecb-aes", "--journal-crypt-key-file", "@k32"], 1024,
     "not supported"),
    (["--journal-integrity", "hmac-sha256"], 1024, "hmac(sha256) needs a key"),
    (["--journal-size", "100"], 1024, "less than one sector"),
    (["--integrity-key-size", "32"], 1024, "--integrity-key-size needs --integrity-key-file"),
    (["--integrity", "crc32c", "--integrity-key-file", "@k32"], 1024,
     "crc32c: key of 32 bytes, expected 4"),
    (["--data-device", "@self"], 1024, "the data device is DEV itself"),
    (["--data-device", "/nonexistent.img"], 1024, "No such file"),
])
def test_refusals_leave_the_device_untouched(opts, kib, needle, img, key32):
    dev = img(kib, fill=b"\x42")
    opts = [str(key32) if o == "@k32" else str(dev) if o == "@self" else o for o in opts]
    before = digest(dev)
    result = run("format", "--batch-mode", *opts, dev)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dmkit: ") and needle in lines[0], lines
    assert digest(dev) == before


def test_read_only_device_is_refused(img):
    dev = img(1024)
    dev.chmod(0o444)
    import os
    if os.geteuid() == 0:
        pytest.skip("root opens a 0444 file for writing anyway")
    result = run("format", "--batch-mode", dev)
    assert result.exit_code == 2
    assert "Permission denied" in result.stderr


def test_no_wipe(img):
    dev = img(2048, fill=b"\x00")
    assert run("format", "--batch-mode", "--no-wipe", dev).exit_code == 0
    result = run("verify", "--json", dev)
    assert result.exit_code == 1      # the tags were never written
    provided = json.loads(run("dump", "--json", dev).stdout)["provided_data_sectors"]
    assert len(json.loads(result.stdout)["mismatches"]) == provided
    d = run("detect", dev)
    assert d.exit_code == 1 and "every tag is blank" in d.stderr


# -- keys stay secret ------------------------------------------------------------------------

def test_keys_never_appear_in_output(img, tmp_path, caplog):
    key = bytes.fromhex("5ec12e75ec12e75ec12e75ec12e75ec12e75ec12e75ec12e75ec12e75ec12e75e"[:64])
    kf = tmp_path / "secret.key"
    kf.write_bytes(key)
    dev = img(2048)
    forms = [key.hex(), key.hex().upper(), repr(key), key.decode("latin-1")]
    caplog.set_level(logging.DEBUG)
    outputs = []
    for args in (["format", "--batch-mode", "--integrity", "hmac-sha256",
                  "--integrity-key-file", kf, "--interleave-sectors", "1024",
                  "--journal-integrity", "hmac-sha256", "--journal-integrity-key-file", kf,
                  "--journal-crypt", "ctr-aes", "--journal-crypt-key-file", kf, dev],
                 ["verify", "--json", "--integrity", "hmac-sha256", "--integrity-key-file",
                  kf, dev],
                 ["export", "--integrity", "hmac-sha256", "--integrity-key-file", kf, dev,
                  tmp_path / "o.bin"],
                 ["detect", "--json", "--integrity-key-file", kf, dev],
                 ["verify", "--integrity", "crc32c", "--integrity-key-file", kf, dev]):
        r = CliRunner().invoke(cli, ["--debug", "integrity", *map(str, args)])
        outputs.append(r.output)
    outputs.append(caplog.text)
    assert outputs[-2]      # the last one failed, with a message
    for text in outputs:
        for form in forms:
            assert form not in text


def test_wipe_progress_bar_on_a_terminal(img, monkeypatch):
    import dmkit.cli.progress as progress_mod
    dev = img(2048)
    monkeypatch.setattr(progress_mod, "_stderr_is_terminal", lambda: True)
    result = run("format", "--batch-mode", dev)
    assert result.exit_code == 0 and "wipe" in result.stderr and "|" in result.stderr
