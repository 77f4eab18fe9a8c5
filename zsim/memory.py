"""Per-GPU memory model: what torch.cuda.max_memory_allocated reports for one rank.

Model states follow DeepSpeed 0.19.8's real allocations (source lines at each term; which
buffers exist at which moment is checked on real DeepSpeed on CPU by
validation/cpu_truth/zero_memory.py), grouped so that params + grads + optimizer_states
reproduce the ZeRO paper's formulas (K = 12 for mixed-precision Adam):

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

from .dsconfig import OffloadDevice, RunConfig
from .workload import Workload


@dataclass(frozen=True)
class MemoryFacts:
    """Schedule-dependent sizes (from the schedule layer's ScheduleFacts when available)."""

    partition_numel: int        # padded per-rank numel of the flat partition
    ipg_buffer_elems: int       # elements of one IPG gradient bucket buffer
    ipg_buffer_count: int       # 2 with overlap_comm in stages 1/2
    max_gathered_numel: int     # stage 3: peak numel of gathered non-persistent params
    persistent_numel: int       # stage 3: numel of persistent (never released) params
    # Stages 0-2 with several optimizer param groups (DeepSpeed-MoE): each group's numel and
    # this rank's partition of it, in step order; () for one group (partition_numel).
    group_numels: tuple[int, ...] = ()
    group_partition_numels: tuple[int, ...] = ()


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak per-GPU bytes and its breakdown at the peak (all values in bytes)."""

    peak_bytes: int
    breakdown: Mapping[str, int]
    peak_phase: str             # "backward" or "step"
    model_states_bytes: int     # params + grads + optimizer_states (the ZeRO-paper terms)


def estimate_memory(workload: Workload, run: RunConfig, facts: MemoryFacts,
                    allocator_overhead_fraction: float = 0.0, *, parameters: int | None = None,
                    in_flight: int = 1, logits: bool = True) -> MemoryEstimate:
    """Peak allocated bytes per GPU for ``workload`` under ``run``.

    A pipeline stage (zsim.parallel) passes the ``parameters`` it holds (default: the whole
    model's), the micro-batches whose activations it holds at once (``in_flight``, 1F1B's
    ``min(p - i, m)``) and whether it computes the logits and loss (the last stage)."""
    psi = workload.model.num_parameters if parameters is None else parameters
    z, p = run.zero, run.param_bytes
    states = _model_states(run, psi, facts.partition_numel)
    buffers = _buffers(run, facts, psi)
    act = _activations(workload, run, in_flight, logits)
    moments = backward_moments(run, facts, psi, act, states, buffers)
    # Step: activations are gone; every gradient exists, plus the step's transients.
    step = step_terms(states, buffers)
    peak = max(moments, key=lambda m: (sum(m.terms.values()), m.key))
    in_bwd = sum(peak.terms.values()) >= sum(step.values())
    phase = "backward" if in_bwd else "step"
    breakdown = dict(peak.terms if in_bwd else step)
    raw_peak = sum(breakdown.values())
    breakdown["allocator_overhead"] = int(raw_peak * allocator_overhead_fraction)
    return MemoryEstimate(peak_bytes=int(sum(breakdown.values())),
                          breakdown={k: int(v) for k, v in breakdown.items()},
                          peak_phase=phase,
                          model_states_bytes=_paper_model_states(z.stage, psi, run.world_size, p))


@dataclass(frozen=True)
class BackwardMoment:
    """One moment of a backward the peak is taken at: ``key`` (the estimate's tie-break and
    the memory curve's name), ``position`` in the backward (0 to 1) and the bytes of every
    term live then (MemoryEstimate.breakdown's keys, allocator overhead excluded)."""

    key: str
    position: float
    terms: Mapping[str, int]


def backward_moments(run: RunConfig, f: MemoryFacts, psi: int, act: Mapping[str, int],
                     states: "_States", buffers: "_Buffers", layers: int = 1) -> tuple[BackwardMoment, ...]:
    """The moments of a backward, in time order (activations drain while gradients fill,
    linearly, so each stretch peaks at an end):

    - ``loss``: the loss's backward, every activation plus the logits/loss temporaries; the
      gradient buckets do not exist yet (setup_buckets runs at the first gradient hook, S12:2287);
    - ``layers``: the first decoder layers, every activation, the layer's working set, the
      buckets and stage 2's gradient partition;
    - ``end``: all new gradients and the buckets.

    Stages 1/2 without gradient accumulation split ``layers`` in two, because their buffers
    appear at two times: the IPG buffer(s) at the first gradient hook (``hook``, S12:3256-3280)
    with every activation still alive, and the flattened bucket copy and stage 2's gradient
    partition (S12:2184-2192) only at the first reduction (``reduce``), once
    ``reduce_bucket_size`` elements of gradients exist (S12:1422-1430). Gradients arrive in
    backward order, so by then that fraction of the parameters has run backward and freed its
    activations: ``min(1, bucket / Ψ)`` by parameter count (a model smaller than the bucket
    reduces in the epilogue, after every layer). With gradient accumulation every micro-step's
    epilogue keeps the accumulated partition gradients (``all_grad_tensors``, S12:1036-1040),
    which zsim does not size apart; the one ``layers`` moment, everything together, stands for
    them (within 3 % of those runs, validation/README.md). ``layers`` is the decoder layer
    count, for the position of the first layers' moment."""
    base = {"params": states.params, "optimizer_states": states.optimizer}
    grads = states.grads_static + states.grads_prev
    fb = buffers.static + buffers.live
    a, working = act["activations"], act["working"]
    first = 1.0 / max(1, layers)

    def terms(g: int, b: int, activations: float, logits: int = 0) -> dict[str, int]:
        return {**base, "grads": g, "buffers": b, "activations": int(activations), "logits_loss": logits}
    loss = BackwardMoment("loss", 0.0, terms(grads, fb, a, act["logits_loss"]))
    end = BackwardMoment("end", 1.0, terms(grads + states.grads_new + states.grads_partition,
                                           fb + buffers.buckets, 0))
    if run.zero.stage in (1, 2) and run.grad_accum == 1 and psi > 0:
        ipg = run.param_bytes * f.ipg_buffer_elems * f.ipg_buffer_count
        done = min(1.0, f.ipg_buffer_elems / psi)
        hook = BackwardMoment("hook", first, terms(grads, fb + ipg, a + working))
        reduce = BackwardMoment("reduce", max(first, done),
                                terms(grads + states.grads_partition, fb + buffers.buckets,
                                      a * (1.0 - done) + working))
        return (loss, hook, reduce, end)
    layers_moment = BackwardMoment("layers", first, terms(grads + states.grads_partition, fb + buffers.buckets,
                                                          a + working))
    return (loss, layers_moment, end)


def step_terms(states: "_States", buffers: "_Buffers") -> dict[str, int]:
    """What is live at the optimizer step: every gradient and the step's transients."""
    grads = states.grads_static + states.grads_prev + states.grads_new + states.grads_partition
    return {"params": states.params, "optimizer_states": states.optimizer,
            "grads": grads - buffers.step_grads_freed,
            "buffers": buffers.static + buffers.step, "activations": 0, "logits_loss": 0}


def _paper_model_states(stage: int, psi: int, n: int, p: int) -> int:
    """The ZeRO paper's model-state bytes (Ψ params, N ranks, K = 12), for p = 2."""
    opt = 12 * psi
    return {0: 2 * p * psi + opt, 1: 2 * p * psi + opt // n,
            2: p * psi + (p * psi + opt) // n, 3: (2 * p * psi + opt) // n}[stage]


@dataclass(frozen=True)
class _States:
    """Model states on the GPU (bytes). Gradients: always there, from earlier micro-steps
    (accumulating), produced by the current backward, and stage 2's partition buffer (from
    the first bucket reduction of a backward to the step)."""

    params: int
    grads_static: int
    grads_prev: int
    grads_new: int
    optimizer: int
    grads_partition: int = 0


def _model_states(run: RunConfig, psi: int, part: int) -> _States:
    """params / grads / optimizer_states as DeepSpeed 0.19.8 allocates them."""
    z, p = run.zero, run.param_bytes
    off_opt, off_par = z.offload_optimizer.offloaded, z.offload_param.offloaded
    mixed = run.precision != "fp32"
    if z.stage == 0:
        # bf16/fp16 without ZeRO: FP16_Optimizer keeps fp32 masters (4Ψ) and Adam m, v (8Ψ)
        # (engine.py:2305-2321, 2555-2593); fp32 runs use the torch optimizer directly (8Ψ).
        # Gradients accumulate in param.grad across micro-steps.
        accum = p * psi if run.grad_accum > 1 else 0
        return _States(params=p * psi, grads_static=0, grads_prev=accum, grads_new=p * psi,
                       optimizer=(12 if mixed else 8) * psi)
    opt = 0 if off_opt else 12 * part            # fp32 master + Adam m, v of the partition
    if z.stage == 1:
        # Full param.grad fills during each backward and is reduced on the boundary.
        accum = p * psi if run.grad_accum > 1 else 0
        return _States(params=p * psi, grads_static=0, grads_prev=accum, grads_new=p * psi,
                       optimizer=opt)
    if z.stage == 2:
        # Gradients are reduced into grads_in_partition (16-bit, Ψ/N), which the first
        # reduction of a backward allocates (S12:2184-2192) and the epilogue releases after
        # copying it to averaged_gradients for the step (S12:1046-1061, 924-931): it does not
        # exist while the loss's backward runs. Measured on DeepSpeed on CPU: live bytes at the
        # loss equal stage 1's, 2 B/param more after backward (validation/cpu_truth/zero_memory.py).
        return _States(params=p * psi, grads_static=0, grads_prev=0, grads_new=0, optimizer=opt,
                       grads_partition=0 if off_opt else p * part)
    # Stage 3: 16-bit shards and the gradient partition buffer, Ψ/N each.
    return _States(params=0 if off_par else p * part, grads_static=0 if off_opt else p * part,
                   grads_prev=0, grads_new=0, optimizer=opt)


@dataclass(frozen=True)
class _Buffers:
    """DeepSpeed buffers (bytes): always there; alive through forward and backward (stage-3
    gathers); gradient buckets (from the first gradient hook on); at the step."""

    static: int
    live: int
    buckets: int
    step: int
    step_grads_freed: int = 0   # 16-bit gradients of the param groups stepped before the peak


@dataclass(frozen=True)
class _GroupStep:
    """One param group's moment in a step that walks the groups in turn: the transient it
    allocates and the 16-bit gradient bytes the groups before it have freed."""

    transient: int
    grads_freed: int


def _group_sizes(f: MemoryFacts, psi: int) -> tuple[tuple[int, int], ...]:
    """(numel, partition numel) per optimizer param group, one group when none are given."""
    if not f.group_partition_numels:
        return ((psi, f.partition_numel),)
    return tuple(zip(f.group_numels, f.group_partition_numels))


def _peak_group_step(run: RunConfig, f: MemoryFacts, psi: int) -> _GroupStep:
    """The step's worst moment when DeepSpeed steps its param groups one at a time (MoE
    puts experts in their own groups, moe/utils.py:72-149), measured on DeepSpeed on CPU
    (validation/cpu_truth/zero_memory.py --moe):

    - stage 0 (FP16_Optimizer.step, fp16/fused_optimizer.py:282-314): group i's gradients
      are cast to fp32 (4 B) and flattened (4 B) while the fp32 flats of the earlier groups
      stay for the one optimizer.step after the loop, and each group's 16-bit gradients are
      freed once it is flattened;
    - stages 1/2 (S12:3074-3142): group i's gradient partition is flattened (p B) and cast to
      fp32 (4 B), its gradients are freed (S12:3128) and its fp32 gradient is dropped after
      its own optimizer step (S12:3141), so only one group's transient exists at a time.

    With one group this is the whole model's transient and nothing freed."""
    p, stage = run.param_bytes, run.zero.stage
    done_numel = done_part = 0
    worst = _GroupStep(0, 0)
    for numel, part in _group_sizes(f, psi):
        if stage == 0:
            here = _GroupStep(transient=4 * done_numel + 8 * numel, grads_freed=p * done_numel)
        else:
            # stage 1 frees full-size gradients (param.grad), stage 2 its partition buffer.
            here = _GroupStep(transient=(p + 4) * part,
                              grads_freed=p * (done_numel if stage == 1 else done_part))
        if here.transient - here.grads_freed > worst.transient - worst.grads_freed:
            worst = here
        done_numel, done_part = done_numel + numel, done_part + part
    return worst


def _buffers(run: RunConfig, f: MemoryFacts, psi: int) -> _Buffers:
    z, p = run.zero, run.param_bytes
    part = f.partition_numel
    off_opt = z.offload_optimizer.offloaded
    static = live = buckets = step = freed = 0
    if z.stage == 0 and run.precision != "fp32":
        # FP16_Optimizer.step: each grad cast to fp32 (4Ψ) and flattened into one fp32
        # buffer (4Ψ) while the 16-bit grads still exist (runtime/fp16/fused_optimizer.py:282-291),
        # param group by param group.
        g = _peak_group_step(run, f, psi)
        step, freed = step + g.transient, g.grads_freed
    if z.stage in (1, 2):
        # IPG buffer(s) of reduce_bucket_size elements (S12:3256-3280) and the flattened
        # copy of one bucket's gradients in allreduce_bucket (S12:2367).
        buckets += p * (f.ipg_buffer_elems * f.ipg_buffer_count + min(f.ipg_buffer_elems, psi))
        if not off_opt:
            # At the step the 16-bit gradient partition is flattened (Ψ/N·p) and cast to
            # fp32 (4·Ψ/N) while the partition still exists (S12:3013-3170), param group by
            # param group.
            g = _peak_group_step(run, f, psi)
            step, freed = step + g.transient, g.grads_freed
    if z.stage == 3:
        static += p * f.persistent_numel
        if z.zero_hpz_partition_size > 1:
            # ZeRO++ hpZ keeps a secondary copy partitioned over the hpZ group (PP:1572).
            static += p * -(-psi // z.zero_hpz_partition_size)
        if run.world_size > 1 or z.offload_param.offloaded:
            # Gathered full parameters. On one rank whose partitions stay on the GPU there
            # is nothing to gather: all_gather_coalesced points param.data at the partition
            # itself (partition_parameters.py:1559-1560, NoGatherHandle :74), which the CPU
            # truth run shows as no extra bytes (validation/cpu_truth/zero_memory.py).
            live += p * f.max_gathered_numel
        # The IPG bucket is allocated once at init with reduce_bucket_size elements
        # (stage3.py:780-784); the reduce-scatter interleaves one bucket's worth on top.
        static += p * f.ipg_buffer_elems
        buckets += p * min(f.ipg_buffer_elems, psi)
        if not off_opt:
            # The step runs sub-group by sub-group, casting each one's gradients to fp32
            # (stage3.py:2873-2931): one sub_group_size-sized fp32 buffer at a time.
            step += 4 * min(z.sub_group_size, part)
    return _Buffers(static=static, live=live, buckets=buckets, step=step, step_grads_freed=freed)


def _activations(w: Workload, run: RunConfig, in_flight: int = 1, logits: bool = True) -> dict[str, int]:
    """Activation bytes alive at the start of backward, and the logits/loss peak
    (``in_flight`` micro-batches held; ``logits``: this rank computes the loss)."""
    layers = w.model.num_layers
    per_layer = w.activation_bytes_per_layer()   # DeepSeek's dense first layers keep less
    kept_logits, transient_logits = w.logits_bytes() if logits else (0, 0)
    if run.activation_checkpointing:
        # Each layer keeps its input; one layer is recomputed at a time during backward.
        act = in_flight * layers * w.checkpoint_bytes() + max(per_layer)
    else:
        act = in_flight * sum(per_layer)
    return {"activations": int(act), "working": int(w.backward_working_bytes()),
            "logits_loss": int(kept_logits + transient_logits)}


# ---- host memory under offload ---------------------------------------------------------------
# DeepSpeed 0.19.8 sources below: S12 = runtime/zero/stage_1_and_2.py, S3 = runtime/zero/stage3.py,
# CA = ops/adam/cpu_adam.py, ENG = runtime/engine.py.


@dataclass(frozen=True)
class HostMemoryEstimate:
    """Host (CPU) memory that offloaded states take: per rank, and for one node's ranks.

    ``breakdown_per_rank`` names each DeepSpeed buffer (bytes). States offloaded to NVMe are
    not counted (they live on the drive; the swapper's staging buffers are not modelled)."""

    bytes_per_rank: int
    ranks_per_node: int
    bytes_per_node: int
    breakdown_per_rank: Mapping[str, int]


def host_memory(run: RunConfig, facts: MemoryFacts, ranks_per_node: int,
                largest_param_numel: int = 0) -> HostMemoryEstimate:
    """Host bytes the offloaded states of ``run`` need per rank and per node.

    ``facts.partition_numel`` is the rank's partition; ``largest_param_numel`` sizes the
    stage-1/2 pinned gradient staging buffer (0: left out)."""
    terms: dict[str, int] = {}
    if run.zero.offload_optimizer == OffloadDevice.CPU:
        terms.update(_offloaded_optimizer_terms(run, facts.partition_numel, largest_param_numel))
    if run.zero.stage == 3 and run.zero.offload_param == OffloadDevice.CPU:
        terms.update(_offloaded_param_terms(run, facts.partition_numel))
    per_rank = int(sum(terms.values()))
    return HostMemoryEstimate(bytes_per_rank=per_rank, ranks_per_node=int(ranks_per_node),
                              bytes_per_node=per_rank * int(ranks_per_node),
                              breakdown_per_rank={k: int(v) for k, v in terms.items()})


@dataclass(frozen=True)
class HostMemoryVerdict:
    """Whether a node's offloaded states fit in its host memory."""

    need: HostMemoryEstimate
    available_bytes: int            # the node's host memory; 0: unknown (no check is made)

    @property
    def fits(self) -> bool:
        """True when the node's ranks' offloaded states fit (or the host memory is unknown)."""
        return self.available_bytes <= 0 or self.need.bytes_per_node <= self.available_bytes

    def note(self) -> str:
        """Why it does not fit ('' when it fits)."""
        return "" if self.fits else host_memory_note(self.need.bytes_per_node, self.available_bytes,
                                                     self.need.ranks_per_node)


def host_memory_note(need_bytes_per_node: int, available_bytes: int, ranks_per_node: int) -> str:
    """The note of a config whose offloaded states exceed the node's host memory."""
    per_rank = need_bytes_per_node / max(1, ranks_per_node)
    return (f"host memory: the offloaded states need {need_bytes_per_node / 2**30:,.1f} GiB per node "
            f"({ranks_per_node} ranks x {per_rank / 2**30:,.1f} GiB), more than the node's "
            f"{available_bytes / 2**30:,.1f} GiB (node.host.host_memory_bytes): does not fit")


def _offloaded_optimizer_terms(run: RunConfig, part: int, largest_param_numel: int) -> dict[str, int]:
    """offload_optimizer: fp32 master, Adam m and v, fp32 gradients, and the stage's buffers."""
    p = run.param_bytes
    terms = {
        # S12:560-577 single_partition_of_fp32_groups (fp32 copy of the partition, on the CPU
        # with cpu_offload); S3:1157-1160 fp32_partitioned_groups_flat, converted to the CPU.
        "fp32_master": 4 * part,
        # CA:158-164 DeepSpeedCPUAdam: exp_avg and exp_avg_sq in fp32, on the CPU.
        "adam_m_v": 8 * part,
        # S12:934-941 single_partition_of_fp32_groups[i].grad (fp32, pinned with pin_memory);
        # S3:1337-1342 one fp32 gradient buffer per sub-group, on the CPU.
        "fp32_grads": 4 * part,
    }
    if run.zero.stage in (1, 2):
        # S12:563-575 param_buffer_of_bit16_for_cpu_offload_groups: a 16-bit copy of the
        # partition, the source of the post-step copy back to the GPU.
        terms["bit16_param_buffer"] = p * part
        # S12:652-658 temp_grad_buffer_for_cpu_offload: one largest-parameter 16-bit buffer.
        terms["grad_staging_buffer"] = p * largest_param_numel
        if run.grad_accum > 1:
            # S12:1820-1853 accumulated_grads_in_cpu: every partition parameter's gradient
            # (16-bit) kept on the CPU between micro-steps (S12:2161-2167).
            terms["accumulated_grads"] = p * part
    elif run.zero.stage == 3:
        # S3:791-795 grad_partitions_flat_buffer on self.device (the CPU with
        # offload_optimizer, S3:333) in gradient_accumulation_dtype, the model dtype unless
        # data_types.grad_accum_dtype says otherwise (ENG:1806-1807).
        terms["grad_partitions"] = p * part
    return terms


def _offloaded_param_terms(run: RunConfig, part: int) -> dict[str, int]:
    """Stage-3 offload_param: the 16-bit parameter partitions, plus the swap-out staging."""
    # S3:888-911 param_groups_fp16_flat_cpu_memory: pinned 16-bit flat buffers holding the
    # rank's parameter partitions (S3:977-986 places fp16_partitioned_groups_flat in them).
    terms = {"bit16_params": run.param_bytes * part}
    if run.zero.offload_optimizer == OffloadDevice.NONE:
        # S3:2854-2859 _reassign_or_swap_out_partitioned_parameters copies the GPU fp32
        # sub-group into the CPU 16-bit partition: torch stages it as a pageable fp32 tensor
        # of the sub-group's size (the pageable swap-out of zsim/schedule/step.py).
        terms["swap_out_fp32_staging"] = 4 * min(run.zero.sub_group_size, part)
    return terms
