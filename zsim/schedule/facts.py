"""The schedule's size facts: what the memory model reads from the arithmetic that built the ops."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScheduleFacts:
    """Sizes the memory model needs, from the same arithmetic that produced the ops.

    - ``partition_numel``: padded per-rank numel of the flat fp32 partition (stage 1/2:
      flat group padded to 2·N, divided by N; stage 3: sum of ceil(numel/N) over params);
    - ``padded_numel``: stage 1/2 the padded flat 16-bit buffer every rank holds in full;
      stage 3 the sum of per-parameter padded numels (partition_numel × N);
    - ``ipg_buffer_elems`` / ``ipg_buffer_count``: the contiguous gradient bucket buffer
      (reduce_bucket_size elements, two with overlap_comm in stage 1/2; 0 when
      contiguous_gradients is off or in stage 0);
    - ``num_buckets``: gradient reductions (buckets) per reducing micro-step;
    - ``max_gathered_numel``: stage 3, the peak numel of NON-persistent parameters
      gathered at once during fwd/bwd (from the fetch/release simulation, padded numels);
    - ``persistent_numel``: stage 3, numel of persistent parameters (held in full);
    - ``largest_param_numel``: the largest single parameter;
    - ``num_params``: parameter count Ψ; ``rank``: the rank whose view is modelled (0);
    - ``hook_moves``: stage 3, what the module hooks of the emitted step's micro-steps moved
      (parameters gathered, handles waited on, parameters partitioned), the counts their
      host cost is priced from (schedule/hostwork.py STAGE3_HOOK_*); () elsewhere;
    - ``group_numels`` / ``group_partition_numels``: stages 0-2 with several optimizer param
      groups (DeepSpeed-MoE's expert groups), each group's numel and this rank's padded
      partition of it, in the order the step walks them; () for one group.
    """

    partition_numel: int
    padded_numel: int
    ipg_buffer_elems: int
    ipg_buffer_count: int
    num_buckets: int
    max_gathered_numel: int
    persistent_numel: int
    largest_param_numel: int
    num_params: int
    rank: int = 0
    hook_moves: tuple[int, ...] = ()
    group_numels: tuple[int, ...] = ()
    group_partition_numels: tuple[int, ...] = ()
