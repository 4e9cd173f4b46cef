"""``dmkit luks``: cryptsetup's verbs and options on image files.

Round trips for every cipher x integrity combination (format -> import a pattern -> export
equals), tampering (export stops naming the sector; --zero-on-error lists it), wrong
passphrases (cryptsetup's message, exit 2), the questions, key slot verbs, header backups,
passphrases from key files, stdin and a terminal prompt (no echo), the wipe's progress bar,
and a whole session's output searched for the keys and passphrases.
"""

from __future__ import annotations

import json
import logging
import os
import pty
import select
import subprocess
import sys

import pytest
from click.testing import CliRunner

import dmkit.luks as luks
from dmkit.cli import cli

from ..conftest import pattern

MiB = 1 << 20
FAST = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]
PASS = "correct horse battery staple"


def run(*args, input=None):
    return CliRunner().invoke(cli, ["luks", *map(str, args)], input=input)


@pytest.fixture
def keyfile(tmp_path):
    p = tmp_path / "pass.key"
    p.write_bytes(PASS.encode())
    return p


def _key(tmp_path, name: str, text: str):
    p = tmp_path / name
    p.write_bytes(text.encode())
    return p


def _image(tmp_path, size=6 * MiB, name="disk.img"):
    p = tmp_path / name
    with open(p, "wb") as f:
        f.truncate(size)
    return p


def _format(img, keyfile, *opts):
    r = run("format", "--batch-mode", *FAST, "--key-file", keyfile, *opts, img)
    assert r.exit_code == 0, r.output
    return r


COMBOS = [
    ("luks2-aes-xts", []),
    ("luks2-hmac-sha256", ["--integrity", "hmac-sha256"]),
    ("luks2-hmac-sha512", ["--integrity", "hmac-sha512"]),
    ("luks2-aes-gcm-random-aead", ["--cipher", "aes-gcm-random", "--integrity", "aead"]),
    ("luks2-chacha20-random-poly1305", ["--cipher", "chacha20-random",
                                        "--integrity", "poly1305"]),
    ("luks2-hmac-sha256-4k", ["--integrity", "hmac-sha256", "--sector-size", "4096"]),
    ("luks2-aes-cbc-essiv-256", ["--cipher", "aes-cbc-essiv:sha256", "--key-size", "256"]),
    ("luks1-aes-xts", ["--type", "luks1"]),
]


