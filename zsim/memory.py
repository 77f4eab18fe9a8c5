"""Per-GPU memory model: what torch.cuda.max_memory_allocated reports for one rank.

Model states follow DeepSpeed 0.19.8's real allocations (../shared/notes/deepspeed-zero.md,
"Memory"), grouped so that params + grads + optimizer_states reproduce the ZeRO paper's
formulas (K = 12 for mixed-precision Adam):

    stage 0   16Ψ          (2Ψ params, 2Ψ grads, 12Ψ fp32 master + Adam m, v)
    stage 1   4Ψ + 12Ψ/N
    stage 2   2Ψ + 14Ψ/N
    stage 3   16Ψ/N

Everything DeepSpeed allocates beyond that (IPG buckets, flatten copies, stage-3 gather
buffers and persistent params, BF16_Optimizer's fp32 gradient accumulator, the transient fp32
gradient partition at the step) is reported under ``buffers``; activations and the
logits/loss temporaries are separate terms. The peak is the larger of the backward peak and
the optimizer-step peak.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .dsconfig import RunConfig
from .workload import Workload


@dataclass(frozen=True)
class MemoryFacts:
    """Schedule-dependent sizes (from the schedule layer's ScheduleFacts when available)."""

    partition_numel: int        # padded per-rank numel of the flat partition
    ipg_buffer_elems: int       # elements of one IPG gradient bucket buffer
    ipg_buffer_count: int       # 2 with overlap_comm in stages 1/2
    max_gathered_numel: int     # stage 3: peak numel of gathered non-persistent params
    persistent_numel: int       # stage 3: numel of persistent (never released) params


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak per-GPU bytes and its breakdown at the peak (all values in bytes)."""

    peak_bytes: int
    breakdown: Mapping[str, int]
    peak_phase: str             # "backward" or "step"
    model_states_bytes: int     # params + grads + optimizer_states (the ZeRO-paper terms)


def default_facts(run: RunConfig, psi: int, largest_layer_numel: int) -> MemoryFacts:
    """Facts computed from the config alone, used when no schedule is at hand."""
    n, z = run.world_size, run.zero
    # Flat groups are padded to a multiple of 2N (S12:441-446).
    padded = -(-psi // (2 * n)) * (2 * n)
    bucket = min(z.reduce_bucket_size, psi)
    return MemoryFacts(
        partition_numel=padded // n,
        ipg_buffer_elems=bucket,
        ipg_buffer_count=2 if (z.overlap_comm and z.stage in (1, 2)) else 1,
        max_gathered_numel=min(psi, 2 * largest_layer_numel + z.stage3_prefetch_bucket_size),
        persistent_numel=0,
    )


def estimate_memory(workload: Workload, run: RunConfig, facts: MemoryFacts,
                    allocator_overhead_fraction: float = 0.0) -> MemoryEstimate:
    """Peak allocated bytes per GPU for ``workload`` under ``run``."""
    psi = workload.model.num_parameters
    n, z, p = run.world_size, run.zero, run.param_bytes
    part = facts.partition_numel
    off_opt = z.offload_optimizer != "none"
    off_par = z.offload_param != "none"
    states = _model_states(z.stage, psi, part, p, off_opt, off_par)
    buffers = _buffers(run, workload, facts, psi, part, p, off_opt)
    act = _activations(workload, run)
    grads_prev = states.pop("_grads_full_accumulating")
    static = sum(states.values()) + buffers["static"]
    # Backward: activations drain while full gradients (stages 0/1) fill; linear in
    # progress, so the peak is at one end: g_prev + max(activations, new grads).
    bwd_variable = grads_prev["prev"] + max(act["activations"] + act["logits_loss"],
                                            grads_prev["new"])
    bwd_peak = static + buffers["backward"] + bwd_variable
    # Step: activations are gone; full grads (stages 0/1) and the fp32 grad partition exist.
    step_peak = static + grads_prev["prev"] + grads_prev["new"] + buffers["step"]
    phase = "backward" if bwd_peak >= step_peak else "step"
    breakdown = dict(states)
    breakdown["grads"] += grads_prev["prev"] + (grads_prev["new"] if phase == "step" else 0)
    breakdown["buffers"] = buffers["static"] + buffers[phase]
    breakdown["activations"] = act["activations"] if phase == "backward" else 0
    breakdown["logits_loss"] = act["logits_loss"] if phase == "backward" else 0
    raw_peak = max(bwd_peak, step_peak)
    breakdown["allocator_overhead"] = int(raw_peak * allocator_overhead_fraction)
    peak = sum(breakdown.values())
    model_states = _paper_model_states(z.stage, psi, n, p)
    return MemoryEstimate(peak_bytes=int(peak), breakdown={k: int(v) for k, v in breakdown.items()},
                          peak_phase=phase, model_states_bytes=model_states)


def _paper_model_states(stage: int, psi: int, n: int, p: int) -> int:
    """The ZeRO paper's model-state bytes (Ψ params, N ranks, K = 12), for p = 2."""
    opt = 12 * psi
    return {0: 2 * p * psi + opt, 1: 2 * p * psi + opt // n,
            2: p * psi + (p * psi + opt) // n, 3: (2 * p * psi + opt) // n}[stage]


def _model_states(stage: int, psi: int, part: int, p: int, off_opt: bool, off_par: bool) -> dict:
    """params / grads / optimizer_states bytes on the GPU, with the paper's grouping."""
    # fp32 master copy + Adam m and v of this rank's partition (12 bytes per param).
    opt_local = 0 if off_opt else 12 * (psi if stage == 0 else part)
    if stage == 0:
        params, grads_static = p * psi, 0
        accumulating = {"prev": 0, "new": p * psi}
    elif stage == 1:
        params, grads_static = p * psi, 0
        accumulating = {"prev": 0, "new": p * psi}   # full param.grad until the boundary
    elif stage == 2:
        params = p * psi
        grads_static = 0 if off_opt else p * part     # grads_in_partition
        accumulating = {"prev": 0, "new": 0}
    else:
        params = 0 if off_par else p * part          # 16-bit shards
        grads_static = 0 if off_opt else p * part     # grad_partitions_flat_buffer
        accumulating = {"prev": 0, "new": 0}
    return {"params": params, "grads": grads_static, "optimizer_states": opt_local,
            "_grads_full_accumulating": accumulating}


def _buffers(run: RunConfig, w: Workload, f: MemoryFacts, psi: int, part: int, p: int,
             off_opt: bool) -> dict[str, int]:
    """DeepSpeed buffers: always there (static), alive in backward, alive at the step."""
    z = run.zero
    static = backward = step = 0
    if z.stage == 0 and run.precision != "fp32":
        static += 4 * psi          # BF16_Optimizer's fp32 gradient accumulator
    if z.stage in (1, 2):
        bucket = f.ipg_buffer_elems * p
        backward += bucket * f.ipg_buffer_count + bucket   # IPG buffer(s) + flatten copy (S12:2367)
        if not off_opt:
            step += 4 * part       # transient fp32 gradient partition at the step
        else:
            static += 0
    if z.stage == 3:
        static += p * f.persistent_numel
        if z.zero_hpz_partition_size > 1:
            # ZeRO++ hpZ keeps a secondary copy partitioned over the hpZ group (PP:1572).
            static += p * -(-psi // z.zero_hpz_partition_size)
        backward += p * f.max_gathered_numel + 2 * p * f.ipg_buffer_elems  # gathers + IPG + interleave
        if not off_opt:
            step += 4 * part
    return {"static": static, "backward": backward, "step": step}


def _activations(w: Workload, run: RunConfig) -> dict[str, int]:
    """Activation bytes alive at the start of backward, and the logits/loss peak."""
    layers = w.model.num_layers
    kept_logits, transient_logits = w.logits_bytes()
    if run.activation_checkpointing:
        # Each layer keeps its input; one layer is recomputed at a time during backward.
        act = layers * w.checkpoint_bytes() + w.layer_activation_bytes()
    else:
        act = layers * w.layer_activation_bytes()
    act += w.backward_working_bytes()
    return {"activations": int(act), "logits_loss": int(kept_logits + transient_logits)}
