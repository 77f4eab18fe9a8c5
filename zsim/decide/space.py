"""The search space of `zsim plan`: which configurations exist under the batch identity.

A :class:`Candidate` is one DeepSpeed configuration (stage, offload, micro-batch, gradient
accumulation, activation checkpointing, bucket sizes). A :class:`SearchSpace` lists the values
each axis may take; values the user fixed in a DeepSpeed config or on the command line are
one-element axes. ``GlobalBatch = micro_batch × grad_accum × data_parallel`` ties the batch
axes together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Iterator

from ..dsconfig import OffloadDevice, default_overlap_comm, offload_error, overlap_comm_applies
from ..errors import ZsimInputError
from ..limits import MAX_GRAD_ACCUM

#: Global batch (in tokens) used when neither --global-batch nor the config fixes one:
#: about a million tokens, the order of magnitude Llama-style pretraining recipes use.
DEFAULT_GLOBAL_BATCH_TOKENS = 2**20

#: Largest micro-batch tried when nothing bounds it.
MAX_MICRO_BATCH = 64

#: reduce_bucket_size values tried (elements): 5e7, 2e8 (guides' usual value), 5e8 (DeepSpeed default).
REDUCE_BUCKETS = (50_000_000, 200_000_000, 500_000_000)

#: stage3_prefetch_bucket_size values tried (elements): 5e7 (DeepSpeed default), 2e8.
PREFETCH_BUCKETS = (50_000_000, 200_000_000)

STAGES = (0, 1, 2, 3)
#: Offload devices searched (NVMe is simulated as CPU, so it is never a separate choice).
OFFLOAD_DEVICES = (OffloadDevice.NONE.value, OffloadDevice.CPU.value)


@dataclass(frozen=True, order=True)
class Candidate:
    """One configuration of the search (all values concrete)."""

    stage: int
    offload_optimizer: str
    offload_param: str
    micro_batch: int
    grad_accum: int
    activation_checkpointing: bool
    reduce_bucket_size: int
    prefetch_bucket_size: int
    overlap_comm: bool = False

    @property
    def structure(self) -> tuple:
        """Everything except bucket sizes: the unit the first search phase ranks."""
        return (self.stage, self.offload_optimizer, self.offload_param, self.micro_batch,
                self.grad_accum, self.activation_checkpointing, self.overlap_comm)

    def label(self) -> str:
        """Short human-readable name, e.g. ``Z3 off=cpu/none mb=2 ga=4 ckpt``."""
        off = f" off={self.offload_optimizer}/{self.offload_param}" if (
            self.offload_optimizer != OffloadDevice.NONE or self.offload_param != OffloadDevice.NONE) else ""
        ckpt = " ckpt" if self.activation_checkpointing else ""
        overlap = " overlap" if self.overlap_comm and self.stage in (1, 2) else ""
        return f"Z{self.stage}{off} mb={self.micro_batch} ga={self.grad_accum}{ckpt}{overlap}"

    def with_grad_accum(self, grad_accum: int) -> "Candidate":
        """The same candidate at another gradient-accumulation count."""
        return replace(self, grad_accum=grad_accum)


@dataclass(frozen=True)
class SearchSpace:
    """Values each axis may take. ``global_batch`` None: the batch follows micro × ga × dp."""

    data_parallel: int
    stages: tuple[int, ...]
    offload_optimizer: tuple[str, ...]
    offload_param: tuple[str, ...]
    micro_batches: tuple[int, ...]
    grad_accums: tuple[int, ...] | None       # None: derived from global_batch
    checkpointing: tuple[bool, ...]
    reduce_buckets: tuple[int, ...]
    prefetch_buckets: tuple[int, ...]
    global_batch: int | None
    global_batch_note: str = ""
    overlap_comm: tuple[bool, ...] | None = None   # None: both in stages 1/2, DeepSpeed's default else

    def batches(self) -> Iterator[tuple[int, int]]:
        """(micro_batch, grad_accum) pairs that satisfy the batch identity."""
        for micro in self.micro_batches:
            if self.global_batch is not None:
                per_rank, rem = divmod(self.global_batch, self.data_parallel * micro)
                if rem or per_rank < 1 or per_rank > MAX_GRAD_ACCUM:
                    continue          # no such batch shape (DeepSpeed's grad-accum bound: zsim.limits)
                if self.grad_accums is not None and per_rank not in self.grad_accums:
                    continue
                yield micro, per_rank
            else:
                for ga in self.grad_accums or (1,):
                    yield micro, ga

    def structures(self) -> Iterator[Candidate]:
        """Valid candidates at the first bucket values (buckets are searched afterwards)."""
        for stage in self.stages:
            for oo in self.offload_optimizer:
                for op in self.offload_param:
                    if not valid_offload(stage, oo, op):
                        continue
                    for micro, ga in self.batches():
                        for ckpt in self.checkpointing:
                            for overlap in self._overlaps(stage):
                                yield Candidate(stage, oo, op, micro, ga, ckpt, self.reduce_buckets[0],
                                                self.prefetch_buckets[0], overlap)

    def _overlaps(self, stage: int) -> tuple[bool, ...]:
        if not overlap_comm_applies(stage):
            return (False,)
        if self.overlap_comm is not None:
            return self.overlap_comm
        # Stages whose default is off (1/2) may gain from it: search both; else the default.
        return (default_overlap_comm(stage),) if default_overlap_comm(stage) else (False, True)

    def bucket_variants(self, cand: Candidate) -> list[Candidate]:
        """``cand`` at every bucket combination (prefetch only matters in stage 3)."""
        prefetch = self.prefetch_buckets if cand.stage == 3 else self.prefetch_buckets[:1]
        # Stage 0 all-reduces through the engine: reduce_bucket_size does not apply.
        reduce = self.reduce_buckets if cand.stage > 0 else self.reduce_buckets[:1]
        return [replace(cand, reduce_bucket_size=r, prefetch_bucket_size=p)
                for r in reduce for p in prefetch]

    def size(self) -> int:
        """Number of candidates, bucket variants included."""
        return sum(len(self.bucket_variants(c)) for c in self.structures())


def valid_offload(stage: int, offload_optimizer: str, offload_param: str) -> bool:
    """Whether DeepSpeed accepts this combination (:func:`zsim.dsconfig.offload_error`)."""
    return offload_error(stage, offload_optimizer, offload_param) is None


def default_global_batch(data_parallel: int, seq_len: int, micro: int | None = None) -> int:
    """About :data:`DEFAULT_GLOBAL_BATCH_TOKENS` tokens, rounded up so that every rank gets a
    power-of-two count of sequences (a multiple of ``micro`` when it is fixed)."""
    per_rank = max(1, math.ceil(DEFAULT_GLOBAL_BATCH_TOKENS / (seq_len * data_parallel)))
    per_rank = 1 << (per_rank - 1).bit_length()
    if micro is not None:
        per_rank = max(micro, math.ceil(per_rank / micro) * micro)
    return per_rank * data_parallel


def micro_batch_choices(per_rank: int | None) -> tuple[int, ...]:
    """Divisors of the per-rank batch up to :data:`MAX_MICRO_BATCH` (powers of two if unbounded)."""
    if per_rank is None:
        return tuple(1 << i for i in range(MAX_MICRO_BATCH.bit_length()))
    return tuple(d for d in range(1, min(per_rank, MAX_MICRO_BATCH) + 1) if per_rank % d == 0)


def check_global_batch(global_batch: int, data_parallel: int, what: str = "--global-batch") -> None:
    """The global batch must be a positive multiple of the data-parallel size."""
    if global_batch < 1 or global_batch % data_parallel:
        raise ZsimInputError(
            f"{what} {global_batch} is not a multiple of the data-parallel size {data_parallel} "
            "(GlobalBatch = micro_batch x grad_accum x data_parallel)")
