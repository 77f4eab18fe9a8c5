"""The optimizer step of each stage: norm/overflow all_reduces, the update, the re-gather.

Stage 1/2 (stage_1_and_2.py:3013-3170 = S12):
- overflow check: ``all_reduce(MAX)`` of a 1-byte flag (S12:3237-3246) when
  check_grad_overflow is on: fp16 always, bf16 by default (bf16.check_grad_overflow, True,
  runtime/precision_config.py:56), never fp32 (engine.py:2638-2643);
- the gradient norm: one 4-byte fp32 ``all_reduce(SUM)`` per param group (S12:2689-2693,
  or S12:1944-1945 with offload), whether or not clipping is on (compute_grad_norm);
- the local update of the fp32 partition, or with offload_optimizer the fp32 gradient
  partition to the host, DeepSpeedCPUAdam, the 16-bit partition back to the device;
- ``all_gather_dp_groups``: with all_gather_into_tensor available, ONE call per param group
  whatever allgather_bucket_size says (runtime/utils.py:1019-1022); the logger records one
  rank's partition.
Stage 3 (stage3.py = S3): see :func:`stage3_step`.
"""

from __future__ import annotations

from ..dsconfig import OffloadDevice, RunConfig
from .emit import Emitter
from .hostwork import (STAGE3_STEP_PRELUDE, STAGE3_STEP_PRELUDE_GATHERED, LoopCounts, host_loop,
                       step_loops)
from .steppasses import StepSegment, pass_bytes, step_segments


def _check_overflow(run: RunConfig) -> bool:
    return run.precision in ("fp16", "bf16")


def _loops(em: Emitter, run: RunConfig, tensors: int, groups: int = 1) -> tuple[int, ...]:
    """The step's per-tensor host loops (hostwork.py); the update waits for them: it is
    issued after them (letting it overlap the loops instead fitted worse: 21.6 % against
    19.7 % fit MAPE, with sync_s driven to 0)."""
    counts = step_loops(run)
    loop = host_loop(em, "step_tensor_loops", counts, tensors, groups) if counts else None
    return (loop,) if loop is not None else ()


def _cpu_update(em: Emitter, numel: int, param_bytes_back: int, deps: tuple) -> None:
    """The offloaded update: three CPU passes (S12:3079-3095; S3 likewise) — the unscale of
    the fp32 gradient partition, DeepSpeedCPUAdam, the fp32 -> 16-bit cast into the
    host buffer — then the 16-bit partition back to the device."""
    unscale = em.add("cpu", "cpu_pass", "cpu_unscale", deps=deps, params=numel, cpu_pass="unscale")
    adam = em.add("cpu", "cpu_adam", "cpu_adam", deps=(unscale,), params=numel)
    cast = em.add("cpu", "cpu_pass", "cpu_cast", deps=(adam,), params=numel, cpu_pass="cast")
    h2d = em.add("h2d", "copy", "params_to_device", deps=(cast,), nbytes=param_bytes_back * numel)
    em.wait_for.append(h2d)


def _stretch(em: Emitter, seg: StepSegment, tensors: int, groups: int, sync: bool) -> int | None:
    """The host loop of one stretch; after the first, it starts with the host sync that ends
    the stretch before (the host waits for the GPU there, see system/host.py)."""
    loop = seg.loop if not sync or seg.loop.syncs(tensors) else seg.loop + LoopCounts(0.0, syncs_fixed=1)
    return host_loop(em, f"step_{seg.name}", loop, tensors, groups)


def _passes(em: Emitter, name: str, passes, numel: int, issued_after: int | None) -> None:
    """One GPU op for ``passes`` over ``numel`` parameters. Their kernels are issued by the
    stretch's loop, so they start once the host reached it (``issued_after``: the loop of
    the stretch before) and overlap the loop; the next sync waits for both."""
    if passes:
        em.add("compute", "step_passes", name, deps=(issued_after,), params=numel,
               nbytes=pass_bytes(passes, numel))


def gpu_step(em: Emitter, run: RunConfig, sub_group_numels: list[int], tensors: int,
             collectives=None, after_update=None, issued_after: int | None = None) -> None:
    """The step on the GPU path as DeepSpeed runs it: stretches separated by host syncs
    (:mod:`.steppasses`), each costing the longer of its host loop and its GPU passes; the
    last ends in the fused Adam update of each sub-group (issued after the loop, so it waits
    for it) and the copy back. Adjacent per-sub-group segments repeat together for each
    sub-group, with that sub-group's share of the tensors. ``collectives(em, name)`` emits
    the stage's collectives that belong after a stretch (the overflow flag, the norms);
    ``after_update(em, numel)`` what follows each sub-group's update (stage 3's swap-out
    with offload_param); ``issued_after``: host work before the first stretch (stage 3's
    prelude), which its GPU passes wait for."""
    total = sum(sub_group_numels)
    at = _StepCursor(issued_after)
    for block in _blocks(step_segments(run)):
        if not block[0].per_sub_group:
            _segment(em, block[0], tensors, sub_group_numels, at, collectives, after_update)
            continue
        for numel in sub_group_numels:
            share = max(1, round(tensors * numel / total)) if total else tensors
            for seg in block:
                _segment(em, seg, share, [numel], at, collectives, after_update)


