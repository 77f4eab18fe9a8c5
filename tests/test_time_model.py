"""The time model against the traced H200 runs of validation/results/h200/2026-12-01.

Each test names the run (and trace) whose measurement it checks.
"""

from __future__ import annotations

import gzip
import json
import statistics
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from zsim.calibrate import cpu_pass_curves, find_microbench, find_runs, load_run, predict_run, with_values
from zsim.errors import ZsimInputError
from zsim.hardware import PROFILE_DIR, load_profile, profile_from_dict
from zsim.hostcost import CpuPassSpeed, HostSpeed, at_host_speed, cpu_pass_rate, loop_op_s
from zsim.model import load_model
from zsim.predict import predict
from zsim.schedule.hostwork import STAGE0_STEP, STAGE12_STEP

RESULTS = Path(__file__).resolve().parent.parent / "validation" / "results" / "h200" / "2026-12-01"
FIT_MODELS = {"llama-0.13b", "llama-3b"}


def _step_ops(run_dir: Path) -> int:
    """cudaLaunchKernel + cudaMemcpyAsync inside the last micro-step's engine.step()."""
    events = json.load(gzip.open(run_dir / "trace.json.gz"))["traceEvents"]
    ranges = [e for e in events if e.get("cat") == "user_annotation"
              and e.get("name", "").startswith("zsim.engine_step.")]
    last = max(ranges, key=lambda e: int(e["name"].rsplit(".", 1)[1]))
    lo, hi = last["ts"], last["ts"] + last["dur"]
    return sum(1 for e in events if e.get("cat") == "cuda_runtime" and lo <= e["ts"] <= hi
               and ("LaunchKernel" in e["name"] or "MemcpyAsync" in e["name"]))


@pytest.mark.parametrize("run_id, counts", [
    ("llama-0.13b-z0-mb4-ga1-s1024-r1", STAGE0_STEP),
    ("tinyllama-1.1b-z0-mb4-ga1-s2048-r1", STAGE0_STEP),
    ("llama-3b-z0-mb2-ga1-s2048-ac-r1", STAGE0_STEP),
    ("llama-0.13b-z1-mb4-ga1-s1024-r1", STAGE12_STEP),
    ("llama-1.2b-hd128-z2-mb2-ga1-s4096-r1", STAGE12_STEP),
    ("llama-0.7b-v128k-z1-mb4-ga1-s2048-r1", STAGE12_STEP),
])
def test_step_loop_counts_match_the_traces(run_id, counts):
    """The per-tensor op counts of the step (zsim/schedule/hostwork.py) against each trace."""
    run_dir = RESULTS / run_id
    tensors = len(load_model(str(run_dir / "config.json")).parameters())
    measured = _step_ops(run_dir)
    assert counts.ops(tensors) == pytest.approx(measured, rel=0.10), (run_id, tensors, measured)


def _direct_ds_ops(run_dir: Path) -> int:
    """Aten ops called directly inside a ``ds.*``/``zsim.*`` range of the last engine.step()."""
    events = [e for e in json.load(gzip.open(run_dir / "trace.json.gz"))["traceEvents"]
              if e.get("ph") == "X" and e.get("cat") in ("cpu_op", "user_annotation")]
    steps = [e for e in events if e["name"].startswith("zsim.engine_step.")]
    last = max(steps, key=lambda e: int(e["name"].rsplit(".", 1)[1]))
    lo, hi = last["ts"], last["ts"] + last["dur"]
    inside = sorted((e for e in events if e["tid"] == last["tid"] and lo <= e["ts"]
                     and e["ts"] + e["dur"] <= hi + 1), key=lambda e: (e["ts"], -e["dur"]))
    stack, direct = [], 0
    for e in inside:
        while stack and stack[-1]["ts"] + stack[-1]["dur"] < e["ts"] + e["dur"] - 0.01:
            stack.pop()
        if e["cat"] == "cpu_op" and stack and stack[-1]["cat"] == "user_annotation":
            direct += 1
        stack.append(e)
    return direct


