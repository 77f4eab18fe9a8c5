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

To add a model family, write its decoder layer (and, if it differs, its embeddings/head) as a
builder below and register it in :data:`LAYER_BUILDERS`; kernels exist per ``kind``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:  # the spec is read by attribute only; zsim.model imports this module
    from .model import ModelSpec


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
    "activation",           # the MLP's elementwise op (SiLU(gate)·up, or GELU)
    "linear",               # nn.Linear: weight (out, in), optional bias (out,)
    "norm",                 # RMSNorm (weight) or LayerNorm (weight, bias)
    "lm_head",              # output projection to the vocabulary (maybe tied to embed_tokens)
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
    - ``shares``: names of other modules' parameters it uses (a tied lm_head's weight).
    """

    name: str
    kind: str
    layer: int
    params: tuple[Param, ...] = ()
    children: tuple["Node", ...] = ()
    calls: tuple[str, ...] = ()
    op: str = ""
    shares: tuple[str, ...] = ()

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

    def __post_init__(self) -> None:
        modules = list(self.root.walk())
        params = tuple(p for n in modules for p in n.params)
        set_ = object.__setattr__
        set_(self, "_modules", tuple(modules))
        set_(self, "_params", params)
        set_(self, "_index", {p.name: i for i, p in enumerate(params)})
        set_(self, "_by_name", {n.name: n for n in modules})
        set_(self, "_by_op", {n.op: n for n in modules if n.op})

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
def _linear(name: str, out: int, in_: int, layer: int, bias: bool) -> Node:
    # weight (out, in), bias (out,)
    ps = (Param(f"{name}.weight", (out, in_), name, layer),)
    if bias:
        ps += (Param(f"{name}.bias", (out,), name, layer),)
    return Node(name, "linear", layer, ps, op=name)


def _norm(spec: "ModelSpec", name: str, layer: int) -> Node:
    # weight (h,); LayerNorm also bias (h,)
    h = spec.hidden_size
    ps = (Param(f"{name}.weight", (h,), name, layer),)
    if spec.norm == "layernorm":
        ps += (Param(f"{name}.bias", (h,), name, layer),)
    return Node(name, "norm", layer, ps, op=name)


def _attention(spec: "ModelSpec", prefix: str, i: int, qkv_bias: bool, o_bias: bool) -> Node:
    """q, k, v projections, the attention core (the module's own op), o projection."""
    a = f"{prefix}.self_attn"
    h, q, kv = spec.hidden_size, spec.q_dim, spec.kv_dim
    return Node(a, "attention", i, children=(
        _linear(f"{a}.q_proj", q, h, i, qkv_bias),    # (q, h)
        _linear(f"{a}.k_proj", kv, h, i, qkv_bias),   # (kv, h)
        _linear(f"{a}.v_proj", kv, h, i, qkv_bias),   # (kv, h)
        _linear(f"{a}.o_proj", h, q, i, o_bias),      # (h, q)
    ), calls=("q_proj", "k_proj", "v_proj", SELF, "o_proj"), op=a)


def llama_layer(spec: "ModelSpec", i: int) -> Node:
    """LlamaDecoderLayer (also Mistral, Qwen2: q/k/v biases with ``qkv_bias``).

    Registration: self_attn, mlp, input_layernorm, post_attention_layernorm; forward:
    x + self_attn(input_layernorm(x)), then + mlp(post_attention_layernorm(x)). LlamaMLP is
    down_proj(act_fn(gate_proj(x)) * up_proj(x)): the activation runs between gate and up
    and is timed, with the product, as the op ``<layer>.mlp``.
    """
    p = f"model.layers.{i}"
    h, inter = spec.hidden_size, spec.intermediate_size
    mlp = Node(f"{p}.mlp", "mlp", i, children=(
        _linear(f"{p}.mlp.gate_proj", inter, h, i, False),   # (I, h)
        _linear(f"{p}.mlp.up_proj", inter, h, i, False),     # (I, h)
        _linear(f"{p}.mlp.down_proj", h, inter, i, False),   # (h, I)
        Node(f"{p}.mlp.act_fn", "activation", i, op=f"{p}.mlp"),
    ), calls=("gate_proj", "act_fn", "up_proj", "down_proj"))
    return Node(p, "decoder_layer", i, children=(
        _attention(spec, p, i, spec.qkv_bias, False),
        mlp,
        _norm(spec, f"{p}.input_layernorm", i),
        _norm(spec, f"{p}.post_attention_layernorm", i),
    ), calls=("input_layernorm", "self_attn", "post_attention_layernorm", "mlp"))


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


#: Decoder layer builder per ``ModelSpec.mlp``: where a new family's layer goes.
LAYER_BUILDERS: dict[str, Callable[["ModelSpec", int], Node]] = {
    "swiglu": llama_layer,
    "gelu": gpt_layer,
}


def build_model_tree(spec: "ModelSpec") -> ModelTree:
    """The tree of ``spec``: XForCausalLM(model: XModel, lm_head).

    XModel registers embed_tokens (V, h) [, embed_positions (P, h)], layers, norm and, with
    rotary positions, rotary_emb; it calls embed_tokens, then the positions, the layers in
    order and the final norm. A tied lm_head registers no weight of its own (named_parameters
    lists the shared tensor once, under embed_tokens) but uses it.
    """
    h, v, n = spec.hidden_size, spec.vocab_size, spec.num_layers
    embed = Node("model.embed_tokens", "embedding", -1,
                 (Param("model.embed_tokens.weight", (v, h), "model.embed_tokens", -1),),
                 op="model.embed_tokens")
    build_layer = LAYER_BUILDERS[spec.mlp]
    layers = Node("model.layers", "module_list", -1,
                  children=tuple(build_layer(spec, i) for i in range(n)),
                  calls=tuple(str(i) for i in range(n)))
    norm = _norm(spec, "model.norm", n)
    if spec.learned_positions:
        pos = Node("model.embed_positions", "position_embedding", -1,
                   (Param("model.embed_positions.weight", (spec.max_position_embeddings, h),
                          "model.embed_positions", -1),), op="model.embed_positions")
        model = Node("model", "model", -1, children=(embed, pos, layers, norm),
                     calls=("embed_tokens", "embed_positions", "layers", "norm"))
    else:
        rotary = Node("model.rotary_emb", "rotary", -1)
        model = Node("model", "model", -1, children=(embed, layers, norm, rotary),
                     calls=("embed_tokens", "rotary_emb", "layers", "norm"))
    if spec.tie_word_embeddings:
        head = Node("lm_head", "lm_head", n, op="lm_head", shares=("model.embed_tokens.weight",))
    else:
        head = Node("lm_head", "lm_head", n, (Param("lm_head.weight", (v, h), "lm_head", n),), op="lm_head")
    return ModelTree(Node("", "causal_lm", -1, children=(model, head), calls=("model", "lm_head")))


@lru_cache(maxsize=64)
def model_tree(spec: "ModelSpec") -> ModelTree:
    """The (cached) :class:`ModelTree` of ``spec``."""
    return build_model_tree(spec)
