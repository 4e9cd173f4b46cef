"""Does the real kernel read what dmkit's integrity target wrote?  Ask it.

Run on a host with the kernel oracle ($KERNEL_RUN) set up (see tests/vectors/README.md, "Images the
integrity target wrote, read by the kernel"):

    .venv/bin/python tests/vectors/integrity/oracle-scripts/target_images.py WORKDIR

For every case in ``target_cases.txt`` this script makes zeroed image files, loads dmkit's
integrity target on them (the first load formats them, as the kernel does), writes the
pattern over the whole provided device through the target in the case's mode, and either
closes cleanly or -- for the ``crash-*`` cases -- overwrites a range and stops without a
clean close (``crash-journal``: the new data is committed to the journal but not written
home; ``crash-bitmap``: written home with the bitmap dirty and the tags not flushed).

The guest (``target_check.sh``) then loads each image with ``dmsetup create`` and the table
line dmkit prints (``dmsetup table`` syntax, devices renamed to /dev/vdX), reads the whole
mapped device (sha256), records ``dmsetup status`` and ``dmsetup table``, and removes it.
Back on the host every image, as the kernel left it, is loaded by dmkit again and read.

Results go to ``target_images.json`` beside this script: per case the table, the sha256
dmkit expects, what the kernel read, the kernel's status and table, and what dmkit read
after the kernel.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[3]
sys.path.insert(0, str(ROOT / "src"))

from dmkit.block import FileDevice  # noqa: E402
from dmkit.dm import DeviceResolver, MappedDevice  # noqa: E402
from dmkit.targets.integrity.target import IntegrityTarget  # noqa: E402

def _kernel_run() -> str:
    """The oracle's kernel-run script, from $KERNEL_RUN (checked when a guest is run)."""
    return os.environ.get("KERNEL_RUN") or sys.exit("set KERNEL_RUN to the oracle's kernel-run script")
KEY32 = hashlib.shake_256(b"dmkit-oracle-key:k32").digest(32).hex()
KEY64 = hashlib.shake_256(b"dmkit-oracle-key:k64").digest(64).hex()


def pattern(start: int, n: int, label: bytes = b"dmkit-fixture") -> bytes:
    return b"".join(hashlib.sha256(label + b":%d" % s).digest() * 16
                    for s in range(start, start + n))


def parse_cases(path: Path) -> list[dict]:
    """``NAME MODE DATA_KIB[,META_KIB] KIND OPTIONS...`` (``KEY32``/``KEY64`` in OPTIONS are
    the test keys); KIND is ``clean``, ``crash-journal`` or ``crash-bitmap``."""
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, mode, sizes, kind, *opts = line.split()
        kib = [int(x) for x in sizes.split(",")]
        out.append({"name": name, "mode": mode, "kib": kib, "kind": kind,
                    "opts": [o.replace("KEY32", KEY32).replace("KEY64", KEY64)
                             for o in opts]})
    return out


def _open(paths: dict, c: dict, nr_sectors: int | None, *, start: int = 0):
    words = list(c["opts"])
    if "meta" in paths:
        words.append("meta_device:meta")
    args = ["data", str(start), "-", c["mode"], str(len(words)), *words]
    devs = {role: FileDevice(p) for role, p in paths.items()}
    resolver = DeviceResolver(devs)
    if nr_sectors is None:
        probe = IntegrityTarget(resolver, 0, 8, args)
        nr_sectors = probe.provided_data_sectors
        probe.close()
    t = IntegrityTarget(resolver, 0, nr_sectors, args)
    return MappedDevice(c["name"], [t], resolver=resolver), devs


