"""Key slot operations, header copies and recovery, safe writes, backup/restore, detached
headers and tokens, all in memory."""

from __future__ import annotations

import os

import pytest

import dmkit.luks as luks
from dmkit.block import MemoryDevice
from dmkit.errors import BlockIOError, FormatError, NotSupportedError
from dmkit.keys import Keyring
from dmkit.luks import KeyslotError, Luks1Volume, Luks2Volume, NoKeyError, ParameterError, \
    Pbkdf, format_luks1, format_luks2, load
from dmkit.luks.backup import backup_bytes, header_restore
from dmkit.luks.luks2 import read_luks2_header, write_luks2_header

from ._util import FAST, FAST_ARGON2I, FAST_ARGON2ID, FailingDevice, image_bytes, seeded_rng

MiB = 1 << 20


def new_luks2(size=4 * MiB, seed=1, **kw):
    dev = MemoryDevice(size // 512)
    kw.setdefault("pbkdf", FAST)
    kw.setdefault("keyslots_size", 1 * MiB - 32768)
    opened = format_luks2(dev, "old", rng=seeded_rng(seed), **kw)
    return dev, opened


def new_luks1(size=4 * MiB, seed=1, **kw):
    dev = MemoryDevice(size // 512)
    kw.setdefault("pbkdf", FAST)
    opened = format_luks1(dev, "old", rng=seeded_rng(seed), **kw)
    return dev, opened


def test_format_luks2_layout_and_determinism():
    dev, opened = new_luks2()
    vol = load(dev)
    assert isinstance(vol, Luks2Volume) and vol.header.seqid == 3
    md = vol.metadata
    assert md.data_offset == MiB and md.config.keyslots_size == MiB - 32768
    ks = md.keyslots[0]
    assert (ks.area_offset, ks.area_size, ks.area_encryption) == (32768, 258048,
                                                                  "aes-xts-plain64")
    assert opened.segment.offset_sectors == 2048 and opened.keyslot == 0
    dev2, opened2 = new_luks2()
    assert dev2.buf == dev.buf and opened2.volume_key == opened.volume_key
    assert vol.unlock("old").volume_key == opened.volume_key


@pytest.mark.parametrize("integrity,cipher,key_bits,tag", [
    (None, "aes-xts-plain64", 512, 0), ("hmac-sha256", "aes-xts-plain64", 768, 32),
    ("hmac-sha512", "aes-xts-plain64", 1024, 64), ("aead", "aes-gcm-random", 256, 28),
    ("poly1305", "chacha20-random", 256, 28), ("none", "aes-xts-plain64", 512, 0)])
def test_format_cipher_integrity_combinations(integrity, cipher, key_bits, tag):
    dev, opened = new_luks2(integrity=integrity, cipher=cipher)
    assert len(opened.volume_key) * 8 == key_bits
    assert opened.segment.integrity_tag_bytes == tag
    assert load(dev).unlock("old").volume_key == opened.volume_key
    ks = load(dev).metadata.keyslots[0]
    assert (ks.area_encryption, ks.area_key_size) == ("aes-xts-plain64", 64)


def test_format_keyslot_cipher_follows_segment():
    dev, opened = new_luks2(cipher="aes-cbc-essiv:sha256")
    ks = load(dev).metadata.keyslots[0]
    assert (ks.area_encryption, ks.area_key_size) == ("aes-cbc-essiv:sha256", 32)


@pytest.mark.parametrize("kw,msg", [
    (dict(cipher="aes-gcm-random"), "needs --integrity"),
    (dict(integrity="aead"), "AEAD cipher mode"),
    (dict(integrity="poly1305", cipher="aes-xts-plain64"), "needs chacha20"),
    (dict(key_bytes=48), "256- or 512-bit"),
    (dict(sector_size=3000), "sector size"),
    (dict(metadata_size=20000), "metadata size"),
    (dict(uuid="not-a-uuid"), "UUID"),
    (dict(label="x" * 48), "label"),
    (dict(data_offset=4096), "too small"),
])
def test_format_rejects_bad_parameters_without_writing(kw, msg):
    dev = MemoryDevice(8192)
    dev.buf[:] = b"\xaa" * len(dev.buf)
    with pytest.raises((ParameterError, FormatError), match=msg):
        format_luks2(dev, "pw", pbkdf=FAST, keyslots_size=256 << 10, **kw)
    assert dev.buf == b"\xaa" * len(dev.buf)


def test_format_rejects_unknown_integrity():
    with pytest.raises(NotSupportedError):
        format_luks2(MemoryDevice(8192), "pw", integrity="crc32", pbkdf=FAST)


@pytest.mark.parametrize("pbkdf", [FAST, FAST_ARGON2ID, FAST_ARGON2I])
def test_luks2_key_slot_life_cycle(pbkdf):
    dev, opened = new_luks2()
    vol = load(dev)
    slot = vol.add_key("old", "new", pbkdf=pbkdf)
    assert slot == 1 and vol.metadata.keyslots[1].kdf.type == pbkdf.type
    assert load(dev).unlock("new").keyslot == 1
    assert load(dev).unlock("old").keyslot == 0
    assert vol.metadata.digests[0].keyslots == (0, 1)
    # change: same slot number, new area, old passphrase gone
    old_area = vol.metadata.keyslots[0].area_offset
    assert vol.change_key("old", "changed", pbkdf=pbkdf) == 0
    assert vol.metadata.keyslots[0].area_offset != old_area
    assert load(dev).unlock("changed").keyslot == 0
    with pytest.raises(NoKeyError):
        load(dev).unlock("old")
    # the old area was wiped: its bytes are no longer what they were
    # remove by passphrase, kill by number
    assert vol.remove_key("new") == 1
    assert 1 not in load(dev).metadata.keyslots
    vol.kill_slot(0)
    assert not load(dev).metadata.keyslots
    with pytest.raises(NoKeyError):
        load(dev).unlock("changed")
    assert load(dev).verify_volume_key(opened.volume_key)
    # a key slot can be added back with the volume key
    assert vol.add_keyslot(opened.volume_key, "again", pbkdf=FAST) == 0
    assert load(dev).unlock("again").volume_key == opened.volume_key


def test_luks2_add_key_errors_leave_device_unchanged():
    dev, opened = new_luks2(keyslots_size=512 << 10)
    vol = load(dev)
    before = bytes(dev.buf)
    with pytest.raises(NoKeyError):
        vol.add_key("wrong", "new", pbkdf=FAST)
    with pytest.raises(KeyslotError, match="full"):
        vol.add_keyslot(opened.volume_key, "x", keyslot=0, pbkdf=FAST)
    with pytest.raises(KeyslotError, match="invalid"):
        vol.add_keyslot(opened.volume_key, "x", keyslot=32, pbkdf=FAST)
    with pytest.raises(NoKeyError, match="Volume key does not match"):
        vol.add_keyslot(bytes(64), "x", pbkdf=FAST)
    assert bytes(dev.buf) == before
    vol.add_key("old", "second", pbkdf=FAST)
    after_one = bytes(dev.buf)
    with pytest.raises(KeyslotError, match="No space for new keyslot."):
        vol.add_key("old", "third", pbkdf=FAST)
    with pytest.raises(KeyslotError, match="No space"):
        vol.change_key("old", "third", pbkdf=FAST)
    assert bytes(dev.buf) == after_one
    with pytest.raises(KeyslotError, match="not active"):
        vol.kill_slot(5)
    with pytest.raises(KeyslotError, match="not active"):
        vol.unlock("old", keyslot=7)


def test_keyslot_priorities_order_and_ignore():
    dev, opened = new_luks2()
    vol = load(dev)
    vol.add_keyslot(opened.volume_key, "old", pbkdf=FAST)  # slot 1, same passphrase
    assert load(dev).unlock("old").keyslot == 0
    doc = vol.metadata.to_dict()
    doc["keyslots"]["1"]["priority"] = 2
    doc["keyslots"]["0"]["priority"] = 0
    vol._commit(doc)
    assert load(dev).unlock("old").keyslot == 1
    assert "Priority:   preferred" in luks.dump(dev)
    vol.kill_slot(1)
    with pytest.raises(NoKeyError):
        load(dev).unlock("old")  # slot 0 is ignored unless asked for
    assert load(dev).unlock("old", keyslot=0).keyslot == 0


def test_unbound_keyslot_is_shown_and_not_used_for_the_segment():
    dev, opened = new_luks2()
    vol = load(dev)
    doc = vol.metadata.to_dict()
    ks1 = dict(doc["keyslots"]["0"], area=dict(doc["keyslots"]["0"]["area"], offset="290816"))
    doc["keyslots"]["1"] = ks1
    doc["digests"]["1"] = dict(doc["digests"]["0"], keyslots=["1"], segments=[])
    vol._commit(doc)
    assert "  1: luks2 (unbound)\n" in luks.dump(dev)
    with pytest.raises(KeyslotError, match="not bound"):
        load(dev).unlock("old", keyslot=1)
    assert load(dev).unlock("old").keyslot == 0
    load(dev).kill_slot(1)
    assert list(load(dev).metadata.digests) == [0]  # the unused digest went with it


def test_luks1_life_cycle():
    dev, opened = new_luks1()
    vol = load(dev)
    assert isinstance(vol, Luks1Volume) and vol.header.payloadOffset == 4096
    assert vol.header.keyblock[1].keyMaterialOffset == 512
    assert vol.add_key("old", "new", pbkdf=FAST) == 1
    assert load(dev).unlock("new").keyslot == 1
    assert vol.change_key("new", "changed", pbkdf=FAST) == 2
    assert load(dev).unlock("changed").keyslot == 2
    with pytest.raises(NoKeyError):
        load(dev).unlock("new")
    assert vol.remove_key("old") == 0
    vol.kill_slot(2)
    with pytest.raises(NoKeyError):
        load(dev).unlock("changed")
    assert vol.add_keyslot(opened.volume_key, "back", keyslot=7, pbkdf=FAST) == 7
    assert load(dev).unlock("back").volume_key == opened.volume_key
    with pytest.raises(ParameterError):
        vol.add_keyslot(opened.volume_key, "x", pbkdf=FAST_ARGON2ID)


def test_luks1_format_variants():
    dev, opened = new_luks1(cipher="aes-cbc-essiv:sha256", hash="sha1")
    vol = load(dev)
    assert (vol.header.keyBytes, vol.header.hashSpec) == (32, "sha1")
    assert vol.unlock("old").volume_key == opened.volume_key
    with pytest.raises(ParameterError, match="hash"):
        format_luks1(MemoryDevice(8192), "pw", hash="md5", pbkdf=FAST)
    with pytest.raises(ParameterError):
        format_luks1(MemoryDevice(8192), "pw", pbkdf=FAST_ARGON2ID)


# -- header copies ---------------------------------------------------------------------------

def test_corrupt_primary_is_reported_used_and_repaired():
    dev, opened = new_luks2()
    dev.buf[4096 + 10] ^= 0xFF  # a JSON byte of the primary
    h = read_luks2_header(dev)
    assert h.used == "secondary"
    assert h.problems == ("luks2: primary header checksum mismatch",)
    vol = load(dev)
    assert vol.unlock("old").volume_key == opened.volume_key
    vol.add_key("old", "new", pbkdf=FAST)  # any write mends the bad copy
    h = read_luks2_header(dev)
    assert h.problems == () and h.used == "primary" and h.seqid == 4
    assert h.salt1 != read_luks2_header(dev).salt2


def test_obsolete_secondary_is_reported_and_repaired():
    dev, _ = new_luks2()
    vol = load(dev)
    snapshot = bytes(dev.buf[16384:32768])
    vol.add_key("old", "new", pbkdf=FAST)
    dev.buf[16384:32768] = snapshot  # as if the write stopped after the primary
    h = read_luks2_header(dev)
    assert h.used == "primary" and h.seqid == 4
    assert h.problems == ("luks2: secondary header is obsolete (seqid 3 < 4)",)
    assert load(dev).unlock("new").keyslot == 1
    vol = load(dev)
    vol.repair()
    assert read_luks2_header(dev).problems == ()


def test_newer_secondary_wins():
    dev, _ = new_luks2()
    vol = load(dev)
    snapshot = bytes(dev.buf[:16384])
    vol.add_key("old", "new", pbkdf=FAST)
    dev.buf[:16384] = snapshot
    h = read_luks2_header(dev)
    assert h.used == "secondary" and h.seqid == 4 and 1 in h.metadata.keyslots
    assert "primary header is obsolete (seqid 3 < 4)" in h.problems[0]


def test_both_copies_bad():
    dev, _ = new_luks2()
    dev.buf[4096 + 10] ^= 1
    dev.buf[16384 + 4096 + 10] ^= 1
    with pytest.raises(FormatError, match="primary header checksum mismatch; secondary "
                                          "header checksum mismatch"):
        read_luks2_header(dev)


def test_primary_destroyed_secondary_found_by_scan():
    dev, opened = new_luks2()
    dev.buf[:4096] = bytes(4096)
    h = read_luks2_header(dev)
    assert h.used == "secondary" and "bad magic" in h.problems[0]
    assert load(dev).unlock("old").volume_key == opened.volume_key
    dev.buf[16384:16384 + 4096] = bytes(4096)
    with pytest.raises(FormatError, match="not a valid LUKS device"):
        load(dev)


def test_concurrent_update_is_refused():
    dev, _ = new_luks2()
    a, b = load(dev), load(dev)
    a.add_key("old", "new", pbkdf=FAST)
    before = bytes(dev.buf)
    with pytest.raises(FormatError, match="changed since it was read"):
        b.add_key("old", "other", pbkdf=FAST)
    assert bytes(dev.buf) == before


def _writes_of(op, make):
    dev = FailingDevice(make())
    op(dev)
    return dev.writes


@pytest.mark.parametrize("op_name", ["add", "change", "kill", "token"])
def test_luks2_every_interrupted_write_leaves_a_usable_header(op_name):
    base, _ = new_luks2()
    image = bytes(base.buf)
    load(base).add_key("old", "other", pbkdf=FAST)
    image2 = bytes(base.buf)

    def op(dev):
        vol = Luks2Volume.load(dev, rng=seeded_rng(9))
        if op_name == "add":
            vol.add_key("old", "new", pbkdf=FAST)
        elif op_name == "change":
            vol.change_key("old", "new", pbkdf=FAST)
        elif op_name == "kill":
            vol.kill_slot(1)
        else:
            vol.add_keyring_token("user:pw", [0])

    start = image2 if op_name == "kill" else image
    total = _writes_of(op, lambda: start)
    assert total >= 4
    for k in range(total):
        dev = FailingDevice(start, fail_at=k)
        with pytest.raises(BlockIOError):
            op(dev)
        after = MemoryDevice(initial=bytes(dev.buf))
        vol = load(after)  # some copy is always valid
        if op_name == "change":
            opened = [p for p in ("old", "new") if _opens(vol, p)]
            assert opened, f"no passphrase opens after a failure at write {k}"
        else:
            assert _opens(vol, "old")


def _opens(vol, passphrase) -> bool:
    try:
        vol.unlock(passphrase)
        return True
    except NoKeyError:
        return False


@pytest.mark.parametrize("op_name", ["add", "change"])
def test_luks1_interrupted_write_keeps_old_passphrase(op_name):
    base, _ = new_luks1()
    image = bytes(base.buf)

    def op(dev):
        vol = Luks1Volume.load(dev, rng=seeded_rng(9))
        if op_name == "add":
            vol.add_key("old", "new", pbkdf=FAST)
        else:
            vol.change_key("old", "new", pbkdf=FAST)

    total = _writes_of(op, lambda: image)
    for k in range(total):
        dev = FailingDevice(image, fail_at=k)
        with pytest.raises(BlockIOError):
            op(dev)
        vol = load(MemoryDevice(initial=bytes(dev.buf)))
        assert _opens(vol, "old") or _opens(vol, "new")


# -- labels, tokens, requirements -----------------------------------------------------------

def test_label_and_subsystem():
    dev, _ = new_luks2(label="data", subsystem="test")
    assert "Label:         \tdata\nSubsystem:     \ttest\n" in luks.dump(dev)
    vol = load(dev)
    vol.set_label("other")
    h = read_luks2_header(dev)
    assert (h.label, h.subsystem, h.seqid) == ("other", "test", 4)


def test_keyring_token():
    dev, opened = new_luks2()
    vol = load(dev)
    assert vol.add_keyring_token("dmkit:test-pass", [0]) == 0
    assert "Tokens:\n  0: luks2-keyring\n\tKey description: dmkit:test-pass\n\tKeyslot:    0\n" \
        in luks.dump(dev)
    ring = Keyring()
    with pytest.raises(NoKeyError):
        load(dev).unlock_token(ring)
    ring.add("user", "dmkit:test-pass", b"old")
    assert luks.unlock(dev, keyring=ring).volume_key == opened.volume_key
    vol.kill_slot(0)
    assert load(dev).metadata.tokens[0].keyslots == ()
    vol.remove_token(0)
    assert not load(dev).metadata.tokens


def test_unknown_requirement_blocks_use_not_dump():
    dev, _ = new_luks2()
    vol = load(dev)
    doc = vol.metadata.to_dict()
    doc["config"]["requirements"] = {"mandatory": ["future-feature"]}
    vol._commit(doc)
    vol = load(dev)
    assert "Requirements:\tfuture-feature \n" in luks.dump(dev)
    before = bytes(dev.buf)
    with pytest.raises(FormatError, match="config.requirements.mandatory: unknown "
                                          "requirement 'future-feature'"):
        vol.unlock("old")
    with pytest.raises(FormatError, match="future-feature"):
        vol.kill_slot(0)
    assert bytes(dev.buf) == before
    doc["config"]["requirements"] = {"mandatory": ["online-reencrypt-v2"]}
    with pytest.raises(FormatError):
        vol._commit(doc)  # refused: validation passes but the header is unusable


# -- backup, restore, detached headers ---------------------------------------------------------

def test_backup_restore_luks2(tmp_path):
    dev, opened = new_luks2()
    path = tmp_path / "hdr.bak"
    assert luks.header_backup(dev, path) == 2 * 16384 + (MiB - 32768)
    assert os.stat(path).st_mode & 0o777 == 0o400
    with pytest.raises(Exception, match="already exists"):
        luks.header_backup(dev, path)
    good = bytes(dev.buf[:MiB])
    dev.buf[:MiB] = bytes(MiB)
    with pytest.raises(FormatError):
        load(dev)
    luks.header_restore(dev, path)
    assert bytes(dev.buf[:MiB]) == good
    assert load(dev).unlock("old").volume_key == opened.volume_key


def test_restore_refuses_other_layout_and_bad_backup():
    dev, _ = new_luks2()
    other, _ = new_luks2(seed=2, keyslots_size=2 * MiB - 32768)
    before = bytes(dev.buf)
    with pytest.raises(FormatError, match="Data offset differ"):
        header_restore(dev, backup_bytes(other))
    with pytest.raises(FormatError, match="does not contain valid LUKS header"):
        header_restore(dev, b"\0" * 8192)
    broken = bytearray(backup_bytes(dev))
    broken[4096 + 5] ^= 1
    broken[16384 + 4096 + 5] ^= 1
    with pytest.raises(FormatError, match="does not contain valid LUKS header"):
        header_restore(dev, bytes(broken))
    assert bytes(dev.buf) == before


def test_backup_restore_luks1():
    dev, opened = new_luks1()
    data = backup_bytes(dev)
    assert len(data) == 4040 * 512  # up to the end of key slot 7, already 4 KiB aligned
    dev.buf[:2 * MiB] = bytes(2 * MiB)
    header_restore(dev, data)
    assert load(dev).unlock("old").volume_key == opened.volume_key


def test_backup_of_fixture_is_cryptsetup_sized():
    dev = MemoryDevice(initial=image_bytes("luks2-aes-xts-hmac-sha256"))
    assert len(backup_bytes(dev)) == 2 * 16384 + 524288


@pytest.mark.parametrize("kind", ["luks1", "luks2"])
def test_detached_header(kind, tmp_path):
    data = tmp_path / "data.img"
    data.write_bytes(bytes(MiB))
    hdr = tmp_path / "hdr.img"
    kw = dict(keyslots_size=256 << 10) if kind == "luks2" else {}
    opened = luks.format(data, "pw", type=kind, header=hdr, pbkdf=FAST, **kw)
    assert opened.segment.offset_sectors == 0
    assert data.read_bytes() == bytes(MiB)  # nothing written to the data device
    assert os.stat(hdr).st_mode & 0o777 == 0o600
    again = luks.unlock(data, "pw", header=hdr)
    assert again.volume_key == opened.volume_key
    (_, table), = again.dm_tables("DATA", MiB // 512, key="KEY")
    assert table == f"0 {MiB // 512} crypt aes-xts-plain64 KEY 0 DATA 0"
    with pytest.raises(FormatError):
        luks.unlock(data, "pw")


def test_persistent_flags_reach_the_table():
    dev, opened = new_luks2()
    vol = load(dev)
    doc = vol.metadata.to_dict()
    doc["config"]["flags"] = ["allow-discards", "no-read-workqueue"]
    vol._commit(doc)
    with load(dev).unlock("old") as o:
        (_, table), = o.dm_tables("D", 8192, key="K")
    assert table.endswith(" 2048 2 allow_discards no_read_workqueue")
    assert "Flags:       \tallow-discards no-read-workqueue \n" in luks.dump(dev)


def test_write_header_validates_before_writing():
    dev, _ = new_luks2()
    h = read_luks2_header(dev)
    before = bytes(dev.buf)
    doc = h.metadata.to_dict()
    doc["keyslots"]["0"]["area"]["offset"] = "0"
    with pytest.raises(FormatError, match="inside the metadata"):
        load(dev)._commit(doc)
    assert bytes(dev.buf) == before
    with pytest.raises(FormatError, match="do not fit the device"):
        write_luks2_header(MemoryDevice(64), h, h.metadata)


@pytest.mark.parametrize("kind", ["pbkdf2", "argon2id"])
def test_benchmarked_costs(kind):
    pbkdf = Pbkdf(type=kind, memory_kb=256, parallel=1, iter_time_ms=20)
    dev, opened = new_luks2(pbkdf=pbkdf)
    ks = load(dev).metadata.keyslots[0]
    if kind == "pbkdf2":
        assert ks.kdf.iterations >= 1000
    else:
        assert ks.kdf.time >= 4 and ks.kdf.memory <= 256
    assert load(dev).metadata.digests[0].iterations >= 1000
    assert load(dev).unlock("old").volume_key == opened.volume_key
