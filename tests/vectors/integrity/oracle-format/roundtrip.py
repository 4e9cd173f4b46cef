"""Does the real kernel open what ``dmkit integrity format`` writes?  And does dmkit read
back what the kernel then writes?

    .venv/bin/python tests/vectors/integrity/oracle-format/roundtrip.py WORKDIR

For every case of ``roundtrip_cases.txt``: the disks start as garbage (as in
reference.py); dmkit formats them on the host (``dmkit integrity format --batch-mode``, a
random salt); in the guest ($KERNEL_RUN (the kernel oracle)) ``integritysetup open`` with the
same algorithm, key, journal and data-device options and the case's mode (J, B or D)
maps it; the whole mapped device is read (it must be all zeros, with no I/O error and a
mismatch count of 0 in ``dmsetup status``), the pattern (sector ``s`` =
``sha256(b"dmkit-fixture:%d" % s).digest() * 16``) is written over all of it, the device
is closed, reopened and read again.  Back on the host, ``dmkit integrity verify --json``
must report every sector checked and no mismatch, and ``dmkit integrity export`` must
give the pattern exactly (and the kernel's sha256).

The results go to ``roundtrip.json`` beside this script; tests/vectors/README.md lists
what was checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from reference import KERNEL_RUN, garbage, keys  # noqa: E402

PATTERN_SECTORS = 8192
#: format options that integritysetup open does not take (the superblock has them)
_FORMAT_ONLY = {"--tag-size": 1, "--sector-size": 1, "--interleave-sectors": 1,
                "--journal-size": 1, "--integrity-legacy-padding": 0,
                "--integrity-legacy-hmac": 0, "--no-wipe": 0, "--buffer-sectors": 1}
_MODE_FLAG = {"J": [], "B": ["--integrity-bitmap-mode"], "D": ["--integrity-no-journal"]}
#: options of dmkit verify/export (journal MAC/encryption matter only to the kernel here)
_READ_OPTS = {"--integrity": 1, "--integrity-key-file": 1, "--integrity-key-size": 1,
              "--data-device": 1}


def pattern(n: int) -> bytes:
    return b"".join(hashlib.sha256(b"dmkit-fixture:%d" % s).digest() * 16 for s in range(n))


def open_options(opts: list[str], mode: str) -> list[str]:
    out, i = [], 0
    while i < len(opts):
        if opts[i] in _FORMAT_ONLY:
            i += 1 + _FORMAT_ONLY[opts[i]]
            continue
        out.append(opts[i])
        i += 1
    return out + _MODE_FLAG[mode]


def read_options(opts: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(opts):
        n = _READ_OPTS.get(opts[i])
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
        name, sizes, mode, *opts = line.split()
        cases.append({"name": name, "kib": [int(x) for x in sizes.split(",")], "mode": mode,
                      "opts": opts})
    return cases


def dmkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dmkit", "integrity", *args],
                          capture_output=True, text=False)


def main(workdir: str) -> int:
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    for name, key in keys().items():
        (work / name).write_bytes(key)
    (work / "pat.bin").write_bytes(pattern(PATTERN_SECTORS))
    cases = parse(HERE / "roundtrip_cases.txt")
    disks: list[Path] = []
    lines = []
    for c in cases:
        files = []
        for role, kib in zip(("dev", "data"), c["kib"]):
            p = work / f"{c['name']}.{role}.img"
            p.write_bytes(garbage(kib * 2))
            files.append(p)
            disks.append(p)
        c["files"] = files
        c["guest_devices"] = [f"/dev/vd{chr(ord('a') + len(disks) - len(files) + k)}"
                              for k in range(len(files))]
        host = [str(files[1]) if o == "@data" else
                str(work / o[4:]) if o.startswith("@in/") else o for o in c["opts"]]
        r = dmkit("format", "--batch-mode", *host, str(files[0]))
        c["dmkit_format_rc"] = r.returncode
        c["dmkit_format_err"] = r.stderr.decode(errors="replace")
        if r.returncode != 0:
            print(f"dmkit format failed for {c['name']}: {c['dmkit_format_err']}")
            return 1
        c["host_opts"] = host
        guest = [c["guest_devices"][1] if o == "@data" else
                 f"/in/{o[4:]}" if o.startswith("@in/") else o for o in c["opts"]]
        lines.append(f"{c['guest_devices'][0]} {c['name']} "
                     f"{' '.join(open_options(guest, c['mode']))}")
    if len(disks) > 24:
        print("too many disks for one kernel-run", file=sys.stderr)
        return 1
    (work / "cases.txt").write_text("\n".join(lines) + "\n")
    out = work / "out"
    cmd = [str(KERNEL_RUN), "--timeout", "1500", "--in", str(work / "cases.txt"),
           "--in", str(work / "k32"), "--in", str(work / "k64"), "--in", str(work / "pat.bin"),
           "--out", str(out), str(HERE / "roundtrip.sh"), *map(str, disks)]
    print(" ".join(cmd), flush=True)
    rc = subprocess.run(cmd).returncode
    if rc != 0:
        print(f"kernel-run exited {rc}", file=sys.stderr)
        return rc
    records, failures = [], []
    for c in cases:
        name = c["name"]
        rec = {"name": name, "kib": c["kib"], "mode": c["mode"], "format_options": c["opts"]}

        def read(suffix: str) -> str | None:
            p = out / f"{name}.{suffix}"
            return p.read_text().strip() if p.exists() else None
        size = read("size")
        rec["kernel_table"] = read("table")
        rec["kernel_status_after_reading_zeros"] = read("status1")
        rec["kernel_status_after_writing"] = read("status2")
        if size is None:
            rec["ok"] = False
            rec["error"] = (read("open.log") or "no output").splitlines()[-1:]
            records.append(rec)
            failures.append(name)
            continue
        n = int(size)
        rec["provided_sectors"] = n
        zero_sha = (read("zero.sha256") or "").split()[:1]
        pat_sha = (read("pat.sha256") or "").split()[:1]
        want_zero = hashlib.sha256(bytes(n * 512)).hexdigest()
        want_pat = hashlib.sha256(pattern(n)).hexdigest()
        rec["kernel_read_zeros"] = zero_sha == [want_zero] and not read("zero.err")
        rec["kernel_read_pattern"] = pat_sha == [want_pat] and not read("pat.err")
        mism = [s.split()[3] if s and len(s.split()) > 3 else None
                for s in (rec["kernel_status_after_reading_zeros"],
                          rec["kernel_status_after_writing"])]
        rec["kernel_mismatches"] = mism
        ro = read_options(c["host_opts"])
        v = dmkit("verify", "--json", *ro, str(c["files"][0]))
        rec["dmkit_verify_rc"] = v.returncode
        try:
            vj = json.loads(v.stdout)
            rec["dmkit_verify"] = {k: vj[k] for k in ("checked_sectors", "mismatches",
                                                      "journal_replayed_blocks")}
        except (ValueError, KeyError):
            rec["dmkit_verify"] = v.stderr.decode(errors="replace")
        exp = work / f"{name}.export"
        e = dmkit("export", *ro, str(c["files"][0]), str(exp))
        rec["dmkit_export_rc"] = e.returncode
        rec["dmkit_export_is_pattern"] = exp.exists() and exp.read_bytes() == pattern(n)
        rec["ok"] = (rec["kernel_read_zeros"] and rec["kernel_read_pattern"]
                     and mism == ["0", "0"] and v.returncode == 0
                     and isinstance(rec["dmkit_verify"], dict)
                     and rec["dmkit_verify"]["checked_sectors"] == n
                     and not rec["dmkit_verify"]["mismatches"]
                     and e.returncode == 0 and rec["dmkit_export_is_pattern"])
        if not rec["ok"]:
            failures.append(name)
        records.append(rec)
        with open(exp, "wb"):
            pass
        os.unlink(exp)
    manifest = {
        "made_by": "tests/vectors/integrity/oracle-format/roundtrip.py through "
                   "$KERNEL_RUN (the kernel oracle)",
        "versions": (out / "versions.txt").read_text() if (out / "versions.txt").exists()
        else None,
        "cases": records,
    }
    (HERE / "roundtrip.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for r in records:
        print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['name']}")
    print(f"{len(records) - len(failures)}/{len(records)} cases passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/dmkit-oracle-roundtrip"))
