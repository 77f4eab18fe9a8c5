"""The 3D-parallel layout of a job: tensor (tp), Ulysses sequence (sp), data (dp) and
pipeline (pp) degrees, the rank of every coordinate, and each dimension's group placed on
the cluster as a :class:`zsim.groups.Group`.

Rank order is Megatron's: tensor fastest, then sequence, then data, then pipeline,
``rank = tp_rank + tp * (sp_rank + sp * (dp_rank + dp * pp_rank))``. Sources:

- Megatron-LM ``megatron/core/parallel_state.py`` (commit d98e8a64): the default
  ``order="tp-cp-ep-dp-pp"`` of ``initialize_model_parallel`` (line 617) and equation (1) of
  ``generate_masked_orthogonal_rank_groups``'s docstring (line 292,
  ``global_rank = tp_rank + dp_rank * tp_size + pp_rank * tp_size * dp_size``); its docstring
  example (lines 755-765: 16 GPUs, tp 2, pp 4) is checked in tests/test_parallel_layout.py.
- DeepSpeed 0.19.8 ``runtime/pipe/topology.py:248``: ``PipeModelDataParallelTopology`` has
  axes ``['pipe', 'data', 'model']``, the last axis fastest: the same order.
- Ulysses' ranks: Megatron-DeepSpeed ``megatron/core/parallel_state.py`` (commit f4157bea)
  lines 209-211 make each sequence-parallel group consecutive ranks (sequence fastest, then
  data), and lines 145-147 refuse sequence parallelism together with tensor or pipeline
  parallelism; :func:`derive_layout` refuses the same combination.

With that order TP groups are consecutive ranks (inside one node when tp divides the GPUs
per node: the NVLink domain) and PP groups have the largest stride (across nodes once
tp·sp·dp fills a node).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ZsimInputError
from ..groups import Dim, Group

#: Dimensions from fastest- to slowest-varying rank coordinate (see the module docstring).
RANK_ORDER: tuple[Dim, ...] = (Dim.TENSOR, Dim.SEQUENCE, Dim.DATA, Dim.PIPELINE)


@dataclass(frozen=True)
class RankCoords:
    """One rank's coordinate in each dimension."""

    tp: int
    sp: int
    dp: int
    pp: int

    def of(self, dim: Dim) -> int:
        """The coordinate along ``dim``."""
        return {Dim.TENSOR: self.tp, Dim.SEQUENCE: self.sp, Dim.DATA: self.dp,
                Dim.PIPELINE: self.pp}[dim]


