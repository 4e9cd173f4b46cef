"""The verified reader, ``verify`` and ``export`` check the journal MAC when given it
(``--journal-integrity``): the superblock MAC (fix_hmac) and the section MACs of every
journal section a replay would use, as the kernel's replay does.  A tampered journal is a
one-line error naming the section; the image is never changed."""

import hashlib
import json

import pytest
from click.testing import CliRunner
from target_util import mapped

from dmkit.block import MemoryDevice
from dmkit.cli import cli
from dmkit.errors import FormatError, IntegrityError, TableError
from dmkit.targets.integrity import IntegrityReader, JournalStatus
from dmkit.targets.integrity.format import FormatParams, format_device
from dmkit.targets.integrity.jcrypt import JournalCipher
from dmkit.targets.integrity.layout import JOURNAL_MAC_PER_SECTOR, JOURNAL_SECTOR_DATA

MAC_KEY = hashlib.shake_256(b"jm:mac").digest(32)
CRYPT_KEY = hashlib.shake_256(b"jm:ctr").digest(32)


def pattern(start, n, label=b"jm"):
    return b"".join(hashlib.sha256(label + b":%d" % s).digest() * 16
                    for s in range(start, start + n))


def crashed(crypt: bool, fix_hmac: bool = True):
    """A device formatted with a journal MAC (and encryption), filled, then given a last
    write that stays committed in the journal at a power cut.  (image, geometry, the
    journal sections holding it, n)."""
    disk = MemoryDevice(4096, name="disk")
    params = FormatParams(internal_hash="crc32c", journal_sectors=1100, fix_hmac=fix_hmac,
                          journal_mac="hmac-sha256", journal_mac_key=MAC_KEY,
                          journal_crypt="ctr-aes" if crypt else None,
                          journal_crypt_key=CRYPT_KEY if crypt else None)
    plan = format_device(disk, params=params, random=lambda k: b"\x17" * k)
    n = plan.provided_data_sectors
    words = ["internal_hash:crc32c", f"journal_mac:hmac(sha256):{MAC_KEY.hex()}"]
    words += ["fix_padding"] + (["fix_hmac"] if fix_hmac else [])
    if crypt:
        words.append(f"journal_crypt:ctr(aes):{CRYPT_KEY.hex()}")
    args = f"disk 0 4 J {len(words)} {' '.join(words)}"
    dev = mapped({"disk": disk}, args, n)
    dev.write(0, pattern(0, n))
    dev.close()
    dev = mapped({"disk": disk}, args, n)
    dev.write(200, pattern(200, 300, b"new"))
    dev.flush()
    t = dev.targets[0]
    jw = t.journal
    sections = [(jw.committed_section + k) % jw.n_sections
                for k in range(jw.n_committed_sections)]
    assert sections
    t._failed = RuntimeError("power cut")
    dev.close()
    want = pattern(0, 200) + pattern(200, 300, b"new") + pattern(500, n - 500)
    return bytearray(disk.buf), plan.geometry, sections, n, want, args


def reader(image, **kw):
    return IntegrityReader(MemoryDevice(initial=bytes(image)), internal_hash="crc32c",
                           replay_journal=True, **kw)


def mac_slot(geo, section, sector=0):
    """Byte offset of a section sector's MAC slot in the image."""
    ssec = geo.journal.section_sectors
    return ((geo.journal_start_sector + section * ssec + sector) * 512
            + JOURNAL_SECTOR_DATA - JOURNAL_MAC_PER_SECTOR)


def entry_sector_field(geo, section, entry):
    rel, off = geo.journal.entry_position(entry)
    return (geo.journal_start_sector + section * geo.journal.section_sectors + rel) * 512 + off


