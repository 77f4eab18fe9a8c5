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

The schedule side (param groups, all-to-alls, step) is :mod:`zsim.parallel.expert_zero`, the
kernels and activation bytes :mod:`zsim.parallel.expert_work`.

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
from ..groups import ALL, Dim, Group
from ..modeltree.dsmoe import DeepSpeedMoE

if TYPE_CHECKING:
    from ..dsconfig import RunConfig
    from ..model import ModelSpec

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