@pytest.mark.parametrize("run_id", ["llama-0.13b-z3-mb4-ga1-s1024-r1", "llama-3b-z3-mb2-ga1-s2048-ac-r1"])
def test_stage3_step_op_count_matches_the_traces(run_id):
    """Stage 3's step loop counts the aten ops DeepSpeed calls (most launch no kernel)."""
    from zsim.schedule.hostwork import STAGE3_STEP
    run_dir = RESULTS / run_id
    tensors = len(load_model(str(run_dir / "config.json")).parameters())
    assert STAGE3_STEP.ops(tensors) == pytest.approx(_direct_ds_ops(run_dir), rel=0.10)


def test_offload_param_alone_prices_the_pageable_swap_out():
    """llama-0.13b-z3-offparam-mb4-ga1-s1024: step phase 436 and 499 ms in two processes
    (one 536 MB Device -> Pageable copy of 420.9 ms in the trace), plain ZeRO-3 10.7-12.1 ms."""
    hw = load_profile("h200-sxm")
    alone = predict_run(load_run(RESULTS / "llama-0.13b-z3-offparam-mb4-ga1-s1024-r1"), hw)
    plain = predict_run(load_run(RESULTS / "llama-0.13b-z3-mb4-ga1-s1024-r1"), hw)
    extra = alone.step_time_s - plain.step_time_s
    assert 0.80 * 0.436 <= extra <= 1.2 * 0.499
    assert "exposed_offload_d2h_pageable_s" in alone.time_breakdown


def test_one_omp_thread_slows_the_cpu_passes_as_measured():
    """llama-0.13b-z2-offopt-mb4-ga1-s1024-omp1 (OMP_NUM_THREADS=1): step phase 305 and 313 ms;
    the prediction with one thread must be several times the one with 16."""
    run = load_run(RESULTS / "llama-0.13b-z2-offopt-mb4-ga1-s1024-omp1-r1")
    assert run.cpu_threads == 1
    hw = load_profile("h200-sxm")
    one = predict_run(run, hw)
    many = predict_run(replace(run, cpu_threads=16.0), hw)
    assert one.step_time_s > 2.5 * many.step_time_s
    assert one.step_time_s == pytest.approx(run.step_time_s, rel=0.20)


def test_cpu_pass_rate_passes_through_both_measured_points():
    """A profile with only the 1-thread and node rates (the datasheet profile's)."""
    hw = load_profile("h200-sxm-datasheet")
    h = hw.host
    assert cpu_pass_rate(hw, "adam", 1) == pytest.approx(h.cpu_adam_1thread_params_per_s)
    assert cpu_pass_rate(hw, "adam", h.cpu_threads) == pytest.approx(h.cpu_adam_params_per_s)
    rates = [cpu_pass_rate(hw, "cast", t) for t in (1, 2, 4, 8, 16, 64)]
    assert rates == sorted(rates) and rates[-1] == rates[-2]


M13 = Path(__file__).resolve().parent.parent / "validation" / "results" / "h200" / "2026-12-03-m13"


def test_cpu_pass_curves_are_the_microbenchmark_pooled_over_both_machines():
    """The shipped profile's per-thread CPU rates are what calibrate reads from the two
    machines' CPU-pass microbenchmarks of session m13 (edit either and this fails)."""
    bench, _, files = find_microbench([M13 / "_microbench"])
    assert len(files) == 2 and len(bench["cpu_passes"]) == 2 * 3 * 3 + 2 * 3 * 2   # pooled, not the first
    assert cpu_pass_curves(bench["cpu_passes"]) == {
        name: [list(p) for p in pts] for name, pts in load_profile("h200-sxm").host.cpu_pass_curves}


def test_cpu_pass_rate_follows_the_measured_thread_counts():
    hw = load_profile("h200-sxm")
    for name, pts in hw.host.cpu_pass_curves:
        for t, rate in pts:
            assert cpu_pass_rate(hw, name, t) == pytest.approx(rate)
        rates = [cpu_pass_rate(hw, name, t) for t in (0.5, 1, 2, 3, 4, 8, 16, 64)]
        assert rates == sorted(rates) and rates[0] == rates[1] and rates[-1] == rates[-2]
        # between two points the power law through them: the geometric mean at t = 2 (1 and 4)
        assert cpu_pass_rate(hw, name, 2) == pytest.approx((pts[0][1] * pts[1][1]) ** 0.5)


