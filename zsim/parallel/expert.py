"""DeepSpeed-MoE expert parallelism (deepspeed 0.19.8) without ZeRO and with ZeRO stages 1 and 2.

Sources (deepspeed 0.19.8): L = moe/layer.py, SM = moe/sharded_moe.py, MU = moe/utils.py,
G = utils/groups.py, S12 = runtime/zero/stage_1_and_2.py, ENG = runtime/engine.py,
RU = runtime/utils.py.

- **Groups** (G:370-445, legacy path, no tensor parallelism): the expert-parallel group is
  ``ep_size`` CONSECUTIVE ranks ([0, 1], [2, 3], ...: the tokens' all-to-alls run in it);
  the expert-data-parallel group is every ``ep_size``-th rank ([0, 2, 4, ...], world/ep
  ranks: expert gradients are reduced and expert states partitioned in it); non-expert
  parameters keep the full data-parallel group. :func:`expert_groups` places both on nodes.
- **Param groups**: expert parameters (``allreduce = False``, experts.py:24-26) go to their
  own optimizer param groups of at most 178,956,971 elements each (MU:72-149, called by
  ENG:2330-2331 for a config optimizer; a client optimizer must be built the same way,
  S12:873-874 asserts it); ZeRO-1/2 flattens and partitions every group over its own
  group (``real_dp_process_group``, S12:293, 880-881, 441): :func:`moe_layout`.
- **Gradients**: the one ipg bucket holds expert and non-expert gradients alike
  (S12:1414-1478); ``average_tensor`` reduces each slice over its parameter's group and
  issues one all-reduce (chunked at reduce_bucket_size) per group, in the order the groups
  first appear in the bucket (S12:1628-1712).
- **Step**: one 4-byte norm all-reduce per param group over the full group (S12:2693,
  2944-2953), then one per expert group over its expert-data-parallel group
  (_average_expert_grad_norms, S12:3184-3190); one all_gather_into_tensor per param group
  over its group, skipped where the group has one rank (RU:1008-1016).
- **Tokens**: per MoE layer and micro-batch, forward: the gate, the dispatch all-to-all of
  the [E, C, M] buffer, the local experts on their chunks, the combine all-to-all of the
  [E, C, M] output (SM:649-755); backward: the two all-to-alls again (_AllToAll.backward
  applies itself, SM:107-109); with ep_size 1 none (SM:700-703, 729-732). Activation
  checkpointing recomputes the forward, all-to-alls included. Capacity: :func:`capacity`.

ZeRO-3 is refused as DeepSpeed refuses it (ENG:2214-2215: "Native DeepSpeed MoE is not
supported with ZeRO Stage 3"); offload and a few bucket options are not modelled and
refused (:func:`check_run`). Stage 0: :func:`stage0_reductions`, :func:`stage0_step_collectives`.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import ZsimInputError
from ..groups import ALL, WORLD, Dim, Group
from ..modeltree.dsmoe import DeepSpeedMoE, dispatch_op, expert_op

if TYPE_CHECKING:
    from ..dsconfig import RunConfig
    from ..model import ModelSpec
    from ..schedule.emit import Emitter
    from ..schedule.order import Module

#: MU:74: split_params_into_different_moe_groups_for_optimizer's max_group_size default.
MOE_PARAM_GROUP_MAX_NUMEL = 178_956_971


# ---- input ----------------------------------------------------------------------------------

def moe_config(given: Mapping[str, Any] | None, ep: int | None) -> DeepSpeedMoE | None:
    """The DeepSpeed-MoE layer settings from a user's MoE keyword arguments (``given``, as
    passed to ``deepspeed.moe.layer.MoE``) and ``--ep``; None when neither asks for
    DeepSpeed-MoE layers (the model's own MoE blocks, every rank holding every expert)."""
    if given is None and ep is None:
        return None
    values = dict(given or {})
    known = {f.name for f in fields(DeepSpeedMoE)}
    unknown = sorted(set(values) - known - {"hidden_size", "expert", "num_experts"})
    if unknown:
        raise ZsimInputError(f"DeepSpeed-MoE config: unknown key {unknown[0]!r} "
                             f"(deepspeed.moe.layer.MoE takes {', '.join(sorted(known))})")
    for key in ("hidden_size", "expert", "num_experts"):
        if key in values:
            raise ZsimInputError(f"DeepSpeed-MoE config: {key!r} comes from the model, not the MoE config")
    if ep is not None:
        if "ep_size" in values and values["ep_size"] != ep:
            raise ZsimInputError(f"--ep {ep} disagrees with the MoE config's ep_size {values['ep_size']!r}")
        values["ep_size"] = ep
    return DeepSpeedMoE(**values)


def with_deepspeed_moe(spec: "ModelSpec", given: "str | Any | Mapping[str, Any] | None",
                       ep: int | None) -> "ModelSpec":
    """``spec`` with DeepSpeed-MoE layers as ``--moe-config`` (a JSON file or a mapping of
    MoE keyword arguments) and ``--ep`` describe them; ``spec`` itself when neither is given."""
    import dataclasses
    if given is not None and not isinstance(given, Mapping):
        from ..inputs import read_json_file
        given = read_json_file(given, "DeepSpeed-MoE config")
        if not isinstance(given, Mapping):
            raise ZsimInputError("DeepSpeed-MoE config: expected a JSON object of deepspeed.moe.layer.MoE arguments")
    moe = moe_config(given, ep)
    if moe is None:
        return spec
    return dataclasses.replace(spec, deepspeed_moe=moe)


def _f32(x: float) -> float:
    """``x`` rounded to float32 (torch.tensor(python float) is float32)."""
    return struct.unpack("f", struct.pack("f", x))[0]


def capacity(tokens: int, num_experts: int, k: int, capacity_factor: float, min_capacity: int) -> int:
    """Tokens each expert takes from one rank in training (drop_tokens): SM:152-162
    ``max(ceil(tokens / E * factor), min_capacity)`` with factor = capacity_factor × k
    (top-1 SM:232, top-2 SM:364 ``capacity_factor * 2``, top-k SM:446 ``* k``). The factor is
    a float32 tensor, so the product is float32 as torch computes it."""
    factor = _f32(capacity_factor * k)
    ratio = _f32(tokens / num_experts)
    return max(int(math.ceil(_f32(ratio * factor))), min_capacity)


@dataclass(frozen=True)
class ExpertPlan:
    """What one rank's DeepSpeed-MoE layers do per micro-batch: ``tokens`` S = b·s routed by
    the gate, ``capacity`` C per expert, the [E, C, M] buffer each all-to-all moves."""

    moe: DeepSpeedMoE
    num_experts: int
    local_experts: int
    k: int
    tokens: int
    capacity: int
    hidden_size: int
    value_bytes: int

    @property
    def buffer_numel(self) -> int:
        """Elements of the dispatched (and combined) tensor [E, C, M] (SM:681, 716-719)."""
        return self.num_experts * self.capacity * self.hidden_size

    @property
    def all_to_all_bytes(self) -> int:
        """Bytes one all_to_all_single sends (the comms logger's message size)."""
        return self.buffer_numel * self.value_bytes

    @property
    def expert_rows(self) -> int:
        """Rows each local expert runs on: its chunk of the received buffer, ep·C
        (dispatched reshaped to (ep, E_local, C, M) and chunked over E_local, SM:716,
        experts.py:29)."""
        return self.moe.ep_size * self.capacity


def expert_plan(spec: "ModelSpec", micro_batch: int, seq_len: int, value_bytes: int) -> ExpertPlan:
    """The :class:`ExpertPlan` of ``spec``'s DeepSpeed-MoE layers at this micro-batch."""
    moe = spec.deepspeed_moe
    if moe is None:
        raise ZsimInputError(f"model {spec.name!r} has no DeepSpeed-MoE layers")
    k = moe.top_k(spec)
    tokens = micro_batch * seq_len
    if k == 1 and tokens < moe.min_capacity:
        # SM:278-279 asserts it in top-1 gating
        raise ZsimInputError(f"DeepSpeed-MoE top-1: {tokens} tokens per micro-batch are fewer than min_capacity "
                             f"{moe.min_capacity} (deepspeed/moe/sharded_moe.py:278)")
    c = capacity(tokens, spec.num_experts, k, moe.capacity_factor, moe.min_capacity)
    return ExpertPlan(moe, spec.num_experts, moe.local_experts(spec), k, tokens, c, spec.hidden_size, value_bytes)


def global_parameter_count(spec: "ModelSpec") -> int:
    """Parameters of the whole model over all ranks: one rank's non-expert parameters plus
    every expert (each rank holds num_experts / ep_size of them)."""
    params = spec.parameters()
    expert = sum(p.numel for p in params if ".deepspeed_experts." in p.name)
    moe = spec.deepspeed_moe
    scale = moe.ep_size if moe is not None else 1
    return sum(p.numel for p in params) - expert + expert * scale


def expert_note(spec: "ModelSpec", run: "RunConfig") -> str:
    """The line predict prints about the DeepSpeed-MoE layers of the run."""
    plan = expert_plan(spec, run.micro_batch, run.seq_len, run.param_bytes)
    moe = plan.moe
    return (f"DeepSpeed-MoE layers, ep_size {moe.ep_size}: each rank holds {plan.local_experts} of "
            f"{plan.num_experts} experts per layer ({spec.num_parameters / 1e9:.2f}B of "
            f"{global_parameter_count(spec) / 1e9:.2f}B parameters); top-{plan.k}, capacity {plan.capacity} "
            f"tokens per expert (capacity_factor {moe.capacity_factor:g}, min_capacity {moe.min_capacity}); "
            + (f"{6 if run.activation_checkpointing else 4} all-to-alls of {plan.all_to_all_bytes / 2**20:.1f} MiB "
               "per layer and micro-batch" if moe.ep_size > 1 else "no all-to-all (ep_size 1)")
            + "; experts compute on the full [E, C, M] buffer, padded whatever the routing")


# ---- groups -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExpertGroups:
    """The expert-parallel group (all-to-alls) and the expert-data-parallel group (expert
    gradients and states), placed on the nodes."""

    expert: Group
    expert_data: Group
    ep_size: int
    expert_data_size: int


def expert_groups(world: int, ep: int, gpus_per_node: int | None) -> ExpertGroups:
    """Place G:433-445's groups (``use_data_before_expert_parallel_`` off): ``ep``
    consecutive ranks, inside one node when ep divides the node's GPUs; every ep-th rank
    for the expert-data-parallel group."""
    if world % ep:
        # G:417 _ensure_divisibility(world, ep)
        raise ZsimInputError(f"--ep {ep} does not divide the {world} ranks (deepspeed/utils/groups.py:417)")
    per = min(gpus_per_node or world, world)
    edp = world // ep
    if ep <= per:
        if per % ep:
            raise ZsimInputError(f"--ep {ep} does not divide the {per} GPUs of a node: its groups would straddle "
                                 "nodes unevenly")
        expert = Group(f"expert_{ep}", Dim.EXPERT, ranks_per_node=ep, nodes=1, concurrent=True)
        # every ep-th rank: per/ep of them in each node, on every node; ep copies per node
        expert_data = Group(f"expert_data_{edp}", Dim.DATA, ranks_per_node=per // ep, nodes=ALL,
                            concurrent=True)
    else:
        if ep % per:
            raise ZsimInputError(f"--ep {ep} is not a multiple of the {per} GPUs of a node")
        expert = Group(f"expert_{ep}", Dim.EXPERT, ranks_per_node=ALL, nodes=ep // per)
        # one rank per node, on world/ep nodes, every local rank running its own copy
        expert_data = Group(f"expert_data_{edp}", Dim.DATA, ranks_per_node=1, nodes=edp, concurrent=True)
    return ExpertGroups(expert, expert_data, ep, edp)


# ---- run checks -------------------------------------------------------------------------------

def check_run(spec: "ModelSpec", run: "RunConfig") -> None:
    """Refuse, in one line, what DeepSpeed refuses with MoE layers or zsim does not model."""
    from ..dsconfig import OffloadDevice
    z = run.zero
    if z.stage == 3:
        raise ZsimInputError("DeepSpeed-MoE layers with ZeRO-3: DeepSpeed refuses them (\"Native DeepSpeed MoE is "
                             "not supported with ZeRO Stage 3\", deepspeed/runtime/engine.py:2214)")
    if z.offload_optimizer != OffloadDevice.NONE or z.offload_param != OffloadDevice.NONE:
        raise ZsimInputError("DeepSpeed-MoE layers with ZeRO-Offload are not modelled")
    for key, value, modelled in (("round_robin_gradients", z.round_robin_gradients, False),
                                 ("reduce_scatter", z.reduce_scatter, True),
                                 ("contiguous_gradients", z.contiguous_gradients, True),
                                 ("use_multi_rank_bucket_allreduce", z.use_multi_rank_bucket_allreduce, True)):
        if value != modelled:
            raise ZsimInputError(f"DeepSpeed-MoE layers with zero_optimization.{key}={str(value).lower()} are not "
                                 "modelled")
    if run.resolved.get("use_data_before_expert_parallelism"):
        # runtime/constants.py:419, config.py:537: the D + E layout (G:435-436) strides the
        # expert-parallel group across the data-parallel ranks instead
        raise ZsimInputError("DeepSpeed-MoE with use_data_before_expert_parallelism=true is not modelled "
                             "(only the default E + D layout of deepspeed/utils/groups.py:437-438)")
    expert_plan(spec, run.micro_batch, run.seq_len, run.param_bytes)


def expert_space(space: Any) -> Any:
    """``plan``'s search space (a zsim.decide.space.SearchSpace) cut to what is modelled
    with DeepSpeed-MoE layers: stages 0, 1 and 2 without offload (:func:`check_run`)."""
    import dataclasses
    stages = tuple(s for s in space.stages if s in (0, 1, 2))
    none_opt = tuple(o for o in space.offload_optimizer if str(o) == "none")
    none_par = tuple(o for o in space.offload_param if str(o) == "none")
    if not stages or not none_opt or not none_par:
        raise ZsimInputError("DeepSpeed-MoE layers are modelled with stages 0, 1 and 2 without offload; "
                             "the given stage/offload leave nothing to search")
    return dataclasses.replace(space, stages=stages, offload_optimizer=none_opt, offload_param=none_par)


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


def moe_layout(spec: "ModelSpec", world: int, groups: ExpertGroups) -> GroupedLayout:
    """The param groups DeepSpeed builds for ``spec`` (MU:72-149): the non-expert
    parameters in one group over all ranks, then the expert parameters in order, cut into
    groups of at most :data:`MOE_PARAM_GROUP_MAX_NUMEL` elements, over the expert-data-
    parallel group."""
    from ..schedule.params import flat_layout
    params = spec.parameters()
    expert = [i for i, p in enumerate(params) if ".deepspeed_experts." in p.name]
    chosen = set(expert)
    dense = tuple(i for i in range(len(params)) if i not in chosen)
    chunks: list[list[int]] = []
    size = 0
    for i in expert:
        n = params[i].numel
        if n > MOE_PARAM_GROUP_MAX_NUMEL:
            # MU:134-137 would append an empty group before it; not modelled
            raise ZsimInputError(f"expert parameter {params[i].name} has {n} elements, more than DeepSpeed's MoE "
                                 f"param group limit {MOE_PARAM_GROUP_MAX_NUMEL} (deepspeed/moe/utils.py:74)")
        if chunks and size + n <= MOE_PARAM_GROUP_MAX_NUMEL:
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
    (S12:2693) and one per expert group over its own group (S12:3190)."""
    def collectives(em: "Emitter", stretch: str) -> None:
        if stretch == "overflow" and check_overflow:
            em.collective("overflow_check", "all_reduce", 1)
        if stretch == "norm" and compute_norm:
            for _ in layout.groups:
                em.collective("grad_norm", "all_reduce", 4)
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


# ---- kernels ---------------------------------------------------------------------------------------

#: Node kinds priced by :func:`ds_moe_kernels`.
DS_MOE_KINDS = frozenset({"ds_moe_gate", "ds_moe_layer", "expert_linear", "expert_mlp_activation"})


def ds_moe_kernels(w: Any, node: Any, bwd: bool) -> tuple:
    """Kernels of a DeepSpeed-MoE layer's ops on one rank (``w``: a zsim.workload.Workload).

    - gate (SM:568-590): the input and wg cast to fp32, F.linear (S × h)·(h × E) in fp32,
      softmax, top-k, masks and cumsum over S × E (about a dozen fp32 passes);
    - MOELayer's own op: the sparse encode gathers the [E, C, M] buffer (SM:188-201) and the
      decode gathers S·k rows and sums them weighted in fp32 (SM:204-213);
    - each expert Linear: one GEMM over its ep·C dispatched rows (backward two);
    - the expert activation: SiLU(gate)·up over ep·C rows of width I.
    """
    from ..workload import Kernel, _gemm, _mem
    m, p = w.model, w.param_bytes
    plan = expert_plan(m, w.micro_batch, w.seq_len, p)
    s, e, h = plan.tokens, plan.num_experts, plan.hidden_size
    twice = 2 if bwd else 1
    if node.kind == "ds_moe_gate":
        gemm = (_gemm(s, e, h), _gemm(s, h, e)) if bwd else (_gemm(s, e, h),)
        mem = s * h * (p + 4) + s * e * 4 * 12
        return gemm + (_mem(mem * twice, launches=20 * twice),)
    if node.kind == "ds_moe_layer":
        encode = plan.buffer_numel * 2 * p
        decode = s * plan.k * h * (p + 4 + 4) + s * h * (4 + p)
        return (_mem((encode + decode) * twice, launches=12 * twice),)
    rows = plan.expert_rows
    if node.kind == "expert_linear":
        out, in_ = node.params[0].shape
        return (_gemm(rows, out, in_), _gemm(rows, in_, out)) if bwd else (_gemm(rows, out, in_),)
    if node.kind == "expert_mlp_activation":
        return (_mem(3 * rows * node.width * p * twice, launches=2 * twice),)
    return (Kernel("memory"),)


# ---- memory -----------------------------------------------------------------------------------------

def saved_activation_bytes(w: Any) -> int:
    """Bytes one DeepSpeed-MoE layer's MLP keeps for backward, as measured on CPU by
    validation/cpu_truth/expert_activation_memory.py (every saved tensor listed by a dispatch
    mode; tests/test_expert_parallel.py compares whole layers):

    - gate (SM:568-572): the fp32 copies of the input (S·h·4) and of wg (E·h·4), the fp32
      softmax (S·E·4), the expert mean and counts (E·(4 + 8));
    - the gating function's saved intermediates: top-1 (SM:216-305) the int64 mask product
      S·E·8, the route gates S·4 and indices S·8; top-2 (SM:322-400) two fp32 masks
      2·S·E·4, four fp32 S-vectors and the stacked gates and indices k·S·(4 + 8); top-k
      (SM:415-497) the normalised and masked gates 2·S·E·4, the bool mask S·E, two fp32
      S-vectors, the top-k indices and stacked routes k·S·(8 + 4 + 8);
    - the encode's slot map (E·C + 1)·8 and the dispatched [E, C, M] buffer E·C·h·p that the
      experts' Linears read (chunks are views of it, experts.py:29);
    - per dispatched row (E·C over the local experts: E/ep experts × ep·C rows) the gate and
      up outputs, the SiLU and the product: 4·I·p (LlamaMLP);
    - the decode's gathered rows k·S·h·p (SM:208);
    - use_residual (L:124-131): the dense expert over S tokens (4·I·p per token and its
      output h·p), the routed output cast back (h·p) and the coefficients' softmax 2·p.

    The all-to-all saves nothing (SM:97-109), so the bytes do not depend on ep. The MLP's
    input (post_attention_layernorm's p-byte output, which zsim's norm term counts because
    Llama's gate_proj saves it) is saved by nobody here: the gate keeps its fp32 copy and
    the encode's index_select keeps only its indices; so it is subtracted unless the
    residual expert reads it."""
    m, p = w.model, w.param_bytes
    plan = expert_plan(m, w.micro_batch, w.seq_len, p)
    s, e, h, k, c = plan.tokens, plan.num_experts, plan.hidden_size, plan.k, plan.capacity
    inter = m.expert_intermediate_size
    gate = s * h * 4 + e * h * 4 + s * e * 4 + e * 12
    if k == 1:
        gating = s * e * 8 + s * 4 + s * 8
    elif k == 2:
        gating = 2 * s * e * 4 + 4 * s * 4 + k * s * (4 + 8)
    else:
        gating = 2 * s * e * 4 + s * e + 2 * s * 4 + k * s * (8 + 4 + 8)
    encode = (e * c + 1) * 8 + plan.buffer_numel * p
    experts = 4 * plan.local_experts * plan.expert_rows * inter * p
    decode = k * s * h * p
    residual = s * (4 * inter * p + 2 * h * p + 2 * p) if plan.moe.use_residual else -s * h * p
    return gate + gating + encode + experts + decode + residual


def backward_working_bytes(w: Any) -> int:
    """Transient bytes during a DeepSpeed-MoE layer's backward (estimate): the gradients of
    the residual stream (2·S·h·p), of one expert's intermediates (3·ep·C·I·p) and the
    all-to-all's input and output buffers of the [E, C, M] gradient (_AllToAll allocates its
    output with empty_like, SM:102-104)."""
    m, p = w.model, w.param_bytes
    plan = expert_plan(m, w.micro_batch, w.seq_len, p)
    return (2 * plan.tokens * plan.hidden_size * p + 3 * plan.expert_rows * m.expert_intermediate_size * p
            + 2 * plan.buffer_numel * p)
