"""The records of a module tree: parameters, nodes (HF modules) and the tree itself."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator


#: HF ``hidden_act`` values zsim prices (activations.py ACT2CLS): gated (SwiGLU/GeGLU) or
#: plain MLPs. "gelu_new" is NewGELUActivation, a Python formula of eight elementwise ops;
#: "bloom_gelu" is BLOOM's GeLUFunction (modeling_bloom.py), a tanh formula in an autograd.Function.
ACTIVATIONS = ("silu", "gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "bloom_gelu")


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
    "moe_container",        # DeepSeek-MoE block (DeepseekV2Moe): gate, experts, shared_experts;
                            # not a DeepSpeed ZeRO-3 leaf, so its children are hooked
    # DeepSpeed-MoE layers (zsim.modeltree.dsmoe; kernels in zsim.parallel.expert_work):
    "ds_moe",               # containers: the user's wrapper, deepspeed.moe.layer.MoE, Experts
    "ds_moe_add",           # DeepSeek's wrapper around a DeepSpeed-MoE layer: its own op adds the shared experts
    "ds_moe_layer",         # MOELayer: its own op encodes tokens into [E, C, M] and decodes them
    "ds_moe_gate",          # TopKGate: fp32 linear with wg's weight (E, h) and top-k gating
    "expert_linear",        # a local expert's Linear, run on the rows dispatched to it
    "expert_mlp_activation",  # a local expert's SiLU(gate)·up over its dispatched rows
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
