"""Op emission for stages 0, 1 and 2: forward, backward with bucket reductions, the step.

Stage 0 (engine.py = ENG): no ZeRO optimizer; on the boundary micro-step the engine calls
``allreduce_gradients()`` WITHOUT a bucket size (ENG:3165, 3603), so the default
MEMORY_OPT_ALLREDUCE_SIZE = 5e8 elements applies (ENG:151, 3073) — reduce_bucket_size and
allgather_bucket_size are ignored. ``buffered_allreduce_fallback`` all-reduces the grads in
``module.parameters()`` order in chunks issued once they exceed 5e8 elements (ENG:3828-3839).
"""

from __future__ import annotations

from ..dsconfig import OffloadDevice, RunConfig
from ..groups import WORLD
from ..model import ModelSpec
from .buckets import Bucket, chunk_greedy
from .emit import Emitter
from .hostwork import (GRAD_ACCUMULATE, OFFLOAD12_BACKWARD, OFFLOAD12_BOUNDARY, STAGE12_BACKWARD, STAGE12_BOUNDARY, STAGE12_HOOK,
                       host_loop)
from .order import Module, hook_order
from .params import FlatLayout
from .passes import backward, forward
from .stage12 import bucket_collectives, reduces_on, stage12_buckets
from .step import moe_stage12_step, stage0_step, stage12_step

#: engine.py:151 — the bucket stage 0 really uses (allreduce_gradients' default argument).
STAGE0_ALLREDUCE_ELEMS = 500_000_000


def _issue_bucket(em: Emitter, run: RunConfig, bucket: Bucket, layout: FlatLayout, trigger: int | None,
                  index: int, last_reduce: list[int]) -> None:
    """Issue one bucket's collectives. With overlap_comm they go on the reduction stream and
    the compute stream first waits for the PREVIOUS reduction (S12:1600-1612:
    ``current_stream().wait_stream(reduction_stream)`` before the new one is queued)."""
    overlap = run.zero.overlap_comm
    stream = "comm" if overlap else "compute"
    if overlap and last_reduce:
        em.wait_for.append(last_reduce[-1])
    for call in bucket_collectives(bucket, layout, run):
        last_reduce.append(em.collective(f"grad_bucket_{index}", call.collective, call.message_bytes,
                                         stream=stream, deps=(trigger,) if overlap else (), group=call.group))
    if run.zero.offload_optimizer != OffloadDevice.NONE:
        _offload_copies(em, run, bucket, layout, last_reduce[-1])


def _offload_copies(em: Emitter, run: RunConfig, bucket: Bucket, layout: FlatLayout, reduced: int) -> None:
    """ZeRO-Offload copies after a bucket is reduced, for the parameters rank 0 owns
    (copy_grads_in_partition, S12:2161-2178): with accumulation, each owned gradient makes a
    round trip through a CPU accumulator in 16-bit, FULL parameter size
    (async_accumulate_grad_in_cpu_via_gpu, S12:1812-1860: host->device on every micro-step
    after the first, device->host on every one); on the boundary the owned slice goes to the
    fp32 host gradient (S12:1887-1912)."""
    owned = [(p, n) for p in bucket.params for rank, n in layout.slices(p) if rank == 0]
    if not owned:
        return
    boundary = em.micro == run.grad_accum - 1
    full = sum(layout.numels[p] for p, _ in owned) * run.param_bytes
    last = reduced
    if run.grad_accum > 1 and em.micro > 0:
        last = em.add("h2d", "copy", "grad_accum_from_host", deps=(last,), nbytes=full)
    if run.grad_accum > 1:
        last = em.add("d2h", "copy", "grad_accum_to_host", deps=(last,), nbytes=full)
    if boundary:
        em.add("d2h", "copy", "fp32_grads_to_host", deps=(last,), nbytes=4 * sum(n for _, n in owned))


