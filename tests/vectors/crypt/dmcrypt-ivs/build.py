"""Make tests/vectors/crypt/dmcrypt-ivs/: plain dm-crypt images written by the real kernel.

    KERNEL_RUN=PATH/TO/kernel-run python build.py WORKDIR [DEST] [--only RUN]

One image per case of :data:`CASES` (cipher, IV mode, key size, keycount, iv_offset,
offset, sector_size, iv_large_sectors, and a few AEAD tables over dm-integrity). For each
run (at most 24 disks per guest):

1. prepare: WORKDIR/RUN/pat.bin (the fixture pattern), WORKDIR/RUN/cases.txt (table fields,
   keys in hex) and one zero file per case;
2. run oracle-script.sh (beside this file) in the oracle guest through ``$KERNEL_RUN``
   (the oracle's ``kernel-run``; ``--kernel-run`` overrides); /out lands in WORKDIR/RUN/out;
3. assemble: compress each image (zstd level 19, the ``zstandard`` package) into
   DEST/NAME.img.zst, copy cases.txt to DEST/cases-RUN.txt, and write DEST/manifest.json.

``--assemble-only`` redoes step 3 from an earlier run. DEST defaults to this folder.
Keys are test keys: ``hashlib.shake_256(b"dmkit-dmcrypt-ivs:" + NAME).digest(KEY_BYTES)``.
"""

from __future__ import annotations

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
SECTORS = 512  # every mapped device: 256 KiB
DIF_IMAGE_BYTES = 2 << 20  # disks under a dm-integrity table

# (name, cipher, key bytes or 0 for "-", iv_offset, offset, optional params, dif, what)
# dif: None, or (tag bytes, block size) for crypt over "integrity DEV 0 TAG J" (no
# internal hash: the tags are dm-crypt's).
CASES = {
    "skcipher": [
        ("cbc-plain-wrap", "aes-cbc-plain", 32, (1 << 32) - 256, 0, [], None,
         "plain: le32 sector, wraps to 0 at target sector 256"),
        ("cbc-plain64", "aes-cbc-plain64", 16, 0, 0, [], None, "AES-128-CBC, plain64"),
        ("cbc-plain64be", "aes-cbc-plain64be", 24, 0x123456789A00, 0, [], None,
         "AES-192-CBC, plain64be with a 6-byte iv_offset"),
        ("cbc-essiv-sha256", "aes-cbc-essiv:sha256", 32, 0, 0, [], None, "essiv:sha256"),
        ("cbc-benbi", "aes-cbc-benbi", 32, 0, 0, [], None, "benbi"),
        ("cbc-null-offset8", "aes-cbc-null", 16, 0, 8, [], None,
         "null IV; data starts 8 sectors into the disk"),
        ("cbc-eboiv", "aes-cbc-eboiv", 32, 0, 0, [], None, "eboiv"),
        ("xts-plain-wrap", "aes-xts-plain", 64, (1 << 32) - 256, 0, [], None,
         "XTS plain: le32 sector, wraps at target sector 256"),
        ("xts-plain64-ivoffset", "aes-xts-plain64", 32, 0xFEDCBA987654, 0, [], None,
         "AES-128-XTS, plain64 with a large iv_offset"),
        ("xts-plain64be", "aes-xts-plain64be", 64, 0, 0, [], None, "plain64be"),
        ("xts-essiv-sha256", "aes-xts-essiv:sha256", 64, 0, 0, [], None,
         "essiv:sha256 over XTS (salt = sha256 of the 64-byte key)"),
        ("xts-plain64-aes192", "aes-xts-plain64", 48, 1000, 0, [], None,
         "AES-192-XTS (48-byte key; OpenSSL has no XTS for it)"),
        ("ecb", "aes-ecb", 32, 0, 0, [], None, "AES-256-ECB, no IV"),
        ("capi-cbc-plain64", "capi:cbc(aes)-plain64", 32, 7, 0, [], None,
         "capi: form, iv_offset 7"),
        ("keycount2-cbc-plain64", "aes:2-cbc-plain64", 64, 1, 0, [], None,
         "two AES-256 keys, key (sector + iv_offset) & 1"),
        ("keycount2-cbc-essiv", "aes:2-cbc-essiv:sha256", 32, 0, 0, [], None,
         "two AES-128 keys, one ESSIV salt per key"),
        ("keycount4-xts-plain64", "aes:4-xts-plain64", 128, 0, 0, [], None,
         "four AES-128-XTS keys"),
        ("keycount2-xts-4k", "aes:2-xts-plain64", 128, 0, 0, ["sector_size:4096"], None,
         "two keys with 4 KiB sectors: the key index counts 512-byte sectors"),
        ("xts-4k", "aes-xts-plain64", 64, 16, 0, ["sector_size:4096"], None,
         "4 KiB sectors, IVs in 512-byte sectors"),
        ("xts-4k-large", "aes-xts-plain64", 64, 16, 0, ["sector_size:4096", "iv_large_sectors"],
         None, "4 KiB sectors, IVs in 4 KiB units"),
        ("cbc-eboiv-4k-large", "aes-cbc-eboiv", 32, 0, 0,
         ["sector_size:4096", "iv_large_sectors"], None, "eboiv as BitLocker uses it"),
        ("cbc-benbi-2k", "aes-cbc-benbi", 16, 0, 0, ["sector_size:2048"], None,
         "benbi with 2 KiB sectors"),
        ("capi-xts-plain64-1k-large", "capi:xts(aes)-plain64", 64, 0, 0,
         ["sector_size:1024", "iv_large_sectors"], None, "1 KiB sectors, IVs in 1 KiB units"),
        ("cipher-null", "cipher_null-ecb", 0, 0, 0, [], None, "no cipher, key '-'"),
    ],
    "aead": [
        ("aead-authenc-sha256-cbc-plain64", "capi:authenc(hmac(sha256),cbc(aes))-plain64",
         64, 0, 0, ["integrity:32:aead"], (32, 512),
         "authenc hmac(sha256) + cbc(aes), deterministic IV, 32-byte tags"),
        ("aead-gcm-plain64", "capi:gcm(aes)-plain64", 32, 0, 0, ["integrity:16:aead"],
         (16, 512), "gcm(aes) with plain64 nonces"),
        ("aead-gcm-plain64be-tag12", "capi:gcm(aes)-plain64be", 16, 3, 0, ["integrity:12:aead"],
         (12, 512), "gcm(aes), 12-byte tags"),
        ("aead-chacha-plain64", "capi:rfc7539(chacha20,poly1305)-plain64", 32, 0, 0,
         ["integrity:16:aead"], (16, 512), "rfc7539 with plain64 nonces"),
        ("aead-authenc-sha512-xts-4k", "capi:authenc(hmac(sha512),xts(aes))-plain64", 128, 0, 0,
         ["integrity:64:aead", "sector_size:4096"], (64, 4096),
         "authenc hmac(sha512) + xts(aes), 4 KiB sectors"),
        ("xts-random-none", "aes-xts-random", 64, 0, 0, ["integrity:16:none"], (16, 512),
         "random IVs kept by dm-integrity, no authentication"),
    ],
}

