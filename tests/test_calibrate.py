"""zsim calibrate: microbenchmark fits, residual fits (fake predictor), profile YAML, CLI errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from zsim.calibrate import (Predicted, calibrate, find_runs, fit_allocator_overhead, fit_gemm_curve,
                            fit_time_overheads, gauss_newton, host_bandwidths, load_run,
                            memory_bound_efficiency, optimizer_bytes_per_param, profile_yaml,
                            select_fit_runs, strided_memory_efficiency, with_values)
from zsim.cli import main
from zsim.errors import ZsimInputError
from zsim.hardware import load_profile

PEAK = 989e12


def write_run(root: Path, run_id: str, model: str, *, step: float, mem: int, kernels: int = 100,
              hooks: int = 0, status: str = "ok", world: int = 1, steps: tuple[int, int] | None = None) -> Path:
    """A run folder as validation/train.py writes it; ``kernels``/``hooks`` feed the fake
    predictor; ``steps`` = (warm-up, timed) steps recorded (None: not recorded)."""
    d = root / run_id
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"hidden_size": 64}))
    (d / "ds_config.json").write_text(json.dumps({"zero_optimization": {"stage": 3 if hooks else 2}}))
    (d / "summary.json").write_text(json.dumps({
        "status": status, "error": None if status == "ok" else "Terminated: received signal SIGTERM",
        "run_id": run_id, "model_name": model, "params": 1000, "world_size": world, "seq": 512,
        "micro_batch": 1, "grad_accum": 1, "activation_checkpointing": False,
        "step_time_s_median": step if status == "ok" else None, "peak_memory_allocated_bytes": mem,
        "versions": {"torch": "2.11.0", "deepspeed": "0.19.8", "driver": "580", "gpu_name": "H200"},
        "zero_stage": 3 if hooks else 2,
        **({"steps_warmup": steps[0], "steps_timed": steps[1]} if steps else {}),
        "fake": {"kernels": kernels, "hooks": hooks, "gpu_s": step / 2, "raw_mem": mem / 1.07}}))
    return d


def fake_predictor(run, hw):
    """Step = GPU time + kernels·launch + hooks·hook + fixed; memory = raw·(1 + allocator fraction)."""
    f = json.loads((run.path / "summary.json").read_text())["fake"]
    step = (f["gpu_s"] + f["kernels"] * hw.compute.dispatch_s + f["hooks"] * hw.overheads.zero3_module_hook_s
            + hw.overheads.step_fixed_s)
    return Predicted(step_time_s=step, peak_memory_bytes=f["raw_mem"] * (1 + hw.memory.allocator_overhead_fraction))


TRUE = {"launch": 30e-6, "hook": 80e-6, "fixed": 4e-3}


def make_consistent_runs(root: Path) -> None:
    """Runs whose measured times follow the fake predictor with the TRUE overheads."""
    specs = [("a", "small", 300, 0, 0.02), ("b", "small", 600, 400, 0.05), ("c", "big", 900, 0, 0.4),
             ("d", "big", 1200, 900, 0.6), ("e", "mid", 700, 300, 0.1), ("f", "small", 400, 0, 0.03)]
    for rid, model, k, h, gpu in specs:
        step = gpu + k * TRUE["launch"] + h * TRUE["hook"] + TRUE["fixed"]
        d = write_run(root, rid, model, step=step, mem=int(1e9 * (1 + len(rid))), kernels=k, hooks=h)
        s = json.loads((d / "summary.json").read_text())
        s["fake"]["gpu_s"] = gpu
        (d / "summary.json").write_text(json.dumps(s))


def test_gemm_curve_recovers_a_known_curve():
    true = [(8.0, 0.02), (9.0, 0.10), (10.0, 0.40), (11.0, 0.65), (12.0, 0.70)]
    rows = []
    for i in range(81):
        x = 8.0 + i * 0.05
        eff = next(y0 + (y1 - y0) * (x - x0) / (x1 - x0)
                   for (x0, y0), (x1, y1) in zip(true, true[1:]) if x0 <= x <= x1)
        flops = 10 ** x
        rows.append({"flops": flops, "time_s": flops / (PEAK * eff)})
    curve = fit_gemm_curve(rows, PEAK, step=1.0)
    assert [p[0] for p in curve] == [8.0, 9.0, 10.0, 11.0, 12.0]
    for (x, y), (_, want) in zip(curve, true):
        assert y == pytest.approx(want, rel=0.02)
    prof = with_values(load_profile("h200-sxm"), {"compute.gemm_efficiency": curve})
    assert prof.compute.gemm_eff(10 ** 10.5) == pytest.approx(0.525, rel=0.03)


def test_gemm_curve_needs_two_points():
    with pytest.raises(ZsimInputError):
        fit_gemm_curve([{"flops": 1e9, "time_s": 1e-3}], PEAK)


def test_strided_efficiency_from_the_rope_rows():
    # 4096 tokens x 2048 values of one tensor in 120 us: zsim counts 10 bf16 values of traffic
    # per rotated value (zsim.workload.ROPE_TRAFFIC_PER_VALUE), 20 B x 8.39e6 / 120e-6 s = 1.40
    # TB/s, 0.291 of 4.8 TB/s; the median of three such rows is the middle one.
    rows = [{"op": "rope_hd64", "tokens": 4096, "width": 2048, "time_s": t} for t in (100e-6, 120e-6, 150e-6)]
    rows.append({"op": "add", "tokens": 4096, "width": 2048, "time_s": 1e-6})   # not RoPE: ignored
    assert strided_memory_efficiency(rows, 4800) == pytest.approx(20 * 4096 * 2048 / 120e-6 / 4.8e12)
    assert strided_memory_efficiency([{"op": "add", "tokens": 1, "width": 1, "time_s": 1.0}], 4800) is None


def test_direct_microbench_values():
    assert memory_bound_efficiency([{"GBps": 4000}, {"GBps": 2000}, {"GBps": 3000}], 4800) == pytest.approx(0.625)
    rows = [{"bytes": 1 << 20, "h2d_GBps": 30, "d2h_GBps": 31}, {"bytes": 1 << 28, "h2d_GBps": 54, "d2h_GBps": 55},
            {"bytes": 1 << 30, "h2d_GBps": 56, "d2h_GBps": 57}]
    assert host_bandwidths(rows) == (55.0, 56.0)  # the small copy is latency-bound and left out
    # 28 bytes per param at 4800 GB/s x 0.5 -> 28 / 2.4e12 seconds per param
    assert optimizer_bytes_per_param({"s_per_param": 28 / 2.4e12}, 4800, 0.5) == pytest.approx(28.0)


def test_gauss_newton_respects_nonnegativity():
    # best unconstrained fit has theta1 < 0; the constrained optimum clamps it to 0
    def residuals(t):
        return [t[0] - 1.0, t[1] + 0.5]
    import numpy as np
    theta, cost = gauss_newton(lambda t: np.array(residuals(t)), [0.5, 0.5])
    assert theta[0] == pytest.approx(1.0, abs=1e-6)
    assert theta[1] == 0.0
    assert cost == pytest.approx(0.25, abs=1e-6)


def test_time_overheads_recovered_with_fake_predictor(tmp_path):
    make_consistent_runs(tmp_path)
    runs = find_runs([tmp_path])
    hw = load_profile("h200-sxm")
    fitted, info = fit_time_overheads(runs, hw, fake_predictor)
    assert fitted.compute.dispatch_s == pytest.approx(TRUE["launch"], rel=0.02)
    assert fitted.overheads.zero3_module_hook_s == pytest.approx(TRUE["hook"], rel=0.02)
    assert fitted.overheads.step_fixed_s == pytest.approx(TRUE["fixed"], rel=0.05)
    assert info["fit_mape_pct"] < 0.5


def test_allocator_overhead_recovered(tmp_path):
    make_consistent_runs(tmp_path)
    runs = find_runs([tmp_path])
    fitted, info = fit_allocator_overhead(runs, load_profile("h200-sxm"), fake_predictor)
    assert fitted.memory.allocator_overhead_fraction == pytest.approx(0.07, abs=2e-3)
    assert info["fit_mape_pct"] < 0.3


def test_failed_and_unreadable_runs_are_not_fitted(tmp_path):
    make_consistent_runs(tmp_path)
    write_run(tmp_path, "killed", "small", step=1.0, mem=1, status="failed")
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "summary.json").write_text("{not json")
    runs = find_runs([tmp_path])
    assert {r.run_id: r.status for r in runs}["killed"] == "failed"
    assert load_run(bad).status == "unreadable"
    fit = select_fit_runs(runs, ["small"])
    assert sorted(r.run_id for r in fit) == ["a", "b", "f"]
    with pytest.raises(ZsimInputError, match="nope"):
        select_fit_runs(runs, ["nope"])


def test_runs_timed_on_too_few_steps_are_not_fitted(tmp_path):
    """The measurement protocol: >= 20 timed steps, and >= 10 settling steps under ZeRO-3."""
    make_consistent_runs(tmp_path)
    write_run(tmp_path, "short", "small", step=0.1, mem=1, steps=(2, 4))                 # 4 timed
    write_run(tmp_path, "unsettled", "small", step=0.1, mem=1, hooks=10, steps=(3, 20))  # ZeRO-3
    write_run(tmp_path, "settled", "small", step=0.1, mem=1, hooks=10, steps=(12, 20))
    write_run(tmp_path, "dense", "small", step=0.1, mem=1, steps=(3, 20))
    runs = {r.run_id: r for r in find_runs([tmp_path])}
    assert [runs[k].meets_protocol for k in ("short", "unsettled", "settled", "dense", "a")] == \
        [False, False, True, True, True]      # "a" records no step counts: taken as protocol's
    fit = select_fit_runs(list(runs.values()), ["small"])
    assert sorted(r.run_id for r in fit) == ["a", "b", "dense", "f", "settled"]


def test_calibrate_writes_a_loadable_profile_with_sources(tmp_path):
    res = tmp_path / "res"
    make_consistent_runs(res)
    bench = {"meta": {"torch": "2.11"},
             "gemm": [{"flops": 10 ** x, "time_s": 10 ** x / (PEAK * 0.1 * (x - 7))} for x in (8, 9, 10, 11)],
             "attention": [{"fwd_bwd_flops": 1e12, "fwd_bwd_s": 1e12 / (PEAK * 0.3)}],
             "membound": [{"GBps": 3600.0}],
             "hostcopy": [{"bytes": 1 << 30, "h2d_GBps": 50.0, "d2h_GBps": 52.0}],
             "fused_adam": {"s_per_param": 1e-11}, "cpu_adam": {"params_per_s": 3e9}}
    (res / "microbench.json").write_text(json.dumps(bench))
    cal = calibrate([res], fit_models=["small", "big"], predictor=fake_predictor)
    out = tmp_path / "prof.yaml"
    out.write_text(profile_yaml(cal))
    prof = load_profile(out)
    assert prof.calibrated
    assert prof.compute.attention_efficiency == pytest.approx(0.3, rel=1e-3)
    assert prof.compute.memory_bound_efficiency == pytest.approx(0.75, rel=1e-3)
    assert prof.host.h2d_bandwidth_GBps == 50.0 and prof.host.cpu_adam_params_per_s == 3e9
    assert "5 runs" in prof.source and "2.11.0/0.19.8/580" in prof.source
    import yaml
    section = yaml.safe_load(out.read_text())["calibration"]
    assert section["fit_runs"] == ["a", "b", "c", "d", "f"]  # "e" (mid) is left for evaluation
    assert math.isclose(prof.compute.dispatch_s, TRUE["launch"], rel_tol=0.05)


def test_cli_missing_results_is_one_line_exit_2(tmp_path, capsys):
    rc = main(["calibrate", str(tmp_path / "nowhere"), "-o", str(tmp_path / "p.yaml")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "nowhere" in err
    assert not (tmp_path / "p.yaml").exists()


def test_a_moe_run_is_predicted_with_its_deepspeed_moe_layers(tmp_path):
    """A run trained with DeepSpeed-MoE layers (validation/train.py --moe-config) records their
    kwargs; validate/calibrate/diagnose predict it with those layers, not the HF sparse block."""
    from zsim.calibrate import load_run, run_settings
    from zsim.predict import predict_settings
    d = tmp_path / "moe-run"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "model_type": "mixtral", "architectures": ["MixtralForCausalLM"], "hidden_size": 256,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 512,
        "num_local_experts": 4, "num_experts_per_tok": 2, "vocab_size": 1024, "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5, "tie_word_embeddings": False}))
    (d / "ds_config.json").write_text(json.dumps({"bf16": {"enabled": True}, "zero_optimization": {"stage": 2}}))
    summary = {"status": "ok", "run_id": "moe-run", "model_name": "x", "params": 1, "world_size": 1,
               "seq": 256, "micro_batch": 2, "grad_accum": 1, "activation_checkpointing": False,
               "step_time_s_median": 0.1, "peak_memory_allocated_bytes": 2**30,
               "moe_config": {"ep_size": 1, "k": 1, "capacity_factor": 2.0}}
    (d / "summary.json").write_text(json.dumps(summary))
    run = load_run(d)
    assert run.moe_config == {"ep_size": 1, "k": 1, "capacity_factor": 2.0}
    with_layers = predict_settings(run_settings(run, "h200-sxm", "hgx-h200"))
    assert any("DeepSpeed-MoE layers, ep_size 1" in n and "top-1" in n for n in with_layers.notes)
    summary["moe_config"] = None
    (d / "summary.json").write_text(json.dumps(summary))
    plain = predict_settings(run_settings(load_run(d), "h200-sxm", "hgx-h200"))
    assert not any("DeepSpeed-MoE" in n for n in plain.notes)
    summary["moe_config"] = ["ep_size", 1]
    (d / "summary.json").write_text(json.dumps(summary))
    bad = load_run(d)   # an unreadable run, skipped with its reason, as a broken summary is
    assert bad.status == "unreadable" and "moe_config must be an object" in bad.error
