"""Journals the kernel left behind at a power cut, in devices dmkit formatted — encrypted
journals included — and what dmkit makes of them.

    .venv/bin/python tests/vectors/integrity/oracle-format/crash.py WORKDIR [CASES [JSON]]

dmkit formats each case of ``crash_cases.txt`` (garbage disks, as reference.py); in the
guest the kernel opens every device in journal mode and writes with O_DIRECT as crash.sh
says ("full" or "small"), the last write too small to wake the kernel's journal writer, and
the guest powers off with all devices open (kernel-run then reports 125).  On the host,
``dmkit integrity export`` with the journal's cipher and key must give the pattern exactly,
replaying the journal in memory, without changing the image; the blocks whose data area is
stale (only in the journal) are counted.  Then dmkit's integrity target replays the same
journal (``dmkit integrity import`` of nothing, with the journal's cipher and MAC, on a
copy), after which the data area alone holds the pattern.  With a journal MAC, export and
import check the kernel's section MACs (``--journal-integrity``).
Results go to ``crash.json``.
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
from roundtrip import dmkit, open_options, pattern  # noqa: E402

_READ = {"--integrity": 1, "--integrity-key-file": 1, "--integrity-key-size": 1,
         "--journal-crypt": 1, "--journal-crypt-key-file": 1, "--journal-crypt-key-size": 1,
         "--journal-integrity": 1, "--journal-integrity-key-file": 1,
         "--journal-integrity-key-size": 1}


def read_options(opts, with_crypt=True):
    """The options verify/export/import need; without the journal's keys (encryption and
    MAC) when ``with_crypt`` is false."""
    out, i = [], 0
    while i < len(opts):
        n = _READ.get(opts[i])
        if n is None or (not with_crypt and opts[i].startswith("--journal-")):
            i += 1 + (n or 0) if n is not None else 1
            continue
        out += opts[i:i + 1 + n]
        i += 1 + n
    return out


def expected(style: str, n: int) -> bytes:
    """What the device holds after crash.sh (once the journal is replayed)."""
    if style == "full":
        return pattern(n - 16) + bytes(16 * 512)
    last = pattern(n)[(n - 16) * 512:]
    return pattern(256) + bytes((n - 256 - 16) * 512) + last


def target_replay(work: Path, c: dict, img: Path, want: bytes) -> dict:
    """dmkit's integrity target replays the kernel's journal: ``dmkit integrity import``
    of nothing (load the target in journal mode with the journal's cipher and MAC, which
    replays the journal onto the data area, then close it) on a copy of the image; the
    copy's data area then holds the pattern even for a reader given no journal key."""
    copy = work / f"{c['name']}.target.img"
    copy.write_bytes(img.read_bytes())
    empty = work / "empty.bin"
    empty.write_bytes(b"")
    r = dmkit("import", "--json", *read_options(c["host_opts"]), str(copy), str(empty))
    out = work / f"{c['name']}.after-target"
    e = dmkit("export", *read_options(c["host_opts"], with_crypt=False), str(copy), str(out))
    got = out.read_bytes() if e.returncode == 0 and out.exists() else None
    rec = {"import_rc": r.returncode, "import_stderr": r.stderr.decode().strip(),
           "export_without_journal_key_rc": e.returncode,
           "data_area_is_pattern_after_the_target": got == want}
    rec["ok"] = r.returncode == 0 and got == want
    for p in (copy, out):
        if p.exists():
            p.unlink()
    return rec


def main(workdir: str, cases_file: str = "crash_cases.txt",
         out_json: str = "crash.json") -> int:
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    for name, key in keys().items():
        (work / name).write_bytes(key)
    cases = []
    for line in (HERE / cases_file).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, kib, style, *opts = line.split()
            cases.append({"name": name, "kib": int(kib), "style": style, "opts": opts})
    n_max = 0
    lines, disks = [], []
    for c in cases:
        img = work / f"{c['name']}.img"
        img.write_bytes(garbage(c["kib"] * 2))
        disks.append(img)
        host = [str(work / o[4:]) if o.startswith("@in/") else o for o in c["opts"]]
        c["host_opts"] = host
        r = dmkit("format", "--batch-mode", *host, str(img))
        if r.returncode:
            print(r.stderr.decode())
            return 1
        c["n"] = json.loads(dmkit("dump", "--json", str(img)).stdout)["provided_data_sectors"]
        n_max = max(n_max, c["n"])
        guest = [f"/in/{o[4:]}" if o.startswith("@in/") else o for o in c["opts"]]
        lines.append(f"/dev/vd{chr(ord('a') + len(disks) - 1)} {c['name']} {c['style']} "
                     f"{' '.join(open_options(guest, 'J'))}")
    (work / "pat.bin").write_bytes(pattern(n_max))
    (work / "cases.txt").write_text("\n".join(lines) + "\n")
    cmd = [str(KERNEL_RUN), "--timeout", "900", "--in", str(work / "cases.txt"),
           "--in", str(work / "k32"), "--in", str(work / "k64"), "--in", str(work / "pat.bin"),
           str(HERE / "crash.sh"), *map(str, disks)]
    print(" ".join(cmd), flush=True)
    rc = subprocess.run(cmd).returncode
    if rc not in (0, 125):     # 125: no exit marker, as expected after poweroff -f
        print(f"kernel-run exited {rc}", file=sys.stderr)
        return rc
    records, failures = [], []
    for c in cases:
        img = work / f"{c['name']}.img"
        before = hashlib.sha256(img.read_bytes()).hexdigest()
        want = expected(c["style"], c["n"])
        out = work / f"{c['name']}.export"
        e = dmkit("export", "--json", *read_options(c["host_opts"]), str(img), str(out))
        summary = json.loads(e.stdout) if e.returncode == 0 else e.stderr.decode()
        exact = out.exists() and out.read_bytes() == want
        plain = work / f"{c['name']}.export-without-key"
        e2 = dmkit("export", *read_options(c["host_opts"], with_crypt=False), str(img),
                   str(plain))
        stale = None
        if e2.returncode == 0:
            got = plain.read_bytes()
            stale = sum(got[s * 512:(s + 1) * 512] != want[s * 512:(s + 1) * 512]
                        for s in range(c["n"]))
        rec = {"name": c["name"], "style": c["style"], "format_options": c["opts"],
               "provided_sectors": c["n"],
               "dmkit_export": summary, "export_is_pattern": exact,
               "image_unchanged": hashlib.sha256(img.read_bytes()).hexdigest() == before,
               "sectors_stale_without_the_journal": stale,
               "export_without_journal_key_rc": e2.returncode}
        rec["target_replay"] = target_replay(work, c, img, want)
        rec["ok"] = exact and rec["image_unchanged"] and rec["target_replay"]["ok"]
        if not rec["ok"]:
            failures.append(c["name"])
        records.append(rec)
        for p in (out, plain):
            if p.exists():
                p.unlink()
    (HERE / out_json).write_text(json.dumps(
        {"made_by": "tests/vectors/integrity/oracle-format/crash.py through "
                    "$KERNEL_RUN (the kernel oracle)", "cases": records}, indent=1) + "\n")
    for r in records:
        exp = r["dmkit_export"]
        replayed = exp.get("journal_replayed_blocks") if isinstance(exp, dict) else "?"
        print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['name']}: replayed {replayed} blocks, "
              f"{r['sectors_stale_without_the_journal']} sectors stale without the key, "
              f"target replay {'ok' if r['target_replay']['ok'] else 'FAILED'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(*(sys.argv[1:] or ["/tmp/dmkit-oracle-crash"])))
