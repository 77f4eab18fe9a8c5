"""Building blocks shared by the family trees: linears, norms, attention, MLPs, heads.

Shapes in comments: h = hidden, q = heads·head_dim, kv = kv_heads·head_dim, I = intermediate,
V = vocab, P = max positions, L = decoder layers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .nodes import SELF, ModelTree, Node, Param

if TYPE_CHECKING:  # the spec is read by attribute only; zsim.model imports this package
    from ..model import ModelSpec


def _linear(name: str, out: int, in_: int, layer: int, bias: bool, kind: str = "linear") -> Node:
    # weight (out, in), bias (out,)
    ps = (Param(f"{name}.weight", (out, in_), name, layer),)
    if bias:
        ps += (Param(f"{name}.bias", (out,), name, layer),)
    return Node(name, kind, layer, ps, op=name)


def _conv1d(name: str, in_: int, out: int, layer: int) -> Node:
    # GPT-2's Conv1D (pytorch_utils.py): weight (in, out), bias (out,), addmm(bias, x, weight)
    return Node(name, "conv1d", layer, (Param(f"{name}.weight", (in_, out), name, layer),
                                        Param(f"{name}.bias", (out,), name, layer)), op=name)


def _norm(spec: "ModelSpec", name: str, layer: int, width: int = 0) -> Node:
    # weight (w,); LayerNorm also bias (w,); w = hidden unless given (Qwen3's per-head q/k norms)
    w = width or spec.hidden_size
    ps = (Param(f"{name}.weight", (w,), name, layer),)
    if spec.norm == "layernorm":
        ps += (Param(f"{name}.bias", (w,), name, layer),)
    return Node(name, "norm", layer, ps, op=name, width=width)


def _dropout(spec: "ModelSpec", name: str, layer: int, width: int = 0) -> Node:
    """An nn.Dropout forward() calls: DeepSpeed hooks it either way; it runs a kernel (and
    saves a mask) only when its probability is above 0."""
    return Node(name, "dropout", layer, op=name if spec.dropout > 0 else "", width=width)


def _unused(name: str, layer: int) -> Node:
    """A module registered in __init__ but not called on the sdpa path (eager-only dropout)."""
    return Node(name, "unused", layer)


def _attention(spec: "ModelSpec", prefix: str, i: int, qkv_bias: bool, o_bias: bool) -> Node:
    """q, k, v projections, the attention core (the module's own op), o projection; Qwen3's
    per-head RMSNorms of q and k (registered after o_proj, called right after q/k_proj)."""
    a = f"{prefix}.self_attn"
    h, q, kv, hd = spec.hidden_size, spec.q_dim, spec.kv_dim, spec.head_dim
    children = (
        _linear(f"{a}.q_proj", q, h, i, qkv_bias),    # (q, h)
        _linear(f"{a}.k_proj", kv, h, i, qkv_bias),   # (kv, h)
        _linear(f"{a}.v_proj", kv, h, i, qkv_bias),   # (kv, h)
        _linear(f"{a}.o_proj", h, q, i, o_bias),      # (h, q)
    )
    calls: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", SELF, "o_proj")
    if spec.qk_norm:
        children += (_norm(spec, f"{a}.q_norm", i, hd), _norm(spec, f"{a}.k_norm", i, hd))
        calls = ("q_proj", "q_norm", "k_proj", "k_norm", "v_proj", SELF, "o_proj")
    return Node(a, "attention", i, children=children, calls=calls, op=a)


def _gated_mlp(spec: "ModelSpec", p: str, i: int, local: str = "mlp", inter: int = 0) -> Node:
    """LlamaMLP: down_proj(act_fn(gate_proj(x)) * up_proj(x)); the activation runs between
    gate and up and is timed, with the product, as the op ``<layer>.mlp`` (``local``: the
    module's name in its parent, Qwen2-MoE's ``mlp.shared_expert``, of width ``inter``)."""
    h, b = spec.hidden_size, spec.mlp_bias
    inter = inter or spec.intermediate_size
    m = f"{p}.{local}"
    return Node(m, "mlp", i, children=(
        _linear(f"{m}.gate_proj", inter, h, i, b),   # (I, h)
        _linear(f"{m}.up_proj", inter, h, i, b),     # (I, h)
        _linear(f"{m}.down_proj", h, inter, i, b),   # (h, I)
        Node(f"{m}.act_fn", "activation", i, op=m, width=inter),
    ), calls=("gate_proj", "act_fn", "up_proj", "down_proj"))


def _head(spec: "ModelSpec", embed: str, width: int = 0) -> Node:
    """lm_head (V, w): a tied one registers no weight of its own (named_parameters lists the
    shared tensor once, under the embedding) but uses it; Phi's has a bias."""
    n, v, w = spec.num_layers, spec.vocab_size, width or spec.hidden_size
    if spec.tie_word_embeddings:
        return Node("lm_head", "lm_head", n, op="lm_head", shares=(f"{embed}.weight",))
    ps = (Param("lm_head.weight", (v, w), "lm_head", n),)
    if spec.lm_head_bias:
        ps += (Param("lm_head.bias", (v,), "lm_head", n),)
    return Node("lm_head", "lm_head", n, ps, op="lm_head")


def _embedding(name: str, rows: int, width: int, kind: str = "embedding") -> Node:
    return Node(name, kind, -1, (Param(f"{name}.weight", (rows, width), name, -1),), op=name)


def _layers(spec: "ModelSpec", name: str, build: Callable[["ModelSpec", int], Node]) -> Node:
    n = spec.num_layers
    return Node(name, "module_list", -1, children=tuple(build(spec, i) for i in range(n)),
                calls=tuple(str(i) for i in range(n)))


def _root(model: Node, head: Node) -> ModelTree:
    local = model.name
    return ModelTree(Node("", "causal_lm", -1, children=(model, head), calls=(local, "lm_head")))


def _pre_norm_layer(spec: "ModelSpec", i: int, mlp: Node) -> Node:
    """The Llama-shaped decoder layer around ``mlp`` (its ``mlp`` child): registration
    self_attn, mlp, input_layernorm, post_attention_layernorm; forward
    x + self_attn(input_layernorm(x)), then + mlp(post_attention_layernorm(x))."""
    attn = _attention(spec, f"model.layers.{i}", i, spec.qkv_bias, spec.o_bias)
    return _pre_norm_attention_layer(spec, i, attn, mlp)


def _pre_norm_attention_layer(spec: "ModelSpec", i: int, attn: Node, mlp: Node) -> Node:
    """:func:`_pre_norm_layer` with its ``self_attn`` given (DeepSeek's MLA)."""
    p = f"model.layers.{i}"
    return Node(p, "decoder_layer", i, children=(
        attn,
        mlp,
        _norm(spec, f"{p}.input_layernorm", i),
        _norm(spec, f"{p}.post_attention_layernorm", i),
    ), calls=("input_layernorm", "self_attn", "post_attention_layernorm", "mlp"))