PLAIN_SIZE = {c[0]: (c[4] + SECTORS) * 512 for run in CASES.values() for c in run}


def key_of(name: str, nbytes: int) -> bytes:
    return hashlib.shake_256(b"dmkit-dmcrypt-ivs:" + name.encode()).digest(nbytes)


def pattern(start: int, count: int) -> bytes:
    return b"".join(hashlib.sha256(b"dmkit-fixture:%d" % s).digest() * 16
                    for s in range(start, start + count))


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def case_line(i: int, case) -> str:
    name, cipher, kb, ivoff, off, opts, dif, _ = case
    dev = "/dev/vd" + "abcdefghijklmnopqrstuvwx"[i]
    key = key_of(name, kb).hex() if kb else "-"
    d = f"{dif[0]}:{dif[1]}" if dif else "-"
    rest = f" {len(opts)} {' '.join(opts)}" if opts else ""
    return f"{name} {dev} {SECTORS} {d} {cipher} {key} {ivoff} {off}{rest}"


def prepare(work: Path, run: str) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / "pat.bin").write_bytes(pattern(0, SECTORS))
    lines = [case_line(i, c) for i, c in enumerate(CASES[run])]
    (work / "cases.txt").write_text("\n".join(lines) + "\n")
    for c in CASES[run]:
        with open(work / f"{c[0]}.img", "wb") as f:
            f.truncate(DIF_IMAGE_BYTES if c[6] else PLAIN_SIZE[c[0]])


def run_guest(work: Path, run: str, kernel_run: str) -> None:
    out = work / "out"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    cmd = [kernel_run, "--timeout", "3000", "--in", str(work / "pat.bin"), "--in",
           str(work / "cases.txt"), "--out", str(out), "--log", str(work / "run.log"),
           str(HERE / "oracle-script.sh")] + [str(work / f"{c[0]}.img") for c in CASES[run]]
    subprocess.run(cmd, check=True)


def _read(out: Path, name: str) -> str | None:
    p = out / name
    return p.read_text().strip() if p.exists() else None


