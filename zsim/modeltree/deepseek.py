"""DeepSeek-V2 and DeepSeek-V3 (HF transformers 5): multi-head latent attention and DeepSeek-MoE.

Read from transformers 5.24 ``models/deepseek_v2/modeling_deepseek_v2.py`` and
``models/deepseek_v3/modeling_deepseek_v3.py`` (the two build the same module tree):

- DeepseekV2Attention registers q_proj (no q_lora_rank) or q_a_proj, q_a_layernorm, q_b_proj;
  then kv_a_proj_with_mqa (h -> kv_lora_rank + qk_rope_head_dim), kv_a_layernorm (over the
  latent), kv_b_proj (latent -> heads·(qk_nope + v)), o_proj (heads·v -> h). q_proj, q_b_proj
  and kv_b_proj never have biases; q_a_proj, kv_a_proj_with_mqa and o_proj follow
  attention_bias. forward() calls them in that order, RoPE between kv_a_layernorm and
  kv_b_proj, then SDPA and o_proj;
- DeepseekV2DecoderLayer: a Llama-shaped layer whose ``mlp`` is a dense DeepseekV2MLP
  (intermediate_size) for layer_idx < first_k_dense_replace, else DeepseekV2Moe: experts
  (fused 3-D), gate (DeepseekV2TopkRouter, weight (E, h)), shared_experts (a DeepseekV2MLP of
  n_shared_experts · moe_intermediate_size), called gate, experts, shared_experts. Unlike the
  Mixtral/Qwen blocks it is NOT one of DeepSpeed's default ZeRO-3 leaf modules
  (zero/leaf_module_config.py:11-15), so every module below it gets its own hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .dsmoe import deepspeed_moe_block
from .moe import _experts, _router
from .nodes import SELF, Node
from .parts import _gated_mlp, _linear, _norm, _pre_norm_attention_layer

if TYPE_CHECKING:  # the spec is read by attribute only; zsim.model imports this package
    from ..model import ModelSpec


def mla_attention(spec: "ModelSpec", prefix: str, i: int) -> Node:
    """DeepseekV2Attention / DeepseekV3Attention (see the module docstring); its own op is RoPE,
    the q/k assembly and SDPA with q/k head dim qk_nope + qk_rope and v head dim v_head_dim."""
    a = f"{prefix}.self_attn"
    h, heads, hd, rope = spec.hidden_size, spec.num_heads, spec.head_dim, spec.rotary_dim
    nope, r_kv, r_q = hd - rope, spec.kv_lora_rank, spec.q_lora_rank
    bias = spec.qkv_bias
    if r_q:
        q_nodes = (_linear(f"{a}.q_a_proj", r_q, h, i, bias),                 # (r_q, h)
                   _norm(spec, f"{a}.q_a_layernorm", i, r_q),                   # (r_q,)
                   _linear(f"{a}.q_b_proj", heads * hd, r_q, i, False))         # (H·(nope+rope), r_q)
    else:
        q_nodes = (_linear(f"{a}.q_proj", heads * hd, h, i, False),)            # (H·(nope+rope), h)
    kv_nodes = (_linear(f"{a}.kv_a_proj_with_mqa", r_kv + rope, h, i, bias),   # (r_kv + rope, h)
                _norm(spec, f"{a}.kv_a_layernorm", i, r_kv),                    # (r_kv,)
                _linear(f"{a}.kv_b_proj", heads * (nope + spec.v_head_dim), r_kv, i, False))
    o = _linear(f"{a}.o_proj", h, spec.v_dim, i, spec.o_bias)                  # (h, H·v)
    children = q_nodes + kv_nodes + (o,)
    calls = tuple(c.name.rsplit(".", 1)[1] for c in q_nodes + kv_nodes) + (SELF, "o_proj")
    return Node(a, "attention", i, children=children, calls=calls, op=a)


def _deepseek_moe(spec: "ModelSpec", p: str, i: int) -> Node:
    """DeepseekV2Moe / DeepseekV3MoE: registers experts, gate, shared_experts; forward calls
    gate, experts, then adds shared_experts(x) to the routed output."""
    m = f"{p}.mlp"
    shared = _gated_mlp(spec, m, i, "shared_experts", spec.shared_expert_size)
    return Node(m, "moe_container", i, children=(_experts(spec, m, i), _router(spec, m, i), shared),
                calls=("gate", "experts", "shared_experts"))


def deepseek_layer(spec: "ModelSpec", i: int) -> Node:
    """DeepseekV2DecoderLayer / DeepseekV3DecoderLayer: MLA, then a dense MLP in the first
    first_k_dense_replace layers and DeepSeek-MoE (or a DeepSpeed-MoE layer) after them."""
    p = f"model.layers.{i}"
    if not spec.is_moe_layer(i):
        mlp = _gated_mlp(spec, p, i)
    elif spec.deepspeed_moe is not None:   # DeepSpeed-MoE layers in place of the block (zsim.modeltree.dsmoe)
        mlp = deepspeed_moe_block(spec, p, i)
    else:
        mlp = _deepseek_moe(spec, p, i)
    return _pre_norm_attention_layer(spec, i, mla_attention(spec, p, i), mlp)
