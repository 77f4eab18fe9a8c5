"""DeepSpeed-MoE expert parallelism in the schedule: ZeRO-1/2 param groups, the all-to-alls
and the step's collectives (deepspeed 0.19.8; letters as in :mod:`zsim.parallel.expert`:
S12 = runtime/zero/stage_1_and_2.py, MU = moe/utils.py, RU = runtime/utils.py,
ENG = runtime/engine.py, SM = moe/sharded_moe.py, L = moe/layer.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ZsimInputError
from ..groups import WORLD, Group
from ..modeltree.dsmoe import dispatch_op, expert_op
from .expert import MOE_PARAM_GROUP_MAX_NUMEL, ExpertGroups, ExpertPlan

if TYPE_CHECKING:
    from ..dsconfig import RunConfig
    from ..model import ModelSpec
    from ..schedule.emit import Emitter
    from ..schedule.order import Module


# ---- ZeRO-1/2 layout over several param groups --------------------------------------------------

@dataclass(frozen=True)
class ParamGroup:
    """One optimizer param group as ZeRO-1/2 flattens it: its parameters (indices into
    ``ModelSpec.parameters()``, in order), the group it is partitioned over and its size."""

    params: tuple[int, ...]
    group: Group
    world: int
    moe: bool


@dataclass(frozen=True)
class GroupedLayout:
    """Several stage-1/2 flat param groups (the :class:`zsim.schedule.params.FlatLayout`
    interface the bucket code reads): a slice's owner is (param group, rank in its group)."""

    numels: tuple[int, ...]
    groups: tuple[ParamGroup, ...]
    layouts: tuple[Any, ...]                 # FlatLayout per group
    where: tuple[tuple[int, int], ...]       # per parameter: (group, index in the group)

    @property
    def partition_numel(self) -> int:
        """Elements one rank owns over all its param groups."""
        return sum(lay.partition_numel for lay in self.layouts)

    @property
    def padded_numel(self) -> int:
        """Sum of the groups' padded flat buffers (this rank's 16-bit parameters)."""
        return sum(lay.padded_numel for lay in self.layouts)

    def partition_numels(self) -> list[int]:
        """Elements this rank owns in each param group (each is stepped on its own)."""
        return [lay.partition_numel for lay in self.layouts]

    def slices(self, index: int) -> list[tuple[tuple[int, int], int]]:
        """``[((param group, owning rank), numel), ...]`` of parameter ``index``."""
        g, local = self.where[index]
        return [((g, rank), n) for rank, n in self.layouts[g].slices(local)]

    def group_of(self, owner: tuple[int, int]) -> Group:
        """The process group a slice owned by ``owner`` is reduced over."""
        return self.groups[owner[0]].group

    def flat_order(self) -> list[int]:
        """Parameters as ZeRO-1's reduce_gradients walks them: group by group (S12:971-975)."""
        return [p for g in self.groups for p in g.params]


def moe_layout(spec: "ModelSpec", world: int, groups: ExpertGroups,
               max_group_numel: int = MOE_PARAM_GROUP_MAX_NUMEL) -> GroupedLayout:
    """The param groups DeepSpeed builds for ``spec`` (MU:72-149): the non-expert
    parameters in one group over all ranks, then the expert parameters in order, cut into
    groups of at most ``max_group_numel`` elements (:data:`MOE_PARAM_GROUP_MAX_NUMEL`, what
    the engine passes), over the expert-data-parallel group."""
    from ..schedule.params import flat_layout
    params = spec.parameters()
    expert = [i for i, p in enumerate(params) if ".deepspeed_experts." in p.name]
    chosen = set(expert)
    dense = tuple(i for i in range(len(params)) if i not in chosen)
    chunks: list[list[int]] = []
    size = 0
    for i in expert:
        n = params[i].numel
        if n > max_group_numel:
            # MU:134-137 would append an empty group before it; not modelled
            raise ZsimInputError(f"expert parameter {params[i].name} has {n} elements, more than DeepSpeed's MoE "
                                 f"param group limit {max_group_numel} (deepspeed/moe/utils.py:74)")
        if chunks and size + n <= max_group_numel:
            chunks[-1].append(i)
            size += n
        else:
            chunks.append([i])
            size = n
    pgroups = [ParamGroup(dense, WORLD, world, False)] + [
        ParamGroup(tuple(c), groups.expert_data, groups.expert_data_size, True) for c in chunks]
    numels = tuple(p.numel for p in params)
    layouts = tuple(flat_layout([numels[i] for i in g.params], g.world) for g in pgroups)
    where: list[tuple[int, int]] = [(0, 0)] * len(params)
    for gi, g in enumerate(pgroups):
        for li, p in enumerate(g.params):
            where[p] = (gi, li)
    return GroupedLayout(numels, tuple(pgroups), layouts, tuple(where))


# ---- the all-to-alls in the forward and backward walks --------------------------------------------

