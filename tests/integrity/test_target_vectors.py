"""Every kernel-made image opens as an integrity target with the table the kernel had while
it was open (device names and the masked keys filled in), reads back what the kernel read,
and prints the kernel's own table line; after dmkit closes it the image still verifies."""

import hashlib
import json
import re

import pytest
from integrity_vectors import IMAGES, VECTORS, _decompress, key_of

from dmkit.block import FileDevice
from dmkit.dm import MappedDevice
from dmkit.targets.integrity import IntegrityReader

ORACLE = VECTORS / "oracle"
ORACLE_CASES = {e["name"]: e for e in json.loads((ORACLE / "manifest.json").read_text())["images"]}


def kernel_table(line: str, files: dict, key_hex: str | None) -> str:
    """The kernel's ``dmsetup table`` line with our paths and the real key."""
    words = line.split(": ", 1)[-1].split()
    words[3] = str(files["data"] if "meta" in files else files["device"])
    out = []
    for w in words:
        if w.startswith("meta_device:"):
            w = f"meta_device:{files['meta']}"
        elif w.startswith("internal_hash:") and key_hex:
            w = re.sub(r":0+$", ":" + key_hex, w)
        out.append(w)
    return " ".join(out)


def check_open(table: str, want_sha256: str, nr_sectors: int, *, same_table: bool = True):
    dev = MappedDevice.from_table(table)
    try:
        assert dev.nr_sectors == nr_sectors
        data = dev.read(0, dev.nr_sectors)
        assert hashlib.sha256(data).hexdigest() == want_sha256
        if same_table:
            assert dev.table().strip() == table
        assert dev.status().split()[3:] == ["0", str(nr_sectors), "-"]
    finally:
        dev.close()
    return data


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_kernel_fixture_opens_as_target(name, kernel_images, tmp_path):
    im = IMAGES[name]
    files = kernel_images.copy(name, tmp_path)
    key = key_of(name)
    if "dm_table_while_open" in im:
        table = kernel_table(im["dm_table_while_open"][0], files, key.hex() if key else None)
    else:  # the crash image: the table integritysetup open makes (journal mode, crc32c)
        table = f"0 {im['provided_size_sectors']} integrity {files['device']} 0 4 J 1 " \
                "internal_hash:crc32c"
    data = check_open(table, im["provided_sha256"], im["provided_size_sectors"],
                      same_table="dm_table_while_open" in im)
    # a second load reads the same (the crash image was replayed home by the first)
    assert check_open(table, im["provided_sha256"], im["provided_size_sectors"],
                      same_table="dm_table_while_open" in im) == data
    data_dev = FileDevice(files.get("data") or files["device"], read_only=True)
    meta_dev = FileDevice(files["meta"], read_only=True) if "meta" in files else None
    try:
        r = IntegrityReader(data_dev, meta_dev, internal_hash=table.split("internal_hash:")[1]
                            .split(":")[0].split()[0], key=key, replay_journal=True)
        assert r.read(0, r.nr_sectors) == data
        assert r.scrub() == []
    finally:
        data_dev.close()
        if meta_dev is not None:
            meta_dev.close()


@pytest.fixture(scope="module")
def oracle_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("oracle-target")

    def files(name):
        out = {}
        for f in ORACLE_CASES[name]["files"]:
            dst = root / f["file"][:-4]
            if not dst.exists():
                _decompress(ORACLE / f["file"], dst)
            out[f["role"]] = dst
        return out
    return files


OPENABLE = sorted(n for n, e in ORACLE_CASES.items() if e["table_while_open"])


@pytest.mark.parametrize("name", OPENABLE)
def test_oracle_image_opens_as_target(name, oracle_files):
    e = ORACLE_CASES[name]
    table = kernel_table(e["table_while_open"], oracle_files(name), e["key_hex"])
    # start16's recorded table is the one given to dmsetup create, not the kernel's status
    check_open(table, e["kernel_sha256"], e["provided_size_sectors"],
               same_table=name != "start16")


def test_legacy_padding_quirk_image_is_read_only(oracle_files):
    """The kernel's own layout bug (tags on data): dmkit opens it for reading only."""
    path = oracle_files("legacy-pad-il8-crc32c")["device"]
    table = f"0 56 integrity {path} 0 4 J 1 internal_hash:crc32c"
    from dmkit.errors import TableError
    with pytest.raises(TableError, match="puts tags on data"):
        MappedDevice.from_table(table)
    dev = MappedDevice.from_table(table.replace(" J ", " R "))
    assert dev.read(8, 48) == b"".join(hashlib.sha256(b"dmkit-fixture:%d" % s).digest() * 16
                                       for s in range(8, 56))
    dev.close()