@pytest.mark.parametrize("curves, needle", [
    ({"adamw": [[1, 1e9]]}, "unknown CPU pass"),
    ({"adam": [[4, 2e9], [1, 1e9]]}, "sorted by threads"),
    ({"adam": [[0.5, 1e9]]}, "at least 1"),
    ({"adam": []}, "non-empty"),
    ([1, 2], "mapping"),
])
def test_cpu_pass_curves_bad_input_is_one_clear_error(curves, needle):
    data = load_profile("h200-sxm").to_dict()
    data["host"]["cpu_pass_curves"] = curves
    with pytest.raises(ZsimInputError, match=needle):
        profile_from_dict(data)


def test_cpu_pass_curves_round_trip_through_to_dict():
    hw = load_profile("h200-sxm")
    assert profile_from_dict(hw.to_dict()).host.cpu_pass_curves == hw.host.cpu_pass_curves


@pytest.mark.parametrize("run_id", ["tinyllama-1.1b-z2-offopt-mb4-ga1-s1024-omp4-m13-r1",
                                    "tinyllama-1.1b-z2-offopt-mb4-ga1-s1024-omp1-m13-r1"])
def test_offload_step_on_the_launchers_threads(run_id):
    """CPU offload on OMP_NUM_THREADS=4 and 1 (session m13; evaluation runs: no step time
    of them was fitted): the step is the three CPU passes at the measured per-thread rates.
    With the earlier 1-thread rates the 1-thread run came out 17 % short."""
    run = load_run(M13 / run_id)
    assert run.cpu_threads in (1, 4)
    assert predict_run(run, load_profile("h200-sxm")).step_time_s == pytest.approx(run.step_time_s, rel=0.10)


def test_cpu_pass_speed_record_is_read_and_bad_records_are_none():
    run = load_run(M13.parent / "2026-12-03-m14" / "llama-0.13b-z2-offopt-mb4-ga1-s1024-omp1-m14-r1")
    rec = run.cpu_pass_speed
    assert rec is not None and rec.threads == 1 and {n for n, _ in rec.rates} == {"adam", "unscale", "cast"}
    assert CpuPassSpeed.from_summary({"cpu_pass_speed": {"threads": 1, "adam_params_per_s": -1}}) is None
    assert CpuPassSpeed.from_summary({}) is None


@pytest.mark.parametrize("exponent", [1.0, 0.5, 0.0])
def test_host_speed_scales_module_dispatch_and_hooks(exponent):
    """A host twice as slow as the reference costs 2 ** speed_exponent times as much, on
    every code path: module dispatch, ZeRO-3 hooks, DeepSpeed's loops."""
    hw = with_values(load_profile("h200-sxm"), {"host.speed_exponent": exponent})
    slow = HostSpeed(2 * hw.host.small_linear_call_s, 2 * hw.host.empty_kernel_launch_s)
    hw2 = at_host_speed(hw, slow)
    factor = 2 ** exponent
    assert hw2.compute.dispatch_s == pytest.approx(factor * hw.compute.dispatch_s)
    assert hw2.overheads.zero3_module_hook_s == pytest.approx(factor * hw.overheads.zero3_module_hook_s)
    assert loop_op_s(hw2) == pytest.approx(factor * loop_op_s(hw))
    assert at_host_speed(hw, None) is hw   # no record: the reference speed


def test_shipped_profile_follows_the_probe_less_than_in_proportion():
    """The profile's exponent is the fit's, strictly between 0 and 1 (validation/README.md,
    "The host probe's noise"): costs follow a run's probe, but less than in proportion."""
    hw = load_profile("h200-sxm")
    assert 0.0 < hw.host.speed_exponent < 1.0
    cal = yaml.safe_load((PROFILE_DIR / "h200-sxm.yaml").read_text())["calibration"]
    assert cal["time_fit"]["params"]["host.speed_exponent"] == hw.host.speed_exponent
    assert "host.speed_exponent" not in cal["time_fit"]["at_lower_bound"]


