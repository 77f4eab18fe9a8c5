"""GPT-style decoders: GPT-2 (Conv1D), GPT-NeoX/Pythia, Falcon and OPT."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .nodes import SELF, ModelTree, Node, Param
from .parts import _conv1d, _dropout, _embedding, _head, _layers, _linear, _norm, _root, _unused

if TYPE_CHECKING:  # the spec is read by attribute only; zsim.model imports this package
    from ..model import ModelSpec


def gpt2_tree(spec: "ModelSpec") -> ModelTree:
    """GPT2LMHeadModel: transformer (wte, wpe, drop, h, ln_f) and a head tied to wte. Blocks
    are pre-LayerNorm with Conv1D projections: attn (c_attn (h, 3h), c_proj; attn_dropout
    is only called by eager attention, sdpa gets its probability), mlp (c_fc, act, c_proj,
    dropout) (modeling_gpt2.py)."""
    h, inter, n = spec.hidden_size, spec.intermediate_size, spec.num_layers

    def layer(spec: "ModelSpec", i: int) -> Node:
        p = f"transformer.h.{i}"
        a = f"{p}.attn"
        attn = Node(a, "attention", i, children=(
            _conv1d(f"{a}.c_attn", h, spec.q_dim + 2 * spec.kv_dim, i), _conv1d(f"{a}.c_proj", spec.q_dim, h, i),
            _unused(f"{a}.attn_dropout", i), _dropout(spec, f"{a}.resid_dropout", i),
        ), calls=("c_attn", SELF, "c_proj", "resid_dropout"), op=a)
        mlp = Node(f"{p}.mlp", "mlp", i, children=(
            _conv1d(f"{p}.mlp.c_fc", h, inter, i), _conv1d(f"{p}.mlp.c_proj", inter, h, i),
            Node(f"{p}.mlp.act", "activation", i, op=f"{p}.mlp.act"), _dropout(spec, f"{p}.mlp.dropout", i),
        ), calls=("c_fc", "act", "c_proj", "dropout"))
        return Node(p, "decoder_layer", i, children=(
            _norm(spec, f"{p}.ln_1", i), attn, _norm(spec, f"{p}.ln_2", i), mlp,
        ), calls=("ln_1", "attn", "ln_2", "mlp"))

    model = Node("transformer", "model", -1, children=(
        _embedding("transformer.wte", spec.vocab_size, h),
        _embedding("transformer.wpe", spec.max_position_embeddings, h, "position_embedding"),
        _dropout(spec, "transformer.drop", -1), _layers(spec, "transformer.h", layer),
        _norm(spec, "transformer.ln_f", n),
    ), calls=("wte", "wpe", "drop", "h", "ln_f"))
    return _root(model, _head(spec, "transformer.wte"))


def gpt_neox_tree(spec: "ModelSpec") -> ModelTree:
    """GPTNeoXForCausalLM (GPT-NeoX, Pythia): fused query_key_value (3h), dense; with
    ``parallel_residual`` x + attn(ln1(x)) + mlp(ln2(x)), else sequential; a dropout after
    attention and after the MLP (modeling_gpt_neox.py). The call order is the same both ways."""
    h, q, kv, inter, n = spec.hidden_size, spec.q_dim, spec.kv_dim, spec.intermediate_size, spec.num_layers

    def layer(spec: "ModelSpec", i: int) -> Node:
        p = f"gpt_neox.layers.{i}"
        a = f"{p}.attention"
        attn = Node(a, "attention", i, children=(
            _linear(f"{a}.query_key_value", q + 2 * kv, h, i, spec.qkv_bias),
            _linear(f"{a}.dense", h, q, i, spec.o_bias),
        ), calls=("query_key_value", SELF, "dense"), op=a)
        mlp = Node(f"{p}.mlp", "mlp", i, children=(
            _linear(f"{p}.mlp.dense_h_to_4h", inter, h, i, True), _linear(f"{p}.mlp.dense_4h_to_h", h, inter, i, True),
            Node(f"{p}.mlp.act", "activation", i, op=f"{p}.mlp.act"),
        ), calls=("dense_h_to_4h", "act", "dense_4h_to_h"))
        return Node(p, "decoder_layer", i, children=(
            _norm(spec, f"{p}.input_layernorm", i), _norm(spec, f"{p}.post_attention_layernorm", i),
            _dropout(spec, f"{p}.post_attention_dropout", i), _dropout(spec, f"{p}.post_mlp_dropout", i),
            attn, mlp,
        ), calls=("input_layernorm", "attention", "post_attention_dropout", "post_attention_layernorm", "mlp",
                  "post_mlp_dropout"))

    model = Node("gpt_neox", "model", -1, children=(
        _embedding("gpt_neox.embed_in", spec.vocab_size, h), _dropout(spec, "gpt_neox.emb_dropout", -1),
        _layers(spec, "gpt_neox.layers", layer), _norm(spec, "gpt_neox.final_layer_norm", n),
        Node("gpt_neox.rotary_emb", "rotary", -1),
    ), calls=("embed_in", "emb_dropout", "rotary_emb", "layers", "final_layer_norm"))
    return _root(model, _head(spec, "gpt_neox.embed_in"))


def falcon_tree(spec: "ModelSpec") -> ModelTree:
    """FalconForCausalLM: fused query_key_value (q + 2kv: multi-query has one KV head),
    dense, MLP dense_h_to_4h -> GELU -> dense_4h_to_h, all FalconLinear (x @ W.T [+ b], not
    F.linear). ``parallel_residual``: attention and MLP read the same input, normalised by
    one input_layernorm or (``parallel_norms`` 2, new_decoder_architecture) by ln_attn and
    ln_mlp; else sequential with post_attention_layernorm (modeling_falcon.py)."""
    h, q, kv, inter, n = spec.hidden_size, spec.q_dim, spec.kv_dim, spec.intermediate_size, spec.num_layers
    b = spec.qkv_bias

    def layer(spec: "ModelSpec", i: int) -> Node:
        p = f"transformer.h.{i}"
        a = f"{p}.self_attention"
        attn = Node(a, "attention", i, children=(
            _linear(f"{a}.query_key_value", q + 2 * kv, h, i, b, "mm_linear"),
            _linear(f"{a}.dense", h, q, i, b, "mm_linear"), _unused(f"{a}.attention_dropout", i),
        ), calls=("query_key_value", SELF, "dense"), op=a)
        mlp = Node(f"{p}.mlp", "mlp", i, children=(
            _linear(f"{p}.mlp.dense_h_to_4h", inter, h, i, b, "mm_linear"),
            Node(f"{p}.mlp.act", "activation", i, op=f"{p}.mlp.act"),
            _linear(f"{p}.mlp.dense_4h_to_h", h, inter, i, b, "mm_linear"),
        ), calls=("dense_h_to_4h", "act", "dense_4h_to_h"))
        if not spec.parallel_residual:
            norms = (_norm(spec, f"{p}.post_attention_layernorm", i), _norm(spec, f"{p}.input_layernorm", i))
            calls = ("input_layernorm", "self_attention", "post_attention_layernorm", "mlp")
        elif spec.parallel_norms == 2:
            norms = (_norm(spec, f"{p}.ln_attn", i), _norm(spec, f"{p}.ln_mlp", i))
            calls = ("ln_attn", "ln_mlp", "self_attention", "mlp")
        else:
            norms = (_norm(spec, f"{p}.input_layernorm", i),)
            calls = ("input_layernorm", "self_attention", "mlp")
        return Node(p, "decoder_layer", i, children=(attn, mlp) + norms, calls=calls)

    model = Node("transformer", "model", -1, children=(
        _embedding("transformer.word_embeddings", spec.vocab_size, h), _layers(spec, "transformer.h", layer),
        _norm(spec, "transformer.ln_f", n), Node("transformer.rotary_emb", "rotary", -1),
    ), calls=("word_embeddings", "rotary_emb", "h", "ln_f"))
    return _root(model, _head(spec, "transformer.word_embeddings"))


def opt_tree(spec: "ModelSpec") -> ModelTree:
    """OPTForCausalLM: model.decoder with embed_tokens (V, e), learned positions (P + 2, h)
    (OPTLearnedPositionalEmbedding's offset of 2), project_in/out (h <-> e) when
    word_embed_proj_dim e differs from h, a final LayerNorm only when pre-LN
    (do_layer_norm_before); layers hold q/k/v/out_proj, fc1 -> ReLU -> fc2 directly, with
    functional dropouts after attention and fc2 (modeling_opt.py). The head is tied (V, e)."""
    h, q, kv, inter, n = spec.hidden_size, spec.q_dim, spec.kv_dim, spec.intermediate_size, spec.num_layers
    e = spec.embed_dim or h
    b = spec.qkv_bias

    def layer(spec: "ModelSpec", i: int) -> Node:
        p = f"model.decoder.layers.{i}"
        a = f"{p}.self_attn"
        attn = Node(a, "attention", i, children=(
            _linear(f"{a}.k_proj", kv, h, i, b), _linear(f"{a}.v_proj", kv, h, i, b),
            _linear(f"{a}.q_proj", q, h, i, b), _linear(f"{a}.out_proj", h, q, i, b),
        ), calls=("q_proj", "k_proj", "v_proj", SELF, "out_proj"), op=a)
        children = (attn, Node(f"{p}.activation_fn", "activation", i, op=f"{p}.activation_fn"),
                    _norm(spec, f"{p}.self_attn_layer_norm", i), _linear(f"{p}.fc1", inter, h, i, spec.mlp_bias),
                    _linear(f"{p}.fc2", h, inter, i, spec.mlp_bias), _norm(spec, f"{p}.final_layer_norm", i))
        if spec.post_norm:
            calls = ("self_attn", "self_attn_layer_norm", "fc1", "activation_fn", "fc2", "final_layer_norm")
        else:
            calls = ("self_attn_layer_norm", "self_attn", "final_layer_norm", "fc1", "activation_fn", "fc2")
        return Node(p, "decoder_layer", i, children=children, calls=calls)

    d = "model.decoder"
    children = [_embedding(f"{d}.embed_tokens", spec.vocab_size, e),
                _embedding(f"{d}.embed_positions", spec.max_position_embeddings + 2, h, "position_embedding")]
    calls = ["embed_tokens", "embed_positions"]
    if e != h:
        children += [Node(f"{d}.project_out", "linear", n, (Param(f"{d}.project_out.weight", (e, h),
                                                                  f"{d}.project_out", n),), op=f"{d}.project_out"),
                     Node(f"{d}.project_in", "linear", -1, (Param(f"{d}.project_in.weight", (h, e),
                                                                 f"{d}.project_in", -1),), op=f"{d}.project_in")]
        calls += ["project_in"]
    calls += ["layers"]
    if not spec.post_norm:
        children += [_norm(spec, f"{d}.final_layer_norm", n)]
        calls += ["final_layer_norm"]
    children += [_layers(spec, f"{d}.layers", layer)]
    if e != h:
        calls += ["project_out"]
    decoder = Node(d, "model", -1, children=tuple(children), calls=tuple(calls))
    model = Node("model", "model", -1, children=(decoder,), calls=("decoder",))
    return _root(model, _head(spec, f"{d}.embed_tokens", e))
