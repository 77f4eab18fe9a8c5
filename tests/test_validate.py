"""zsim validate: comparisons, fit/eval split, skipped runs, comms-logger latencies, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from zsim.calibrate import Predicted
from zsim.cli import main
from zsim.hardware import load_profile
from zsim.validate import compare_collectives
from zsim.validate import PHASES, per_call_latencies, validate

from test_calibrate import write_run


def fake_predictor(run, hw):
    """Predict 10% slow and 20% large for model "m1", exact for the others."""
    f = 1.1 if run.model_name == "m1" else 1.0
    g = 1.2 if run.model_name == "m1" else 1.0
    return Predicted(step_time_s=run.step_time_s * f, peak_memory_bytes=run.peak_memory_bytes * g)


def profile_with_split(tmp_path: Path, fit_runs: list[str]) -> Path:
    data = load_profile("h200-sxm").to_dict()
    data["calibration"] = {"fit_runs": fit_runs}
    p = tmp_path / "cal.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_errors_split_and_skips(tmp_path):
    fit_session, new_session = tmp_path / "day1", tmp_path / "day2"
    write_run(new_session, "r1", "m1", step=0.5, mem=10 * 2**30)
    write_run(fit_session, "r2", "m2", step=0.2, mem=5 * 2**30)
    write_run(new_session, "r3", "m3", step=0.3, mem=6 * 2**30)
    write_run(fit_session, "r4", "m1", step=0.3, mem=6 * 2**30)   # new size, fitted session
    write_run(new_session, "r5", "m2", step=0.3, mem=6 * 2**30)   # fitted size, new session
    write_run(new_session, "killed", "m2", step=1.0, mem=1, status="failed")
    prof = profile_with_split(tmp_path, ["r2"])
    rep = validate([fit_session, new_session], hardware=str(prof), predictor=fake_predictor)
    by_id = {c.run.run_id: c for c in rep.runs}
    assert by_id["r1"].time_err == pytest.approx(0.1) and by_id["r1"].mem_err == pytest.approx(0.2)
    assert [by_id[r].split for r in ("r1", "r2", "r3", "r4", "r5")] == ["eval", "fit", "eval", "size", "session"]
    assert [r.run_id for r in rep.skipped] == ["killed"]
    # scored on eval runs only (new size and new session): r1 (10%, 20%) and r3 (0%, 0%)
    assert rep.mape("time") == pytest.approx(5.0) and rep.mape("memory") == pytest.approx(10.0)
    # without a split in the profile every run counts: r1 and r4 are 10 % off, three are exact
    rep_all = validate([fit_session, new_session], hardware="h200-sxm-datasheet", predictor=fake_predictor)
    assert not rep_all.split_known and rep_all.mape("time") == pytest.approx(20 / 5)


def test_runs_timed_on_too_few_steps_are_shown_but_not_scored(tmp_path):
    fit_session, new_session = tmp_path / "day1", tmp_path / "day2"
    write_run(fit_session, "f", "m2", step=0.2, mem=2**30, steps=(3, 20))
    write_run(new_session, "ok", "m3", step=0.3, mem=2**30, steps=(3, 20))
    write_run(new_session, "short", "m1", step=0.3, mem=2**30, steps=(2, 4))   # 10 % off, 4 timed steps
    rep = validate([fit_session, new_session], hardware=str(profile_with_split(tmp_path, ["f"])),
                   predictor=fake_predictor)
    assert {c.run.run_id: c.split for c in rep.runs} == {"f": "fit", "ok": "eval", "short": "protocol"}
    assert rep.mape("time") == pytest.approx(0.0)       # scored on "ok" alone
    from zsim.validate import format_report
    assert "timed on too few steps" in format_report(rep)


def test_machine_session_comes_from_the_batch_manifest(tmp_path):
    day = tmp_path / "day"
    write_run(day, "a", "m1", step=0.5, mem=2**30)
    write_run(day, "b", "m2", step=0.5, mem=2**30)
    (day / "_batch").mkdir()
    (day / "_batch" / "manifest.json").write_text(json.dumps(
        {"runs": {"a": {"machine_session": "m1"}, "b": {"machine_session": "m2"}}}))
    prof = profile_with_split(tmp_path, ["a"])
    rep = validate([day], hardware=str(prof), predictor=fake_predictor)
    assert {c.run.run_id: c.split for c in rep.runs} == {"a": "fit", "b": "eval"}


def test_cumulative_logger_latencies_become_per_call():
    entries = {"100": {"latency_ms": [1.0, 4.0]}, "200": {"latency_ms": [2.5]}}
    # chronological: 1.0 (100 B), 2.5 (200 B), 4.0 (100 B) -> 1.0, 1.5, 1.5 ms
    out = per_call_latencies(entries)
    assert out[100] == pytest.approx([1e-3, 1.5e-3]) and out[200] == pytest.approx([1.5e-3])


def test_collective_comparison_scales_all_gather_to_the_full_buffer(tmp_path):
    d = write_run(tmp_path, "g2", "m2", step=0.5, mem=2**30, world=2)
    s = json.loads((d / "summary.json").read_text())
    s["comms"] = {"all_gather_into_tensor": {str(32 << 20): {"latency_ms": [0.5, 1.0]}},
                  "all_reduce": {"8": {"latency_ms": [0.1]}}}
    (d / "summary.json").write_text(json.dumps(s))
    from zsim.calibrate import load_run as load
    seen = []

    def timer(op, nbytes, world, hw):
        seen.append((op, nbytes, world))
        return 1e-3
    rows = compare_collectives(load(d), load_profile("h200-sxm"), timer)
    assert seen == [("all_gather", 64 << 20, 2)]  # the 8-byte all_reduce is below 1 MiB
    assert rows[0].measured_s == pytest.approx(0.5e-3) and rows[0].err == pytest.approx(1.0)


def real_run(root: Path, run_id: str, scale: float) -> None:
    """A run folder whose measurements are ``scale`` × zsim's own prediction."""
    from zsim.predict import predict
    d = root / run_id
    d.mkdir(parents=True)
    cfg = {"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
           "intermediate_size": 512, "vocab_size": 1000, "tie_word_embeddings": False,
           "max_position_embeddings": 1024}
    ds = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "bf16": {"enabled": True},
          "zero_optimization": {"stage": 2}}
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "ds_config.json").write_text(json.dumps(ds))
    p = predict(model=str(d / "config.json"), topo="hgx-h200", gpus=1, ds_config=str(d / "ds_config.json"),
                seq=512, micro_batch=2, grad_accum=1, activation_checkpointing=False)
    (d / "summary.json").write_text(json.dumps({
        "status": "ok", "run_id": run_id, "model_name": "tiny", "world_size": 1, "seq": 512, "micro_batch": 2,
        "grad_accum": 1, "activation_checkpointing": False, "step_time_s_median": p.step_time_s * scale,
        "peak_memory_allocated_bytes": int(p.peak_memory_bytes * scale)}))


