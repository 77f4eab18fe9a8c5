"""Llama-shaped decoders: Llama, Mistral, Qwen2/3, Gemma(-2), GPT-3 and the MoE decoders."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .deepseek import deepseek_layer
from .dsmoe import deepspeed_moe_block
from .moe import moe_layer
from .nodes import ModelTree, Node
from .parts import _attention, _embedding, _gated_mlp, _head, _layers, _linear, _norm, _pre_norm_layer, _root

if TYPE_CHECKING:  # the spec is read by attribute only; zsim.model imports this package
    from ..model import ModelSpec


def llama_layer(spec: "ModelSpec", i: int) -> Node:
    """LlamaDecoderLayer (also Mistral, Qwen2/3, Gemma: q/k/v biases with ``qkv_bias``, o_proj's
    with ``o_bias``, MLP biases with ``mlp_bias``, Qwen3's q/k norms with ``qk_norm``).

    Registration: self_attn, mlp, input_layernorm, post_attention_layernorm; forward:
    x + self_attn(input_layernorm(x)), then + mlp(post_attention_layernorm(x)).
    """
    return _pre_norm_layer(spec, i, _gated_mlp(spec, f"model.layers.{i}", i))


def gemma2_layer(spec: "ModelSpec", i: int) -> Node:
    """Gemma2DecoderLayer: Llama's modules plus a norm before and after the MLP and one after
    attention (modeling_gemma2.py): x + post_attention_layernorm(self_attn(input_layernorm(x))),
    then + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(x)))."""
    p = f"model.layers.{i}"
    return Node(p, "decoder_layer", i, children=(
        _attention(spec, p, i, spec.qkv_bias, spec.o_bias),
        _gated_mlp(spec, p, i),
        _norm(spec, f"{p}.input_layernorm", i),
        _norm(spec, f"{p}.post_attention_layernorm", i),
        _norm(spec, f"{p}.pre_feedforward_layernorm", i),
        _norm(spec, f"{p}.post_feedforward_layernorm", i),
    ), calls=("input_layernorm", "self_attn", "post_attention_layernorm", "pre_feedforward_layernorm",
              "mlp", "post_feedforward_layernorm"))


def gpt_layer(spec: "ModelSpec", i: int) -> Node:
    """A GPT-style layer (GPT-3): norms registered first, biases on every projection,
    fc1 -> GELU -> fc2."""
    p = f"model.layers.{i}"
    h, inter = spec.hidden_size, spec.intermediate_size
    mlp = Node(f"{p}.mlp", "mlp", i, children=(
        _linear(f"{p}.mlp.fc1", inter, h, i, True),   # (I, h), (I,)
        Node(f"{p}.mlp.act", "activation", i, op=f"{p}.mlp"),
        _linear(f"{p}.mlp.fc2", h, inter, i, True),   # (h, I), (h,)
    ), calls=("fc1", "act", "fc2"))
    return Node(p, "decoder_layer", i, children=(
        _norm(spec, f"{p}.input_layernorm", i),
        _attention(spec, p, i, True, True),
        _norm(spec, f"{p}.post_attention_layernorm", i),
        mlp,
    ), calls=("input_layernorm", "self_attn", "post_attention_layernorm", "mlp"))


def deepspeed_moe_layer(spec: "ModelSpec", i: int) -> Node:
    """A MoE decoder layer whose ``mlp`` is a DeepSpeed-MoE layer (zsim.modeltree.dsmoe)."""
    return _pre_norm_layer(spec, i, deepspeed_moe_block(spec, f"model.layers.{i}", i))


#: Decoder layer builder per ``ModelSpec.mlp`` for the Llama-shaped tree (:func:`llama_tree`).
LAYER_BUILDERS: dict[str, Callable[["ModelSpec", int], Node]] = {
    "swiglu": llama_layer,
    "gelu": gpt_layer,
}


def llama_tree(spec: "ModelSpec") -> ModelTree:
    """XForCausalLM(model: XModel, lm_head) for Llama, Mistral, Qwen2/3, Gemma(-2), GPT-3 and
    the MoE decoders Mixtral, Qwen2-MoE and Qwen3-MoE (:func:`moe_layer`) and DeepSeek-V2/V3
    (:func:`zsim.modeltree.deepseek.deepseek_layer`).

    XModel registers embed_tokens (V, h) [, embed_positions (P, h)], layers, norm and, with
    rotary positions, rotary_emb; it calls embed_tokens, then the positions, the layers in
    order and the final norm.
    """
    n = spec.num_layers
    embed = _embedding("model.embed_tokens", spec.embed_vocab_size or spec.vocab_size, spec.hidden_size)
    if spec.is_mla:   # DeepSeek: its layer builder places DeepSpeed-MoE layers itself
        build_layer = deepseek_layer
    elif spec.deepspeed_moe is not None:
        build_layer = deepspeed_moe_layer
    elif spec.num_experts:
        build_layer = moe_layer
    else:
        build_layer = gemma2_layer if spec.family == "gemma2" else LAYER_BUILDERS[spec.mlp]
    layers = _layers(spec, "model.layers", build_layer)
    norm = _norm(spec, "model.norm", n)
    if spec.learned_positions:
        pos = _embedding("model.embed_positions", spec.max_position_embeddings, spec.hidden_size,
                         "position_embedding")
        model = Node("model", "model", -1, children=(embed, pos, layers, norm),
                     calls=("embed_tokens", "embed_positions", "layers", "norm"))
    else:
        rotary = Node("model.rotary_emb", "rotary", -1)
        model = Node("model", "model", -1, children=(embed, layers, norm, rotary),
                     calls=("embed_tokens", "rotary_emb", "layers", "norm"))
    return _root(model, _head(spec, "model.embed_tokens"))
