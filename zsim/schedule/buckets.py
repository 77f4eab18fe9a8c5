"""Greedy gradient bucketing (the IPG buckets of stage 1/2 and stage 3).

DeepSpeed appends each gradient, in the order the hooks deliver them, to a bucket and
reduces the bucket first when ``elements + numel > reduce_bucket_size``
(stage_1_and_2.py:1422-1428, stage3.py:1569-1590). A gradient larger than the bucket (stage
1/2) bypasses the buffer and is reduced on its own when the next one arrives
(stage_1_and_2.py:1443-1452).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bucket:
    """One reduction: the parameters it carries (indices, hook order), their total numel,
    and ``trigger``: the position in the hook sequence whose arrival flushes it (``None``:
    flushed by the epilogue after the backward)."""

    params: tuple[int, ...]
    numel: int
    trigger: int | None


def greedy_buckets(items: list[tuple[int, int]], bucket_elems: int) -> list[Bucket]:
    """Buckets for ``items`` = ``[(param index, numel), ...]`` in hook order.

    Empty parameters are skipped (stage_1_and_2.py:1416). A flush of an empty bucket issues
    nothing (average_tensor has no slices to reduce), so it yields no bucket.
    """
    out: list[Bucket] = []
    cur: list[int] = []
    elems = 0
    for pos, (index, numel) in enumerate(items):
        if numel == 0:
            continue
        if elems + numel > bucket_elems:
            if cur:
                out.append(Bucket(tuple(cur), elems, pos))
            cur, elems = [], 0
        cur.append(index)
        elems += numel
    if cur:
        out.append(Bucket(tuple(cur), elems, None))
    return out


def chunk_greedy(sizes: list[int], limit: int) -> list[int]:
    """DeepSpeed's ``allreduce_no_retain``/``allreduce_and_scatter`` splitting: add tensors to
    a chunk and issue it as soon as its numel EXCEEDS ``limit`` (the tensor that crosses the
    limit is included), then the remainder (stage_1_and_2.py:1545-1588, 2441-2480)."""
    out, acc = [], 0
    for n in sizes:
        acc += n
        if acc > limit:
            out.append(acc)
            acc = 0
    if acc:
        out.append(acc)
    return out
