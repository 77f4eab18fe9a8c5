"""Flat-buffer, padding and partition arithmetic of DeepSpeed's ZeRO optimizers.

Pure integer arithmetic on parameter sizes; no tensors. Stage 1/2 flatten every parameter of
a param group into one buffer padded to a multiple of ``2·N`` and split it into ``N`` equal
partitions; stage 3 pads every parameter on its own to a multiple of ``N``.
"""

from __future__ import annotations

from dataclasses import dataclass

#: 4-byte alignment / sizeof(fp16): stage_1_and_2.py:387 (the same for fp32 and bf16).
NCCL_START_ALIGNMENT_FACTOR = 2


@dataclass(frozen=True)
class FlatLayout:
    """A stage-1/2 flat param group: offsets of each parameter and the partition size.

    ``offsets[i]`` is where parameter ``i`` (flat order) starts; ``padded_numel`` is the
    aligned buffer length (stage_1_and_2.py:441-446: multiple of 2·N); ``partition_numel``
    the elements each rank owns (padded_numel / N).
    """

    numels: tuple[int, ...]
    offsets: tuple[int, ...]
    padded_numel: int
    partition_numel: int
    world_size: int

    def slices(self, index: int) -> list[tuple[int, int]]:
        """``[(owning rank, numel), ...]`` of parameter ``index``, cut at partition borders."""
        start, numel = self.offsets[index], self.numels[index]
        end, part = start + numel, self.partition_numel
        out = []
        pos = start
        while pos < end:
            rank = pos // part
            stop = min(end, (rank + 1) * part)
            out.append((rank, stop - pos))
            pos = stop
        return out


def flat_layout(numels: list[int] | tuple[int, ...], world_size: int, round_robin: bool = False) -> FlatLayout:
    """Layout of one stage-1/2 param group (``parameter_alignment`` off, the default).

    With round_robin_gradients the flat buffer holds the params in the order i ≡ 0, 1, ...
    (mod N) (stage_1_and_2.py:901-922); offsets stay indexed by the original position.
    """
    order = list(range(len(numels)))
    if round_robin:
        order = [i for j in range(world_size) for i in range(j, len(numels), world_size)]
    offsets, pos = [0] * len(numels), 0
    for i in order:
        offsets[i] = pos
        pos += numels[i]
    align = NCCL_START_ALIGNMENT_FACTOR * world_size
    padded = -(-pos // align) * align
    return FlatLayout(tuple(numels), tuple(offsets), padded, padded // world_size, world_size)


def stage3_shard_numel(numel: int, world_size: int) -> int:
    """Elements of one rank's shard of a stage-3 parameter: ceil(numel / N) (PP:1690-1696)."""
    return -(-numel // world_size)


def stage3_padded_numel(numel: int, world_size: int) -> int:
    """A stage-3 parameter padded to a multiple of N: what one all-gather moves in total."""
    return stage3_shard_numel(numel, world_size) * world_size