def _write(dev, start: int, data: bytes, chunk: int = 512) -> None:
    for s in range(0, len(data) // 512, chunk):
        dev.write(start + s, data[s * 512:(s + chunk) * 512])


def make_case(work: Path, c: dict) -> dict:
    paths = {}
    for role, kib in zip(("data", "meta"), c["kib"]):
        p = work / f"{c['name']}.{role}.img"
        with open(p, "wb") as f:
            f.truncate(kib * 1024)
        paths[role] = p
    start = int(next((o.split(":")[1] for o in c["opts"] if o.startswith("start:")), 0))
    c["opts"] = [o for o in c["opts"] if not o.startswith("start:")]
    dev, devs = _open(paths, c, None, start=start)
    n = dev.nr_sectors
    want = bytearray(pattern(0, n))
    _write(dev, 0, bytes(want))
    table = dev.table().strip()
    dev.close()
    if c["kind"] != "clean":
        dev, devs = _open(paths, c, n, start=start)
        a = (n // 3) // 8 * 8
        k = min(256, n - a)
        new = pattern(a, k, b"dmkit-oracle-new")
        _write(dev, a, new, chunk=64)
        want[a * 512:(a + k) * 512] = new
        dev.flush()
        # a power cut: nothing that close would write (no write-home, no bitmap clear)
        t = dev.targets[0]
        t._failed = RuntimeError("simulated power cut")  # type: ignore[assignment]
        t.close()
    for d in devs.values():
        d.close()
    return {"name": c["name"], "kind": c["kind"], "mode": c["mode"], "paths": paths,
            "table": table, "nr_sectors": n, "start": start,
            "want_sha256": hashlib.sha256(want).hexdigest()}


def main(workdir: str) -> int:
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    cases = parse_cases(HERE / "target_cases.txt")
    made = [make_case(work, dict(c)) for c in cases]
    batches: list[list[dict]] = [[]]
    for m in made:
        if sum(len(x["paths"]) for x in batches[-1]) + len(m["paths"]) > 24:
            batches.append([])
        batches[-1].append(m)
    out = work / "out"
    out.mkdir(exist_ok=True)
    for batch in batches:
        disks: list[Path] = []
        lines = []
        for m in batch:
            names = {}
            for role in ("data", "meta"):
                if role in m["paths"]:
                    disks.append(m["paths"][role])
                    names[role] = f"/dev/vd{chr(ord('a') + len(disks) - 1)}"
            words = m["table"].split()
            words[3] = names["data"]
            words = [f"meta_device:{names['meta']}" if w.startswith("meta_device:") else w
                     for w in words]
            lines.append(f"{m['name']} {' '.join(words)}")
        cases_file = work / "target_cases.in"
        cases_file.write_text("\n".join(lines) + "\n")
        r = subprocess.run([_kernel_run(), "--timeout", "900", "--in", str(cases_file),
                            "--out", str(out), str(HERE / "target_check.sh"),
                            *map(str, disks)])
        if r.returncode != 0:
            print(f"kernel-run failed: {r.returncode}", file=sys.stderr)
            return 1
    results = []
    ok = True
    for m in made:
        res = {k: v for k, v in m.items() if k != "paths"}
        res["table"] = m["table"].replace(str(m["paths"]["data"]), "DATA")
        if "meta" in m["paths"]:
            res["table"] = res["table"].replace(str(m["paths"]["meta"]), "META")
        got = (out / f"{m['name']}.sha256")
        res["kernel_sha256"] = got.read_text().split()[0] if got.exists() else None
        for what in ("status", "table", "dmesg"):
            f = out / f"{m['name']}.{what}"
            res[f"kernel_{what}"] = f.read_text().strip() if f.exists() else None
        c = next(c for c in cases if c["name"] == m["name"])
        c = dict(c, opts=[o for o in c["opts"] if not o.startswith("start:")])
        dev, devs = _open(m["paths"], c, m["nr_sectors"], start=m["start"])
        res["dmkit_after_kernel_sha256"] = hashlib.sha256(dev.read(0, dev.nr_sectors)).hexdigest()
        dev.close()
        for d in devs.values():
            d.close()
        res["ok"] = (res["kernel_sha256"] == res["want_sha256"]
                     == res["dmkit_after_kernel_sha256"])
        ok &= res["ok"]
        print(f"{m['name']:28} {'OK' if res['ok'] else 'MISMATCH'}  {res['kernel_status']}")
        results.append(res)
    versions = out / "versions.txt"
    doc = {"made_by": versions.read_text().strip() if versions.exists() else None,
           "pattern": "sector s: sha256(b'dmkit-fixture:%d' % s).digest() * 16; crash cases "
                      "overwrite 256 sectors from (N//3)//8*8 with b'dmkit-oracle-new:%d'",
           "key32": KEY32, "key64": KEY64, "cases": results}
    (HERE / "target_images.json").write_text(json.dumps(doc, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