def test_zero3_host_speed_measured_after_deepspeed_init_is_ignored():
    """Call 1 measured after deepspeed.initialize: ZeRO-3 hooks inflated the Linear call."""
    early = json.loads((RESULTS / "llama-0.13b-z3-mb4-ga1-s1024-r2" / "summary.json").read_text())
    assert HostSpeed.from_summary(early) is None
    plain = json.loads((RESULTS / "llama-0.13b-z0-mb4-ga1-s1024-r2" / "summary.json").read_text())
    assert HostSpeed.from_summary(plain) is not None


def test_attention_curves_follow_head_dim():
    """Microbenchmark 2026-11-28: head_dim 100 runs at about a third of head_dim 128."""
    c = load_profile("h200-sxm").compute
    for seq in (1024, 2048, 4096):
        assert c.attention_eff(100, seq, False) < 0.5 * c.attention_eff(128, seq, False)
    assert c.attention_eff(96, 2048, True) == c.attention_eff(100, 2048, True)   # nearest head_dim
    assert c.attention_eff(64, 1 << 20, False) == c.attention_eff(64, 4096, False)  # flat beyond


def test_bad_attention_curves_are_refused():
    data = load_profile("h200-sxm").to_dict()
    data["compute"]["attention_curves"] = {"x": [[10, 0.2, 0.1]]}
    with pytest.raises(ZsimInputError, match="head_dim"):
        profile_from_dict(data)
    data["compute"]["attention_curves"] = {64: [[11, 0.2, 0.1], [10, 0.3, 0.2]]}
    with pytest.raises(ZsimInputError, match="sorted"):
        profile_from_dict(data)


def test_evaluation_half_error_stays_within_target():
    """Step-time error on runs of model sizes AND a machine session the fit never saw
    (2026-12-01 machine m2, validation/README.md): MAPE 7.1 %, max 12.5 %. It was 6.2 % before
    the GPU kernels were priced at their busy time (2026-12-02-m10): the 1.2B runs moved from 0
    to +3 % and the guide's offload runs from -10 to -11 %, while the 76-run evaluation half
    went from 7.7 to 7.4 %. Guarded at 7.5 % and 20 %."""
    manifest = json.loads((RESULTS / "_batch" / "manifest.json").read_text())["runs"]
    hw = load_profile("h200-sxm")
    errs = []
    for run in find_runs([RESULTS]):
        session = manifest.get(run.run_id, {}).get("machine_session")
        if run.ok and session == "m2" and run.model_name not in FIT_MODELS:
            errs.append(abs(predict_run(run, hw).step_time_s / run.step_time_s - 1))
    assert len(errs) >= 10
    assert statistics.mean(errs) <= 0.075 and max(errs) <= 0.20, (statistics.mean(errs), max(errs))


def test_second_evaluation_set_stays_within_its_measured_error():
    """The 16 runs of validation/results/h200/2026-12-01-m3 (sessions m3, m4; 0.55B-7B, fp32,
    8k tokens, offload, stage-3 knobs), none fitted: step-time MAPE <= 12 %, fp32 runs within
    10 % (priced by the fp32 GEMM microbenchmark, not by the bf16 curve: +67 % before)."""
    hw = load_profile("h200-sxm")
    errs = {r.run_id: abs(predict_run(r, hw).step_time_s / r.step_time_s - 1)
            for r in find_runs([RESULTS.parent / "2026-12-01-m3"]) if r.ok}
    assert len(errs) >= 14
    assert statistics.mean(errs.values()) <= 0.12, statistics.mean(errs.values())
    fp32 = [e for rid, e in errs.items() if "fp32" in rid]
    assert fp32 and max(fp32) <= 0.10, fp32


def test_evaluation_runs_were_not_fitted():
    """The shipped profile's fit runs hold no evaluation-half run."""
    import yaml
    from zsim.hardware import PROFILE_DIR
    fit = set(yaml.safe_load((PROFILE_DIR / "h200-sxm.yaml").read_text())["calibration"]["fit_runs"])
    manifest = json.loads((RESULTS / "_batch" / "manifest.json").read_text())["runs"]
    m2 = {rid for rid, v in manifest.items() if v["machine_session"] == "m2"}
    assert not fit & m2
    assert all(not rid.startswith(("tinyllama", "llama-0.55b", "llama-1.2b", "llama-0.7b")) for rid in fit)