@pytest.mark.parametrize("opts", [c[1] for c in COMBOS], ids=[c[0] for c in COMBOS])
def test_format_import_export_round_trip(tmp_path, keyfile, opts):
    img = _image(tmp_path)
    _format(img, keyfile, "--luks2-keyslots-size", "992k", *opts) if "luks1" not in opts \
        else _format(img, keyfile, *opts)
    with luks.open(img, PASS) as vol:
        n = vol.nr_sectors
    src = tmp_path / "in.bin"
    src.write_bytes(pattern(0, n - 16))     # shorter than the volume: the rest stays
    r = run("import", img, src, "--key-file", keyfile, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["bytes"] == (n - 16) * 512
    out = tmp_path / "out.bin"
    r = run("export", img, out, "--key-file", keyfile, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["bad_sectors"] == []
    data = out.read_bytes()
    assert data[:(n - 16) * 512] == pattern(0, n - 16)
    assert len(data) == n * 512
    if "--integrity" in opts:   # wiped at format: the tail reads as zeros
        assert data[(n - 16) * 512:] == bytes(16 * 512)
    # and to stdout
    r = CliRunner().invoke(cli, ["luks", "export", str(img), "-", "--key-file", str(keyfile)])
    assert r.exit_code == 0 and r.stdout_bytes == data


def test_sector_size_is_detected_as_cryptsetup_does(tmp_path, keyfile):
    """No --sector-size: the file system's block size for an image file, 512 when the
    data size is not a multiple of it (cryptsetup 2.6's autodetection); LUKS1 is 512."""
    bsize = os.statvfs(tmp_path).f_bsize
    want = bsize if bsize in (512, 1024, 2048, 4096) else 512
    img = _image(tmp_path)
    _format(img, keyfile, "--luks2-keyslots-size", "256k")
    assert luks.unlock(img, PASS).segment.sector_size == want
    odd = _image(tmp_path, 6 * MiB + 512, "odd.img")
    _format(odd, keyfile, "--luks2-keyslots-size", "256k")
    assert luks.unlock(odd, PASS).segment.sector_size == 512
    r = run("format", "-q", *FAST, "--type", "luks1", "--sector-size", "4096",
            "--key-file", keyfile, img)
    assert r.exit_code == 2 and "only for LUKS2" in r.stderr


def test_integrity_no_wipe_and_the_wipe_message(tmp_path, keyfile):
    img = _image(tmp_path)
    r = _format(img, keyfile, "--integrity", "hmac-sha256", "--integrity-no-wipe",
                "--luks2-keyslots-size", "992k")
    assert "Wiping" not in r.stderr
    r = run("export", img, tmp_path / "o", "--key-file", keyfile)
    assert r.exit_code == 1 and "sector 0 failed authentication" in r.stderr
    img2 = _image(tmp_path, name="b.img")
    r = _format(img2, keyfile, "--integrity", "hmac-sha256", "--luks2-keyslots-size", "992k")
    assert r.stderr.startswith("Wiping device to initialize integrity checksum.\n")


def test_wipe_progress_bar_on_a_terminal(tmp_path, keyfile, monkeypatch):
    import dmkit.cli.progress as progress_mod
    monkeypatch.setattr(progress_mod, "_stderr_is_terminal", lambda: True)
    img = _image(tmp_path)
    r = _format(img, keyfile, "--cipher", "aes-gcm-random", "--integrity", "aead",
                "--luks2-keyslots-size", "256k")
    assert "wipe" in r.stderr and "|" in r.stderr


def _tamper(img, keyfile, sector: int) -> None:
    """Flip one byte of the ciphertext of ``sector`` (512-byte units of the volume)."""
    from dmkit.block import FileDevice
    from dmkit.targets.integrity import Geometry, read_superblock
    with luks.unlock(img, PASS) as opened:
        seg = opened.segment
    dev = FileDevice(img, read_only=True)
    try:
        sb = read_superblock(dev, seg.offset_sectors)
        geo = Geometry.from_superblock(sb, dev.nr_sectors, start_sector=seg.offset_sectors)
        data_sector, _ = geo.locate(sector)
    finally:
        dev.close()
    with open(img, "r+b") as f:
        f.seek(data_sector * 512 + 100)
        b = f.read(1)
        f.seek(data_sector * 512 + 100)
        f.write(bytes([b[0] ^ 0x40]))


@pytest.mark.parametrize("opts", [c[1] for c in COMBOS if "--integrity" in c[1]],
                         ids=[c[0] for c in COMBOS if "--integrity" in c[1]])
def test_tampered_ciphertext_stops_the_export_naming_the_sector(tmp_path, keyfile, opts):
    if "--sector-size" not in opts:
        opts = [*opts, "--sector-size", "512"]
    img = _image(tmp_path)
    _format(img, keyfile, "--luks2-keyslots-size", "992k", *opts)
    src = tmp_path / "in.bin"
    src.write_bytes(pattern(0, 4096))
    assert run("import", img, src, "--key-file", keyfile).exit_code == 0
    victim = 3000 if "4096" not in opts else 3000 // 8 * 8
    _tamper(img, keyfile, victim)
    out = tmp_path / "out.bin"
    out.write_bytes(b"old content")
    r = run("export", img, out, "--key-file", keyfile)
    assert r.exit_code == 1
    assert r.stderr == (f"dmkit: {img}: sector {victim} failed authentication (INTEGRITY AEAD "
                        "ERROR); export stopped (--zero-on-error writes zeros for such "
                        "sectors and lists them)\n")
    assert out.read_bytes() == b"old content"
    r = run("export", img, out, "--key-file", keyfile, "--zero-on-error", "--json")
    assert r.exit_code == 0
    assert json.loads(r.stdout)["bad_sectors"] == [victim]
    assert r.stderr == (f"dmkit: {img}: zero-filled 1 sector(s) that failed authentication, "
                        f"at sectors: {victim}\n")
    unit = 4096 if "4096" in opts else 512
    data = out.read_bytes()
    assert data[victim * 512:victim * 512 + unit] == bytes(unit)
    assert data[:victim * 512] == pattern(0, victim)
    assert data[victim * 512 + unit:4096 * 512] == pattern(victim + unit // 512,
                                                           4096 - victim - unit // 512)


def test_wrong_passphrase_is_exit_2_everywhere(tmp_path, keyfile):
    img = _image(tmp_path)
    _format(img, keyfile, "--luks2-keyslots-size", "256k")
    bad = _key(tmp_path, "bad", PASS + "!")
    before = img.read_bytes()
    for args in (["test-passphrase", img, "--key-file", bad],
                 ["export", img, tmp_path / "o", "--key-file", bad],
                 ["import", img, bad, "--key-file", bad],
                 ["dump", img, "--dump-volume-key", "--batch-mode", "--key-file", bad],
                 ["add-key", img, keyfile, "--key-file", bad, *FAST],
                 ["change-key", img, keyfile, "--key-file", bad, *FAST],
                 ["remove-key", img, bad, "--batch-mode"]):
        r = run(*args)
        assert r.exit_code == 2, (args, r.output)
        assert r.stderr == "dmkit: No key available with this passphrase.\n", args
        assert r.stdout == ""
    assert img.read_bytes() == before
    assert not (tmp_path / "o").exists()


def test_errors_are_one_line_with_cryptsetups_status(tmp_path, keyfile):
    r = run("test-passphrase", tmp_path / "missing.img", "--key-file", keyfile)
    assert r.exit_code == 4
    assert r.stderr == f"dmkit: Device {tmp_path / 'missing.img'} does not exist or access " \
                       "denied.\n"
    img = _image(tmp_path)
    r = run("dump", img)
    assert r.exit_code == 1 and r.stderr == f"dmkit: Device {img} is not a valid LUKS device.\n"
    r = run("format", "-q", img, "--type", "luks1", "--integrity", "aead", "--key-file", keyfile)
    assert r.exit_code == 2 and "only for LUKS2" in r.stderr
    r = run("format", "-q", *FAST, img, "--cipher", "aes-gcm-random", "--key-file", keyfile)
    assert r.exit_code == 1 and "needs --integrity" in r.stderr
    empty = _key(tmp_path, "empty", "")
    r = run("format", "-q", *FAST, img, "--key-file", empty)
    assert r.exit_code == 1 and r.stderr.endswith("Nothing to read on input.\n")
    r = run("format", "-q", *FAST, img, "--key-file", keyfile, "--keyfile-size", "99")
    assert r.exit_code == 1 and "Cannot read requested amount of data." in r.stderr
    assert img.read_bytes() == bytes(6 * MiB)


# -- questions ---------------------------------------------------------------------------------

QUESTION = ("\nWARNING!\n========\nThis will overwrite data on {img} irrevocably.{extra}\n\n"
            "Are you sure? (Type 'yes' in capital letters): ")


def test_format_asks_first(tmp_path, keyfile):
    img = _image(tmp_path)
    r = run("format", *FAST, "--key-file", keyfile, img, input="yes\n")
    assert r.exit_code == 1
    assert r.stderr == QUESTION.format(img=img, extra="") + "\ndmkit: Operation aborted.\n"
    assert img.read_bytes() == bytes(6 * MiB)
    r = run("format", *FAST, "--key-file", keyfile, img, input="YES\n")
    assert r.exit_code == 0, r.output
    dev = _dev(img)
    uuid = luks.load(dev).uuid
    dev.close()
    before = img.read_bytes()
    r = run("format", *FAST, "--key-file", keyfile, img, input="no\n")
    extra = f"\n{img} contains a LUKS2 header (UUID {uuid}); its key slots will be lost."
    assert r.stderr.startswith(QUESTION.format(img=img, extra=extra))
    assert img.read_bytes() == before


def _dev(path):
    from dmkit.block import FileDevice
    return FileDevice(path, read_only=True)


def test_passphrase_from_stdin_after_the_question(tmp_path):
    """Without --key-file and with stdin not a terminal: the answer, then the passphrase
    (the first line, newline stripped), as cryptsetup reads a piped passphrase."""
    img = _image(tmp_path)
    r = run("format", *FAST, "--luks2-keyslots-size", "256k", img, input="YES\nline pw\n")
    assert r.exit_code == 0, r.output
    assert run("test-passphrase", img, input="line pw\n").exit_code == 0
    assert run("test-passphrase", img, input="line pw").exit_code == 0
    assert run("test-passphrase", img, input="line pw \n").exit_code == 2
    # --key-file - takes all of stdin, newline included
    assert run("test-passphrase", img, "--key-file", "-", input="line pw\n").exit_code == 2
    assert run("test-passphrase", img, "--key-file", "-", input="line pw").exit_code == 0


def test_keyfile_offset_and_size(tmp_path):
    img = _image(tmp_path)
    kf = _key(tmp_path, "k", "0123456789secret-part-of-the-file and the rest")
    r = run("format", "-q", *FAST, img, "--key-file", kf, "--keyfile-offset", "10",
            "--keyfile-size", "16")
    assert r.exit_code == 0, r.output
    assert run("test-passphrase", img, input="secret-part-of-t\n").exit_code == 0
    assert run("test-passphrase", img, "--key-file", kf).exit_code == 2
    assert run("test-passphrase", img, "--key-file", kf, "--keyfile-offset", "10",
               "--keyfile-size", "16").exit_code == 0


def test_prompt_on_a_terminal_does_not_echo(tmp_path, keyfile):
    img = _image(tmp_path)
    _format(img, keyfile, "--luks2-keyslots-size", "256k")
    for passphrase, status in ((PASS, 0), ("not it", 2)):
        master, slave = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "dmkit", "luks", "test-passphrase",
                                 str(img)], stdin=slave, stdout=slave, stderr=slave,
                                start_new_session=True, close_fds=True)
        os.close(slave)
        seen = b""
        sent = False
        while True:
            ready, _, _ = select.select([master], [], [], 30)
            if not ready:
                proc.kill()
                pytest.fail(f"no prompt; got {seen!r}")
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
            if not sent and b"Enter passphrase for" in seen:
                os.write(master, passphrase.encode() + b"\n")
                sent = True
        os.close(master)
        assert proc.wait(30) == status
        text = seen.decode()
        assert f"Enter passphrase for {img}: " in text
        assert passphrase not in text
        if status:
            assert "No key available with this passphrase." in text


# -- dump --------------------------------------------------------------------------------------

def test_dump_text_and_json(tmp_path, keyfile):
    img = _image(tmp_path)
    _format(img, keyfile, "--integrity", "hmac-sha256", "--luks2-keyslots-size", "992k",
            "--label", "data", "--integrity-no-wipe")
    r = run("dump", img)
    assert r.exit_code == 0 and r.stdout == luks.dump(str(img))
    assert "Label:         \tdata" in r.stdout
    r = run("dump", "--json", img)
    assert r.exit_code == 0 and r.stdout == luks.dump_json(str(img)) + "\n"
    assert json.loads(r.stdout)["segments"]["0"]["integrity"]["type"] == "hmac(sha256)"
    assert run("dump", "--dump-json-metadata", img).stdout == r.stdout
    l1 = _image(tmp_path, name="l1.img")
    _format(l1, keyfile, "--type", "luks1")
    r = run("dump", "--json", l1)
    obj = json.loads(r.stdout)
    assert obj["version"] == 1 and obj["keyslots"]["0"]["active"] is True
    assert run("dump", "--dump-json-metadata", l1).exit_code == 1


def test_dump_volume_key_only_when_asked(tmp_path, keyfile):
    img = _image(tmp_path)
    _format(img, keyfile, "--luks2-keyslots-size", "256k")
    with luks.unlock(img, PASS) as opened:
        key = opened.volume_key.reveal()
        uuid = opened.uuid
    hexdump = " ".join(f"{b:02x}" for b in key[:16])
    for args in (["dump", img], ["dump", "--json", img], ["dump", img, "--key-file", keyfile]):
        assert hexdump not in run(*args).stdout
    # the question comes first; "no" prints nothing
    r = run("dump", "--dump-volume-key", "--key-file", keyfile, img, input="no\n")
    assert r.exit_code == 1 and hexdump not in r.output
    assert "The header dump with volume key is sensitive information" in r.stderr
    r = run("dump", "--dump-volume-key", "--key-file", keyfile, img, input="YES\n")
    assert r.exit_code == 0
    rows = [" ".join(f"{b:02x}" for b in key[i:i + 16]) + " " for i in range(0, 64, 16)]
    assert r.stdout == (f"LUKS header information for {img}\nCipher name:   \taes\n"
                        f"Cipher mode:   \txts-plain64\nPayload offset:\t2048\n"
                        f"UUID:          \t{uuid}\nMK bits:       \t512\n"
                        f"MK dump:\t" + "\n\t\t".join(rows) + "\n")
    vk = tmp_path / "vk.bin"
    r = run("dump", "--dump-volume-key", "-q", "--key-file", keyfile, "--volume-key-file", vk,
            img)
    assert r.exit_code == 0 and hexdump not in r.stdout
    assert r.stdout.endswith(f"Key stored to file {vk}.\n")
    assert vk.read_bytes() == key and vk.stat().st_mode & 0o777 == 0o600
    r = run("dump", "--dump-volume-key", "-q", "--key-file", keyfile, "--volume-key-file", vk,
            img)
    assert r.exit_code != 0 and vk.read_bytes() == key        # never overwritten
    # the volume key file opens the volume
    out = tmp_path / "o.bin"
    assert run("export", img, out, "--volume-key-file", vk).exit_code == 0


# -- key slots ---------------------------------------------------------------------------------

def test_key_slot_verbs(tmp_path, keyfile):
    img = _image(tmp_path)
    _format(img, keyfile, "--luks2-keyslots-size", "2m")
    k2, k3 = _key(tmp_path, "k2", "second"), _key(tmp_path, "k3", "third")
    r = run("add-key", img, k2, "--key-file", keyfile, *FAST)
    assert r.exit_code == 0, r.output
    r = run("test-passphrase", img, "--key-file", k2, "-v")
    assert r.exit_code == 0 and r.stderr == "Key slot 1 unlocked.\n"
    r = run("add-key", img, k3, "--key-file", k2, "--key-slot", "5", *FAST)
    assert r.exit_code == 0, r.output
    assert run("test-passphrase", img, "--key-file", k3, "--key-slot", "5").exit_code == 0
    assert run("test-passphrase", img, "--key-file", k3, "--key-slot", "0").exit_code == 2
    # change: slot 5 now opens with k4, no longer with k3
    k4 = _key(tmp_path, "k4", "fourth")
    assert run("change-key", img, k4, "--key-file", k3, *FAST).exit_code == 0
    assert run("test-passphrase", img, "--key-file", k3).exit_code == 2
    r = run("test-passphrase", img, "--key-file", k4, "-v")
    assert r.stderr == "Key slot 5 unlocked.\n"
    # kill-slot checks a remaining passphrase (not the one being killed)
    r = run("kill-slot", img, "5", k4)
    assert r.exit_code == 2
    r = run("kill-slot", img, "5", keyfile)
    assert r.exit_code == 0, r.output
    assert run("test-passphrase", img, "--key-file", k4).exit_code == 2
    r = run("kill-slot", img, "5", "-q")
    assert r.exit_code == 1 and r.stderr == "dmkit: Keyslot 5 is not active.\n"
    # remove-key
    assert run("remove-key", img, k2).exit_code == 0
    assert run("test-passphrase", img, "--key-file", k2).exit_code == 2
    # the last key slot: a question, "no" keeps it
    r = run("remove-key", img, keyfile, input="no\n")
    assert r.exit_code == 1 and "This is the last keyslot." in r.stderr
    assert "Operation aborted, the keyslot was NOT wiped." in r.stderr
    assert run("test-passphrase", img, "--key-file", keyfile).exit_code == 0
    r = run("kill-slot", img, "0", input="YES\n")
    assert r.exit_code == 0
    assert run("test-passphrase", img, "--key-file", keyfile).exit_code == 2


def test_add_key_with_the_volume_key_and_luks1(tmp_path, keyfile):
    img = _image(tmp_path)
    _format(img, keyfile, "--type", "luks1")
    vk = tmp_path / "vk"
    assert run("dump", img, "--dump-volume-key", "-q", "--key-file", keyfile,
               "--volume-key-file", vk).exit_code == 0
    k2 = _key(tmp_path, "k2", "other")
    r = run("add-key", img, k2, "--volume-key-file", vk, *FAST)
    assert r.exit_code == 0, r.output
    assert run("test-passphrase", img, "--key-file", k2, "-v").stderr == \
        "Key slot 1 unlocked.\n"
    r = run("add-key", img, k2, "--key-file", keyfile, "--pbkdf", "argon2id")
    assert r.exit_code == 2 and "LUKS1 key slots use --pbkdf pbkdf2 only" in r.output


def test_header_backup_and_restore(tmp_path, keyfile):
    img = _image(tmp_path)
    _format(img, keyfile, "--integrity", "aead", "--cipher", "aes-gcm-random",
            "--luks2-keyslots-size", "256k")
    src = tmp_path / "in.bin"
    src.write_bytes(pattern(0, 256))
    assert run("import", img, src, "--key-file", keyfile).exit_code == 0
    backup = tmp_path / "hdr.bak"
    assert run("header-backup", img, "--header-backup-file", backup).exit_code == 0
    assert backup.stat().st_mode & 0o777 == 0o400
    r = run("header-backup", img, "--header-backup-file", backup)
    assert r.exit_code == 1 and "already exists" in r.stderr
    with open(img, "r+b") as f:                     # destroy both header copies
        f.write(bytes(64 << 10))
    assert run("test-passphrase", img, "--key-file", keyfile).exit_code == 1
    r = run("header-restore", img, "--header-backup-file", backup, input="no\n")
    assert r.exit_code == 1 and "does not contain LUKS header" in r.stderr
    r = run("header-restore", img, "--header-backup-file", backup, input="YES\n")
    assert r.exit_code == 0, r.output
    out = tmp_path / "out.bin"
    assert run("export", img, out, "--key-file", keyfile).exit_code == 0
    assert out.read_bytes()[:256 * 512] == pattern(0, 256)


def test_detached_header(tmp_path, keyfile):
    img, hdr = _image(tmp_path, 4 * MiB), tmp_path / "hdr.img"
    _format(img, keyfile, "--header", hdr, "--integrity", "poly1305",
            "--cipher", "chacha20-random")
    src = tmp_path / "in.bin"
    src.write_bytes(pattern(0, 512))
    assert run("import", img, src, "--key-file", keyfile).exit_code == 1  # no header on img
    assert run("import", img, src, "--key-file", keyfile, "--header", hdr).exit_code == 0
    out = tmp_path / "out.bin"
    r = run("export", img, out, "--key-file", keyfile, "--header", hdr)
    assert r.exit_code == 0 and out.read_bytes()[:512 * 512] == pattern(0, 512)
    assert run("dump", img, "--header", hdr).stdout == luks.dump(str(hdr))
    r = run("export", img, hdr, "--key-file", keyfile, "--header", hdr)
    assert r.exit_code == 1 and "refusing to overwrite" in r.stderr


# -- keys never shown ----------------------------------------------------------------------

def test_a_session_never_prints_or_logs_keys(tmp_path, keyfile, caplog):
    caplog.set_level(logging.DEBUG)
    img = _image(tmp_path)
    k2 = _key(tmp_path, "k2", "another secret phrase")
    bad = _key(tmp_path, "bad", "wrong secret phrase")
    src = tmp_path / "in.bin"
    src.write_bytes(pattern(0, 64))
    session = [
        ["format", "-q", *FAST, "--integrity", "hmac-sha256", "--luks2-keyslots-size", "992k",
         "--key-file", keyfile, img],
        ["dump", img], ["dump", "--json", img],
        ["test-passphrase", "-v", img, "--key-file", keyfile],
        ["test-passphrase", img, "--key-file", bad],
        ["import", img, src, "--key-file", keyfile, "--json"],
        ["export", img, tmp_path / "o.bin", "--key-file", keyfile, "--json"],
        ["export", img, "-", "--key-file", bad],
        ["add-key", img, k2, "--key-file", keyfile, *FAST],
        ["change-key", img, bad, "--key-file", k2, *FAST],
        ["dump", img, "--dump-volume-key", "-q", "--key-file", keyfile,
         "--volume-key-file", tmp_path / "vk"],
        ["remove-key", img, bad, "-q"],
        ["kill-slot", img, "1", "-q"],
        ["header-backup", img, "--header-backup-file", tmp_path / "b"],
        ["header-restore", img, "--header-backup-file", tmp_path / "b", "-q"],
    ]
    outputs = []
    for args in session:
        r = CliRunner().invoke(cli, ["--debug", "luks", *map(str, args)])
        outputs.append(r.stdout_bytes + r.stderr_bytes)
    outputs.append(caplog.text.encode())
    assert b"No key available with this passphrase." in outputs[4]
    vk = (tmp_path / "vk").read_bytes()
    forms = [vk, vk.hex().encode(), vk.hex().upper().encode(),
             " ".join(f"{b:02x}" for b in vk[:8]).encode()]
    for pw in (PASS, "another secret phrase", "wrong secret phrase"):
        forms += [pw.encode(), pw.encode().hex().encode()]
    for out in outputs:
        for form in forms:
            assert form not in out