class _StepCursor:
    """Where the step's emission stands: the loop of the stretch before (the host is past
    it; the next stretch's GPU passes wait for it) and whether a stretch was emitted yet."""

    def __init__(self, prev: int | None):
        self.prev, self.first = prev, True


def _blocks(segments: tuple[StepSegment, ...]) -> list[tuple[StepSegment, ...]]:
    """The segments in order, adjacent per-sub-group ones joined into one block."""
    out: list[tuple[StepSegment, ...]] = []
    for seg in segments:
        if out and seg.per_sub_group and out[-1][-1].per_sub_group:
            out[-1] += (seg,)
        else:
            out.append((seg,))
    return out


def _segment(em: Emitter, seg: StepSegment, tensors: int, numels: list[int], at: _StepCursor,
             collectives, after_update) -> None:
    """One stretch over ``tensors`` tensors of the sub-groups of ``numels``: its loop, then
    its GPU passes (or, for the update, each sub-group's passes, Adam and copy back)."""
    loop = _stretch(em, seg, tensors, len(numels), sync=not at.first)
    at.first = False
    if not seg.update:
        _passes(em, f"step_{seg.name}_passes", seg.passes, sum(numels), at.prev)
        if collectives:
            collectives(em, seg.name)
    else:
        for numel in numels:
            _passes(em, "step_update_passes", seg.passes, numel, at.prev)
            em.add("compute", "optimizer", "optimizer_step", deps=(loop,), params=numel)
            _passes(em, "step_copy_back", seg.after_update, numel, None)
            if after_update:
                after_update(em, numel)
    at.prev = loop if loop is not None else at.prev


def _update(em: Emitter, run: RunConfig, partition_numel: int, param_bytes_back: int,
            loops: tuple[int, ...] = ()) -> None:
    """The optimizer-offload update of ``partition_numel`` fp32 elements (the fp32 gradients
    reached the host bucket by bucket during the backward, see dense._offload_copies)."""
    d2h = em.ops.last_on("d2h")
    _cpu_update(em, partition_numel, param_bytes_back, (d2h, em.last_compute) + loops)


def stage12_step(em: Emitter, run: RunConfig, partition_numel: int, padded_numel: int,
                 tensors: int = 0) -> None:
    """Ops of the stage-1/2 optimizer step (one param group of ``tensors`` tensors)."""
    em.phase = "step"
    pb = run.param_bytes

    def collectives(em: Emitter, stretch: str) -> None:
        # the overflow stretch exists exactly when the flag is checked (_check_overflow)
        if stretch == "overflow" and _check_overflow(run):
            em.collective("overflow_check", "all_reduce", 1)
        if stretch == "norm" and run.zero.compute_grad_norm:
            em.collective("grad_norm", "all_reduce", 4)

    if run.zero.offload_optimizer == OffloadDevice.NONE:
        gpu_step(em, run, [partition_numel], tensors, collectives)
    else:
        loops = _loops(em, run, tensors)
        collectives(em, "overflow")
        collectives(em, "norm")
        _update(em, run, partition_numel, pb, loops)
    em.collective("allgather_params", "all_gather_into_tensor", partition_numel * pb,
                  buffer_bytes=padded_numel * pb)


def moe_stage12_step(em: Emitter, run: RunConfig, layout, tensors: int = 0) -> None:
    """The stage-1/2 step with DeepSpeed-MoE param groups (a zsim.parallel.expert_zero
    GroupedLayout): each group stepped on its own, the norms and all-gathers per group."""
    from ..parallel.expert_zero import moe_step_allgathers, moe_step_collectives
    em.phase = "step"
    gpu_step(em, run, layout.partition_numels(), tensors,
             moe_step_collectives(layout, _check_overflow(run), run.zero.compute_grad_norm))
    moe_step_allgathers(em, layout, run.param_bytes)


