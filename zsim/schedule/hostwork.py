"""DeepSpeed's flat per-tensor host loops: how many aten ops and host syncs each code path issues.

The optimizer step is far more than one Adam kernel, and stages 1/2 add per-tensor copies to
every backward. These counts are properties of DeepSpeed 0.19.8's code, read from its source
and counted in torch.profiler traces of real runs (validation/results/h200/2026-12-01, one
settled step each; "ops" = cudaLaunchKernel + cudaMemcpyAsync inside the phase):

| path | trace | tensors | ops | syncs |
|---|---|---|---|---|
| stage 0 step (bf16 -> FP16_Optimizer) | llama-0.13b-z0-mb4-ga1-s1024-r1 | 111 | 1564+116 | 117 |
| | llama-3b-z0-mb2-ga1-s2048-ac-r1 | 237 | 3498+479 | 243 |
| | tinyllama-1.1b-z0-mb4-ga1-s2048-r1 | 201 | 2877+206 | 207 |
| stage 1/2 step | llama-0.13b-z1-mb4-ga1-s1024-r1 | 111 | 1721+9 | 6 |
| | llama-1.2b-hd128-z2-mb2-ga1-s4096-r1 | 183 | 2857+9 | 6 |
| | llama-0.7b-v128k-z1-mb4-ga1-s2048-r1 | 111 | 1751+9 | 6 |
| stage 3 step (1 and 4 sub-groups) | llama-0.13b-z3-mb4-ga1-s1024-r1 | 111 | 746 top-level ops (268+5 launches) | 4 |
| | llama-3b-z3-mb2-ga1-s2048-ac-r1 | 237 | 1619 top-level ops (752+6 launches) | 7 |
| stage 1/2 backward (vs stage 0) | z1 vs z0 0.13b | 111 | +111 memcpy | 0 |
| stage 2 backward, boundary of GA 4 | llama-0.13b-z2-mb8-ga4-s512-r1 | 111 | +111 | 0 |
| offload backward, per micro-step | tinyllama-1.1b-...-guide-r1 | 201 | as stage 2 | 201 |
| offload backward, boundary | same, micro-step 7 | 201 | +3216+603 | +202 |
| offload step | same | 201 | 206 | 207 |

What the loops are (S12 = runtime/zero/stage_1_and_2.py, S3 = stage3.py, FO =
runtime/fp16/fused_optimizer.py, U = runtime/utils.py, ZU = runtime/zero/utils.py):
- stage 0 with bf16/fp16 runs FP16_Optimizer: its overflow check tests each gradient with a
  Python ``if`` (CheckOverflow.has_overflow_serial, U:291-295): one host sync per tensor;
  per tensor the fp32 cast (FO:287), unscale, the update and the copy back (FO:364);
- stages 1/2: per-tensor inf/nan test (S12:3234), the norm copies each gradient to float64
  (S12:2684, ZU:59-63), flatten, ``.to(fp32)``, unscale and copy back (S12:3114-3145);
  in backward each gradient is copied into the bucket (S12:1414-1480) and, on the boundary
  with accumulation, into its partition (S12:2142-2203);
- with offload_optimizer, ``copy_grads_in_partition`` (S12:2142-2178) waits for the copy of
  every gradient (one sync per tensor per micro-step); the boundary adds the fp32 copies and
  the CPU norm (S12:1887-1945);
- stage 3: one norm per gradient (S3:2419) plus flat per-sub-group work (S3:2683-2870).
  Most of its per-tensor ops are views, narrows, slices and ``record_stream`` calls that launch
  no kernel, so its count is of the aten ops DeepSpeed's code calls directly (children of the
  ``ds.*`` ranges in the trace: 6.7 and 6.8 per tensor), not of launches.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..dsconfig import OffloadDevice, RunConfig
from .emit import Emitter


@dataclass(frozen=True)
class LoopCounts:
    """Aten ops and host syncs of one loop over ``tensors`` parameter tensors."""

    ops_per_tensor: float
    syncs_per_tensor: float = 0.0
    ops_fixed: int = 0
    syncs_fixed: int = 0

    def ops(self, tensors: int, groups: int = 1) -> int:
        """Ops for ``tensors`` tensors in ``groups`` flat groups."""
        return round(self.ops_per_tensor * tensors + self.ops_fixed * groups)

    def syncs(self, tensors: int) -> int:
        """Host synchronisations for ``tensors`` tensors."""
        return round(self.syncs_per_tensor * tensors + self.syncs_fixed)

    def __add__(self, other: "LoopCounts") -> "LoopCounts":
        """Two loops run one after the other, as one count."""
        return LoopCounts(self.ops_per_tensor + other.ops_per_tensor,
                          self.syncs_per_tensor + other.syncs_per_tensor,
                          self.ops_fixed + other.ops_fixed, self.syncs_fixed + other.syncs_fixed)


#: The step's loops, one per stretch between two of DeepSpeed's host synchronisations (the
#: host waits for the GPU at each, so a stretch costs the longer of its host loop and the GPU
#: passes it issues: zsim.schedule.steppasses). Per-stretch shares of the launches from the
#: traces (zsim.<phase> ranges split at cudaStreamSynchronize / aten::item), scaled to the
#: totals of the table above:
#: - stage 0 (tinyllama-1.1b-z0-mb4-ga1-s2048-r1): 201 overflow stretches of 12-14 launches
#:   and one sync each (U:291-295), then the cast/flatten/norm (211 launches, FO:283-330) and
#:   the unscale/update/copy back (258, FO:344-364);
#: - stages 1/2 (llama-3b-z1-mb4-ga1-s1024-m5, 237 tensors): overflow 3,452 launches (S12:3229-3235,
#:   then .item() S12:3248), norm 669 (S12:2680-2693), scalar checks 21 (S12:3043),
#:   flatten/cast 254 (S12:3111-3118, then the clip's is_invalid_grad_norm S12:3203), unscale,
#:   update and copy back 187 (S12:3119-3145).
#: - stage 3 (llama-3b-z3-mb2-ga1-s2048-ac-r1, 4 sub-groups): a norm per sub-group with a stream
#:   sync after each (S3:2419-2470; 196+214+214+76 launches), then the update of every sub-group
#:   (22 + 219 launches: the check S3:2888, the loop S3:2910-2929).
#: stage 0 in fp32 (torch optimizer after the engine's clip_grad_norm_, not traced): per
#: parameter one norm kernel (U:395-399; .float() of an fp32 tensor launches nothing) and one
#: mul_ (U:426-427).
STAGE0_FP32_STEP = LoopCounts(ops_per_tensor=2.0)
STAGE0_STEP_OVERFLOW = LoopCounts(ops_per_tensor=13.3, syncs_per_tensor=1.0)
STAGE0_STEP_NORM = LoopCounts(ops_per_tensor=1.0, syncs_fixed=3)
STAGE0_STEP_UPDATE = LoopCounts(ops_per_tensor=1.2, syncs_fixed=3)
STAGE12_STEP_OVERFLOW = LoopCounts(ops_per_tensor=11.8)
STAGE12_STEP_NORM = LoopCounts(ops_per_tensor=2.3, syncs_fixed=1)
STAGE12_STEP_CHECKS = LoopCounts(ops_per_tensor=0.0, ops_fixed=9, syncs_fixed=3)
STAGE12_STEP_CAST = LoopCounts(ops_per_tensor=0.87, syncs_fixed=1)
STAGE12_STEP_UPDATE = LoopCounts(ops_per_tensor=0.63, syncs_fixed=1)
STAGE3_STEP_NORM = LoopCounts(ops_per_tensor=5.0)        # per sub-group; a sync after each
STAGE3_STEP_UPDATE = LoopCounts(ops_per_tensor=1.8, syncs_fixed=3)
#: The stage-3 step opens with ``_partition_all_parameters`` (S3:2877-2878 ->
#: parameter_offload.py:238-245 -> PC:537-550): Python passes over every parameter and a
#: ``partition()`` of each one still gathered (at the step: the persistent ones, which the
#: coordinator never releases, PC:634-640). It launches no kernel, and the GPU is idle after
#: backward's epilogue synchronize (S3:1413-1414), so all of it is on the step's critical path.
#: In loop ops (``loop_op_s`` of this profile, loop_op_per_empty_launch 1.131) at each run's
#: in-run host speed, from the four traced fit-size runs of validation/results/h200/2026-12-01-m9
#: (``*-m9a``; ``python validation/z3_host_costs.py validation/results/h200/2026-12-01-m9/*m9a/``):
#: the spacing of the partitions' ``aten::empty`` calls gives 5.0-8.2 ops per partition
#: (median 5.6) and, between two layers, 1.0-1.4 ops per other parameter (1.2); after the last
#: partition the later passes take 0.66-1.03 ops per parameter (median 0.77); before the first,
#: 22-38 ops (median 29). Per parameter 1.2 + 0.77; per gathered one 5.6 - 1.2 more.
STAGE3_STEP_PRELUDE = LoopCounts(ops_per_tensor=1.97, ops_fixed=29)
STAGE3_STEP_PRELUDE_GATHERED = LoopCounts(ops_per_tensor=4.4)
#: ZeRO-3's hooks cost more when they move parameters: a ``fetch_sub_module`` that gathers
#: pays per parameter gathered (the handle set-up, PC:582-622 -> partition_parameters.py:904-914)
#: and per handle it waits on (the stream synchronize, partition_parameters.py:79-85 and 108-115,
#: and the fetch event, PC:400-411); a ``release_sub_module`` pays per parameter it partitions
#: (PC:624-632). Least squares over every hook call of the same four traces, pooled, in loop
#: ops at each run's host speed (fetch: forward, backward, handles waited, parameters gathered;
#: release: forward, backward, parameters partitioned): 11.4 per handle waited, 4.15 per
#: parameter gathered, 15.0 per parameter partitioned. The per-hook remainder (14 and 7 ops,
#: plus the module wrappers around them) is the profile's fitted ``zero3_module_hook_s``.
#: Measured at world size 1 (no-gather handles); applied at every world size.
STAGE3_HOOK_PARTITION = LoopCounts(ops_per_tensor=15.0)
STAGE3_HOOK_GATHER = LoopCounts(ops_per_tensor=4.15)
STAGE3_HOOK_WAIT = LoopCounts(ops_per_tensor=11.4)
#: Whole-step totals (the table above): stage 0 in bf16/fp16 (FP16_Optimizer) ~15.3-16.8 ops
#: and 1 sync per tensor; stages 1/2 15.6-15.8 ops per tensor, 9 fixed, 6 syncs; stage 3
#: ~6.8 aten ops per tensor (see the module docstring).
STAGE0_STEP = STAGE0_STEP_OVERFLOW + STAGE0_STEP_NORM + STAGE0_STEP_UPDATE
STAGE12_STEP = (STAGE12_STEP_OVERFLOW + STAGE12_STEP_NORM + STAGE12_STEP_CHECKS + STAGE12_STEP_CAST
                + STAGE12_STEP_UPDATE)
STAGE3_STEP = STAGE3_STEP_NORM + STAGE3_STEP_UPDATE
#: The step of stages 1/2 with offload_optimizer: a copy and two scalar reads per tensor.
OFFLOAD12_STEP = LoopCounts(ops_per_tensor=1.0, syncs_per_tensor=1.0, syncs_fixed=6)
#: Backward of every stage, every micro-step: autograd's AccumulateGrad and the engine's
#: per-gradient copy (stage 0: 831 module kernels in zsim's workload against 946 launches +
#: 136 memcpy in llama-0.13b-z0-mb4-ga1-s1024-r1, i.e. ~2.3 per tensor).
GRAD_ACCUMULATE = LoopCounts(ops_per_tensor=2.0)
#: Backward of stage 3, per gradient: AccumulateGrad, the hook's copy into the IPG bucket
#: (S3:1569-1590); llama-0.13b-z3-mb4-ga1-s1024-r1: 949 launches + 247 memcpy, ~3.3 per tensor
#: above zsim's module kernels.
STAGE3_BACKWARD = LoopCounts(ops_per_tensor=3.0)
#: Backward of stage 1 on a micro-step that is not the accumulation boundary: the hook finds
#: nothing to reduce (S12:2293-2295); one op per gradient (not measured apart).
STAGE12_BACKWARD = LoopCounts(ops_per_tensor=1.0)
#: Backward of stage 2 on every micro-step, and of stage 1 on the boundary: DeepSpeed's
#: gradient hook (``grad_handling_hook``, S12:1362-1380: the expected-hook bookkeeping, then
#: reduce_independent_p_g_buckets_and_remove_grads, S12:1414-1480, whose Python costs far more
#: than its 6 aten ops: ~170 us traced per gradient). Measured as host time, not counted:
#: validation/microbench/backward_host.py times ``engine.backward`` under a real engine at
#: stages 0, 1 and 2 on stacks of tiny decoder layers at two depths; the stage-1/2 slope less
#: stage 0's, per gradient, is 34-162 us, 3.4-15.0 empty launches at each process's in-run
#: probe: median 9.2 over 24 (twelve processes on three machines x stages 1 and 2,
#: validation/results/h200/2026-12-03-m17, -m18 and -m20/_microbench), 7.7 loop ops at the
#: shipped profile's loop_op_per_empty_launch (1.189, the 2026-12-04 refit; the count and the
#: refit agree at this fixed point: tests/test_stage12_hook.py checks them). It holds the bucket copy and the hook's
#: share of the reduction epilogue; AccumulateGrad itself is GRAD_ACCUMULATE's (stage 0 runs
#: it too).
STAGE12_HOOK = LoopCounts(ops_per_tensor=7.7)
#: Extra on the boundary micro-step of stages 1/2 with gradient accumulation.
STAGE12_BOUNDARY = LoopCounts(ops_per_tensor=1.0)
#: Offload (stages 1/2) backward: one sync per gradient per micro-step (copy_grads_in_partition).
OFFLOAD12_BACKWARD = LoopCounts(ops_per_tensor=0.0, syncs_per_tensor=1.0)
#: Offload (stages 1/2) boundary micro-step: fp32 copies and the CPU-offload norm per tensor.
OFFLOAD12_BOUNDARY = LoopCounts(ops_per_tensor=19.0, syncs_per_tensor=2.0)


def host_loop(em: Emitter, name: str, counts: LoopCounts, tensors: int, groups: int = 1,
              deps: tuple = ()) -> int | None:
    """Emit one host loop over ``tensors`` tensors (nothing when it issues nothing); a loop
    with syncs also waits for ``deps`` (e.g. the copies its syncs wait for)."""
    ops, syncs = counts.ops(tensors, groups), counts.syncs(tensors)
    if ops <= 0 and syncs <= 0:
        return None
    return em.add("compute", "host_loop", name, deps=deps if syncs else (), count=ops, syncs=syncs)


def step_loops(run: RunConfig) -> LoopCounts | None:
    """The step's per-tensor loops for the run's stage and precision as one count (None:
    not traced: stage 0 in fp32 uses the torch optimizer directly). The optimizer-offload
    paths issue them as one loop; the GPU paths split them at DeepSpeed's host syncs
    (zsim.schedule.steppasses)."""
    z = run.zero
    if z.stage == 0:
        return STAGE0_STEP if run.precision in ("bf16", "fp16") else None
    if z.stage in (1, 2):
        return OFFLOAD12_STEP if z.offload_optimizer != OffloadDevice.NONE else STAGE12_STEP
    return STAGE3_STEP


__all__ = ["GRAD_ACCUMULATE", "LoopCounts", "OFFLOAD12_BACKWARD", "OFFLOAD12_BOUNDARY", "OFFLOAD12_STEP",
           "STAGE0_FP32_STEP", "STAGE0_STEP", "STAGE12_BACKWARD", "STAGE12_BOUNDARY", "STAGE12_HOOK", "STAGE12_STEP",
           "STAGE3_BACKWARD", "STAGE3_HOOK_GATHER", "STAGE3_HOOK_PARTITION", "STAGE3_HOOK_WAIT",
           "STAGE3_STEP", "STAGE3_STEP_PRELUDE", "STAGE3_STEP_PRELUDE_GATHERED", "host_loop", "step_loops"]
