"""DeepSpeed-MoE expert parallelism in the CPU truth harness (used by worker.py).

A case with a ``deepspeed_moe`` dict (the keyword arguments of ``deepspeed.moe.layer.MoE``:
``ep_size``, ``k``, ``capacity_factor``, ``min_capacity``, ``drop_tokens``, ``use_residual``,
...) builds its Hugging Face MoE decoder (Mixtral, Qwen2-MoE, Qwen3-MoE, DeepSeek-V2/V3) and replaces every decoder
layer's ``mlp`` by :class:`DeepSpeedMoEMLP`: a ``deepspeed.moe.layer.MoE`` whose expert is a
``LlamaMLP`` of the family's expert width (gate_proj, up_proj, down_proj, SiLU) — how a user
turns an HF MoE model into a DeepSpeed-MoE one (zsim models exactly this layer, docs/moe.md).

It also records every collective each rank issues with its group (the comms logger keeps no
group): :func:`record_groups` wraps ``deepspeed.comm``'s collectives, so the sequence is
``[(op, bytes, group ranks), ...]``.
"""

from __future__ import annotations

from typing import Any

#: deepspeed.comm functions recorded with their group: (position of the tensor the comms
#: logger sizes, position of ``group``) in their signatures (deepspeed/comm/comm.py:241,
#: 317, 334, 368, 647, 697; timed_op hides the signature from inspect).
RECORDED = {"all_reduce": (0, 2), "all_to_all_single": (1, 4), "all_gather_into_tensor": (1, 2),
            "reduce_scatter_tensor": (1, 3), "broadcast": (0, 2), "reduce": (0, 3)}


def _expert_mlp(config: Any, inter: int = 0):
    """The expert: LlamaMLP (gate_proj, up_proj, down_proj) of the family's expert width (or
    ``inter``: DeepSeek's shared experts, a DeepseekV2MLP of the same modules)."""
    import transformers
    from transformers.models.llama.modeling_llama import LlamaMLP
    inter = inter or getattr(config, "moe_intermediate_size", None) or config.intermediate_size
    cfg = transformers.LlamaConfig(hidden_size=config.hidden_size, intermediate_size=inter,
                                   hidden_act="silu", mlp_bias=False)
    return LlamaMLP(cfg)


def _num_experts(config: Any) -> int:
    """The routed experts: num_local_experts (Mixtral), n_routed_experts (DeepSeek), num_experts."""
    for key in ("num_local_experts", "n_routed_experts", "num_experts"):
        if getattr(config, key, None):
            return getattr(config, key)
    raise ValueError("no expert count in the config")


def deepspeed_moe_mlp_class():
    """The ``mlp`` a user writes around ``deepspeed.moe.layer.MoE`` (built lazily: torch)."""
    import torch
    from deepspeed.moe.layer import MoE

    class DeepSpeedMoEMLP(torch.nn.Module):
        """``moe``: DeepSpeed's MoE layer; forward keeps its output (MoE returns
        (output, l_aux, exp_counts), layer.py:132) so the HF decoder layer is unchanged.
        Qwen2-MoE keeps its block's dense shared expert and shared_expert_gate, registered
        after ``moe`` and run as Qwen2MoeSparseMoeBlock.forward runs them."""

        def __init__(self, config: Any, moe_kwargs: dict):
            super().__init__()
            self.moe = MoE(hidden_size=config.hidden_size, expert=_expert_mlp(config),
                           num_experts=_num_experts(config), **moe_kwargs)
            shared = getattr(config, "shared_expert_intermediate_size", 0)
            self.shared_expert = self.shared_expert_gate = self.shared_experts = None
            if shared:
                from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeMLP
                self.shared_expert = Qwen2MoeMLP(config, intermediate_size=shared)
                self.shared_expert_gate = torch.nn.Linear(config.hidden_size, 1, bias=False)
            if getattr(config, "n_shared_experts", 0):
                self.shared_experts = _expert_mlp(config, config.moe_intermediate_size * config.n_shared_experts)

        def forward(self, hidden_states):
            if self.shared_experts is not None:   # DeepseekV2Moe.forward: routed + shared_experts(x)
                return self.moe(hidden_states)[0] + self.shared_experts(hidden_states)
            if self.shared_expert is None:
                return self.moe(hidden_states)[0]
            shared = self.shared_expert(hidden_states)
            routed = self.moe(hidden_states)[0]
            return routed + torch.sigmoid(self.shared_expert_gate(hidden_states)) * shared

    return DeepSpeedMoEMLP


