"""The module tree of a decoder-only model: the one place a model family's structure is written.

A :class:`ModelTree` is the model as Hugging Face builds it, from shapes only (no torch):
every module of ``model.named_modules()`` (same names, the root is ""), the parameters each
one registers itself (``named_parameters()`` order, shapes as torch shows them: a Linear's
weight is ``(out, in)``), and the order its ``forward()`` calls its children in. Everything
else reads this tree:

- :meth:`zsim.model.ModelSpec.parameters` and the parameter counts: :meth:`ModelTree.parameters`;
- :mod:`zsim.workload`: the kernels of each compute op, by the node's ``kind`` and shapes;
- :mod:`zsim.schedule.order`: the forward order of compute ops, :meth:`ModelTree.forward`;
- :mod:`zsim.schedule.z3modules`: the modules DeepSpeed's stage-3 hooks see, in call order.

Shapes in comments: h = hidden, q = heads·head_dim, kv = kv_heads·head_dim, I = intermediate,
V = vocab, P = max positions, L = decoder layers.

To add a model family, write its tree as a builder below and register it in
:data:`FAMILY_BUILDERS` (a Llama-shaped family only needs a decoder layer in
:data:`LAYER_BUILDERS`); kernels exist per ``kind``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:  # the spec is read by attribute only; zsim.model imports this module
    from .model import ModelSpec


#: HF ``hidden_act`` values zsim prices (activations.py ACT2CLS): gated (SwiGLU/GeGLU) or
#: plain MLPs. "gelu_new" is NewGELUActivation, a Python formula of eight elementwise ops.
ACTIVATIONS = ("silu", "gelu", "gelu_new", "gelu_pytorch_tanh", "relu")


@dataclass(frozen=True)
class Param:
    """One parameter tensor.

    ``module`` is the dotted name of the module that owns it (as in HF), ``layer`` the
    decoder layer index, -1 for the embeddings and ``num_layers`` for the final norm/head.
    """

    name: str
    shape: tuple[int, ...]
    module: str
    layer: int

    @property
    def numel(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)


#: In :attr:`Node.calls`: where a container's own compute op runs among its children's calls
#: (the attention core between v_proj and o_proj).
SELF = "(self)"

#: Node kinds. Kernels (zsim.workload) and ZeRO-3 hook facts (zsim.schedule.z3modules) are
#: defined per kind, so a new family reuses them by naming its modules' kinds.
KINDS = frozenset({
    "causal_lm",            # the root: XForCausalLM (model, lm_head)
    "model",                # XModel: embeddings, layers, final norm
    "embedding",            # token embedding table: input ids -> hidden states
    "position_embedding",   # learned position table: position ids -> hidden states
    "rotary",               # rotary embedding: cos/sin from position ids, no parameters
    "module_list",          # nn.ModuleList: holds the layers, never called itself
    "decoder_layer",        # one transformer block
    "attention",            # self-attention: projections are children, the core is its own op
    "mlp",                  # feed-forward container
    "activation",           # the MLP's elementwise op (SiLU(gate)·up, GELU, ReLU)
    "linear",               # nn.Linear: weight (out, in), optional bias (out,)
    "mm_linear",            # Falcon's FalconLinear: x @ W.T [+ b], a Linear not run by F.linear
    "conv1d",               # GPT-2's Conv1D: weight (in, out), bias (out,): addmm, not F.linear
    "norm",                 # RMSNorm (weight) or LayerNorm (weight, bias)
    "dropout",              # nn.Dropout that forward() calls (a kernel only when p > 0)
    "unused",               # registered but never called on the sdpa path (an eager-only dropout)
    "lm_head",              # output projection to the vocabulary (maybe tied to embed_tokens)
    "moe_block",            # sparse MoE block (MixtralSparseMoeBlock): router, experts [, shared expert]
    "router",               # top-k router (XTopKRouter): weight (E, h), linear + softmax + top-k
    "experts",              # fused experts (XExperts): gate_up_proj (E, 2I, h), down_proj (E, h, I)
    "expert_activation",    # the experts' act_fn: SiLU(gate)·up over the routed rows
    "expert_gate",          # Qwen2-MoE shared_expert_gate (1, h): linear, sigmoid, scale, add
})


@dataclass(frozen=True)
class Node:
    """One module: its HF name, kind, decoder layer, own parameters, children and call order.

    - ``params``: the parameters the module registers itself (``recurse=False``), in order;
    - ``children``: sub-modules in registration (``named_modules``) order;
    - ``calls``: the order ``forward()`` calls them in, as child local names, with
      :data:`SELF` where the module's own op runs; empty for a leaf (it runs its op);
    - ``op``: the name of the compute op the module's own forward runs ("" for none); the
      schedule emits ops and the workload prices kernels under this name;
    - ``shares``: names of other modules' parameters it uses (a tied lm_head's weight);
    - ``width``: values per token an elementwise op (norm, activation, dropout) touches;
      0 for the hidden size.
    """

    name: str
    kind: str
    layer: int
    params: tuple[Param, ...] = ()
    children: tuple["Node", ...] = ()
    calls: tuple[str, ...] = ()
    op: str = ""
    shares: tuple[str, ...] = ()
    width: int = 0

    def child(self, local: str) -> "Node":
        """The child called ``local`` (``self_attn``, ``q_proj``, ``0``)."""
        full = _join(self.name, local)
        for c in self.children:
            if c.name == full:
                return c
        raise KeyError(f"{self.name!r} has no child {local!r}")

    def walk(self) -> Iterator["Node"]:
        """This module and its descendants in ``named_modules()`` order."""
        yield self
        for c in self.children:
            yield from c.walk()

    def called(self) -> Iterator["Node | None"]:
        """Children in forward call order; None where the module's own op runs."""
        for local in self.calls:
            yield None if local == SELF else self.child(local)