def stage0_step(em: Emitter, run: RunConfig, numel: int, tensors: int = 0, collectives=None) -> None:
    """Stage 0: gradients were all-reduced by the engine; the update is local.

    In fp32 (no fp16/bf16 wrapper) with gradient_clipping > 0 — DeepSpeed's DEFAULT is 1.0
    (runtime/constants.py:203) — the engine clips through ``clip_grad_norm_``, which
    all-reduces a 4-byte norm over the data-parallel group (engine.py:3506-3511,
    runtime/utils.py:414-418). The bf16 wrapper (DDP_BFLOAT16 -> FP16_Optimizer) issues no
    collective [E]. ``collectives``: what DeepSpeed-MoE layers add (zsim.parallel.expert).
    """
    em.phase = "step"
    if run.precision == "fp32" and run.gradient_clipping > 0:
        em.collective("clip_grad_norm", "all_reduce", 4)
    gpu_step(em, run, [numel], tensors, collectives)


def stage3_step(em: Emitter, run: RunConfig, sub_group_numels: list[int], persistent_shards: list[int],
                tensors: int = 0, gathered: int = 0) -> None:
    """Ops of the stage-3 step (stage3.py:2873-2931 = S3).

    - ``_partition_all_parameters`` first (S3:2877-2878): a host loop over the ``tensors``
      parameters that re-partitions the ``gathered`` ones and issues no kernel
      (hostwork.STAGE3_STEP_PRELUDE); everything after it waits for it;
    - overflow ``all_reduce`` only in fp16 (S3:2815-2816) — bf16 has none, unlike stage 1/2;
    - the norm: one ``all_reduce`` per optimizer sub-group of an fp64 scalar (8 bytes:
      get_norm_dtype() is float64 wherever the device supports it, zero/utils.py:59-63;
      S3:2469, 2573-2584) — but with offload_optimizer a 4-byte FloatTensor
      (complete_grad_norm_calculation_for_cpu_offload, S3:1969-1990) [E];
    - the update of each sub-group (or, offloaded, DeepSpeedCPUAdam + the 16-bit copy back);
    - ``_post_step``: the persistent parameters are all-gathered again, ONE
      all_gather_into_tensor per parameter (S3:2840-2841 -> partition_parameters.py:2068-2080);
    - offload_param without offload_optimizer: the 16-bit partition lives on the host, so
      ``_reassign_or_swap_out_partitioned_parameters`` (S3:2854-2859) copies the updated fp32
      GPU partition into it with ``copy_`` across devices and dtypes, which torch stages
      through a PAGEABLE host buffer: in the trace of llama-0.13b-z3-offparam-mb4-ga1-s1024-r1
      one "Memcpy DtoH (Device -> Pageable)" of 536,423,424 B (4 B x 134,105,856 params) took
      420.9 ms (1.27 GB/s), then the host casts it. It blocks the host and the step.
    """
    em.phase = "step"
    pb = run.param_bytes
    offloaded = run.zero.offload_optimizer != OffloadDevice.NONE
    prelude = _stage3_prelude(em, tensors, gathered)

    def collectives(em: Emitter, stretch: str) -> None:
        if stretch == "overflow":
            em.collective("overflow_check", "all_reduce", 1)
        if stretch == "norm":
            em.collective("grad_norm", "all_reduce", 4 if offloaded else 8)

    if not offloaded:
        swap = _swap_out_to_host if run.zero.offload_param != OffloadDevice.NONE else None
        gpu_step(em, run, sub_group_numels, tensors, collectives, after_update=swap,
                 issued_after=prelude)
    else:
        loops = _loops(em, run, tensors, groups=len(sub_group_numels))
        if run.precision == "fp16":
            collectives(em, "overflow")
        for _ in sub_group_numels:
            collectives(em, "norm")
        for numel in sub_group_numels:
            _cpu_update(em, numel, pb, (em.last_compute,) + loops)
    for shard in persistent_shards:
        em.collective("allgather_persistent", "all_gather_into_tensor", shard * pb)


def _stage3_prelude(em: Emitter, tensors: int, gathered: int) -> int | None:
    """``_partition_all_parameters``: the passes over every parameter and the partitions of
    the gathered ones, as one host op (the host runs them back to back, no kernel between)."""
    ops = STAGE3_STEP_PRELUDE.ops(tensors) + STAGE3_STEP_PRELUDE_GATHERED.ops(gathered)
    return em.add("compute", "host_loop", "step_partition_all", count=ops) if tensors else None


def _swap_out_to_host(em: Emitter, numel: int) -> None:
    """offload_param alone: the fp32 partition to the host's 16-bit copy (see stage3_step):
    a pageable device-to-host copy of 4 B per element that blocks the host (a host_loop
    with one sync waits for it), then the host-side cast."""
    d2h = em.add("d2h", "copy", "fp32_params_to_host_pageable", deps=(em.last_compute,),
                 nbytes=4 * numel, pageable=True)
    cast = em.add("cpu", "cpu_pass", "cpu_cast", deps=(d2h,), params=numel, cpu_pass="cast")
    em.wait_for.append(cast)
    em.add("compute", "host_loop", "wait_swap_out", deps=(cast,), count=0, syncs=1)
