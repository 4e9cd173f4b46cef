"""`dmkit integrity detect`: the tag algorithm of every kernel image, found from its tags."""

import hashlib
import json

import pytest
from click.testing import CliRunner
from integrity_vectors import VECTORS, OracleImageCache

from dmkit.block import FileDevice
from dmkit.cli import cli
from dmkit.targets.integrity.detect import detect_algorithm

ORACLE = VECTORS / "oracle"
ORACLE_CASES = {e["name"]: e for e in
                json.loads((ORACLE / "manifest.json").read_text())["images"]}
K32 = hashlib.shake_256(b"dmkit-fixture-key:s1i3.hmac").digest(32)



@pytest.fixture(scope="module")
def oracle_images(tmp_path_factory):
    return OracleImageCache(tmp_path_factory.mktemp("oracle-detect"))


def run(*args):
    return CliRunner().invoke(cli, ["integrity", "detect", *map(str, args)],
                              catch_exceptions=False)


def digest(*paths):
    return [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths]


# (image, expected kernel name, fix_hmac, key or None)
SHARED = [
    ("crc32c-journal", "crc32c", True, None),
    ("crc32c-bitmap", "crc32c", True, None),
    ("crc32c-direct", "crc32c", True, None),
    ("crc32c-journal-crash", "crc32c", True, None),
    ("sha256-journal-4k", "sha256", True, None),
    ("sha256-separate-meta", "sha256", True, None),
    ("hmac-sha256-journal", "hmac(sha256)", True, "s1i3"),
]


def _args(files, key, tmp_path):
    args = []
    if "device" in files:
        args.append(files["device"])
    else:
        args += [files["meta"], "--data-device", files["data"]]
    if key is not None:
        kf = tmp_path / "key"
        kf.write_bytes(key)
        args += ["--integrity-key-file", kf]
    return args


@pytest.mark.parametrize("name,alg,salted,key", SHARED)
def test_detects_the_kernel_images(name, alg, salted, key, kernel_images, tmp_path):
    key = K32 if key else None
    files = kernel_images.files(name)
    before = digest(*files.values())
    result = run("--json", *_args(files, key, tmp_path))
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["algorithm"], out["fix_hmac"], out["keyed"]) == (alg, salted, key is not None)
    assert out["matched"] == out["sampled"] >= 32
    assert out["data_blocks"] > 0 and out["zero_blocks"] > 0
    assert not out["ambiguous"]
    assert digest(*files.values()) == before


def test_hmac_needs_the_key(kernel_images, tmp_path):
    files = kernel_images.files("hmac-sha256-journal")
    result = run(*_args(files, None, tmp_path))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"dmkit: {files['device']}: no algorithm matches the tags of the 64 sampled blocks "
        "(keyed algorithms need --integrity-key-file)"]
    result = run(*_args(files, b"\x02" * 32, tmp_path))
    assert result.exit_code == 1


ORACLE_EXPECT = [
    ("xxhash64", "xxhash64", True, None),
    ("crc32", "crc32", True, None),
    ("b2048-sha1", "sha1", True, None),
    ("tag5-crc32c", "crc32c", True, None),
    ("tag20-sha256", "sha256", True, None),
    ("il64-sha256-b4096", "sha256", True, None),
    ("legacy-pad-crc32c", "crc32c", True, None),
    ("meta-sha1-4k", "sha1", True, None),
    ("hmac-sha512-il1024", "hmac(sha512)", True, "k64"),
    ("legacy-hmac-sha256-il1024", "hmac(sha256)", False, "k32"),
]


@pytest.mark.parametrize("name,alg,salted,key", ORACLE_EXPECT)
def test_detects_the_oracle_images(name, alg, salted, key, oracle_images, tmp_path):
    e = ORACLE_CASES[name]
    files = {f["role"]: oracle_images.path(f["file"]) for f in e["files"]}
    k = bytes.fromhex(e["key_hex"]) if key else None
    result = run("--json", *_args(files, k, tmp_path))
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["algorithm"], out["fix_hmac"]) == (alg, salted)
    assert out["matched"] == out["sampled"] > 0
    text = run(*_args(files, k, tmp_path))
    assert f"{out['matched']} of {out['sampled']} sampled blocks match" in text.stdout


def test_discarded_and_blank_tags_are_skipped(kernel_images, tmp_path):
    files = kernel_images.copy("crc32c-journal", tmp_path)
    with FileDevice(files["device"], read_only=True) as dev:
        base = detect_algorithm(dev)
        from dmkit.targets.integrity import IntegrityReader
        geo = IntegrityReader(dev, internal_hash="crc32c").geometry
    assert base.best.algorithm == "crc32c"
    with open(files["device"], "r+b") as f:
        for s in range(0, 64):          # the first window: filler and blank tags
            f.seek(geo.tag_offset(s))
            f.write(b"\xf6" * 4 if s % 2 else bytes(4))
    with FileDevice(files["device"], read_only=True) as dev:
        res = detect_algorithm(dev)
    assert res.skipped_discarded == 32 and res.skipped_blank == 32
    assert res.best.algorithm == "crc32c" and res.best.matched == res.sampled


def test_nothing_matches(kernel_images, tmp_path):
    files = kernel_images.copy("crc32c-journal", tmp_path)
    with FileDevice(files["device"], read_only=True) as dev:
        from dmkit.targets.integrity import IntegrityReader
        geo = IntegrityReader(dev, internal_hash="crc32c").geometry
    with open(files["device"], "r+b") as f:   # scramble every tag
        for area in range(geo.nr_areas):
            tag_sector, _, _, _ = geo.area_layout(area)
            f.seek(tag_sector * 512)
            f.write(hashlib.shake_256(b"x%d" % area).digest(4 << 15))
    result = run(files["device"])
    assert result.exit_code == 1
    assert "no algorithm matches the tags" in result.stderr


def test_partial_match_is_reported(kernel_images, tmp_path):
    """Some blocks damaged: the algorithm still wins, with fewer matches."""
    files = kernel_images.copy("sha256-journal-4k", tmp_path)
    with FileDevice(files["device"], read_only=True) as dev:
        from dmkit.targets.integrity import IntegrityReader
        geo = IntegrityReader(dev, internal_hash="sha256").geometry
    with open(files["device"], "r+b") as f:
        for s in range(0, 64, 8):
            f.seek(geo.data_sector(s) * 512)
            f.write(b"\x55")
    out = json.loads(run("--json", files["device"]).stdout)
    assert out["algorithm"] == "sha256"
    assert 0 < out["matched"] < out["sampled"]