class AllToAllHooks:
    """Pre/post hooks for :func:`zsim.schedule.passes.forward` / ``backward`` that emit each
    DeepSpeed-MoE layer's all-to-alls on the expert-parallel group (see the module
    docstring): forward after MOELayer's own op (dispatch) and after the last local expert
    (combine); backward before the last expert's backward (the combine's gradient) and
    after the first expert's first op (the dispatch's gradient)."""

    def __init__(self, em: "Emitter", spec: "ModelSpec", plan: ExpertPlan, group: Group):
        self.em, self.plan, self.group = em, plan, group
        n, last = plan.local_experts, plan.local_experts - 1
        self.dispatch = {dispatch_op(spec, i): i for i in range(spec.num_layers)}
        self.combine = {expert_op(spec, i, last, "down_proj"): i for i in range(spec.num_layers)}
        self.first = {expert_op(spec, i, 0, "gate_proj"): i for i in range(spec.num_layers)}
        self.active = plan.moe.ep_size > 1 and n > 0

    def _emit(self, name: str) -> None:
        self.em.collective(name, "all_to_all_single", self.plan.all_to_all_bytes, group=self.group)

    def pre(self, pos: int, m: "Module", pass_: str) -> None:
        """Before a module's op: the combine's backward all-to-all."""
        if self.active and pass_ == "bwd" and m.name in self.combine:
            self._emit(f"moe_combine_grad_{self.combine[m.name]}")

    def post(self, pos: int, m: "Module", pass_: str) -> None:
        """After a module's op: forward (or recomputed) dispatch and combine; the dispatch's
        backward all-to-all."""
        if not self.active:
            return
        if pass_ in ("fwd", "recompute"):
            if m.name in self.dispatch:
                self._emit(f"moe_dispatch_{self.dispatch[m.name]}")
            elif m.name in self.combine:
                self._emit(f"moe_combine_{self.combine[m.name]}")
        elif pass_ == "bwd" and m.name in self.first:
            self._emit(f"moe_dispatch_grad_{self.first[m.name]}")


# ---- the step --------------------------------------------------------------------------------------

def moe_step_collectives(layout: GroupedLayout, check_overflow: bool, compute_norm: bool):
    """The ``collectives(em, stretch)`` callback of the stage-1/2 step with MoE param groups:
    the overflow flag over all ranks (S12:3242), one norm per param group over all ranks
    (S12:2693, called after each group's norm stretch) and, after the last group's, one per
    expert group over its own group (S12:2957-2958 -> S12:3184-3191)."""
    norms_done = [0]

    def collectives(em: "Emitter", stretch: str) -> None:
        if stretch == "overflow" and check_overflow:
            em.collective("overflow_check", "all_reduce", 1)
        if stretch == "norm" and compute_norm:
            em.collective("grad_norm", "all_reduce", 4)
            norms_done[0] += 1
            if norms_done[0] == len(layout.groups):
                for g in layout.groups:
                    if g.moe:
                        em.collective("expert_grad_norm", "all_reduce", 4, group=g.group)
    return collectives


def moe_step_allgathers(em: "Emitter", layout: GroupedLayout, param_bytes: int) -> None:
    """One all_gather_into_tensor per param group over its group, none for a group of one
    rank (RU:1008-1016)."""
    for g, lay in zip(layout.groups, layout.layouts):
        if g.world > 1:
            em.collective("allgather_params", "all_gather_into_tensor", lay.partition_numel * param_bytes,
                          group=g.group, buffer_bytes=lay.padded_numel * param_bytes)


def stage0_reductions(layout: GroupedLayout) -> list[tuple[list[int], Group]]:
    """Stage 0: the engine's buffered_allreduce_fallback splits the gradients of
    ``module.parameters()`` into non-expert ones, all-reduced over all ranks first, and the
    expert ones, all-reduced over the expert-data-parallel group (ENG:3841-3936; both
    chunked at 5e8 elements by allreduce_no_retain, ENG:3828-3839)."""
    n = layout.numels
    dense = [n[p] for g in layout.groups if not g.moe for p in g.params if n[p]]
    expert = [n[p] for g in layout.groups if g.moe for p in g.params if n[p]]
    out = [(dense, WORLD)]
    if expert:
        out.append((expert, next(g.group for g in layout.groups if g.moe)))
    return out


def stage0_step_collectives(run: "RunConfig", groups: ExpertGroups):
    """Stage 0's step with MoE parameters: FP16_Optimizer (bf16 and fp16) checks overflow
    with CheckOverflow, which all-reduces the flag over the largest expert-parallel group
    when there are MoE parameters (RU:297-310); fp32 has no such check."""
    def collectives(em: "Emitter", stretch: str) -> None:
        if stretch == "overflow" and run.precision != "fp32" and groups.ep_size > 0:
            em.collective("expert_overflow_check", "all_reduce", 1, group=groups.expert)
    return collectives