@pytest.mark.parametrize("crypt", [False, True])
def test_journal_macs_are_checked(crypt):
    image, geo, sections, n, want, args = crashed(crypt)
    jopts = dict(journal_crypt=JournalCipher("ctr(aes)", CRYPT_KEY)) if crypt else {}
    mac = dict(journal_mac="hmac(sha256)", journal_mac_key=MAC_KEY)
    r = reader(image, **jopts, **mac)
    assert r.journal.status is JournalStatus.REPLAY_NEEDED and r.read(0, n) == want

    # a flipped bit in a MAC slot, and in an entry's sector number (what the MAC covers)
    # of a section the replay uses: both refused, naming the section
    victim = sections[-1]
    for where in (mac_slot(geo, victim, 3), entry_sector_field(geo, victim, 5) + 1):
        bad = bytearray(image)
        bad[where] ^= 0x10          # through a stream cipher, the same bit of plain text
        with pytest.raises(IntegrityError, match=f"journal MAC mismatch in journal section "
                                                 f"{victim} "):
            reader(bad, **jopts, **mac)
        # the target refuses it too, before writing anything
        disk = MemoryDevice(initial=bytes(bad), name="disk")
        with pytest.raises(IntegrityError, match=f"journal MAC mismatch in section {victim}"):
            mapped({"disk": disk}, args, n)
        assert bytes(disk.buf) == bytes(bad)
        # not asked to check: the MAC is not looked at (the flipped MAC slot replays)
        if where == mac_slot(geo, victim, 3):
            assert reader(bad, **jopts).read(0, n) == want

    # the wrong MAC key: the superblock MAC (fix_hmac) says so first
    with pytest.raises(IntegrityError, match="superblock MAC mismatch"):
        reader(image, **jopts, journal_mac="hmac(sha256)", journal_mac_key=bytes(32))


def test_without_fix_hmac_the_wrong_key_fails_on_the_sections():
    image, _, _, n, want, _ = crashed(False, fix_hmac=False)
    assert reader(image, journal_mac="hmac(sha256)", journal_mac_key=MAC_KEY).read(0, n) == want
    with pytest.raises(IntegrityError, match=r"journal MAC mismatch in journal section \d+ "):
        reader(image, journal_mac="hmac(sha256)", journal_mac_key=bytes(32))


def test_a_journal_mac_for_a_device_without_one():
    disk = MemoryDevice(4096, name="disk")
    format_device(disk, params=FormatParams(internal_hash="crc32c"))
    with pytest.raises(FormatError, match="the superblock has no journal MAC"):
        reader(disk.buf, journal_mac="hmac(sha256)", journal_mac_key=MAC_KEY)
    with pytest.raises(TableError, match="journal_mac mismatch"):
        mapped({"disk": disk}, f"disk 0 4 J 2 internal_hash:crc32c "
                               f"journal_mac:hmac(sha256):{MAC_KEY.hex()}")


def run(*args):
    return CliRunner().invoke(cli, ["integrity", *map(str, args)], catch_exceptions=False)


@pytest.mark.parametrize("crypt", [False, True])
def test_verify_and_export_check_journal_macs(crypt, tmp_path):
    image, geo, sections, n, want, _ = crashed(crypt)
    mk = tmp_path / "mac.key"
    mk.write_bytes(MAC_KEY)
    opts = ["--journal-integrity", "hmac-sha256", "--journal-integrity-key-file", mk]
    if crypt:
        ck = tmp_path / "crypt.key"
        ck.write_bytes(CRYPT_KEY)
        opts += ["--journal-crypt", "ctr-aes", "--journal-crypt-key-file", ck]
    good = tmp_path / "good.img"
    good.write_bytes(bytes(image))
    r = run("verify", "--json", good, *opts)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["journal_replayed_blocks"] == 300
    out = tmp_path / "out.bin"
    assert run("export", good, out, *opts).exit_code == 0 and out.read_bytes() == want

    victim = sections[0]
    bad = bytearray(image)
    bad[mac_slot(geo, victim, 7)] ^= 0x01
    tampered = tmp_path / "tampered.img"
    tampered.write_bytes(bytes(bad))
    for cmd in (["verify", tampered], ["export", tampered, tmp_path / "x.bin"]):
        r = run(*cmd, *opts)
        assert r.exit_code == 1, r.output
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and f"journal MAC mismatch in journal section {victim} " \
            in lines[0], r.stderr
    assert not (tmp_path / "x.bin").exists()
    assert tampered.read_bytes() == bytes(bad)

    # without --journal-integrity the MACs are not checked, and the command says so
    r = run("verify", tampered, *[o for o in opts[4:]])
    assert r.exit_code == 0, r.output
    assert "journal MAC" in r.stderr and "--journal-integrity" in r.stderr

    # a wrong key file: the superblock MAC
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(bytes(32))
    r = run("verify", good, *opts[:3], wrong, *opts[4:])
    assert r.exit_code == 1 and "superblock MAC mismatch" in r.stderr

    # on a device with no journal MAC: bad input
    plain = tmp_path / "plain.img"
    plain.write_bytes(bytes(2 << 20))
    assert run("format", "--batch-mode", plain).exit_code == 0
    r = run("verify", plain, *opts[:4])
    assert r.exit_code == 2 and "no journal MAC" in r.stderr
