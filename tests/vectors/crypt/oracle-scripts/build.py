"""Make tests/vectors/crypt/oracle/: small LUKS images written by a real kernel + cryptsetup.

    python build.py WORKDIR DEST --kernel-run PATH/TO/kernel-run

1. prepare: WORKDIR/pat.bin (the fixture pattern), WORKDIR/keys/NAME.pass, and one 4 MiB
   zero file per image;
2. run make-images.sh (beside this file) in the oracle guest with those images as
   /dev/vda.. /dev/vde; what it leaves in /out lands in WORKDIR/out;
3. assemble: compress each image with zstd level 19 into DEST/NAME.img.zst, copy the
   luksDump texts, and write DEST/manifest.json from WORKDIR/out.

``--assemble-only`` skips steps 1-2 (re-assemble an earlier run). Needs ``zstandard``.
"""

import argparse
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import zstandard

HERE = Path(__file__).resolve().parent
SIZE = 4 << 20

IMAGES = [  # (name, dev, kind, description) in make-images.sh order
    ("luks1-aes-xts", "/dev/vda", "luks1",
     "LUKS1 aes-xts-plain64 (512-bit key), pbkdf2 1000, 4 MiB file"),
    ("luks2-aes-xts-argon2id", "/dev/vdb", "luks2",
     "LUKS2 aes-xts-plain64 (512-bit key), argon2id 32 MiB / 4 iterations / 1 thread, 4 MiB file"),
    ("luks2-aes-xts-hmac-sha256-nowipe", "/dev/vdc", "luks2-integrity",
     "LUKS2 aes-xts-plain64 + --integrity hmac-sha256 --integrity-no-wipe (dm-integrity under "
     "dm-crypt, authenc(hmac(sha256),xts(aes))), 4 MiB file"),
    ("luks2-aes-gcm-random-aead-nowipe", "/dev/vdd", "luks2-integrity",
     "LUKS2 aes-gcm-random --integrity aead --integrity-no-wipe, 4 MiB file"),
    ("luks2-chacha20-poly1305-nowipe", "/dev/vde", "luks2-integrity",
     "LUKS2 chacha20-random --integrity poly1305 --integrity-no-wipe "
     "(rfc7539(chacha20,poly1305)), 4 MiB file"),
]


def passphrase(name: str) -> bytes:
    return b"dmkit-crypt-vector:" + name.encode()


def pattern(start: int, count: int) -> bytes:
    return b"".join(hashlib.sha256(b"dmkit-fixture:%d" % s).digest() * 16
                    for s in range(start, start + count))


