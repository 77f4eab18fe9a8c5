"""The sparse mixture-of-experts block of Mixtral, Qwen2-MoE and Qwen3-MoE (HF transformers 5)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .nodes import SELF, Node, Param
from .parts import _gated_mlp, _linear, _pre_norm_layer

if TYPE_CHECKING:  # the spec is read by attribute only; zsim.model imports this package
    from ..model import ModelSpec


def _experts(spec: "ModelSpec", m: str, i: int) -> Node:
    """XExperts (MixtralExperts, Qwen2MoeExperts, Qwen3MoeExperts): all E experts' weights as
    two 3-D parameters, gate_up_proj (E, 2I, h) and down_proj (E, h, I), and the act_fn
    submodule (ACT2FN returns an nn.Module) that ``_apply_gate`` calls once between the two
    grouped GEMMs (integrations/moe.py grouped_mm_experts_forward). Its own op (the GEMMs,
    the sort/gather/scatter of the routed rows) runs around act_fn; zsim times both GEMMs as
    the op ``<experts>`` before act_fn (the order inside one module changes no hook)."""
    h, e, inter = spec.hidden_size, spec.num_experts, spec.expert_intermediate_size
    x = f"{m}.experts"
    return Node(x, "experts", i, (
        Param(f"{x}.gate_up_proj", (e, 2 * inter, h), x, i),   # (E, 2I, h)
        Param(f"{x}.down_proj", (e, h, inter), x, i),          # (E, h, I)
    ), children=(Node(f"{x}.act_fn", "expert_activation", i, op=f"{x}.act_fn", width=inter),),
        calls=(SELF, "act_fn"), op=x)


def _router(spec: "ModelSpec", m: str, i: int) -> Node:
    """XTopKRouter: weight (E, h); F.linear, fp32 softmax, top-k (and its normalisation)."""
    g = f"{m}.gate"
    return Node(g, "router", i, (Param(f"{g}.weight", (spec.num_experts, spec.hidden_size), g, i),), op=g)


def _moe_block(spec: "ModelSpec", p: str, i: int) -> Node:
    """The sparse MoE block as each family registers and calls it:

    - Mixtral (MixtralSparseMoeBlock): gate, experts; calls gate, experts;
    - Qwen2-MoE (Qwen2MoeSparseMoeBlock): gate, experts, shared_expert (a Qwen2MoeMLP of
      shared_expert_intermediate_size), shared_expert_gate (1, h); calls shared_expert,
      gate, experts, shared_expert_gate (sigmoid(gate(x)) · shared + routed);
    - Qwen3-MoE (Qwen3MoeSparseMoeBlock): experts registered BEFORE gate; calls gate, experts.
    """
    m = f"{p}.mlp"
    gate, experts = _router(spec, m, i), _experts(spec, m, i)
    if spec.family == "qwen3_moe":
        return Node(m, "moe_block", i, children=(experts, gate), calls=("gate", "experts"))
    if spec.shared_expert_size:
        shared = _gated_mlp(spec, m, i, "shared_expert", spec.shared_expert_size)
        shared_gate = _linear(f"{m}.shared_expert_gate", 1, spec.hidden_size, i, False, "expert_gate")
        return Node(m, "moe_block", i, children=(gate, experts, shared, shared_gate),
                    calls=("shared_expert", "gate", "experts", "shared_expert_gate"))
    return Node(m, "moe_block", i, children=(gate, experts), calls=("gate", "experts"))


def moe_layer(spec: "ModelSpec", i: int) -> Node:
    """MixtralDecoderLayer / Qwen2MoeDecoderLayer / Qwen3MoeDecoderLayer: Llama's layer with
    the sparse MoE block as ``mlp`` (every layer: decoder_sparse_step 1, no mlp_only_layers;
    zsim.model refuses other layouts)."""
    return _pre_norm_layer(spec, i, _moe_block(spec, f"model.layers.{i}", i))