def test_predict_accepts_cpu_threads_and_host_speed():
    a = predict(model="tinyllama-1.1b", topo="hgx-h200", gpus=1, stage=2, offload_optimizer="cpu",
                micro_batch=1, seq=512, cpu_threads=1)
    b = predict(model="tinyllama-1.1b", topo="hgx-h200", gpus=1, stage=2, offload_optimizer="cpu",
                micro_batch=1, seq=512, cpu_threads=16)
    assert a.step_time_s > b.step_time_s


def test_predicted_order_of_measured_configs_matches_where_they_differ():
    """For every pair of different configurations of one model and batch shape, measured on
    one machine (same machine session and GPU count), whose step times differ by more than
    20 % (beyond the between-process noise of up to 15 %), zsim puts them in the same order:
    what `zsim plan` ranks on. All five results folders: 74 such pairs, none misordered (the
    2-GPU runs of 2026-11-28 ran on another machine, hence their own group)."""
    import re
    from zsim.validate import run_session
    hw = load_profile("h200-sxm")
    folders = [RESULTS.parent / f for f in ("2026-11-28", "2026-12-01", "2026-12-01-m3", "2026-12-01-m5",
                                             "2026-12-01-m8")]
    by_shape: dict[tuple, list[tuple[float, float, str]]] = {}
    for run in find_runs(folders):
        if not run.ok:
            continue
        shape = (run.model_name, run.micro_batch, run.grad_accum, run.seq, run_session(run), run.world_size)
        by_shape.setdefault(shape, []).append((run.step_time_s, predict_run(run, hw).step_time_s,
                                               re.sub(r"-r\d+$", "", run.run_id)))
    pairs = 0
    for runs in by_shape.values():
        for i, (m1, p1, a) in enumerate(runs):
            for m2, p2, b in runs[i + 1:]:
                if a != b and max(m1, m2) > 1.2 * min(m1, m2):
                    pairs += 1
                    assert (m1 < m2) == (p1 < p2), (a, b, m1, m2, p1, p2)
    assert pairs >= 60


def test_zero3_host_waits_on_the_gather_three_back():
    """PC:400-411: past two outstanding fetch events the host synchronises on the oldest; the
    schedule has one zero-cost host op per such wait, depending on that gather."""
    import importlib
    from zsim.dsconfig import Overrides, build_run_config
    build_schedule = importlib.import_module("zsim.schedule.api").build_schedule
    spec = load_model("llama-2-7b")
    run = build_run_config({"bf16": {"enabled": True}, "zero_optimization": {"stage": 3}}, spec, 8,
                           Overrides(micro_batch=1, seq_len=1024))
    ops = build_schedule(spec, run, gpus_per_node=8).ops
    waits = [op for op in ops if op.name == "fetch_throttle"]
    assert waits and all(ops[d].collective == "all_gather_into_tensor" for op in waits for d in op.deps)
    gathers_waited = [d for op in waits for d in op.deps]
    assert gathers_waited == sorted(gathers_waited)   # oldest first


def test_third_evaluation_set_stays_within_its_measured_error():
    """The 17 runs of validation/results/h200/2026-12-01-m5 (session m5; llama-1.5b-gqa and
    llama-4b-gqa, sizes no fit saw, in stages 1/2/3 and offload; llama-2-7b): measured
    step-time MAPE 8.3 %, step phase 8.9 % (23.9 % before the step was modelled as the stretches
    between DeepSpeed's host syncs). Guarded at 10 % and 12 %."""
    from zsim.diagnose.predicted import predicted_phases
    hw = load_profile("h200-sxm")
    folder = RESULTS.parent / "2026-12-01-m5"
    sessions = json.loads((folder / "_batch" / "manifest.json").read_text())["runs"]
    step_errs, phase_errs = [], []
    for run in find_runs([folder]):
        if not run.ok or sessions[run.run_id]["machine_session"] != "m5":
            continue
        pred, phases = predicted_phases(run, hw, "hgx-h200")
        step_errs.append(abs(pred.step_time_s / run.step_time_s - 1))
        if run.phase_s and run.phase_s.get("step"):
            phase_errs.append(abs(phases["step"] / run.phase_s["step"] - 1))
    assert len(step_errs) == 17 and len(phase_errs) >= 15
    assert statistics.mean(step_errs) <= 0.10, statistics.mean(step_errs)
    assert statistics.mean(phase_errs) <= 0.12, statistics.mean(phase_errs)


