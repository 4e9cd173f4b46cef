"""Does the real kernel read what dmkit's integrity target wrote?

    .venv/bin/python tests/vectors/integrity/oracle-format/import.py WORKDIR

For every case of ``import_cases.txt``: dmkit formats garbage disks (as roundtrip.py), then
``dmkit integrity import --mode MODE`` writes the pattern (sector ``s`` =
``sha256(b"dmkit-fixture:%d" % s).digest() * 16``) over the whole provided device through
dmkit's integrity target, which flushes and closes cleanly.  In the guest,
``integritysetup open`` (in the case's open mode) maps it and the whole device is read:
its sha256 must be the pattern's, with no I/O error and a mismatch count of 0.
Results go to ``import.json`` beside this script.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from reference import KERNEL_RUN, garbage, keys  # noqa: E402
from roundtrip import _MODE_FLAG, dmkit, open_options, pattern  # noqa: E402

_IMPORT_OPTS = {"--integrity": 1, "--integrity-key-file": 1, "--integrity-key-size": 1,
                "--data-device": 1, "--journal-integrity": 1,
                "--journal-integrity-key-file": 1, "--journal-integrity-key-size": 1,
                "--journal-crypt": 1, "--journal-crypt-key-file": 1,
                "--journal-crypt-key-size": 1}


def import_options(opts: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(opts):
        n = _IMPORT_OPTS.get(opts[i])
        if n is None:
            i += 1
            continue
        out += opts[i:i + 1 + n]
        i += 1 + n
    return out


def parse(path: Path) -> list[dict]:
    cases = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sizes, imode, omode, *opts = line.split()
        cases.append({"name": name, "kib": [int(x) for x in sizes.split(",")],
                      "import_mode": imode, "open_mode": omode, "opts": opts})
    return cases


def main(workdir: str) -> int:
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    for name, key in keys().items():
        (work / name).write_bytes(key)
    cases = parse(HERE / "import_cases.txt")
    disks: list[Path] = []
    lines = []
    for c in cases:
        files = []
        for role, kib in zip(("dev", "data"), c["kib"]):
            p = work / f"{c['name']}.{role}.img"
            p.write_bytes(garbage(kib * 2))
            files.append(p)
            disks.append(p)
        devs = [f"/dev/vd{chr(ord('a') + len(disks) - len(files) + k)}"
                for k in range(len(files))]
        host = [str(files[1]) if o == "@data" else
                str(work / o[4:]) if o.startswith("@in/") else o for o in c["opts"]]
        r = dmkit("format", "--batch-mode", *host, str(files[0]))
        if r.returncode != 0:
            print(f"dmkit format failed for {c['name']}: {r.stderr.decode()}")
            return 1
        dump = json.loads(dmkit("dump", "--json", str(files[0])).stdout)
        n = dump["provided_data_sectors"]
        src = work / f"{c['name']}.pattern"
        src.write_bytes(pattern(n))
        r = dmkit("import", "--mode", c["import_mode"], *import_options(host), str(files[0]),
                  str(src))
        src.unlink()
        c["dmkit_import_rc"] = r.returncode
        if r.returncode != 0:
            print(f"dmkit import failed for {c['name']}: {r.stderr.decode()}")
            return 1
        c["provided_sectors"] = n
        guest = [devs[1] if o == "@data" else
                 f"/in/{o[4:]}" if o.startswith("@in/") else o for o in c["opts"]]
        lines.append(f"{devs[0]} {c['name']} "
                     f"{' '.join(open_options(guest, c['open_mode']))}")
    assert set(_MODE_FLAG) >= {c["open_mode"] for c in cases}
    if len(disks) > 24:
        print("too many disks for one kernel-run", file=sys.stderr)
        return 1
    (work / "cases.txt").write_text("\n".join(lines) + "\n")
    out = work / "out"
    cmd = [str(KERNEL_RUN), "--timeout", "900", "--in", str(work / "cases.txt"),
           "--in", str(work / "k32"), "--in", str(work / "k64"), "--out", str(out),
           str(HERE / "import.sh"), *map(str, disks)]
    print(" ".join(cmd), flush=True)
    rc = subprocess.run(cmd).returncode
    if rc != 0:
        print(f"kernel-run exited {rc}", file=sys.stderr)
        return rc
    records, failures = [], []
    for c in cases:
        name = c["name"]

        def read(suffix: str) -> str | None:
            p = out / f"{name}.{suffix}"
            return p.read_text().strip() if p.exists() else None
        n = c["provided_sectors"]
        sha = (read("sha256") or "").split()[:1]
        status = read("status")
        rec = {"name": name, "kib": c["kib"], "format_options": c["opts"],
               "import_mode": c["import_mode"], "open_mode": c["open_mode"],
               "provided_sectors": n, "kernel_size": read("size"),
               "kernel_table": read("table"), "kernel_status": status,
               "kernel_read_pattern": sha == [hashlib.sha256(pattern(n)).hexdigest()]
               and not read("err")}
        rec["ok"] = (rec["kernel_read_pattern"] and rec["kernel_size"] == str(n)
                     and status is not None and status.split()[3] == "0")
        if not rec["ok"]:
            failures.append(name)
        records.append(rec)
    manifest = {
        "made_by": "tests/vectors/integrity/oracle-format/import.py through "
                   "$KERNEL_RUN (the kernel oracle)",
        "versions": (out / "versions.txt").read_text() if (out / "versions.txt").exists()
        else None,
        "cases": records,
    }
    (HERE / "import.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for r in records:
        print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['name']}")
    print(f"{len(records) - len(failures)}/{len(records)} cases passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/dmkit-oracle-import"))
