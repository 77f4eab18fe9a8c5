"""validation/train.py survives a crash and a kill: rows on disk, summary "failed" with the error.

The training itself needs a GPU and DeepSpeed; these tests replace ``train.run`` with a stand-in
that records rows the way the real loop does, so the bookkeeping is tested without torch.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

STUB = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {validation!r})
    import train

    def fake_run(args, rec):
        for step in range(3):
            rec.row({{"step": step, "phase": "warmup" if step < 1 else "timed", "step_time_s": 0.1 + step,
                     "tokens": 100, "tokens_per_s": 1000.0, "loss": 10.0 - step, "fwd_s": 0.01, "bwd_s": 0.02,
                     "opt_s": 0.03, "peak_allocated_bytes": 2**30, "peak_reserved_bytes": 2**31,
                     "step_peak_allocated_bytes": 2**30, "allocated_bytes": 2**29, "wall_utc": "now"}})
        print("ROWS", flush=True)
        if {mode!r} == "crash":
            raise RuntimeError("CUDA out of memory (simulated)")
        time.sleep(60)

    train.run = fake_run
    sys.exit(train.main(["--model", "x", "--ds-config", "y", "--output", {out!r}]))
""")


def start(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "run"
    code = STUB.format(validation=str(REPO / "validation"), mode=mode, out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    return proc, out


def check_failed(out: Path, error_part: str) -> dict:
    rows = list(csv.DictReader(open(out / "training_metrics.csv")))
    assert [r["step"] for r in rows] == ["0", "1", "2"]
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "failed" and error_part in s["error"]
    assert s["steps_recorded"] == 3
    assert s["step_time_s_median"] == 1.6  # median of the timed steps 1.1 and 2.1
    return s


def test_sigterm_keeps_rows_and_writes_failed_summary(tmp_path):
    proc, out = start(tmp_path, "hang")
    assert proc.stdout.readline().strip() == "ROWS"
    # rows are on disk before the process ends (flushed as measured)
    assert len((out / "training_metrics.csv").read_text().splitlines()) == 4
    assert json.loads((out / "summary.json").read_text())["status"] == "running"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 1
    check_failed(out, "SIGTERM")
    assert (out / "raw_metrics.json").exists()


def test_crash_writes_failed_summary_with_the_error(tmp_path):
    proc, out = start(tmp_path, "crash")
    assert proc.wait(timeout=30) == 1
    s = check_failed(out, "CUDA out of memory")
    assert "RuntimeError" in s["traceback"]
    assert not [p for p in os.listdir(out) if p.endswith(".tmp") or ".tmp" in p]


def test_zsim_validate_skips_the_killed_run(tmp_path, capsys):
    from zsim.cli import main
    proc, out = start(tmp_path, "crash")
    proc.wait(timeout=30)
    assert main(["validate", str(tmp_path)]) == 1  # nothing comparable: a failure, not a crash
    assert "SKIPPED status=failed" in capsys.readouterr().out


def test_auto_batch_values_are_resolved():
    sys.path.insert(0, str(REPO / "validation"))
    import argparse
    import train
    cfg = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
           "train_batch_size": "auto", "comms_logger": {"enabled": True}}
    args = argparse.Namespace(micro_batch=4, grad_accum=None)
    out = train.resolve_ds_config(cfg, args, world_size=8)
    assert out["train_micro_batch_size_per_gpu"] == 4 and out["gradient_accumulation_steps"] == 1
    assert out["train_batch_size"] == 32 and "comms_logger" not in out