def replace_moe_blocks(model, moe_kwargs: dict) -> None:
    """Replace every decoder layer's MoE ``mlp`` by a DeepSpeed-MoE layer (in place);
    DeepSeek's first first_k_dense_replace layers keep their dense MLP."""
    cls = deepspeed_moe_mlp_class()
    dense = getattr(model.config, "first_k_dense_replace", 0) or 0
    for i, layer in enumerate(model.model.layers):
        if i >= dense:
            layer.mlp = cls(model.config, dict(moe_kwargs))


def moe_param_groups(model) -> list[dict]:
    """The optimizer's param groups as DeepSpeed wants them with MoE layers (S12:873-874
    asserts a 'moe' group): deepspeed.moe.utils.split_params_into_different_moe_groups_for_optimizer,
    what engine.py:2330-2331 does itself for a config optimizer."""
    from deepspeed.moe.utils import split_params_into_different_moe_groups_for_optimizer
    return split_params_into_different_moe_groups_for_optimizer(
        {"params": list(model.parameters()), "name": "dense-params"})


def record_groups(sequence: list, ranks_of=None) -> None:
    """Append ``(op, bytes, sorted global ranks of the group, or None for the world)`` to
    ``sequence`` for every collective issued through deepspeed.comm (wrapping its module
    functions). ``ranks_of(group)`` reads a group's global ranks (default
    ``deepspeed.comm.get_all_ranks_from_group``; AutoTP's DeviceMesh groups need torch's,
    validation/cpu_truth/autotp.py)."""
    import deepspeed.comm as dist

    ranks_of = ranks_of or dist.get_all_ranks_from_group
    for name, (tensor_at, group_at) in RECORDED.items():
        original = getattr(dist, name)

        def wrapped(*args, __original=original, __name=name, __at=(tensor_at, group_at), **kwargs):
            tensor = args[__at[0]] if len(args) > __at[0] else kwargs.get("tensor")
            group = args[__at[1]] if len(args) > __at[1] else kwargs.get("group")
            ranks = sorted(ranks_of(group)) if group is not None else None
            sequence.append((__name, int(tensor.numel() * tensor.element_size()), ranks))
            return __original(*args, **kwargs)
        setattr(dist, name, wrapped)


def optimizer_facts(engine) -> list[dict]:
    """Per ZeRO param group: whether it is a MoE group, its flat and partition sizes, the
    size of the group it is partitioned over and its parameter count (stage 1/2 only)."""
    import deepspeed.comm as dist
    opt = engine.optimizer
    out = []
    if not hasattr(opt, "bit16_groups_flat"):
        return out
    for i, flat in enumerate(opt.bit16_groups_flat):
        group = opt.real_dp_process_group[i]
        world = dist.get_world_size(group=group)
        out.append({"moe": bool(opt.optimizer.param_groups[i].get("moe", False)),
                    "params": len(opt.bit16_groups[i]),
                    "flat_numel": int(flat.numel()), "partition_numel": int(flat.numel()) // world,
                    "group_size": int(world),
                    "group_ranks": sorted(dist.get_all_ranks_from_group(group))})
    return out


def parameter_numels(model) -> dict[str, int]:
    """``{name: numel}`` of one rank's module (its local experts only)."""
    return {n: int(p.numel()) for n, p in model.named_parameters()}
