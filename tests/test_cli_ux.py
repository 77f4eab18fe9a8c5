"""What a user meets first on the command line (issue 17): every command that writes or
reports takes -o/--output and --json; long-running ones report progress on stderr unless
-q; text fits in 100 columns."""

from __future__ import annotations

import argparse
import json

import pytest

from zsim.cli import build_parser, main

#: Commands that write files or print a report.
REPORTING = ("predict", "plan", "sweep", "capacity", "report", "validate", "diagnose", "collective")
#: Commands that take long enough (seconds) to report progress.
SLOW = ("plan", "sweep", "capacity", "report", "calibrate")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(p: argparse.ArgumentParser) -> set[str]:
    return {s for a in p._actions for s in a.option_strings}


@pytest.mark.parametrize("name", REPORTING)
def test_output_and_json_flags(name):
    opts = _options(_subparsers()[name])
    assert {"-o", "--output", "--json"} <= opts, sorted(opts)


@pytest.mark.parametrize("name", SLOW)
def test_quiet_and_progress_flags(name):
    opts = _options(_subparsers()[name])
    assert {"-q", "--quiet", "--progress"} <= opts, sorted(opts)


def test_capacity_progress_on_stderr_unless_quiet(capsys):
    argv = ["capacity", "--topo", "hgx-h200", "--gpus", "1", "--stage", "0"]
    assert main(argv + ["--progress"]) == 0
    captured = capsys.readouterr()
    assert "3/3" in captured.err and "capacity:" in captured.out
    assert main(argv + ["-q", "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and json.loads(captured.out)["rows"]


def test_plan_text_fits_100_columns(capsys):
    # ZeRO-0 of a 7B model on one 80 GB GPU: nothing fits, every rejection is printed.
    assert main(["plan", "--model", "llama-2-7b", "--topo", "dgx-a100", "--gpus", "1", "--stage", "0",
                 "--micro-batch", "1", "--global-batch", "8", "--no-output", "-q"]) == 2
    out = capsys.readouterr().out
    assert "do not fit (largest memory term and overflow):" in out
    too_wide = [line for line in out.splitlines() if len(line) > 100]
    assert too_wide == []


def test_provenance_says_when_the_calibration_was_measured():
    from zsim.provenance import provenance_from_dict

    p = provenance_from_dict({"name": "x", "calibrated": True,
                              "calibration": {"fit_runs": ["a", "b"], "base_profile": "x-datasheet",
                                              "microbench_meta": {"date_utc": "2026-11-28T10:24:19+00:00"}}})
    assert p.measured_on == "2026-11-28" and p.to_dict()["measured_on"] == "2026-11-28"
    assert p.kind() == "calibrated on 2 runs (from x-datasheet; microbenchmarks of 2026-11-28)"
    datasheet = provenance_from_dict({"name": "y", "calibration": {"microbench_meta": {"date_utc": "2026-01-01"}}})
    assert datasheet.measured_on == "" and datasheet.kind().startswith("not calibrated")


def test_sweep_prints_a_row_per_configuration(tmp_path, capsys):
    assert main(["sweep", "--model", "tinyllama-1.1b", "--stage", "0,3", "--micro-batch", "1,2",
                 "-o", str(tmp_path / "s"), "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["stage", "micro_batch"])
    rows = lines[header + 1:header + 5]
    assert [r.split()[:2] for r in rows] == [["0", "1"], ["0", "2"], ["3", "1"], ["3", "2"]]
    assert all(("ms" in r or " s " in r) and "GiB" in r for r in rows)
    assert max(len(line) for line in lines) <= 100 or lines[0].startswith("sweep:")


def test_schedule_table_gives_wire_bytes_per_row(capsys, tmp_path):
    import zsim

    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 0}, "train_micro_batch_size_per_gpu": 1}))
    assert main(["schedule", "--model", "tinyllama-1.1b", "--ds-config", str(ds), "--world-size", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert "on the wire/GPU" in lines[2]
    result = zsim.schedule("tinyllama-1.1b", str(ds), 4)
    # Stage 0 all-reduces: each row's wire bytes are 2(n-1)/n of its logged bytes.
    total = next(line for line in lines if line.startswith("total"))
    from zsim.output import format_bytes
    assert total.split()[-2:] == format_bytes(1.5 * result.logged_bytes).split()
