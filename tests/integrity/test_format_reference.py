"""`dmkit integrity format` writes exactly what `integritysetup format` wrote in a real
kernel: whole images, byte for byte, compared by hash.

tests/vectors/integrity/oracle-format/reference.json holds, for each case, the options, the
sha256 of every disk after the kernel's format (the disks started as the same garbage, so
whatever format does not touch shows), the salt the kernel drew and the kernel's dump.
Here the same garbage is formatted by dmkit with the same options and that salt.
"""

import hashlib
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import dmkit.cli.integrity as cli_integrity
from dmkit.cli import cli

HERE = Path(__file__).resolve().parent
REF_DIR = HERE.parent / "vectors" / "integrity" / "oracle-format"
REFERENCE = json.loads((REF_DIR / "reference.json").read_text())
CASES = {c["name"]: c for c in REFERENCE["cases"]}
sys.path.insert(0, str(REF_DIR))
from reference import garbage, keys  # noqa: E402


#: integritysetup 2.6.1 keeps only the last --integrity-legacy-* option it is given
#: (crypt_set_compatibility replaces the flags): with both, only legacy-hmac took effect.
#: dmkit honours both, so the comparison gives dmkit what the kernel really got.
def _effective(opts):
    if "--integrity-legacy-hmac" in opts and "--integrity-legacy-padding" in opts:
        opts = [o for o in opts if o != "--integrity-legacy-padding"]
    return opts


#: dmkit refuses a layout the kernel formats but then gets wrong (tags on data)
REFUSED_BY_DMKIT = {"legacy-pad-il8-many": "inside area 0's data"}


def _materialise(case, tmp_path):
    files = []
    for role, kib in zip(("dev", "data"), case["kib"]):
        p = tmp_path / f"{case['name']}.{role}.img"
        p.write_bytes(garbage(kib * 2))
        files.append(p)
    for name, key in keys().items():
        (tmp_path / name).write_bytes(key)
    opts = [str(files[1]) if o == "@data" else
            str(tmp_path / o[4:]) if o.startswith("@in/") else o for o in case["opts"]]
    return files, _effective(opts)


def _format(files, opts, salt, monkeypatch):
    monkeypatch.setattr(cli_integrity, "random_bytes", lambda n: salt)
    return CliRunner().invoke(cli, ["integrity", "format", "--batch-mode", *opts,
                                    str(files[0])], catch_exceptions=False)


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items()
                                        if c["format_ok"] and n not in REFUSED_BY_DMKIT))
def test_same_bytes_as_integritysetup_format(name, tmp_path, monkeypatch):
    case = CASES[name]
    files, opts = _materialise(case, tmp_path)
    salt = bytes.fromhex(case["salt_hex"])
    result = _format(files, opts, salt, monkeypatch)
    assert result.exit_code == 0, result.output
    got = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    assert got == case["sha256"]
    # and dmkit's dump of it is the kernel's dump
    dump = CliRunner().invoke(cli, ["integrity", "dump", str(files[0])])
    want = case["dump"].splitlines()
    assert dump.stdout.splitlines()[1:] == want[1:]


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if not c["format_ok"]))
def test_what_the_kernel_refuses_dmkit_refuses(name, tmp_path, monkeypatch):
    case = CASES[name]
    files, opts = _materialise(case, tmp_path)
    before = [f.read_bytes() for f in files]
    result = _format(files, opts, bytes(16), monkeypatch)
    assert result.exit_code == 2
    assert "device too small" in result.stderr
    assert [f.read_bytes() for f in files] == before


@pytest.mark.parametrize("name", sorted(REFUSED_BY_DMKIT))
def test_dmkit_refuses_layouts_the_kernel_gets_wrong(name, tmp_path, monkeypatch):
    case = CASES[name]
    assert case["format_ok"]      # the kernel formats it...
    files, opts = _materialise(case, tmp_path)
    before = [f.read_bytes() for f in files]
    result = _format(files, opts, bytes(16), monkeypatch)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and REFUSED_BY_DMKIT[name] in lines[0]
    assert [f.read_bytes() for f in files] == before
