"""Phi-3 (fused qkv and gate_up) and Phi-2 (parallel attention and MLP, partial rotary)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .nodes import SELF, ModelTree, Node
from .parts import _dropout, _embedding, _head, _layers, _linear, _norm, _root

if TYPE_CHECKING:  # the spec is read by attribute only; zsim.model imports this package
    from ..model import ModelSpec


def phi3_tree(spec: "ModelSpec") -> ModelTree:
    """Phi3ForCausalLM: Llama's tree with fused qkv_proj (q + 2kv, h) and gate_up_proj (2I, h),
    and a dropout after attention and after the MLP (modeling_phi3.py)."""
    h, q, kv, inter = spec.hidden_size, spec.q_dim, spec.kv_dim, spec.intermediate_size

    def layer(spec: "ModelSpec", i: int) -> Node:
        p = f"model.layers.{i}"
        a = f"{p}.self_attn"
        attn = Node(a, "attention", i, children=(
            _linear(f"{a}.o_proj", h, q, i, False),              # (h, q), registered first
            _linear(f"{a}.qkv_proj", q + 2 * kv, h, i, False),   # (q + 2kv, h)
        ), calls=("qkv_proj", SELF, "o_proj"), op=a)
        mlp = Node(f"{p}.mlp", "mlp", i, children=(
            _linear(f"{p}.mlp.gate_up_proj", 2 * inter, h, i, False),   # (2I, h)
            _linear(f"{p}.mlp.down_proj", h, inter, i, False),          # (h, I)
            Node(f"{p}.mlp.activation_fn", "activation", i, op=f"{p}.mlp"),
        ), calls=("gate_up_proj", "activation_fn", "down_proj"))
        return Node(p, "decoder_layer", i, children=(
            attn, mlp, _norm(spec, f"{p}.input_layernorm", i), _norm(spec, f"{p}.post_attention_layernorm", i),
            _dropout(spec, f"{p}.resid_attn_dropout", i), _dropout(spec, f"{p}.resid_mlp_dropout", i),
        ), calls=("input_layernorm", "self_attn", "resid_attn_dropout", "post_attention_layernorm", "mlp",
                  "resid_mlp_dropout"))

    embed = _embedding("model.embed_tokens", spec.vocab_size, h)
    model = Node("model", "model", -1, children=(
        embed, _layers(spec, "model.layers", layer), _norm(spec, "model.norm", spec.num_layers),
        Node("model.rotary_emb", "rotary", -1),
    ), calls=("embed_tokens", "rotary_emb", "layers", "norm"))
    return _root(model, _head(spec, "model.embed_tokens"))


def phi_tree(spec: "ModelSpec") -> ModelTree:
    """PhiForCausalLM (Phi-1/1.5/2): one LayerNorm feeds attention and the MLP in parallel,
    x + dropout(attn(ln(x))) + dropout(mlp(ln(x))), the same resid_dropout module called
    twice; biased q/k/v/dense, fc1 -> act -> fc2, a biased lm_head (modeling_phi.py)."""
    h, q, kv, inter = spec.hidden_size, spec.q_dim, spec.kv_dim, spec.intermediate_size

    def layer(spec: "ModelSpec", i: int) -> Node:
        p = f"model.layers.{i}"
        a = f"{p}.self_attn"
        attn = Node(a, "attention", i, children=(
            _linear(f"{a}.q_proj", q, h, i, True), _linear(f"{a}.k_proj", kv, h, i, True),
            _linear(f"{a}.v_proj", kv, h, i, True), _linear(f"{a}.dense", h, q, i, True),
        ), calls=("q_proj", "k_proj", "v_proj", SELF, "dense"), op=a)
        mlp = Node(f"{p}.mlp", "mlp", i, children=(
            Node(f"{p}.mlp.activation_fn", "activation", i, op=f"{p}.mlp.activation_fn"),
            _linear(f"{p}.mlp.fc1", inter, h, i, True), _linear(f"{p}.mlp.fc2", h, inter, i, True),
        ), calls=("fc1", "activation_fn", "fc2"))
        return Node(p, "decoder_layer", i, children=(
            attn, mlp, _norm(spec, f"{p}.input_layernorm", i), _dropout(spec, f"{p}.resid_dropout", i),
        ), calls=("input_layernorm", "self_attn", "resid_dropout", "mlp", "resid_dropout"))

    n = spec.num_layers
    model = Node("model", "model", -1, children=(
        _embedding("model.embed_tokens", spec.vocab_size, h), _layers(spec, "model.layers", layer),
        Node("model.rotary_emb", "rotary", -1), _dropout(spec, "model.embed_dropout", -1),
        _norm(spec, "model.final_layernorm", n),
    ), calls=("embed_tokens", "embed_dropout", "rotary_emb", "layers", "final_layernorm"))
    return _root(model, _head(spec, "model.embed_tokens"))