@dataclass(frozen=True)
class ParallelLayout:
    """Degrees of each dimension; ``world_size = tp * sp * dp * pp``. Make one with
    :func:`derive_layout` (which checks it)."""

    tp: int
    pp: int
    sp: int
    dp: int

    @property
    def world_size(self) -> int:
        """Ranks in the job."""
        return self.tp * self.sp * self.dp * self.pp

    def degree(self, dim: Dim) -> int:
        """The degree along ``dim``."""
        return {Dim.TENSOR: self.tp, Dim.SEQUENCE: self.sp, Dim.DATA: self.dp,
                Dim.PIPELINE: self.pp}[dim]

    def stride(self, dim: Dim) -> int:
        """Rank distance between neighbours along ``dim`` (product of the faster degrees)."""
        out = 1
        for d in RANK_ORDER[:RANK_ORDER.index(dim)]:
            out *= self.degree(d)
        return out

    def coords(self, rank: int) -> RankCoords:
        """The coordinates of global ``rank``."""
        if not 0 <= rank < self.world_size:
            raise ZsimInputError(f"rank {rank} is outside the world of {self.world_size} ranks")
        return RankCoords(*((rank // self.stride(d)) % self.degree(d) for d in RANK_ORDER))

    def rank(self, coords: RankCoords) -> int:
        """The global rank at ``coords``."""
        for d in RANK_ORDER:
            if not 0 <= coords.of(d) < self.degree(d):
                raise ZsimInputError(f"{d} coordinate {coords.of(d)} is outside degree {self.degree(d)}")
        return sum(coords.of(d) * self.stride(d) for d in RANK_ORDER)

    def group_ranks(self, dim: Dim) -> tuple[tuple[int, ...], ...]:
        """Every group of ``dim`` as its ranks, ordered by lowest rank (Megatron's groups)."""
        stride, size = self.stride(dim), self.degree(dim)
        starts = sorted(r for r in range(self.world_size) if self.coords(r).of(dim) == 0)
        return tuple(tuple(s + k * stride for k in range(size)) for s in starts)


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ZsimInputError(f"--{name} must be a positive integer, got {value!r}")
    return value


def derive_layout(world_size: int, tp: int = 1, pp: int = 1, sp: int = 1) -> ParallelLayout:
    """The layout of ``world_size`` ranks under those degrees; data parallel is the rest,
    ``dp = world / (tp * pp * sp)`` (DeepSpeed's data-parallel world excludes the sequence
    ranks: ``runtime/config.py:461-469``)."""
    world_size = _positive("world size", world_size)
    tp, pp, sp = _positive("tp", tp), _positive("pp", pp), _positive("sp", sp)
    if sp > 1 and (tp > 1 or pp > 1):
        raise ZsimInputError(
            f"--sp {sp} with --tp {tp} --pp {pp}: DeepSpeed-Ulysses sequence parallelism runs "
            "with data parallelism only (Megatron-DeepSpeed refuses it with tensor or pipeline "
            "parallelism)")
    model_ranks = tp * pp * sp
    if world_size % model_ranks:
        raise ZsimInputError(f"world size {world_size} is not divisible by tp*pp*sp = "
                             f"{tp}*{pp}*{sp} = {model_ranks}")
    return ParallelLayout(tp=tp, pp=pp, sp=sp, dp=world_size // model_ranks)


def check_model(layout: ParallelLayout, num_layers: int, num_heads: int, num_kv_heads: int) -> None:
    """Refuse a model the layout cannot split: heads (and KV heads) divisible by tp
    (Megatron-LM ``transformer_config.py:1446,1462``), heads divisible by sp (DeepSpeed
    0.19.8 ``sequence/layer.py:64``) and at least one layer per stage (DeepSpeed's
    ``PipelineModule`` partitions layers, so a stage without one is empty)."""
    if num_heads % layout.tp:
        raise ZsimInputError(f"--tp {layout.tp}: num_attention_heads {num_heads} is not divisible by it")
    if num_kv_heads % layout.tp:
        raise ZsimInputError(f"--tp {layout.tp}: num_key_value_heads {num_kv_heads} is not divisible by it")
    if num_heads % layout.sp:
        raise ZsimInputError(f"--sp {layout.sp}: num_attention_heads {num_heads} is not divisible "
                             "by it (Ulysses splits attention by heads)")
    if num_layers < layout.pp:
        raise ZsimInputError(f"--pp {layout.pp}: the model has only {num_layers} layers "
                             "(every stage needs one)")


def stage_layer_counts(num_layers: int, pp: int) -> tuple[int, ...]:
    """Decoder layers on each stage under DeepSpeed's ``partition_method="uniform"``
    (``runtime/utils.py:606`` partition_uniform: an even split, the first ``num_layers % pp``
    stages one layer more)."""
    if num_layers < pp:
        raise ZsimInputError(f"--pp {pp}: the model has only {num_layers} layers (every stage needs one)")
    base, extra = divmod(num_layers, pp)
    return tuple(base + (1 if stage < extra else 0) for stage in range(pp))


@dataclass(frozen=True)
class PipelineBatch:
    """The batch identity: ``global_batch = micro_batch * micro_batches * dp``, where the
    pipeline's micro-batches per step are DeepSpeed's gradient accumulation steps
    (``runtime/pipe/engine.py:93``: ``self.micro_batches = self.gradient_accumulation_steps()``;
    the identity is ``runtime/config.py:602``)."""

    micro_batch: int
    micro_batches: int
    dp: int

    @property
    def global_batch(self) -> int:
        """Samples per optimizer step over the whole job."""
        return self.micro_batch * self.micro_batches * self.dp


def pipeline_batch(layout: ParallelLayout, micro_batch: int, grad_accum: int | None = None,
                   global_batch: int | None = None) -> PipelineBatch:
    """The batch of one step from two of (micro batch, grad accum, global batch); given all
    three they must agree."""
    micro_batch = _positive("micro-batch", micro_batch)
    if grad_accum is None:
        if global_batch is None:
            raise ZsimInputError("give the gradient accumulation steps or the global batch")
        per_step = micro_batch * layout.dp
        if global_batch % per_step:
            raise ZsimInputError(f"global batch {global_batch} is not divisible by micro-batch "
                                 f"{micro_batch} x data parallel {layout.dp} = {per_step}")
        grad_accum = global_batch // per_step
    batch = PipelineBatch(micro_batch, _positive("grad-accum", grad_accum), layout.dp)
    if global_batch is not None and batch.global_batch != global_batch:
        raise ZsimInputError(f"global batch {global_batch} != micro-batch {micro_batch} x "
                             f"grad accum {grad_accum} x data parallel {layout.dp} = {batch.global_batch}")
    return batch


@dataclass(frozen=True)
class LayoutPlacement:
    """A layout on a cluster of ``num_nodes`` x ``gpus_per_node`` GPUs (rank r on node
    ``r // gpus_per_node``, as launchers number them) and each dimension's group."""

    layout: ParallelLayout
    gpus_per_node: int
    num_nodes: int
    groups: tuple[Group, ...]      # in RANK_ORDER, degree-1 dimensions left out

    def group(self, dim: Dim) -> Group | None:
        """The group of ``dim``, or None when its degree is 1."""
        return next((g for g in self.groups if g.dim is dim), None)

    def node_of(self, rank: int) -> int:
        """The node global ``rank`` runs on."""
        return rank // self.gpus_per_node


#: Group labels by dimension (what outputs print).
LABELS = {Dim.TENSOR: "tensor", Dim.SEQUENCE: "sequence", Dim.DATA: "data", Dim.PIPELINE: "pipeline"}


def _group_shape(ranks: tuple[int, ...], gpus_per_node: int) -> tuple[int, int]:
    """(ranks per node, nodes) of one group; refused when its nodes hold unequal numbers of
    its ranks (a Group cannot describe that placement)."""
    per_node: dict[int, int] = {}
    for r in ranks:
        per_node[r // gpus_per_node] = per_node.get(r // gpus_per_node, 0) + 1
    counts = set(per_node.values())
    if len(counts) != 1:
        raise ZsimInputError(f"ranks {list(ranks)} sit unevenly on nodes of {gpus_per_node} GPUs "
                             "(choose degrees that divide the GPUs per node)")
    return counts.pop(), len(per_node)


def group_shape(ranks: tuple[int, ...], gpus_per_node: int) -> tuple[int, int]:
    """(ranks per node, nodes) of the group of ``ranks`` (refused when uneven over nodes)."""
    return _group_shape(tuple(ranks), gpus_per_node)


def place_layout(layout: ParallelLayout, gpus_per_node: int, num_nodes: int,
                 allow_tp_across_nodes: bool = False) -> LayoutPlacement:
    """Place ``layout`` on the cluster: each dimension's groups as one :class:`Group` (every
    copy of a group has the same shape; all copies run at once, so copies sharing a node
    share its NICs). Tensor parallelism must stay inside a node (the NVLink domain) unless
    ``allow_tp_across_nodes``."""
    world = gpus_per_node * num_nodes
    if world != layout.world_size:
        raise ZsimInputError(f"the layout has {layout.world_size} ranks but the cluster has "
                             f"{num_nodes} x {gpus_per_node} = {world} GPUs")
    if layout.tp > gpus_per_node and not allow_tp_across_nodes:
        raise ZsimInputError(f"--tp {layout.tp} exceeds the {gpus_per_node} GPUs of a node: tensor "
                             "parallelism would leave the NVLink domain")
    groups = []
    for dim in RANK_ORDER:
        if layout.degree(dim) == 1:
            continue
        shapes = {_group_shape(g, gpus_per_node) for g in layout.group_ranks(dim)}
        if len(shapes) != 1:
            raise ZsimInputError(f"{LABELS[dim]} groups have different placements {sorted(shapes)} "
                                 f"on nodes of {gpus_per_node} GPUs")
        per_node, nodes = shapes.pop()
        groups.append(Group(LABELS[dim], dim, ranks_per_node=per_node, nodes=nodes, concurrent=True))
    return LayoutPlacement(layout, gpus_per_node, num_nodes, tuple(groups))


__all__ = ["RANK_ORDER", "RankCoords", "ParallelLayout", "derive_layout", "check_model",
           "stage_layer_counts", "PipelineBatch", "pipeline_batch", "LayoutPlacement", "LABELS",
           "group_shape", "place_layout"]