def emit_dense(model: ModelSpec, run: RunConfig, modules: list[Module], layout: FlatLayout,
               expert=None) -> tuple[Emitter, int]:
    """All ops of one optimizer step for stages 0/1/2; returns (emitter, buckets per micro-step).

    ``expert``: (ExpertPlan, ExpertGroups) of DeepSpeed-MoE layers (zsim.parallel.expert),
    whose ``layout`` is then a GroupedLayout; None for every other model."""
    em = Emitter(run.world_size)
    numels = layout.numels
    hooks = hook_order(modules)
    hook_items = [(p, numels[p]) for p, _ in hooks]
    flat_items = [(p, numels[p]) for p in (layout.flat_order() if expert else range(len(numels)))]
    a2a = _all_to_all_hooks(em, model, expert)
    if run.zero.stage == 0:
        buckets, in_hooks = [], False
    else:
        buckets, in_hooks = stage12_buckets(run, hook_items, flat_items)
    # trigger hook position -> buckets flushed there
    by_trigger: dict[int, list[int]] = {}
    for k, b in enumerate(buckets):
        if b.trigger is not None:
            by_trigger.setdefault(b.trigger, []).append(k)
    hooks_at: dict[int, list[int]] = {}
    for hpos, (_, bpos) in enumerate(hooks):
        hooks_at.setdefault(bpos, []).append(hpos)

    for micro in range(run.grad_accum):
        em.micro = micro
        ckpt = run.activation_checkpointing
        if a2a is None:
            forward(em, modules, checkpointing=ckpt)
        else:
            forward(em, modules, post=a2a.post, checkpointing=ckpt)
        reducing = run.zero.stage > 0 and reduces_on(run, micro)
        last_reduce: list[int] = []

        def post(pos: int, m: Module, pass_: str) -> None:
            if pass_ != "bwd":
                if a2a is not None:
                    a2a.post(pos, m, pass_)
                return
            if reducing and in_hooks:
                for hpos in hooks_at.get(pos, ()):
                    for k in by_trigger.get(hpos, ()):
                        _issue_bucket(em, run, buckets[k], layout, em.last_compute, k, last_reduce)
            if m.params:
                _backward_loops(em, run, len(m.params))
            if a2a is not None:
                a2a.post(pos, m, pass_)

        if a2a is None:
            backward(em, modules, run.activation_checkpointing, post=post)
        else:
            backward(em, modules, run.activation_checkpointing, pre=a2a.pre, post=post)
        if reducing:  # the epilogue flushes what is left (all buckets for stage 1 w/o overlap)
            for k, b in enumerate(buckets):
                if b.trigger is None or not in_hooks:
                    _issue_bucket(em, run, b, layout, em.last_compute, k, last_reduce)
            if run.zero.overlap_comm and last_reduce:
                em.wait_for.append(last_reduce[-1])  # epilogue synchronize (S12:1027-1029)
        if run.zero.stage == 0 and micro == run.grad_accum - 1:
            # DeepSpeed-MoE: the non-expert gradients, then the expert ones over their own
            # group (ENG:3921-3936, zsim.parallel.expert_zero.stage0_reductions)
            for sizes, group in _stage0_reductions(numels, layout, expert):
                for chunk in chunk_greedy(sizes, STAGE0_ALLREDUCE_ELEMS):
                    em.collective("allreduce_gradients", "all_reduce", chunk * run.comm_dtype_bytes, group=group)
    if run.zero.stage == 0:
        stage0_step(em, run, sum(numels), tensors=len(numels),
                    collectives=_stage0_expert_collectives(run, expert))
    elif expert:
        moe_stage12_step(em, run, layout, tensors=len(numels))
    else:
        stage12_step(em, run, layout.partition_numel, layout.padded_numel, tensors=len(numels))
    return em, len(buckets)


def _stage0_reductions(numels, layout, expert) -> list:
    """[(gradient sizes in order, group)] the engine all-reduces at stage 0."""
    if not expert:
        return [([n for n in numels if n], WORLD)]
    from ..parallel.expert_zero import stage0_reductions
    return stage0_reductions(layout)


def _stage0_expert_collectives(run: RunConfig, expert):
    """The stage-0 step's extra collectives with DeepSpeed-MoE layers, or None."""
    if not expert:
        return None
    from ..parallel.expert_zero import stage0_step_collectives
    return stage0_step_collectives(run, expert[1])


def _all_to_all_hooks(em: Emitter, model: ModelSpec, expert):
    """The DeepSpeed-MoE all-to-all hooks (zsim.parallel.expert_zero), or None."""
    if not expert:
        return None
    from ..parallel.expert_zero import AllToAllHooks
    plan, groups = expert
    return AllToAllHooks(em, model, plan, groups.expert)


def _backward_loops(em: Emitter, run: RunConfig, tensors: int) -> None:
    """Per-gradient host work after a module's backward (hostwork.py): AccumulateGrad in every
    stage; in stages 1/2 also DeepSpeed's gradient hook (its measured host time: on every
    micro-step at stage 2, on the boundary at stage 1, one op otherwise), the partition copy on
    the boundary with accumulation, and with offload_optimizer one sync per gradient (plus
    the fp32 copies on the boundary)."""
    host_loop(em, "grad_accumulate", GRAD_ACCUMULATE, tensors)
    if run.zero.stage not in (1, 2):
        return
    boundary = em.micro == run.grad_accum - 1
    if run.zero.stage == 2 or boundary:   # the hook reduces (S12:2293-2295)
        host_loop(em, "grad_hooks", STAGE12_HOOK, tensors)
    else:
        host_loop(em, "grad_bucket_copies", STAGE12_BACKWARD, tensors)
    if boundary and run.grad_accum > 1:
        host_loop(em, "grad_partition_copies", STAGE12_BOUNDARY, tensors)
    if run.zero.offload_optimizer != OffloadDevice.NONE:
        # The sync waits for the gradient copies to the host issued so far.
        host_loop(em, "offload_grad_syncs", OFFLOAD12_BOUNDARY if boundary else OFFLOAD12_BACKWARD, tensors,
                  deps=(em.ops.last_on("d2h"),))