def prepare(work: Path) -> None:
    (work / "keys").mkdir(parents=True, exist_ok=True)
    (work / "pat.bin").write_bytes(pattern(0, SIZE // 512))
    for name, *_ in IMAGES:
        (work / "keys" / f"{name}.pass").write_bytes(passphrase(name))
        with open(work / f"{name}.img", "wb") as f:
            f.truncate(SIZE)


def run(work: Path, kernel_run: str) -> None:
    out = work / "out"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    cmd = [kernel_run, "--timeout", "3000", "--in", str(work / "pat.bin"), "--in",
           str(work / "keys"), "--out", str(out), "--log", str(work / "run.log"),
           str(HERE / "make-images.sh")] + [str(work / f"{n}.img") for n, *_ in IMAGES]
    subprocess.run(cmd, check=True)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def assemble(work: Path, dest: Path) -> None:
    out = work / "out"
    rd = lambda p: (out / p).read_text().strip()  # noqa: E731
    dest.mkdir(parents=True, exist_ok=True)
    images = []
    for name, dev, kind, desc in IMAGES:
        raw = (work / f"{name}.img").read_bytes()
        comp = zstandard.ZstdCompressor(level=19).compress(raw)
        (dest / f"{name}.img.zst").write_bytes(comp)
        shutil.copyfile(out / f"{name}.dump.txt", dest / f"{name}.luksdump.txt")
        status = rd(f"{name}.status").splitlines()
        assert all(s.startswith("rc=0 ") for s in status), status
        cmds = rd(f"{name}.cmds").splitlines()
        n = int(rd(f"{name}.size"))
        kernel_reads = {}
        for line in rd(f"{name}.range-sha256").splitlines():
            s, c, h = line.split()
            kernel_reads[(int(s), int(c))] = h
        ranges = []
        for (s, c), h in kernel_reads.items():
            want = sha(pattern(s, c))
            assert h == want, (name, s, c)
            ranges.append({"start_sector": s, "sectors": c, "pattern_sha256": want,
                           "kernel_read_sha256": h})
        tables = rd(f"{name}.table").splitlines()
        dm_names = [name, f"{name}_dif"][:len(tables)]
        vk = (out / f"{name}.vk").read_bytes()
        im = {
            "name": name,
            "kind": kind,
            "description": desc,
            "file": f"{name}.img.zst",
            "compression": "zstd -19",
            "raw_size": len(raw),
            "raw_sha256": sha(raw),
            "compressed_size": len(comp),
            "compressed_sha256": sha(comp),
            "luksdump_file": f"{name}.luksdump.txt",
            "guest_device": dev,
            "passphrase": passphrase(name).decode(),
            "key_file": f"/in/keys/{name}.pass (the passphrase, no trailing newline)",
            "commands": cmds,
            "provided_size_sectors": n,
            "provided_logical_block_size": int(rd(f"{name}.lbs")),
            "written_ranges": ranges,
            "dm_table_while_open": [f"{d}: {t}" for d, t in zip(dm_names, tables)],
            "volume_key_hex": vk.hex(),
            "volume_key_bits": len(vk) * 8,
            "volume_key_source": "cryptsetup luksDump --batch-mode --dump-volume-key "
                                 "--key-file ... --volume-key-file (the last command)",
        }
        if kind == "luks2-integrity":
            probes = [p.split() for p in rd(f"{name}.probes").splitlines()]
            im["unwritten_content"] = (
                "--integrity-no-wipe: never-written sectors have no valid tag and fail "
                "authentication (EILSEQ in dm-crypt, EIO to the reader); only the written "
                "ranges read back")
            im["kernel_unwritten_page_reads"] = [
                {"start_sector": int(s), "sectors": 8, "result": r} for s, r in probes]
            assert all(r == "fail" for _, r in probes), probes
        else:
            im["unwritten_content"] = ("not wiped: unwritten sectors read as the decryption of "
                                       "the zero bytes on disk")
            im["provided_sha256"] = rd(f"{name}.sha256")
        images.append(im)
    manifest = {
        "schema": "dmkit crypt oracle vectors v1 (see tests/vectors/README.md, crypt section)",
        "made_by": "tests/vectors/crypt/oracle-scripts/build.py + make-images.sh in the dmkit "
                   "kernel oracle (QEMU TCG guest, virtio disks, cache=unsafe)",
        "versions": {
            "kernel": rd("uname-r.txt"),
            "proc_version": rd("proc-version.txt"),
            "cryptsetup": rd("cryptsetup-version.txt"),
            "integritysetup": rd("integritysetup-version.txt"),
            "dmsetup": rd("dmsetup-version.txt").splitlines(),
            "dm_targets": rd("dmsetup-targets.txt").split("\n"),
            "host_qemu": subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True,
                                        text=True).stdout.splitlines()[0]
            if shutil.which("qemu-system-x86_64") else "unknown",
        },
        "pattern": {
            "sector_size": 512,
            "definition": "sector s of the mapped (provided) device = "
                          "sha256(b'dmkit-fixture:%d' % s).digest() * 16",
            "ranges_rule": "[0, 128), [A1, A1+64) with A1 = (N//2)//8*8, [N-64, N); N = provided "
                           "size in 512-byte sectors; written with dd bs=4096 (whole pages)",
        },
        "created_utc": datetime.datetime.fromtimestamp(
            (out / "uname-r.txt").stat().st_mtime, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "images": images,
    }
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--kernel-run", default=os.environ.get("ORACLE_KERNEL_RUN"))
    ap.add_argument("--assemble-only", action="store_true")
    a = ap.parse_args()
    if not a.assemble_only:
        if not a.kernel_run:
            ap.error("--kernel-run (or ORACLE_KERNEL_RUN) is required")
        prepare(a.work)
        run(a.work, a.kernel_run)
    assemble(a.work, a.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
