"""The optimizer step's GPU passes and host stretches (zsim/schedule/steppasses.py) against
DeepSpeed 0.19.8's code paths and the traced H200 runs of validation/results/h200."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zsim.calibrate import load_run
from zsim.dsconfig import Overrides, build_run_config
from zsim.hardware import load_profile
from zsim.model import load_model
from zsim.schedule.hostwork import STAGE0_STEP, STAGE12_STEP, STAGE3_STEP
from zsim.schedule.steppasses import step_passes, step_segments

RESULTS = Path(__file__).resolve().parent.parent / "validation" / "results" / "h200"
ADAM = "AdamFunctor"


def _run_config(stage: int, precision: str = "bf16", offload: bool = False):
    spec = load_model("tinyllama-1.1b")
    prec = {"bf16": {"bf16": {"enabled": True}}, "fp16": {"fp16": {"enabled": True}}, "fp32": {}}[precision]
    zero = {"stage": stage, **({"offload_optimizer": {"device": "cpu"}} if offload else {})}
    return build_run_config({**prec, "zero_optimization": zero}, spec, 1, Overrides(micro_batch=1, seq_len=512))


@pytest.mark.parametrize("stage, expected", [(0, 36), (1, 46), (2, 46), (3, 42)])
def test_bf16_step_bytes_per_parameter_follow_the_passes(stage, expected):
    """bf16: stage 0 = overflow 4 + cast 6 + flatten 8 + norm 4 + unscale 8 + copy 6; stages
    1/2 = overflow 4 + fp64 norm 18 + flatten 4 + cast 6 + unscale 8 + copy 6; stage 3 the
    same without the overflow test (bf16 checks none in stage 3)."""
    assert sum(p.bytes_per_param for p in step_passes(_run_config(stage))) == expected


def test_fp32_and_fp16_change_the_passes_as_the_source_does():
    names = lambda run: [p.name for p in step_passes(run)]
    assert "overflow_check" not in names(_run_config(1, "fp32"))   # engine.py: no overflow check in fp32
    assert "cast_fp32" not in names(_run_config(1, "fp32"))        # .to(fp32) of fp32 is a no-op
    assert "overflow_check" in names(_run_config(3, "fp16"))       # stage 3 tests overflow in fp16 only
    assert "overflow_check" not in names(_run_config(3, "bf16"))
    assert step_passes(_run_config(2, offload=True)) == ()         # offload: the passes run on the CPU


def test_the_stretches_add_up_to_the_traced_loop_totals():
    """Splitting the loops at the host syncs keeps the per-step totals that the traces give
    (tests/test_time_model.py checks those against the traces)."""
    def total(stage):
        segs = step_segments(_run_config(stage))
        out = segs[0].loop
        for s in segs[1:]:
            out = out + s.loop
        return out
    assert total(0) == STAGE0_STEP and total(1) == STAGE12_STEP and total(3) == STAGE3_STEP


def _non_adam_step_gpu_s(run_dir: Path) -> float:
    """GPU time of the traced step's kernels, copies and memsets other than the Adam kernel."""
    from zsim.diagnose.measured import gpu_items, phase_clock
    from zsim.diagnose.trace import load_trace
    trace = load_trace(run_dir / "trace.json.gz")
    items = gpu_items(trace, phase_clock(trace))
    return sum(dur for phase, _, _, name, dur, _ in items if phase == "step" and ADAM not in name)


