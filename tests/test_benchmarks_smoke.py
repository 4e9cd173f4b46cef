"""Smoke test of the benchmark runner: it runs in-process on a tiny size and prints a
report of the documented shape.  No timing is asserted."""

import json
import numbers
import shutil
from pathlib import Path

import pytest

from dmkit.targets.integrity import tags as tags_mod

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench_main(monkeypatch):
    # benchmarks/ is a top-level package of the repository, not part of the installed dmkit.
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    from benchmarks.runner import main

    return main


def _positive(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and x > 0


def test_runner_prints_report(bench_main, tmp_path, capsys):
    rc = bench_main(["--size-mib", "4", "--request-kib", "1024", "--repeat", "1",
                     "--dir", str(tmp_path)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    report = json.loads(captured.out)

    assert isinstance(report["machine"]["python"], str)
    assert report["machine"]["cpu_count"] >= 1
    assert report["config"]["size_mib"] == 4 and report["config"]["repeat"] == 1
    assert report["notes"]

    by_name = {c["case"]: c for c in report["cases"]}
    assert {"linear-read", "linear-write", "striped-read", "striped-write"} <= set(by_name)
    for name, case in by_name.items():
        if case["status"] == "skipped":  # striped, until the target lands
            assert name.startswith("striped-") and case["reason"]
            continue
        assert case["status"] == "ok", case
        assert case["op"] in ("read", "write")
        assert case["request_bytes"] == 1 << 20
        assert case["total_bytes"] == 4 << 20
        assert case["repeat"] == 1
        for stats in (case["mib_per_s"], case["baseline"]["mib_per_s"], case["ratio"]):
            assert _positive(stats["best"]) and _positive(stats["median"])
        assert len(case["seconds"]) == len(case["baseline_seconds"]) == 1
    assert by_name["linear-read"]["status"] == "ok"
    assert by_name["linear-write"]["status"] == "ok"
    assert list(tmp_path.iterdir()) == []  # scratch images removed


def test_case_filter_and_bad_options(bench_main, tmp_path, capsys):
    assert bench_main(["--size-mib", "2", "--repeat", "1", "--cases", "linear-r*",
                       "--dir", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [c["case"] for c in report["cases"]] == ["linear-read"]
    with pytest.raises(SystemExit) as e:
        bench_main(["--cases", "no-such-case", "--dir", str(tmp_path)])
    assert e.value.code == 2
    assert "no benchmark case matches 'no-such-case'" in capsys.readouterr().err


def test_integrity_cases_report_their_targets(bench_main, tmp_path, capsys):
    # The comparisons the targets need are timed by the cases after the harness's
    # passes and land in the same report entry; every target says whether it was met.
    assert bench_main(["--size-mib", "4", "--repeat", "1", "--cases", "integrity-*",
                       "--dir", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    by_name = {c["case"]: c for c in json.loads(captured.out)["cases"]}
    assert len(by_name) == 12
    for name, case in by_name.items():
        assert case["status"] == "ok", case
        assert case["integrity"]["block_size"] == 4096
        for t in case["targets"]:
            assert isinstance(t["meets_target"], bool)
            assert _positive(t["ratio"]["best"]) and _positive(t["ratio"]["median"])
            assert f"{name}: target " in captured.err
    for mode in ("journal", "bitmap", "direct"):
        read = by_name[f"integrity-{mode}-hmac-sha256-read"]
        assert _positive(read["ratio_to_tags_alone"]["best"])
        assert _positive(read["tags_alone"]["mib_per_s"]["best"])
        # judged against the engine the device uses; the hashlib loop only for information
        if tags_mod._tagsevp is not None:
            assert read["integrity"]["tag_engine"] == "C accelerator (libcrypto)"
            assert "C accelerator" in read["tags_alone"]["description"]
            for label, key in (("hashlib_loop", "ratio_to_hashlib_loop"),
                               ("serial_floor", "ratio_to_serial_floor"),
                               ("serial_floor_vs_tags_alone",
                                "serial_floor_ratio_to_tags_alone")):
                assert _positive(read[key]["best"]) and _positive(read[key]["median"])
                assert read[label]["note"] == "for information, not judged"
                assert _positive(read[label]["baseline_mib_per_s"]["best"])
            assert "serial floor / tags alone (read, then hash)" in captured.err
        else:
            assert read["integrity"]["tag_engine"] == "hashlib loop"
            assert "ratio_to_hashlib_loop" not in read and "serial_floor" not in read
        assert [t["target"] for t in read["targets"]] == ["read / tags alone >= 0.8"]
    for alg in ("crc32c", "hmac-sha256"):
        assert _positive(by_name[f"integrity-journal-{alg}-write"]["ratio_to_direct_write"]["best"])
    assert len(by_name["integrity-direct-crc32c-read"]["targets"]) == 1
    assert by_name["integrity-direct-crc32c-write"]["targets"] == []
    assert list(tmp_path.iterdir()) == []


def test_luks_cases_report_their_targets(bench_main, tmp_path, capsys):
    # The peers (qemu-img convert of the LUKS1 equivalent, dmkit's export in-process and
    # in a new process, dissect.fve where it can) are timed by the cases after the
    # harness's passes; a peer that is missing or cannot read the volume is reported with
    # its reason, and every target measured says whether it was met.
    assert bench_main(["--size-mib", "2", "--repeat", "1", "--cases", "luks2-*",
                       "--dir", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    by_name = {c["case"]: c for c in json.loads(captured.out)["cases"]}
    xts = {"luks2-xts-512-read", "luks2-xts-4096-read"}
    assert set(by_name) == xts | {"luks2-gcm-aead-read", "luks2-xts-hmac-sha256-read"}
    have_qemu = shutil.which("qemu-img") is not None
    for name, case in by_name.items():
        assert case["status"] == "ok", case
        assert case["total_bytes"] == 2 << 20
        assert _positive(case["mib_per_s"]["best"]) and _positive(case["ratio"]["best"])
        assert case["luks"]["volume_bytes"] >= 2 << 20
        for t in case["targets"]:
            assert isinstance(t["meets_target"], bool)
            assert _positive(t["ratio"]["best"]) and _positive(t["ratio"]["median"])
        assert f"{name}: target " in captured.err
        for t in case["targets_not_measured"]:
            assert t["reason"]
        measured = [t["target"] for t in case["targets"]]
        qemu = case["qemu_img"]
        if have_qemu:
            assert qemu["status"] == "ok"
            assert _positive(qemu["mib_per_s"]["best"])
            for key in ("dmkit_export", "dmkit_export_cli"):
                assert _positive(case["ratio_to_qemu_img"][key]["best"])
            assert _positive(qemu["dmkit_cli_start_seconds"]["best"])
            qemu_targets = [t for t in measured if "qemu-img convert" in t]
            assert len(qemu_targets) == (2 if name in xts else 0)
        else:
            assert qemu["status"] == "skipped" and qemu["reason"]
        dissect = case["dissect_fve"]
        if dissect["status"] == "ok":
            assert _positive(case["ratio_to_dissect_fve"]["best"])
            assert any("dissect.fve" in t for t in measured)
        else:
            assert dissect["status"] in ("skipped", "cannot_open", "cannot_read", "wrong_data")
            assert dissect["reason"]
            assert any("dissect.fve" in t["target"] for t in case["targets_not_measured"])
    assert list(tmp_path.iterdir()) == []
