"""Memory model: the model states DeepSpeed allocates reproduce the ZeRO paper's formulas
(Rajbhandari et al. 2020, Figure 1 / Section 5: 16Ψ, 4Ψ+12Ψ/N, 2Ψ+14Ψ/N, 16Ψ/N with K=12),
and the peak behaves. Facts come from the real schedule, as in ``zsim predict``."""

import pytest

from zsim.dsconfig import Overrides, build_run_config
from zsim.memory import _model_states, estimate_memory
from zsim.model import load_model
from zsim.predict import memory_facts
from zsim.schedule import build_schedule
from zsim.workload import Workload

SPEC = load_model("llama-2-7b")
PSI = SPEC.num_parameters
BF16 = {"bf16": {"enabled": True}}


def _estimate(stage, n, **kw):
    run = build_run_config(BF16, SPEC, n, Overrides(stage=stage, micro_batch=1, seq_len=1024, **kw))
    w = Workload(SPEC, run.micro_batch, run.seq_len, run.param_bytes)
    facts = memory_facts(build_schedule(SPEC, run), run, SPEC)
    return run, estimate_memory(w, run, facts)


@pytest.mark.parametrize("n", [1, 8, 64, 1024])
@pytest.mark.parametrize("stage, formula", [
    (0, lambda n: 16 * PSI),
    (1, lambda n: 4 * PSI + 12 * PSI / n),
    (2, lambda n: 2 * PSI + 14 * PSI / n),
    (3, lambda n: 16 * PSI / n),
])
def test_paper_formulas(stage, formula, n):
    """At the step, the allocated 16-bit params, gradients (full for stages 0/1, the
    partition for 2/3) and fp32 master + Adam states equal the paper's model states, up to
    the flat partition's padding to a multiple of 2N."""
    run = build_run_config(BF16, SPEC, n, Overrides(stage=stage, micro_batch=1, seq_len=1024))
    part = memory_facts(build_schedule(SPEC, run), run, SPEC).partition_numel
    s = _model_states(run, PSI, part)
    allocated = s.params + s.grads_static + s.grads_new + s.grads_partition + s.optimizer
    assert allocated == pytest.approx(formula(n), rel=1e-4)


@pytest.mark.parametrize("stage", [2, 3])
def test_breakdown_terms_match_formula(stage):
    # Stages 2/3 hold gradient partitions all the time: params + grads + optimizer_states
    # equals the formula up to the 2N padding of the flat partition.
    _, mem = _estimate(stage, 8)
    b = mem.breakdown
    got = b["params"] + b["grads"] + b["optimizer_states"]
    assert got == pytest.approx(mem.model_states_bytes, rel=1e-4)


def test_peak_shrinks_with_stage_and_ranks():
    peaks = [_estimate(s, 8)[1].peak_bytes for s in range(4)]
    assert peaks == sorted(peaks, reverse=True)
    assert _estimate(3, 64)[1].peak_bytes < _estimate(3, 8)[1].peak_bytes


def test_checkpointing_and_offload_cut_memory():
    base = _estimate(3, 8)[1]
    ckpt = _estimate(3, 8, activation_checkpointing=True)[1]
    off = _estimate(3, 8, offload_optimizer="cpu", offload_param="cpu")[1]
    assert ckpt.breakdown["activations"] < base.breakdown["activations"] / 5
    assert off.breakdown["optimizer_states"] == 0 and off.breakdown["params"] == 0
    assert off.peak_bytes < base.peak_bytes


def test_peak_is_sum_of_breakdown():
    _, mem = _estimate(2, 8)
    assert mem.peak_bytes == sum(mem.breakdown.values())


def test_hpz_secondary_partition_costs_memory():
    # ZeRO++ (Wang et al. 2023, Sec. 3.2): hpZ trades memory for an intra-node gather:
    # each GPU holds a secondary 16-bit copy of Ψ / hpz_size parameters.
    base = _estimate(3, 64)[1]
    run = build_run_config({"bf16": {"enabled": True},
                            "zero_optimization": {"stage": 3, "zero_hpz_partition_size": 8}},
                           SPEC, 64, Overrides(micro_batch=1, seq_len=1024))
    w = Workload(SPEC, 1, 1024, 2)
    hpz = estimate_memory(w, run, memory_facts(build_schedule(SPEC, run), run, SPEC))
    assert hpz.breakdown["buffers"] - base.breakdown["buffers"] == pytest.approx(2 * PSI / 8, rel=1e-6)