@pytest.mark.parametrize("run_id", [
    "2026-12-01-m5/llama-3b-z1-mb4-ga1-s1024-m5",
    "2026-12-01-m5/llama-3b-z2-mb4-ga1-s1024-ac-m5",
    "2026-12-01-m5/llama-2-7b-z3-mb1-ga1-s1024-ac-m5",
    "2026-12-01/llama-3b-z0-mb2-ga1-s2048-ac-r1",
    "2026-12-01/llama-3b-z3-mb2-ga1-s2048-ac-r1",
    "2026-12-01/tinyllama-1.1b-z0-mb4-ga1-s2048-r1",
    "2026-12-01/tinyllama-1.1b-z3-mb4-ga1-s2048-r1",
    "2026-12-01-m3/tinyllama-1.1b-z2-mb4-ga1-s2048-r1",
    "2026-12-01/llama-1.2b-hd128-z2-mb2-ga1-s4096-r1",
])
def test_pass_bytes_account_for_most_of_the_traced_step_kernels(run_id):
    """The passes' HBM time is 70-100 % of the measured non-Adam step kernels for models of
    1B parameters and more (the rest: a few thousand scalar kernels of 2-3 us each); the flat
    28 B/param zsim used before covered 40-60 %."""
    run_dir = RESULTS / run_id
    run = load_run(run_dir)
    spec = load_model(str(run.config_path))
    cfg = json.loads(Path(run.ds_config_path).read_text())
    rc = build_run_config(cfg, spec, 1, Overrides(micro_batch=run.micro_batch, seq_len=run.seq,
                                                  grad_accum=run.grad_accum))
    hw = load_profile("h200-sxm")
    numel = sum(p.numel for p in spec.parameters())
    passes_s = numel * sum(p.bytes_per_param for p in step_passes(rc)) / (
        hw.gpu.hbm_bandwidth_GBps * 1e9 * hw.compute.memory_bound_efficiency)
    assert 0.70 <= passes_s / _non_adam_step_gpu_s(run_dir) <= 1.0


def test_stage12_step_serialises_the_host_bound_overflow_loop_and_the_gpu_passes():
    """llama-3b-z1-mb4-ga1-s1024-m5 (a fit size in a session the fit never saw): the trace
    shows the overflow loop (3,452 launches, GPU idle), then GPU-bound norm, cast and update
    stretches after host syncs; the median step phase is 111.6 ms. Overlapping all the GPU
    passes with one host loop (zsim before) gave 72.5 ms."""
    run = load_run(RESULTS / "2026-12-01-m5" / "llama-3b-z1-mb4-ga1-s1024-m5")
    from zsim.diagnose.predicted import predicted_phases
    _, phases = predicted_phases(run, load_profile("h200-sxm"), "hgx-h200")
    assert phases["step"] == pytest.approx(0.1116, rel=0.10)


def _step_ops(run_dir: Path):
    from zsim.calibrate import predict_run
    pred = predict_run(load_run(run_dir), load_profile("h200-sxm"), keep_timeline=True)
    return [o for o in pred.ops if o.phase == "step"]


def test_moe_stage12_step_runs_norm_and_update_group_by_group():
    """DeepSpeed-MoE's param groups (5 in mixtral-0.7b-8e): each group's norm and each
    group's cast/unscale/update is a stretch of its own, ended by a host sync. The trace of
    mixtral-0.7b-8e-z2-mb4-ga1-s1024-moe-m12 has 17 host syncs in the step (2 per group in
    the norm, 1 per group in the unscale, 2 more); a dense model's step keeps its 6."""
    ops = _step_ops(RESULTS / "2026-12-02-m12" / "mixtral-0.7b-8e-z2-mb4-ga1-s1024-moe-m12")
    loops = [o.name for o in ops if o.kind == "host_loop"]
    assert loops.count("step_norm") == 5 and loops.count("step_cast") == 5 and loops.count("step_update") == 5
    assert loops.index("step_checks") < loops.index("step_cast")      # all norms, then the checks
    # cast and update alternate group by group (DeepSpeed's loop S12:3075-3145)
    tail = loops[loops.index("step_cast"):]
    assert tail == ["step_cast", "step_update"] * 5
    assert sum(o.syncs for o in ops) == 18
    adam = [i for i, o in enumerate(ops) if o.name == "optimizer_step"]
    casts = [i for i, o in enumerate(ops) if o.name == "step_cast"]
    assert len(adam) == 5 and adam[0] < casts[1]        # group 1's Adam before group 2's cast
    dense = _step_ops(RESULTS / "2026-12-01-m3" / "tinyllama-1.1b-z2-mb4-ga1-s2048-r1")
    assert sum(o.syncs for o in dense) == 6
