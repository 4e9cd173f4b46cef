"""Do volumes that dmkit formats and fills open in the real kernel?  Ask it.

    KERNEL_RUN=/path/to/oracle/kernel-run \\
        .venv/bin/python tests/vectors/luks/oracle-scripts/build.py WORKDIR

For every case in ``cases.txt`` (host side, with dmkit's own command line):

1. ``dmkit luks format --batch-mode --key-file NAME.pass OPTIONS IMAGE`` on a zeroed image
   file (with ``--header NAME.hdr`` for the ``detached`` case): for ``--integrity`` this is
   also the dm-integrity superblock and the wipe through dmkit's targets;
2. ``dmkit luks import IMAGE pattern.bin`` over the whole volume, where 512-byte sector
   ``s`` is ``sha256(b"dmkit-luks-oracle:%d" % s) * 16``;
3. ``crash`` cases: dmkit then writes 64 more sectors (label ``dmkit-luks-oracle-crash``)
   through the integrity journal and flushes, and the image is copied at that moment -- the
   entries committed in dmkit's journal, not yet written home -- so the kernel has to
   replay dmkit's journal under dm-crypt;
4. ``dmkit luks export`` checks dmkit reads back what it wrote.

The guest (``check.sh``, run by ``$KERNEL_RUN``) opens each volume with ``cryptsetup open
--key-file`` (``--header`` when detached), records ``dmsetup table``, hashes the whole
mapped device, writes 64 sectors of its own (``kpat.bin``) in the middle with ``dd ...
conv=fsync``, reads them back and closes.  Back on the host dmkit exports every image as
the kernel left it and compares with the expected content (its pattern, the kernel's
range in the middle), and the tables dmkit stacks are compared with the kernel's.  ``results.json`` beside this script records, per case, the dmkit
commands, what dmkit expected, what the kernel read, the kernel's tables and messages,
and what dmkit read after the kernel.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[3]
sys.path.insert(0, str(ROOT / "src"))

import dmkit.luks as luks  # noqa: E402

MiB = 1 << 20
KERNEL_COUNT = 64


def pattern(start: int, n: int, label: bytes) -> bytes:
    return b"".join(hashlib.sha256(label + b":%d" % s).digest() * 16
                    for s in range(start, start + n))


def parse_cases(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, mib, kind, *opts = line.split()
        out.append({"name": name, "mib": int(mib), "kind": kind, "opts": opts})
    return out


def dmkit(*args) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "dmkit", "luks", *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr}")
    return r


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make(c: dict, work: Path) -> dict:
    name = c["name"]
    key = work / "keys" / f"{name}.pass"
    key.write_bytes(f"dmkit-luks-oracle:{name}".encode())
    img = work / f"{name}.img"
    with open(img, "wb") as f:
        f.truncate(c["mib"] * MiB)
    hdr = work / f"{name}.hdr" if c["kind"] == "detached" else None
    extra = ["--header", hdr] if hdr else []
    fmt = ["format", "--batch-mode", "--key-file", key, *extra, *c["opts"], img]
    dmkit(*fmt)
    with luks.open(img, key_file=key, header=hdr) as vol:
        n = vol.nr_sectors
        unit = vol.sector_size
    content = bytearray(pattern(0, n, b"dmkit-luks-oracle"))
    src = work / f"{name}.pattern.bin"
    src.write_bytes(content)
    dmkit("import", img, src, "--key-file", key, *extra)
    src.unlink()
    record = {"name": name, "kind": c["kind"], "image_mib": c["mib"],
              "dmkit_commands": [
                  "dmkit luks " + " ".join(str(a) for a in fmt).replace(str(work) + "/", ""),
                  f"dmkit luks import {name}.img pattern.bin --key-file keys/{name}.pass"
                  + (f" --header {name}.hdr" if hdr else "")],
              "volume_sectors": n, "sector_size": unit}
    if c["kind"] == "crash":
        lo = (n // 4) // 8 * 8
        new = pattern(lo, 64, b"dmkit-luks-oracle-crash")
        vol = luks.open(img, key_file=key, writable=True)
        try:
            vol.seek(lo * 512)
            vol.write(new)
            vol.device.flush()
            shutil.copyfile(img, work / f"{name}.crash")
        finally:
            vol.close()
        os.replace(work / f"{name}.crash", img)
        content[lo * 512:(lo + 64) * 512] = new
        record["crash_range"] = [lo, 64]
        with luks.open(img, key_file=key) as ro:   # read-only: needs the journal replayed?
            record["journal_needs_replay"] = type(ro.dif.targets[0].data_dev).__name__ \
                == "_Overlay"
        record["dmkit_commands"].append(
            f"python: luks.open(writable=True), write sectors {lo}+64, flush; image copied "
            "before the close (journal committed, not written home)")
    out = work / f"{name}.check.bin"
    dmkit("export", img, out, "--key-file", key, *extra)
    if out.read_bytes() != content:
        raise SystemExit(f"{name}: dmkit does not read back what it wrote")
    out.unlink()
    record["expected_sha256"] = sha(bytes(content))
    record["kernel_range"] = [(n // 2) // 8 * 8, KERNEL_COUNT]
    c.update(img=img, hdr=hdr, key=key, content=content, record=record)
    return record


def _dmkit_tables(c: dict) -> dict:
    """The tables ``luks.open`` stacks for the image (data device ``luks_data``)."""
    with luks.open(c["img"], key_file=c["key"], header=c["hdr"]) as vol:
        return dict(vol.tables())


def _same_tables(ours: dict, kernel_lines: list[str], name: str) -> bool:
    """dmkit's tables equal what ``dmsetup table`` printed in the guest, device numbers
    read as dmkit's device names (a LUKS1 key, masked by the kernel, as dmkit's reference)."""
    def sub(table: str, dev: str) -> str:
        return " ".join(dev if w.replace(":", "").isdigit() and ":" in w else w
                        for w in table.split())
    crypt = next(t for t in kernel_lines if not t.startswith(f"{name}_dif: "))
    dif = [t.split(": ", 1)[1] for t in kernel_lines if t.startswith(f"{name}_dif: ")]
    words = crypt.split()
    if set(words[4]) == {"0"}:
        words[4] = ours["luks"].split()[4]
    want = {"luks": sub(" ".join(words), "luks_dif" if dif else "luks_data")}
    if dif:
        want["luks_dif"] = sub(dif[0], "luks_data")
    return ours == want


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    kernel_run = os.environ.get("KERNEL_RUN")
    if not kernel_run:
        raise SystemExit("set KERNEL_RUN to the oracle's kernel-run script")
    work = Path(sys.argv[1]).resolve()
    if work.exists():
        shutil.rmtree(work)
    (work / "keys").mkdir(parents=True)
    cases = parse_cases(HERE / "cases.txt")
    disks: list[Path] = []
    lines = []
    for c in cases:
        make(c, work)
        letter = lambda i: "/dev/vd" + chr(ord("a") + i)  # noqa: E731
        data_dev = letter(len(disks))
        disks.append(c["img"])
        hdr_dev = "-"
        if c["hdr"] is not None:
            hdr_dev = letter(len(disks))
            disks.append(c["hdr"])
        lo, cnt = c["record"]["kernel_range"]
        lines.append(f"{c['name']} {data_dev} {hdr_dev} {lo} {cnt}")
        c["record"]["guest_devices"] = {"data": data_dev, "header": hdr_dev}
        print(f"made {c['name']}", flush=True)
    (work / "cases.list").write_text("\n".join(lines) + "\n")
    kpat = pattern(0, KERNEL_COUNT, b"dmkit-luks-oracle-kernel")
    (work / "kpat.bin").write_bytes(kpat)
    outdir = work / "out"
    cmd = [kernel_run, "--timeout", "3000", "--in", work / "cases.list", "--in",
           work / "keys", "--in", work / "kpat.bin", "--out", outdir, HERE / "check.sh",
           *disks]
    r = subprocess.run([str(x) for x in cmd], capture_output=True, text=True)
    (work / "kernel-run.log").write_text(r.stdout + r.stderr)
    print(r.stdout[-3000:], r.stderr[-2000:])

    def rd(name: str) -> str:
        p = outdir / name
        return p.read_text() if p.exists() else ""

    results = []
    for c in cases:
        rec = c["record"]
        name = rec["name"]
        rec["kernel_result"] = rd(f"{name}.result").strip()
        rec["kernel_log"] = rd(f"{name}.log").strip()
        rec["kernel_sectors"] = int(rd(f"{name}.size") or 0)
        rec["kernel_sha256"] = rd(f"{name}.sha256").split(" ")[0]
        rec["kernel_table"] = rd(f"{name}.table").strip().splitlines()
        rec["kernel_dmesg"] = [ln for ln in rd(f"{name}.dmesg").splitlines() if ln.strip()]
        rec["kernel_read_matches"] = rec["kernel_sha256"] == rec["expected_sha256"]
        lo, cnt = rec["kernel_range"]
        rec["kernel_range_readback_matches"] = \
            rd(f"{name}.ksha256").split(" ")[0] == sha(kpat[:cnt * 512])
        after = bytearray(c["content"])
        after[lo * 512:(lo + cnt) * 512] = kpat[:cnt * 512]
        out = work / f"{name}.after.bin"
        extra = ["--header", c["hdr"]] if c["hdr"] is not None else []
        try:
            dmkit("export", c["img"], out, "--key-file", c["key"], *extra)
            got = out.read_bytes()
            rec["dmkit_after_kernel_matches"] = got == after
        except SystemExit as e:
            rec["dmkit_after_kernel_matches"] = False
            rec["dmkit_after_kernel_error"] = str(e)
        rec["dmkit_tables"] = _dmkit_tables(c)
        rec["dmkit_tables_match"] = _same_tables(rec["dmkit_tables"], rec["kernel_table"], name)
        rec["ok"] = (rec["kernel_result"] == "ok" and rec["kernel_read_matches"]
                     and rec["dmkit_tables_match"]
                     and rec["kernel_range_readback_matches"]
                     and rec["dmkit_after_kernel_matches"]
                     and rec["kernel_sectors"] == rec["volume_sectors"])
        results.append(rec)
        print(f"{name}: {'OK' if rec['ok'] else 'FAIL'}", flush=True)
    doc = {
        "what": "volumes dmkit formats and fills, opened by the real kernel (see build.py)",
        "kernel": rd("uname-r.txt").strip(),
        "cryptsetup": rd("cryptsetup-version.txt").strip(),
        "dmsetup": " / ".join(rd("dmsetup-version.txt").split("\n")).strip(" /"),
        "kernel_run_exit": r.returncode,
        "cases": results,
    }
    (HERE / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    if not all(rec["ok"] for rec in results):
        raise SystemExit("some cases failed: see results.json")


if __name__ == "__main__":
    main()