M8 = RESULTS.parent / "2026-12-01-m8"


def test_in_run_probe_ratio_is_the_one_measured():
    """IN_RUN_PER_SNAPSHOT is the median in-run/snapshot ratio of the 33 processes of -m8."""
    from zsim.hostcost import IN_RUN_PER_SNAPSHOT
    summaries = [json.loads(p.read_text()) for p in sorted(M8.glob("*/summary.json"))]
    assert len(summaries) == 33
    for k, ratio in IN_RUN_PER_SNAPSHOT.items():
        measured = statistics.median(s["host_speed_in_run"][k] / s["host_speed"][k] for s in summaries)
        assert measured == pytest.approx(ratio, abs=0.001), (k, measured)


def test_in_run_host_speed_is_used_and_only_where_recorded():
    """Runs with the in-run probe are priced at its speed (on the snapshot's scale); older
    runs keep the profile's reference speed."""
    from zsim.hostcost import IN_RUN_PER_SNAPSHOT, in_run_host_speed
    new = json.loads((M8 / "llama-0.13b-z1-mb4-ga1-s1024-m8b-r2" / "summary.json").read_text())
    speed = in_run_host_speed(new)
    assert speed.small_linear_call_s == pytest.approx(
        new["host_speed_in_run"]["small_linear_call_s"] / IN_RUN_PER_SNAPSHOT["small_linear_call_s"])
    old = json.loads((RESULTS.parent / "2026-12-01-m5" / "llama-3b-z3-mb8-ga1-s512-m7" / "summary.json").read_text())
    assert in_run_host_speed(old) is None
    assert in_run_host_speed({"host_speed_in_run": {"small_linear_call_s": float("nan"),
                                                    "empty_kernel_launch_s": 1e-5}}) is None
    run = next(r for r in find_runs([M8]) if r.run_id == "llama-0.13b-z1-mb4-ga1-s1024-m8b-r2")
    hw = load_profile("h200-sxm")
    assert predict_run(run, hw).step_time_s < predict_run(replace(run, host_speed_in_run=None), hw).step_time_s


def test_fourth_evaluation_set_with_the_in_run_host_speed():
    """The 33 runs of -m8 (three machines, none fitted; validation/host_probe.py): step-time
    MAPE 8.1 %, max 43.0 % at each run's in-run speed against 13.2 % and 71.5 % at the
    profile's reference speed. (Before the protocol refit with ``host.speed_exponent``:
    9.9 % and 27.3 %; before stage 1/2's hook was priced at its measured host time, 7.1 % and
    31.4 %. The largest miss is llama-0.13b stage 1 on m8b, the fastest machine: its probe
    reads 0.54 of m8c-r2's and its step 0.58, while the fitted exponent, 0.44, lowers its
    costs only to 0.76, and the hook it now pays is priced at that speed too.)
    Guarded at 9 % and 45 %, and better than the reference speed on both."""
    hw = load_profile("h200-sxm")
    own, ref = [], []
    for run in find_runs([M8]):
        if run.ok:
            own.append(abs(predict_run(run, hw).step_time_s / run.step_time_s - 1))
            ref.append(abs(predict_run(replace(run, host_speed_in_run=None), hw).step_time_s / run.step_time_s - 1))
    assert len(own) == 33
    assert statistics.mean(own) <= 0.09 and max(own) <= 0.45, (statistics.mean(own), max(own))
    assert statistics.mean(own) < statistics.mean(ref) and max(own) < max(ref)
