"""``journal_crypt`` in the target: the journal on disk is encrypted as the kernel encrypts
it (stream ciphers: an XOR pad and encrypted commit ids; block ciphers: per-section IVs),
the same bytes ``integritysetup format`` writes for an empty journal; a journal left
committed and not written home is replayed by the target, the verified reader and
``dmkit integrity export`` only with the cipher and its key, and refused without it.
(Crash points under three cache models: test_crash.py; the real kernel: the oracle
scripts, tests/vectors/README.md.)"""

import hashlib
import json

import pytest
from click.testing import CliRunner
from target_util import mapped, memdisk

from dmkit.block import MemoryDevice
from dmkit.cli import cli
from dmkit.errors import TableError
from dmkit.targets.integrity import IntegrityReader, JournalStatus, scan_journal
from dmkit.targets.integrity.format import FormatParams, empty_journal, format_device
from dmkit.targets.integrity.jcrypt import JournalCipher

CIPHERS = {
    # kernel name: (cryptsetup name, key)
    "ctr(aes)": ("ctr-aes", hashlib.shake_256(b"jc:ctr").digest(32)),
    "chacha20": ("chacha20", hashlib.shake_256(b"jc:chacha").digest(32)),
    "cbc(aes)": ("cbc-aes", hashlib.shake_256(b"jc:cbc").digest(16)),
    "xts(aes)": ("xts-aes", hashlib.shake_256(b"jc:xts").digest(64)),
}
MAC_KEY = hashlib.shake_256(b"jc:mac").digest(32)


def pattern(start, n, label=b"jc"):
    return b"".join(hashlib.sha256(label + b":%d" % s).digest() * 16
                    for s in range(start, start + n))


def table(cipher, mode="J", extra=""):
    key = CIPHERS[cipher][1].hex()
    words = (f"internal_hash:crc32c fix_padding fix_hmac journal_sectors:1100 "
             f"journal_crypt:{cipher}:{key} {extra}").split()
    return f"disk 0 4 {mode} {len(words)} {' '.join(words)}"


def power_cut(dev):
    """Stop the target without anything a close would write (no write-home)."""
    t = dev.targets[0]
    t._failed = RuntimeError("power cut")
    dev.close()


@pytest.mark.parametrize("cipher", sorted(CIPHERS))
def test_a_zeroed_device_gets_integritysetups_encrypted_journal(cipher):
    """The target's own format of a zeroed device writes the encrypted empty journal
    that ``dmkit integrity format`` writes (byte for byte integritysetup's)."""
    disk = memdisk(4096)
    dev = mapped({"disk": disk}, table(cipher))
    t = dev.targets[0]
    geo = t.geo
    want = empty_journal(geo, journal_cipher=JournalCipher(cipher, CIPHERS[cipher][1]))
    a = geo.journal_start_sector * 512
    assert bytes(disk.buf[a:a + len(want)]) == want
    dev.close()
    # a clean close after no writes leaves it as it was
    assert bytes(disk.buf[a:a + len(want)]) == want
    # not a plain journal on disk
    assert scan_journal(bytes(disk.buf[a:a + len(want)]), geo).status \
        is JournalStatus.UNREADABLE