def _join(prefix: str, local: str) -> str:
    return f"{prefix}.{local}" if prefix else local


@dataclass(frozen=True, eq=False)
class ModelTree:
    """The module tree of one :class:`~zsim.model.ModelSpec`, with lookups built once."""

    root: Node
    _modules: tuple[Node, ...] = field(init=False, repr=False)
    _params: tuple[Param, ...] = field(init=False, repr=False)
    _index: dict[str, int] = field(init=False, repr=False)
    _by_name: dict[str, Node] = field(init=False, repr=False)
    _by_op: dict[str, Node] = field(init=False, repr=False)
    _layers: tuple[Node, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        modules = list(self.root.walk())
        params = tuple(p for n in modules for p in n.params)
        set_ = object.__setattr__
        set_(self, "_modules", tuple(modules))
        set_(self, "_params", params)
        set_(self, "_index", {p.name: i for i, p in enumerate(params)})
        set_(self, "_by_name", {n.name: n for n in modules})
        set_(self, "_by_op", {n.op: n for n in modules if n.op})
        set_(self, "_layers", tuple(n for n in modules if n.kind == "decoder_layer"))

    def named_modules(self) -> tuple[Node, ...]:
        """Every module in ``named_modules()`` order (the root first)."""
        return self._modules

    def parameters(self) -> tuple[Param, ...]:
        """Every parameter in ``named_parameters()`` order (a shared one listed once)."""
        return self._params

    def param_index(self, name: str) -> int:
        """Position of parameter ``name`` in :meth:`parameters`."""
        return self._index[name]

    def uses(self, node: Node) -> tuple[int, ...]:
        """Indices of the parameters ``node`` uses directly: its own, then shared ones."""
        return tuple(self._index[p.name] for p in node.params) + tuple(self._index[s] for s in node.shares)

    def node(self, name: str) -> Node | None:
        """The module called ``name``, or None."""
        return self._by_name.get(name)

    def layer(self, i: int) -> Node | None:
        """Decoder layer ``i`` (``model.layers.3``, ``transformer.h.3``), or None."""
        layers = self._layers
        return layers[i] if 0 <= i < len(layers) else None

    def op_node(self, op: str) -> Node | None:
        """The module whose own forward runs the compute op ``op``, or None."""
        return self._by_op.get(op)

    def forward(self, node: Node | None = None) -> list[Node]:
        """Modules in the order their own compute ops run in one forward pass (from
        ``node``, default the root); a module without an op is not listed."""
        out: list[Node] = []
        self._forward(self.root if node is None else node, out)
        return out

    def _forward(self, n: Node, out: list[Node]) -> None:
        if not n.calls:
            if n.op:
                out.append(n)
            return
        for c in n.called():
            if c is None:
                out.append(n)
            else:
                self._forward(c, out)


# ---- building blocks -------------------------------------------------------------------------
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


def llama_layer(spec: "ModelSpec", i: int) -> Node:
    """LlamaDecoderLayer (also Mistral, Qwen2/3, Gemma: q/k/v biases with ``qkv_bias``, o_proj's
    with ``o_bias``, MLP biases with ``mlp_bias``, Qwen3's q/k norms with ``qk_norm``).

    Registration: self_attn, mlp, input_layernorm, post_attention_layernorm; forward:
    x + self_attn(input_layernorm(x)), then + mlp(post_attention_layernorm(x)).
    """
    p = f"model.layers.{i}"
    return Node(p, "decoder_layer", i, children=(
        _attention(spec, p, i, spec.qkv_bias, spec.o_bias),
        _gated_mlp(spec, p, i),
        _norm(spec, f"{p}.input_layernorm", i),
        _norm(spec, f"{p}.post_attention_layernorm", i),
    ), calls=("input_layernorm", "self_attn", "post_attention_layernorm", "mlp"))


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
    p = f"model.layers.{i}"
    return Node(p, "decoder_layer", i, children=(
        _attention(spec, p, i, spec.qkv_bias, spec.o_bias),
        _moe_block(spec, p, i),
        _norm(spec, f"{p}.input_layernorm", i),
        _norm(spec, f"{p}.post_attention_layernorm", i),
    ), calls=("input_layernorm", "self_attn", "post_attention_layernorm", "mlp"))


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


#: Decoder layer builder per ``ModelSpec.mlp`` for the Llama-shaped tree (:func:`llama_tree`).
LAYER_BUILDERS: dict[str, Callable[["ModelSpec", int], Node]] = {
    "swiglu": llama_layer,
    "gelu": gpt_layer,
}


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


def llama_tree(spec: "ModelSpec") -> ModelTree:
    """XForCausalLM(model: XModel, lm_head) for Llama, Mistral, Qwen2/3, Gemma(-2), GPT-3 and
    the MoE decoders Mixtral, Qwen2-MoE and Qwen3-MoE (:func:`moe_layer`).

    XModel registers embed_tokens (V, h) [, embed_positions (P, h)], layers, norm and, with
    rotary positions, rotary_emb; it calls embed_tokens, then the positions, the layers in
    order and the final norm.
    """
    n = spec.num_layers
    embed = _embedding("model.embed_tokens", spec.vocab_size, spec.hidden_size)
    if spec.num_experts:
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


#: Tree builder per ``ModelSpec.family``: where a new family goes.
FAMILY_BUILDERS: dict[str, Callable[["ModelSpec"], ModelTree]] = {
    "llama": llama_tree,
    "gemma": llama_tree,
    "gemma2": llama_tree,
    "phi3": phi3_tree,
    "phi": phi_tree,
    "gpt2": gpt2_tree,
    "gpt_neox": gpt_neox_tree,
    "falcon": falcon_tree,
    "opt": opt_tree,
    "mixtral": llama_tree,
    "qwen2_moe": llama_tree,
    "qwen3_moe": llama_tree,
}


def build_model_tree(spec: "ModelSpec") -> ModelTree:
    """The tree of ``spec``, from its family's builder (:data:`FAMILY_BUILDERS`)."""
    return FAMILY_BUILDERS[spec.family](spec)

@lru_cache(maxsize=64)
def model_tree(spec: "ModelSpec") -> ModelTree:
    """The (cached) :class:`ModelTree` of ``spec``."""
    return build_model_tree(spec)
