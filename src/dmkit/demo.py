"""The demo that ``make demo`` runs: a real device-mapper stack on two small images.

    python -m dmkit.demo [DIR]        (DIR defaults to demo-data)

It creates two 4 MiB images in DIR if they are missing, writes a table that stacks
``linear`` + ``striped`` (across both images) + ``zero``, and then drives the ``dmkit``
command line, printing each command and what it printed:

1. ``table check`` the table;
2. ``import`` a known pattern through the mapped device (sector ``i`` says
   ``dmkit demo sector i``; the input ends 100 bytes into a block, so the tail goes
   through read-modify-write), then ``export`` the device back and compare;
3. ``open`` the stack under the name ``dmkit-demo``, ``status`` and ``table show`` it,
   export a second table stacked on ``/dev/mapper/dmkit-demo``, compare, ``close``.

Open devices are recorded in DIR/state, not in the user's state directory.  Running it
again reuses the images and does the same steps.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from .block import SECTOR_SIZE

__all__ = ["main"]

IMAGE_SECTORS = 8192          # 4 MiB each
LINEAR_SECTORS = 2048         # 1 MiB of a.img
STRIPED_SECTORS = 8192        # 4 MiB: 2 MiB on each image
CHUNK_SECTORS = 128           # 64 KiB stripe chunks
ZERO_SECTORS = 2048
NAME = "dmkit-demo"


def _sector_pattern(i: int) -> bytes:
    label = f"dmkit demo sector {i}".ljust(31).encode() + b"\n"
    return label * (SECTOR_SIZE // len(label))


def _pattern(nr_sectors: int) -> bytes:
    return b"".join(_sector_pattern(i) for i in range(nr_sectors))


def _say(text: str = "") -> None:
    print(text, flush=True)


def _step(text: str) -> None:
    _say()
    _say(f"== {text}")


def _dmkit(*args: str, env: dict[str, str], stdin: bytes | None = None) -> str:
    """Run ``python -m dmkit ARGS`` as a user would, echo it and its output; stop on failure."""
    _say("$ dmkit " + " ".join(shlex.quote(a) for a in args))
    proc = subprocess.run([sys.executable, "-m", "dmkit", *args], env=env, input=stdin,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.decode(errors="replace")
    for line in out.splitlines():
        _say("  " + line)
    for line in proc.stderr.decode(errors="replace").splitlines():
        _say("  " + line)
    if proc.returncode != 0:
        raise SystemExit(f"demo: `dmkit {' '.join(args)}` failed with exit status "
                         f"{proc.returncode}")
    return out


def _table(a: str, b: str) -> str:
    """The stack: 1 MiB of a.img, 4 MiB striped over both images, 1 MiB of zeros."""
    return (f"0 {LINEAR_SECTORS} linear {a} 0\n"
            f"{LINEAR_SECTORS} {STRIPED_SECTORS} striped 2 {CHUNK_SECTORS} "
            f"{a} {LINEAR_SECTORS} {b} 0\n"
            f"{LINEAR_SECTORS + STRIPED_SECTORS} {ZERO_SECTORS} zero\n")


def _compare(got: bytes, want: bytes, what: str) -> None:
    if got == want:
        _say(f"  OK: {what}: {len(got)} bytes identical")
        return
    if len(got) != len(want):
        raise SystemExit(f"demo: {what}: {len(got)} bytes, expected {len(want)}")
    first = next(i for i in range(len(got)) if got[i] != want[i])
    raise SystemExit(f"demo: {what}: differs first at byte {first} (sector "
                     f"{first // SECTOR_SIZE})")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0] in ("-h", "--help")):
        _say(__doc__.strip())
        return 0 if args and args[0] in ("-h", "--help") else 2
    data = Path(args[0] if args else "demo-data")
    env = dict(os.environ, DMKIT_STATE_DIR=str((data / "state").absolute()))

    _step(f"images in {data}/")
    data.mkdir(parents=True, exist_ok=True)
    a, b = data / "a.img", data / "b.img"
    for img in (a, b):
        if img.exists() and img.stat().st_size == IMAGE_SECTORS * SECTOR_SIZE:
            _say(f"  {img}: exists, {IMAGE_SECTORS} sectors (reused)")
        else:
            with open(img, "wb") as f:
                f.truncate(IMAGE_SECTORS * SECTOR_SIZE)
            _say(f"  {img}: created, {IMAGE_SECTORS} sectors of zeros")

    _step("the table: linear + striped across both images + zero")
    table_text = _table(str(a), str(b))
    table = data / "stack.table"
    table.write_text(table_text)
    _say(f"  wrote {table} (striped: 2 stripes of {CHUNK_SECTORS}-sector chunks, "
         "alternating between a.img and b.img):")
    for line in table_text.splitlines():
        _say("    " + line)
    _dmkit("table", "check", str(table), env=env)

    _step("import a known pattern through the mapped device, export it back, compare")
    data_sectors = LINEAR_SECTORS + STRIPED_SECTORS
    total_sectors = data_sectors + ZERO_SECTORS
    # Into the zero segment by 8 sectors and 100 bytes: an unaligned tail (read-modify-write)
    # whose data the zero target drops.
    pattern = _pattern(data_sectors + 9)[:(data_sectors + 8) * SECTOR_SIZE + 100]
    pattern_file = data / "pattern.bin"
    pattern_file.write_bytes(pattern)
    _say(f"  wrote {pattern_file}: {len(pattern)} bytes; sector i reads 'dmkit demo sector i'")
    _dmkit("import", "--table", str(table), str(pattern_file), env=env)
    export_file = data / "export.bin"
    _dmkit("export", "--table", str(table), str(export_file), env=env)
    expected = pattern[:data_sectors * SECTOR_SIZE] + bytes(ZERO_SECTORS * SECTOR_SIZE)
    _compare(export_file.read_bytes(), expected,
             f"{export_file} == pattern over {data_sectors} sectors + "
             f"{ZERO_SECTORS} zero sectors")
    with open(b, "rb") as f:
        first = f.read(32).decode(errors="replace").strip()
    # Chunk 0 of the striped segment is on a.img, chunk 1 is the first thing on b.img.
    want = f"dmkit demo sector {LINEAR_SECTORS + CHUNK_SECTORS}"
    if first != want:
        raise SystemExit(f"demo: {b} starts with {first!r}, expected {want!r}")
    _say(f"  OK: {b} starts with {first!r}: the striped segment's second chunk")
    assert total_sectors * SECTOR_SIZE == len(expected)

    _step(f"a named device: open the stack as {NAME}, stack a table on it")
    listed = json.loads(_dmkit("ls", "--json", env=env))
    if any(d["name"] == NAME for d in listed):  # left open by an interrupted earlier run
        _say(f"  {NAME} is still open from an earlier run: closing it first")
        for d in listed:
            if NAME in d["uses"]:
                _dmkit("close", d["name"], env=env)
        _dmkit("close", NAME, env=env)
    _dmkit("open", "--table", str(table), NAME, env=env)
    _dmkit("ls", env=env)
    _dmkit("status", NAME, env=env)
    _dmkit("table", "show", NAME, env=env)
    upper = f"0 {STRIPED_SECTORS} linear /dev/mapper/{NAME} {LINEAR_SECTORS}\n"
    _say(f"  a table stacked on /dev/mapper/{NAME} (its middle {STRIPED_SECTORS} sectors), "
         "from stdin:")
    _say(f"    {upper.strip()}")
    upper_file = data / "upper.bin"
    _dmkit("export", "--table", "-", str(upper_file), env=env, stdin=upper.encode())
    _compare(upper_file.read_bytes(),
             pattern[LINEAR_SECTORS * SECTOR_SIZE:data_sectors * SECTOR_SIZE],
             f"{upper_file} == the pattern's middle {STRIPED_SECTORS} sectors")
    _dmkit("close", NAME, env=env)

    _step("done")
    _say(f"  everything the demo made is in {data}/ (git-ignored); run it again at will.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