@pytest.mark.parametrize("cipher", sorted(CIPHERS))
@pytest.mark.parametrize("jmac", [False, True])
def test_committed_journal_is_replayed_only_with_the_key(cipher, jmac, tmp_path):
    """Formatted offline (integritysetup's layout and journal), written in J mode, power
    cut with the last writes committed but not home: the target, the reader and export
    replay them with the cipher; without it the target refuses, never reading stale
    blocks."""
    name, key = CIPHERS[cipher]
    disk = MemoryDevice(4096, name="disk")
    params = FormatParams(internal_hash="crc32c", journal_sectors=1100, journal_crypt=name,
                          journal_crypt_key=key,
                          journal_mac="hmac-sha256" if jmac else None,
                          journal_mac_key=MAC_KEY if jmac else None)
    plan = format_device(disk, params=params, random=lambda n: b"\x42" * n)
    n = plan.provided_data_sectors
    extra = f"journal_mac:hmac(sha256):{MAC_KEY.hex()}" if jmac else ""
    dev = mapped({"disk": disk}, table(cipher, extra=extra), n)
    dev.write(0, pattern(0, n))
    dev.close()
    dev = mapped({"disk": disk}, table(cipher, extra=extra), n)
    new = pattern(64, 40, b"jc-new")
    dev.write(64, new)
    dev.flush()
    jw = dev.targets[0].journal
    assert jw.n_committed_sections and jw.newest, "the last write must stay in the journal"
    power_cut(dev)
    want = pattern(0, 64) + new + pattern(104, n - 104)
    image = bytes(disk.buf)

    jopts = dict(journal_crypt=JournalCipher(cipher, key))
    if jmac:
        jopts.update(journal_mac="hmac(sha256)", journal_mac_key=MAC_KEY)
    r = IntegrityReader(MemoryDevice(initial=image), internal_hash="crc32c",
                        replay_journal=True, **jopts)
    assert r.journal.status is JournalStatus.REPLAY_NEEDED
    assert r.read(0, n) == want

    # without the key: unreadable; the target refuses before writing anything
    r = IntegrityReader(MemoryDevice(initial=image), internal_hash="crc32c",
                        replay_journal=True)
    assert r.journal.status is JournalStatus.UNREADABLE
    plain_words = table(cipher, extra=extra).split()
    plain_words = [w for w in plain_words if not w.startswith("journal_crypt:")]
    plain_words[4] = str(int(plain_words[4]) - 1)
    copy = MemoryDevice(initial=image, name="disk")
    with pytest.raises(TableError, match="journal: journal commit id at section"):
        mapped({"disk": copy}, " ".join(plain_words), n)
    assert bytes(copy.buf) == image
    # the wrong key: the same
    wrong = table(cipher, extra=extra).replace(key.hex(), bytes(len(key) - 1).hex() + "01")
    with pytest.raises(TableError, match="journal"):
        mapped({"disk": MemoryDevice(initial=image, name="disk")}, wrong, n)

    # export through the CLI, with the key files
    img = tmp_path / "dev.img"
    img.write_bytes(image)
    kf = tmp_path / "jkey"
    kf.write_bytes(key)
    args = ["--journal-crypt", name, "--journal-crypt-key-file", str(kf)]
    if jmac:
        mf = tmp_path / "mkey"
        mf.write_bytes(MAC_KEY)
        args += ["--journal-integrity", "hmac-sha256", "--journal-integrity-key-file", str(mf)]
    out = tmp_path / "out.bin"
    res = CliRunner().invoke(cli, ["integrity", "export", "--json", str(img), str(out), *args],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["journal_replayed_blocks"] == 40
    assert out.read_bytes() == want
    assert img.read_bytes() == image

    # the target replays it (J, and D as well), then continues or clears the journal
    for mode in ("J", "D"):
        copy = MemoryDevice(initial=image, name="disk")
        dev = mapped({"disk": copy}, table(cipher, mode, extra), n)
        assert dev.read(0, n) == want
        dev.close()
        r = IntegrityReader(MemoryDevice(initial=bytes(copy.buf)), internal_hash="crc32c",
                            replay_journal=True, **jopts)
        assert r.read(0, n) == want
        # D clears the journal; J continues it (the replayed sections stay until reused)
        assert (r.journal.status is JournalStatus.EMPTY) == (mode == "D")


@pytest.mark.parametrize("cipher", ["ctr(aes)", "xts(aes)"])
def test_journal_wraps_and_continues_after_a_replay(cipher):
    """Many commits (the sequence advances as the journal wraps), a power cut, a replay
    that continues the journal, more writes, a clean close: every block as written."""
    disk = memdisk(4096)
    args = table(cipher, extra="journal_watermark:90")
    dev = mapped({"disk": disk}, args)
    n = dev.nr_sectors
    want = bytearray(n * 512)
    dev.write(0, want)              # every tag valid (the target does not wipe)
    for k in range(60):
        s = (k * 136) % (n - 64) // 8 * 8
        data = pattern(s, 64, b"w%d" % k)
        dev.write(s, data)
        want[s * 512:(s + 64) * 512] = data
        if k % 3 == 0:
            dev.flush()
    dev.flush()
    jw = dev.targets[0].journal
    assert jw.commits > 10 and jw.home_writes > 3 and jw.newest
    power_cut(dev)
    r = IntegrityReader(MemoryDevice(initial=bytes(disk.buf)), internal_hash="crc32c",
                        replay_journal=True,
                        journal_crypt=JournalCipher(cipher, CIPHERS[cipher][1]))
    assert r.journal.status is JournalStatus.REPLAY_NEEDED and r.read(0, n) == want
    dev = mapped({"disk": disk}, args, n)
    assert dev.read(0, n) == want
    for k in range(20):
        s = (k * 200) % (n - 16) // 8 * 8
        data = pattern(s, 16, b"v%d" % k)
        dev.write(s, data)
        want[s * 512:(s + 16) * 512] = data
    dev.close()
    dev = mapped({"disk": disk}, args, n)
    assert dev.read(0, n) == want
    dev.close()


def test_status_prints_journal_crypt_in_the_kernels_place():
    key = CIPHERS["cbc(aes)"][1].hex()
    dev = mapped({"disk": memdisk(4096)},
                 f"disk 0 4 J 4 internal_hash:crc32c journal_mac:hmac(sha256):{MAC_KEY.hex()} "
                 f"journal_crypt:cbc(aes):{key} fix_hmac")
    line = dev.targets[0].status("table")
    assert line.endswith(f"fix_hmac internal_hash:crc32c journal_crypt:cbc(aes):{key} "
                         f"journal_mac:hmac(sha256):{MAC_KEY.hex()}")
    dev.close()


def test_import_with_journal_crypt(tmp_path):
    """``dmkit integrity import --journal-crypt`` writes through an encrypted journal;
    without the option on such a device it refuses before writing; bitmap mode refuses."""
    def run(*args):
        return CliRunner().invoke(cli, ["integrity", *map(str, args)], catch_exceptions=False)
    dev = tmp_path / "dev.img"
    dev.write_bytes(bytes(2 << 20))
    kf = tmp_path / "k"
    kf.write_bytes(CIPHERS["chacha20"][1])
    jc = ["--journal-crypt", "chacha20", "--journal-crypt-key-file", kf]
    assert run("format", "--batch-mode", "--journal-size", 262144, *jc, dev).exit_code == 0
    n = json.loads(run("dump", "--json", dev).stdout)["provided_data_sectors"]
    src = tmp_path / "in.bin"
    src.write_bytes(pattern(0, n))
    before = dev.read_bytes()
    r = run("import", dev, src)
    assert r.exit_code == 2 and "journal" in r.stderr
    assert dev.read_bytes() == before
    r = run("import", "--mode", "bitmap", dev, src, *jc)
    assert r.exit_code == 2 and "--mode bitmap" in r.stderr
    assert dev.read_bytes() == before
    r = run("import", dev, src, *jc)
    assert r.exit_code == 0, r.output
    out = tmp_path / "out.bin"
    assert run("export", dev, out, *jc).exit_code == 0
    assert out.read_bytes() == pattern(0, n)
    r = run("verify", "--json", dev, *jc)
    assert r.exit_code == 0 and json.loads(r.stdout)["journal"] == "empty"
