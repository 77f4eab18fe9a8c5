"""ZeRO stages 1 and 2 (deepspeed/runtime/zero/stage_1_and_2.py = S12): gradient buckets.

What one rank issues per micro-step:
- stage 2 (partition_gradients) reduces during EVERY backward, in hook order: a bucket is
  flushed when the next gradient does not fit (S12:1422-1428) and the rest by the epilogue
  (S12:1016-1021, called from engine.allreduce_gradients, engine.py:3084-3086);
- stage 1 communicates only on the boundary micro-step (S12:2293-2295). Without
  overlap_comm the hooks do nothing (S12:2290) and ``reduce_gradients`` walks the params in
  FLAT (forward/registration) order after the backward (S12:958-980) — so stage-1 buckets
  differ from stage-2 buckets; with overlap_comm the hooks reduce in hook order.
Each bucket becomes collectives by :func:`bucket_collectives`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..dsconfig import RunConfig
from ..groups import WORLD, Group
from .buckets import Bucket, chunk_greedy, greedy_buckets
from .params import FlatLayout


@dataclass(frozen=True)
class BucketCall:
    """One collective that reduces (part of) a bucket, as the comms logger records it."""

    collective: str       # logger op: "all_reduce" or "reduce"
    message_bytes: int
    group: Group = WORLD  # the group it runs on (DeepSpeed-MoE: expert gradients' own group)


@dataclass(frozen=True)
class OwnerSlice:
    """Consecutive elements of a bucket that one rank's partition owns."""

    rank: Any             # a FlatLayout's rank; a GroupedLayout's (param group, rank)
    numel: int


def bucket_collectives(bucket: Bucket, layout: FlatLayout, run: RunConfig) -> list[BucketCall]:
    """The calls that reduce one bucket (average_tensor), in issue order.

    - contiguous_gradients=False: ``buffered_reduce_fallback`` all-reduces the whole bucket
      whatever reduce_scatter says (S12:2212, 2230-2237, 2538-2549);
    - reduce_scatter=False: one all_reduce of the bucket (S12:1618-1621);
    - reduce_scatter=True (default) with use_multi_rank_bucket_allreduce (default): the bucket
      is cut into per-owner slices (consecutive same-owner slices merged) and
      ``allreduce_and_scatter`` all-reduces them in chunks that are issued as soon as they
      EXCEED reduce_bucket_size (S12:1545-1588, 1695-1712). A normal bucket never exceeds it,
      so it is one all_reduce; a parameter larger than the bucket is split at the first
      partition border past the limit — no reduce_scatter at all, despite the key's name;
    - use_multi_rank_bucket_allreduce=False: one ``dist.reduce`` per owning rank of that
      rank's slices (chunked the same way), S12:1697-1723.
    """
    z = run.zero
    cb = run.comm_dtype_bytes
    if not z.contiguous_gradients or not z.reduce_scatter:
        return [BucketCall("all_reduce", bucket.numel * cb)]
    slices = _owner_slices(bucket, layout)
    group_of = getattr(layout, "group_of", None)
    if group_of is not None:   # DeepSpeed-MoE param groups: one reduction per group (S12:1628-1712)
        per_group: dict[Group, list[int]] = {}
        for s in slices:
            per_group.setdefault(group_of(s.rank), []).append(s.numel)
        return [BucketCall("all_reduce", n * cb, g) for g, sizes in per_group.items()
                for n in chunk_greedy(sizes, z.reduce_bucket_size)]
    if z.use_multi_rank_bucket_allreduce:
        return [BucketCall("all_reduce", n * cb)
                for n in chunk_greedy([s.numel for s in slices], z.reduce_bucket_size)]
    per_dst: dict[int, list[int]] = {}
    for s in slices:
        per_dst.setdefault(s.rank, []).append(s.numel)
    return [BucketCall("reduce", n * cb) for sizes in per_dst.values()
            for n in chunk_greedy(sizes, z.reduce_bucket_size)]


def _owner_slices(bucket: Bucket, layout: FlatLayout) -> list[OwnerSlice]:
    """The bucket cut at partition borders, consecutive slices of one owner merged."""
    slices: list[OwnerSlice] = []
    for index in bucket.params:
        for rank, n in layout.slices(index):
            if slices and slices[-1].rank == rank:
                slices[-1] = OwnerSlice(rank, slices[-1].numel + n)
            else:
                slices.append(OwnerSlice(rank, n))
    return slices


def stage12_buckets(run: RunConfig, hook_items: list[tuple[int, int]],
                    flat_items: list[tuple[int, int]]) -> tuple[list[Bucket], bool]:
    """The buckets of one reducing micro-step and whether they follow the hooks.

    Returns (buckets, in_hooks). ``in_hooks`` False means stage 1 without overlap_comm: all
    buckets are reduced after the backward, in flat order.
    """
    z = run.zero
    in_hooks = z.stage == 2 or z.overlap_comm
    items = hook_items if in_hooks else flat_items
    buckets = greedy_buckets(items, z.reduce_bucket_size)
    if not in_hooks:
        buckets = [Bucket(b.params, b.numel, None) for b in buckets]
    return buckets, in_hooks


def reduces_on(run: RunConfig, micro: int) -> bool:
    """Whether micro-step ``micro`` (0-based) reduces gradients: stage 2 every one, stage 1
    only the boundary (the last of the step)."""
    return run.zero.stage == 2 or micro == run.grad_accum - 1