def assemble(work_root: Path, dest: Path) -> None:
    images, refused, versions = [], [], None
    for run, cases in CASES.items():
        work = work_root / run
        out = work / "out"
        if not out.exists():
            continue
        v = {"kernel": _read(out, "uname-r.txt"), "proc_version": _read(out, "proc-version.txt"),
             "dmsetup": _read(out, "dmsetup-version.txt").splitlines(),
             "dm_targets": _read(out, "dmsetup-targets.txt").splitlines()}
        if versions is None:
            versions = v
        assert v["kernel"] == versions["kernel"], (run, v["kernel"])
        shutil.copyfile(work / "cases.txt", dest / f"cases-{run}.txt")
        given_lines = (work / "cases.txt").read_text().splitlines()
        for line, case in zip(given_lines, cases):
            name, cipher, kb, ivoff, off, opts, dif, what = case
            dmesg = (_read(out, f"{name}.dmesg") or "").splitlines()
            status = (_read(out, f"{name}.status") or "").splitlines()
            rec = {"name": name, "run": run, "description": what, "cases_line": line,
                   "guest_device": line.split()[1],
                   "cipher": cipher, "key_hex": key_of(name, kb).hex() if kb else "-",
                   "key_bytes": kb, "iv_offset": ivoff, "offset": off, "optional": opts,
                   "table_given": _read(out, f"{name}.table-given"),
                   "status": status, "dmesg": dmesg}
            if dif:
                rec["dif_table_given"] = _read(out, f"{name}.dif-table-given")
            if _read(out, f"{name}.sha256") is None or any(not s.startswith("rc=0 ")
                                                           for s in status):
                rec["create_error"] = _read(out, f"{name}.create-err")
                refused.append(rec)
                continue
            raw = (work / f"{name}.img").read_bytes()
            comp = zstandard.ZstdCompressor(level=19).compress(raw)
            (dest / f"{name}.img.zst").write_bytes(comp)
            kernel_sha = _read(out, f"{name}.sha256")
            assert kernel_sha == sha(pattern(0, SECTORS)), (name, kernel_sha)
            rec.update({
                "file": f"{name}.img.zst", "compression": "zstd -19",
                "raw_size": len(raw), "raw_sha256": sha(raw),
                "compressed_size": len(comp), "compressed_sha256": sha(comp),
                "mapped_sectors": int(_read(out, f"{name}.size")),
                "logical_block_size": int(_read(out, f"{name}.lbs")),
                "dm_table_while_open": _read(out, f"{name}.table"),
                "kernel_read_sha256": kernel_sha,
                "written": f"dd if=/in/pat.bin of=/dev/mapper/{name} bs=4096 "
                           f"count={SECTORS // 8} conv=fsync",
            })
            if dif:
                rec["dif_table_while_open"] = _read(out, f"{name}.dif-table")
                rec["dif_status_after_reread"] = _read(out, f"{name}.dif-status")
            images.append(rec)
    manifest = {
        "schema": "dmkit dm-crypt IV vectors v1 (see tests/vectors/README.md, crypt section)",
        "made_by": "tests/vectors/crypt/dmcrypt-ivs/build.py + oracle-script.sh in the dmkit "
                   "kernel oracle (QEMU TCG guest, virtio disks, cache=unsafe)",
        "versions": versions,
        "host_qemu": subprocess.run(["qemu-system-x86_64", "--version"], check=False,
                                    capture_output=True,
                                    text=True).stdout.splitlines()[0]
        if shutil.which("qemu-system-x86_64") else "unknown",
        "created_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "pattern": {"sector_size": 512, "sectors": SECTORS,
                    "definition": "sector s of the mapped device = "
                                  "sha256(b'dmkit-fixture:%d' % s).digest() * 16, over the "
                                  "whole mapped device",
                    "sha256": sha(pattern(0, SECTORS))},
        "keys": "hashlib.shake_256(b'dmkit-dmcrypt-ivs:' + name.encode()).digest(key_bytes) "
                "(test keys); '-' for cipher_null",
        "images": images,
        "refused_by_the_kernel": refused,
    }
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("dest", type=Path, nargs="?", default=HERE)
    ap.add_argument("--kernel-run", default=os.environ.get("KERNEL_RUN"))
    ap.add_argument("--only", choices=sorted(CASES))
    ap.add_argument("--assemble-only", action="store_true")
    a = ap.parse_args()
    if not a.assemble_only:
        if not a.kernel_run:
            ap.error("set KERNEL_RUN (the oracle's kernel-run) or pass --kernel-run")
        for run in CASES:
            if a.only and run != a.only:
                continue
            prepare(a.work / run, run)
            run_guest(a.work / run, run, a.kernel_run)
    assemble(a.work, a.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
