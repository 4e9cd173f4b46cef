"""The command line: table check, export/import, named devices, errors and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from dmkit.block import SECTOR_SIZE
from dmkit.cli import cli
from dmkit.cli.state import Record, StateStore
from tests.conftest import pattern


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    """Every test gets its own state directory: nothing touches the user's."""
    path = tmp_path / "state"
    monkeypatch.setenv("DMKIT_STATE_DIR", str(path))
    return path


def run(*args: str, input: bytes | str | None = None):
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def one_error_line(result, *needles: str) -> str:
    """The failure is exactly one line, 'dmkit: ...', with no traceback."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dmkit: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


# -- table check ---------------------------------------------------------------------------

def test_table_check_prints_the_canonical_table(tmp_path, make_image):
    img = make_image(4096)
    table = write(tmp_path, "t.table",
                  f"# a comment\n\n0   100 linear {img}   8\n100 28 zero\n")
    result = run("table", "check", table)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"0 100 linear {img} 8\n100 28 zero\n"


def test_table_check_json(tmp_path, make_image):
    img = make_image(4096)
    table = write(tmp_path, "t.table", f"0 100 linear {img} 8\n100 28 zero\n")
    result = run("table", "check", "--json", table)
    assert result.exit_code == 0
    assert json.loads(result.stdout) == [
        {"start": 0, "length": 100, "target": "linear", "params": f"{img} 8"},
        {"start": 100, "length": 28, "target": "zero", "params": ""},
    ]


def test_table_check_from_stdin(make_image):
    img = make_image(64)
    result = run("table", "check", "-", input=f"0 64 linear {img} 0\n")
    assert result.exit_code == 0
    assert result.stdout == f"0 64 linear {img} 0\n"


@pytest.mark.parametrize("bad_line,needle", [
    ("8 8 frobnicate", "unknown target type 'frobnicate'"),
    ("8 8 zero extra", "zero: too many arguments"),
    ("9 8 zero", "gap in the table"),
    ("8 8 linear {missing} 0", "cannot open device"),
    ("8 x zero", "invalid length"),
])
def test_table_check_error_names_file_and_line(tmp_path, make_image, bad_line, needle):
    img = make_image(64)
    missing = str(tmp_path / "missing.img")
    table = write(tmp_path, "bad.table",
                  f"# header\n0 8 linear {img} 0\n{bad_line.format(missing=missing)}\n")
    result = run("table", "check", table)
    assert result.exit_code == 1
    one_error_line(result, f"{table}:3:", needle)
    assert result.stdout == ""


def test_table_check_of_a_missing_file(tmp_path):
    path = str(tmp_path / "nope.table")
    result = run("table", "check", path)
    assert result.exit_code == 1
    one_error_line(result, path, "No such file")


def test_table_check_opens_devices_read_only(tmp_path, make_image):
    img = make_image(64)
    os.chmod(img, 0o444)
    table = write(tmp_path, "t.table", f"0 64 linear {img} 0\n")
    if os.geteuid() != 0:  # root can open a 0444 file for writing anyway
        assert run("open", "--table", table, "rw").exit_code == 1
    assert run("table", "check", table).exit_code == 0


# -- errors, --debug, usage ----------------------------------------------------------------

def test_debug_prints_a_traceback(tmp_path):
    table = write(tmp_path, "bad.table", "0 8 nosuchtarget\n")
    plain = run("table", "check", table)
    assert plain.exit_code == 1
    one_error_line(plain, "unknown target type")
    debug = run("--debug", "table", "check", table)
    assert debug.exit_code == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.splitlines()[-1] == plain.stderr.strip()


def test_unexpected_errors_are_one_line_too(monkeypatch, tmp_path, make_image):
    import dmkit.cli.table as table_mod

    def broken(*a, **k):
        raise RuntimeError("something broke")

    monkeypatch.setattr(table_mod, "read_table", broken)
    result = run("table", "check", "whatever")
    assert result.exit_code == 1
    line = one_error_line(result, "internal error: RuntimeError: something broke", "--debug")
    assert line.startswith("dmkit: internal error")
    assert "Traceback" in run("--debug", "table", "check", "whatever").stderr


@pytest.mark.parametrize("args", [
    ("export", "out.bin"),                 # --table missing
    ("table", "check"),                    # FILE missing
    ("open", "--table", "t", "bad/name"),  # invalid name
    ("no-such-command",),
    ("luks",),                             # a group without its command
])
def test_usage_errors_exit_2(args):
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 2


def test_planned_groups_say_so():
    for group in ("serve",):
        result = run(group, "--help")
        assert result.exit_code == 0
        assert "planned, not implemented" in result.stdout


def test_luks_group_is_wired_in():
    result = run("luks", "--help")
    assert result.exit_code == 0
    assert "planned" not in result.stdout
    for verb in ("format", "dump", "add-key", "export", "import", "header-restore"):
        assert verb in result.stdout


def test_keyring_group_is_wired_in():
    result = run("keyring", "--help")
    assert result.exit_code == 0
    assert "planned" not in result.stdout
    for verb in ("add", "new-encrypted", "load", "pipe", "list", "unlink"):
        assert verb in result.stdout


def test_version():
    result = run("--version")
    assert result.exit_code == 0
    assert "0.1.0" in result.stdout


def test_real_subprocess(tmp_path, make_image):
    """`python -m dmkit` as a user runs it: exit codes and stderr, no traceback."""
    img = make_image(64)
    good = write(tmp_path, "good.table", f"0 64 linear {img} 0\n")
    bad = write(tmp_path, "bad.table", f"0 64 linear {img} 0\n64 8 nope\n")
    env = dict(os.environ, DMKIT_STATE_DIR=str(tmp_path / "state"))
    ok = subprocess.run([sys.executable, "-m", "dmkit", "table", "check", good],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == f"0 64 linear {img} 0\n"
    assert ok.stderr == ""
    fail = subprocess.run([sys.executable, "-m", "dmkit", "table", "check", bad],
                          capture_output=True, text=True, env=env)
    assert fail.returncode == 1
    assert fail.stderr == f"dmkit: {bad}:2: unknown target type 'nope'\n"
    usage = subprocess.run([sys.executable, "-m", "dmkit", "export"],
                           capture_output=True, text=True, env=env)
    assert usage.returncode == 2


# -- export / import ----------------------------------------------------------------------

@pytest.fixture
def stack(tmp_path, make_image):
    """linear (a, 16 sectors in) + zero + linear (b): 96 + 32 + 64 sectors."""
    a = make_image(256, "a.img", content=pattern(1000, 256))
    b = make_image(128, "b.img", content=pattern(2000, 128))
    table = write(tmp_path, "stack.table",
                  f"0 96 linear {a} 16\n96 32 zero\n128 64 linear {b} 8\n")
    return table, a, b


def test_export(tmp_path, stack):
    table, a, b = stack
    out = str(tmp_path / "out.bin")
    result = run("export", "--table", table, out)
    assert result.exit_code == 0, result.stderr
    want = (read(a)[16 * SECTOR_SIZE:112 * SECTOR_SIZE] + bytes(32 * SECTOR_SIZE)
            + read(b)[8 * SECTOR_SIZE:72 * SECTOR_SIZE])
    assert read(out) == want
    assert "exported 98304 bytes" in result.stderr
    assert "\r" not in result.stderr  # no progress bar when stderr is not a terminal


def test_export_to_stdout_with_json(stack):
    table, a, _ = stack
    result = run("export", "--json", "--table", table, "-")
    assert result.exit_code == 0
    assert len(result.stdout_bytes) == 192 * SECTOR_SIZE
    assert result.stdout_bytes[:SECTOR_SIZE] == read(a)[16 * SECTOR_SIZE:17 * SECTOR_SIZE]
    summary = json.loads(result.stderr)  # stdout carries the data, so JSON goes to stderr
    assert summary["bytes"] == 192 * SECTOR_SIZE and summary["seconds"] >= 0


def test_import_export_round_trip(tmp_path, stack):
    table, a, b = stack
    a_before, b_before = read(a), read(b)
    # Ends 300 bytes into sector 150: a partial block through read-modify-write.
    data = pattern(5000, 151)[:150 * SECTOR_SIZE + 300]
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    result = run("import", "--json", "--table", table, str(src))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["bytes"] == len(data)

    s = SECTOR_SIZE
    # The images, byte for byte: only the mapped ranges changed; the zero segment dropped
    # its 32 sectors; b keeps its old bytes after the 300-byte tail.
    a_want = a_before[:16 * s] + data[:96 * s] + a_before[112 * s:]
    b_new = data[128 * s:]
    b_want = b_before[:8 * s] + b_new + b_before[8 * s + len(b_new):]
    assert read(a) == a_want
    assert read(b) == b_want

    out = tmp_path / "out.bin"
    assert run("export", "--table", table, str(out)).exit_code == 0
    got = out.read_bytes()
    assert got[:96 * s] == data[:96 * s]
    assert got[96 * s:128 * s] == bytes(32 * s)
    assert got[128 * s:128 * s + len(b_new)] == b_new
    assert got[128 * s + len(b_new):] == b_before[8 * s + len(b_new):72 * s]


def test_import_from_stdin(tmp_path, stack):
    table, a, _ = stack
    data = pattern(7000, 3)
    result = run("import", "--table", table, "-", input=data)
    assert result.exit_code == 0, result.stderr
    assert read(a)[16 * SECTOR_SIZE:19 * SECTOR_SIZE] == data


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_import_too_large_writes_nothing(tmp_path, stack, source):
    table, a, b = stack
    a_before, b_before = read(a), read(b)
    data = pattern(9000, 192) + b"x"  # one byte more than the device
    if source == "file":
        src = tmp_path / "big.bin"
        src.write_bytes(data)
        result = run("import", "--table", table, str(src))
        name = str(src)
    else:
        result = run("import", "--table", table, "-", input=data)
        name = "<stdin>"
    assert result.exit_code == 1
    one_error_line(result, name, "larger than the mapped device", "nothing was written")
    assert read(a) == a_before and read(b) == b_before


def test_failed_export_keeps_the_existing_output(tmp_path, make_image):
    img = make_image(64, content=pattern(0, 64))
    table = write(tmp_path, "t.table", f"0 64 linear {img} 0\n64 8 error\n")
    out = tmp_path / "out.bin"
    out.write_bytes(b"precious")
    result = run("export", "--table", table, str(out))
    assert result.exit_code == 1
    one_error_line(result, "sector 64")
    assert out.read_bytes() == b"precious"
    assert not [n for n in os.listdir(tmp_path) if "dmkit-tmp" in n]  # temp file removed


def test_table_that_is_not_text(tmp_path):
    table = tmp_path / "bin.table"
    table.write_bytes(b"0 8 zero\n\xff\xfe\n")
    result = run("table", "check", str(table))
    assert result.exit_code == 1
    one_error_line(result, str(table), "not a text table")
    result = run("table", "check", "-", input=b"\xff")
    assert result.exit_code == 1
    one_error_line(result, "<stdin>", "not a text table")


def test_export_onto_its_own_image_is_refused(tmp_path, stack):
    table, a, _ = stack
    before = read(a)
    result = run("export", "--table", table, a)
    assert result.exit_code == 1
    one_error_line(result, "refusing")
    assert read(a) == before


def test_table_and_input_both_stdin_is_a_usage_error():
    assert CliRunner().invoke(cli, ["import", "--table", "-", "-"]).exit_code == 2


def test_progress_bar_only_on_a_terminal(monkeypatch):
    from dmkit.cli import progress as progress_mod

    monkeypatch.setattr(progress_mod, "_stderr_is_terminal", lambda: False)
    assert isinstance(progress_mod.progress(10, "x"), progress_mod._NoProgress)
    monkeypatch.setattr(progress_mod, "_stderr_is_terminal", lambda: True)
    bar = progress_mod.progress(10, "x")
    try:
        assert type(bar).__name__ == "tqdm"
    finally:
        bar.close()


# -- named devices --------------------------------------------------------------------------

def test_open_status_close_ls(tmp_path, stack, state_dir):
    table, a, b = stack
    assert run("ls").stdout == "No devices found\n"
    assert json.loads(run("ls", "--json").stdout) == []

    result = run("open", "--table", table, "vol")
    assert result.exit_code == 0, result.stderr
    assert (state_dir / "vol.json").exists()
    assert oct(state_dir.stat().st_mode & 0o777) == "0o700"
    assert oct((state_dir / "vol.json").stat().st_mode & 0o777) == "0o600"

    assert run("ls").stdout == "vol\t192\trw\n"
    assert json.loads(run("ls", "--json").stdout) == [
        {"name": "vol", "nr_sectors": 192, "read_only": False, "uses": []}]
    assert run("status", "vol").stdout == "0 96 linear\n96 32 zero\n128 64 linear\n"
    assert run("status").stdout == "vol: 0 96 linear\nvol: 96 32 zero\nvol: 128 64 linear\n"
    status = json.loads(run("status", "--json", "vol").stdout)
    assert status["name"] == "vol" and status["nr_sectors"] == 192
    assert [s["target"] for s in status["segments"]] == ["linear", "zero", "linear"]
    assert run("table", "show", "vol").stdout == run("table", "check", table).stdout
    shown = json.loads(run("table", "show", "--json", "vol").stdout)
    assert shown == json.loads(run("table", "check", "--json", table).stdout)

    again = run("open", "--table", table, "vol")
    assert again.exit_code == 1
    one_error_line(again, "vol", "is open")

    assert run("close", "vol").exit_code == 0
    assert run("ls").stdout == "No devices found\n"
    missing = run("close", "vol")
    assert missing.exit_code == 1
    one_error_line(missing, "vol: no such mapped device")
    assert run("status", "vol").exit_code == 1


def test_open_records_relative_paths_with_their_directory(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "r.img").write_bytes(pattern(0, 16))
    monkeypatch.chdir(work)
    (work / "r.table").write_text("0 16 linear r.img 0\n")
    assert run("open", "--table", "r.table", "rel").exit_code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert run("table", "show", "rel").stdout == "0 16 linear r.img 0\n"
    assert run("status", "rel").exit_code == 0
    out = elsewhere / "o.bin"
    result = run("export", "--table", "-", str(out), input="0 16 linear rel 0\n")
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes() == pattern(0, 16)


def test_stacking_over_an_open_name(tmp_path, stack):
    table, a, b = stack
    assert run("open", "--table", table, "lower").exit_code == 0
    # Both spellings: /dev/mapper/NAME and the bare NAME.
    upper = write(tmp_path, "upper.table",
                  "0 32 linear /dev/mapper/lower 64\n32 64 linear lower 128\n")
    check = run("table", "check", upper)
    assert check.exit_code == 0, check.stderr
    assert check.stdout == "0 32 linear /dev/mapper/lower 64\n32 64 linear lower 128\n"

    data = pattern(4242, 96)
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    assert run("import", "--table", upper, str(src)).exit_code == 0
    s = SECTOR_SIZE
    # upper 0..32 -> lower 64..96 -> a 80..112; upper 32..96 -> lower 128..192 -> b 8..72
    assert read(a)[80 * s:112 * s] == data[:32 * s]
    assert read(b)[8 * s:72 * s] == data[32 * s:]
    out = tmp_path / "out.bin"
    assert run("export", "--table", upper, str(out)).exit_code == 0
    assert out.read_bytes() == data

    assert run("open", "--table", upper, "upper").exit_code == 0
    assert json.loads(run("ls", "--json").stdout)[1]["uses"] == ["lower"]
    busy = run("close", "lower")
    assert busy.exit_code == 1
    one_error_line(busy, "lower", "in use by upper")
    assert run("ls").stdout.count("\n") == 2  # nothing was closed
    assert run("close", "upper").exit_code == 0
    assert run("close", "lower").exit_code == 0


def test_read_only_open_device_refuses_writes_through_it(tmp_path, stack):
    table, a, _ = stack
    assert run("open", "--readonly", "--table", table, "ro").exit_code == 0
    assert run("ls").stdout == "ro\t192\tro\n"
    src = tmp_path / "in.bin"
    src.write_bytes(pattern(0, 8))
    before = read(a)
    result = run("import", "--table", "-", str(src), input="0 8 linear ro 0\n")
    assert result.exit_code == 1
    one_error_line(result, "read-only")
    assert read(a) == before
    # Reading through it is fine.
    out = tmp_path / "o.bin"
    assert run("export", "--table", "-", str(out), input="0 8 linear ro 0\n").exit_code == 0


def test_cycles_between_open_tables_are_rejected(tmp_path, state_dir):
    store = StateStore(state_dir)
    cwd = str(tmp_path)
    store.add(Record("one", "0 8 linear two 0\n", False, cwd, 8, ("two",)))
    store.add(Record("two", "0 8 linear one 0\n", False, cwd, 8, ("one",)))
    result = run("table", "check", "-", input="0 8 linear one 0\n")
    assert result.exit_code == 1
    one_error_line(result, "cycle", "one -> two -> one")
    assert run("status", "one").exit_code == 1


def test_status_of_all_reports_a_broken_device_and_goes_on(tmp_path, stack):
    table, a, _ = stack
    assert run("open", "--table", table, "good").exit_code == 0
    gone = tmp_path / "gone.img"
    gone.write_bytes(bytes(8 * SECTOR_SIZE))
    assert run("open", "--table", "-", "broken", input=f"0 8 linear {gone} 0\n").exit_code == 0
    gone.unlink()
    result = run("status")
    assert result.exit_code == 1
    assert "good: 0 96 linear" in result.stdout
    one_error_line(result, str(gone))


# -- the demo -------------------------------------------------------------------------------

def test_demo_runs_and_runs_again(tmp_path, capsys):
    from dmkit import demo

    data = tmp_path / "demo-data"
    assert demo.main([str(data)]) == 0
    first = capsys.readouterr().out
    assert "created, 8192 sectors" in first
    assert first.count("OK: ") == 3
    assert demo.main([str(data)]) == 0  # idempotent: images reused, same steps
    second = capsys.readouterr().out
    assert "(reused)" in second and second.count("OK: ") == 3
    assert StateStore(data / "state").names() == []  # the demo closes what it opens