def test_cli_exit_codes_follow_the_tolerance(tmp_path, capsys):
    real_run(tmp_path / "exact", "exact", 1.0)
    assert main(["validate", str(tmp_path / "exact"), "--tolerance", "1"]) == 0
    real_run(tmp_path / "off", "off", 1.5)  # prediction is 1/1.5 - 1 = -33% off
    assert main(["validate", str(tmp_path / "off"), "--tolerance", "10"]) == 1
    assert "MAPE above tolerance" in capsys.readouterr().err
    assert main(["validate", str(tmp_path / "off"), "--tolerance", "40", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["step_time_mape_pct"] == pytest.approx(100 / 3, rel=1e-3)


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    (tmp_path / "empty").mkdir()
    assert main(["validate", str(tmp_path / "empty")]) == 2
    assert main(["validate", str(tmp_path / "empty"), "--tolerance", "-3"]) == 2


def test_only_failed_runs_is_a_failure_not_a_crash(tmp_path, capsys):
    write_run(tmp_path, "killed", "m2", step=1.0, mem=1, status="failed")
    assert main(["validate", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "SKIPPED status=failed" in captured.out and "Traceback" not in captured.err


def test_phases_are_scored_when_asked():
    """`zsim validate --phases`: each run's forward/backward/step error and their MAPE per
    split; without it, no phase figures (and no timelines kept)."""
    folder = Path(__file__).resolve().parent.parent / "validation" / "results" / "h200" / "2026-12-01-m3"
    with_phases = validate([folder], phases=True)
    data = with_phases.to_dict()
    traced = [r for r in data["runs"] if "forward_err_pct" in r]
    assert traced and set(data["phase_mape_pct"]) == set(PHASES)
    c = next(c for c in with_phases.runs if c.phase_err("step") is not None)
    assert c.phase_err("step") == c.predicted.phase_s["step"] / c.run.phase_s["step"] - 1.0
    plain = validate([folder]).to_dict()
    assert "phase_mape_pct" not in plain and not any("forward_err_pct" in r for r in plain["runs"])
