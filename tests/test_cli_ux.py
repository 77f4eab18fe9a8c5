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
SLOW = ("plan", "sweep", "capacity", "report")


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
    assert datasheet.measured_on == "" and datasheet.kind() == "datasheet only (not calibrated)"
