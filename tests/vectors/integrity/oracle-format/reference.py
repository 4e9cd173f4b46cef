"""What does `integritysetup format` write?  Ask the real kernel.

Run on a host with the kernel oracle ($KERNEL_RUN) set up (see tests/vectors/README.md, "oracle-format"):

    .venv/bin/python tests/vectors/integrity/oracle-format/reference.py WORKDIR

Every disk starts as the same deterministic "garbage" (sector ``s`` of a disk is
``sha256(b"dmkit-garbage:%d" % s).digest() * 16``), so whatever format leaves untouched
shows.  The guest runs ``integritysetup format --batch-mode OPTS`` on each disk (cases in
``reference_cases.txt``) and ``integritysetup dump``.  This script then records, per case,
the sha256 of every disk after format, the salt the kernel drew, and the dump, in
``reference.json`` beside it.  ``tests/integrity/test_format_reference.py`` formats the same
garbage with dmkit (same options, the kernel's salt injected) and compares the hashes: the
whole image, byte for byte.  The formatted images stay in WORKDIR for debugging.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
def _kernel_run() -> str:
    """The oracle's kernel-run script, from $KERNEL_RUN (checked when a guest is run)."""
    return os.environ.get("KERNEL_RUN") or sys.exit("set KERNEL_RUN to the oracle's kernel-run script")


def garbage(nr_sectors: int) -> bytes:
    return b"".join(hashlib.sha256(b"dmkit-garbage:%d" % s).digest() * 16
                    for s in range(nr_sectors))


def keys() -> dict[str, bytes]:
    return {"k32": hashlib.shake_256(b"dmkit-oracle-key:k32").digest(32),
            "k64": hashlib.shake_256(b"dmkit-oracle-key:k64").digest(64)}


def parse_cases(path: Path) -> list[dict]:
    """Lines: ``NAME SIZE_KIB[,DATA_SIZE_KIB] OPTS...``; ``@data`` in OPTS is the data disk."""
    cases = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sizes, *opts = line.split()
        kib = [int(x) for x in sizes.split(",")]
        cases.append({"name": name, "kib": kib, "opts": opts})
    return cases


def main(workdir: str) -> int:
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    cases = parse_cases(HERE / "reference_cases.txt")
    for name, key in keys().items():
        (work / name).write_bytes(key)
    # kernel-run takes at most 24 disks: run the cases in batches
    batches: list[list[dict]] = [[]]
    for c in cases:
        if sum(len(x["kib"]) for x in batches[-1]) + len(c["kib"]) > 24:
            batches.append([])
        batches[-1].append(c)
    out = work / "out"
    versions = None
    for b, batch in enumerate(batches):
        disks: list[Path] = []
        lines = []
        for c in batch:
            devs = []
            for role, kib in zip(("dev", "data"), c["kib"]):
                p = work / f"{c['name']}.{role}.img"
                p.write_bytes(garbage(kib * 2))
                disks.append(p)
                devs.append(f"/dev/vd{chr(ord('a') + len(disks) - 1)}")
            c["guest_devices"] = devs
            opts = [devs[1] if o == "@data" else o for o in c["opts"]]
            opts = [f"/in/{o[4:]}" if o.startswith("@in/") else o for o in opts]
            lines.append(f"{devs[0]} {c['name']} {' '.join(opts)}")
        (work / "cases.txt").write_text("\n".join(lines) + "\n")
        cmd = [_kernel_run(), "--timeout", "900", "--in", str(work / "cases.txt"),
               "--in", str(work / "k32"), "--in", str(work / "k64"), "--out", str(out),
               str(HERE / "reference.sh"), *map(str, disks)]
        print(f"batch {b + 1}/{len(batches)}: " + " ".join(cmd), flush=True)
        rc = subprocess.run(cmd).returncode
        if rc != 0:
            print(f"kernel-run exited {rc}", file=sys.stderr)
            return rc
        if (out / "versions.txt").exists():
            versions = (out / "versions.txt").read_text()
    records = []
    for c in cases:
        files = [work / f"{c['name']}.{role}.img" for role in ("dev", "data")[:len(c["kib"])]]
        log = (out / f"{c['name']}.format.log")
        rec = {"name": c["name"], "kib": c["kib"], "opts": c["opts"],
               "format_ok": not (out / f"{c['name']}.failed").exists(),
               "format_log": log.read_text() if log.exists() else None,
               "sha256": [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]}
        dump = out / f"{c['name']}.dump.txt"
        rec["dump"] = dump.read_text() if dump.exists() else None
        sb = files[0].read_bytes()[:64]
        rec["salt_hex"] = sb[48:64].hex() if sb[:8] == b"integrt\0" else None
        records.append(rec)
    manifest = {
        "made_by": "tests/vectors/integrity/oracle-format/reference.py through "
                   "$KERNEL_RUN (the kernel oracle)",
        "versions": versions,
        "garbage": "sector s of every disk before format = "
                   "sha256(b'dmkit-garbage:%d' % s).digest() * 16",
        "keys": {"k32": "hashlib.shake_256(b'dmkit-oracle-key:k32').digest(32)",
                 "k64": "hashlib.shake_256(b'dmkit-oracle-key:k64').digest(64)"},
        "cases": records,
    }
    (HERE / "reference.json").write_text(json.dumps(manifest, indent=1) + "\n")
    bad = [r["name"] for r in records if not r["format_ok"]]
    print(f"{len(records)} cases, format failed for: {bad or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/dmkit-oracle-format"))
