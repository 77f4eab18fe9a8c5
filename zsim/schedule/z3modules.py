"""The module tree DeepSpeed's stage-3 hooks see, and the hook events of one micro-step.

DeepSpeed registers pre/post forward and pre/post backward hooks on EVERY module, containers
included (parameter_offload.py:337-470); each pre hook is one ``fetch_sub_module`` call and
one step of the coordinator's trace, even for modules without parameters. Hugging Face
Llama/Qwen2 call order: root, model, embed_tokens, rotary_emb, per layer: layer,
input_layernorm, self_attn, q, k, v, o, post_attention_layernorm, mlp, gate, act_fn, up,
down; then norm, lm_head.

Backward pre hooks fire through a PreBackwardFunction applied to each module's outputs at
its POST-forward hook, so they run in reverse post-forward order: root, lm_head, model, norm,
then per layer from the last: layer, mlp, down, up, act_fn, gate, post_attention_layernorm,
self_attn, o, v, k, q, input_layernorm; finally embed_tokens. rotary_emb's outputs need no
gradient, so it has no backward hooks. Post-backward hooks (PostBackwardFunction on the
module's inputs, parameter_offload.py:470-520) release a leaf right after its backward;
modules whose inputs need no gradient (root, model, embed_tokens: input_ids) never get one,
and their parameters are released by ``release_backward_leftovers`` at the end of the
backward (stage3.py:3059-3068).

A sparse MoE block (Mixtral, Qwen2-MoE, Qwen3-MoE) is a ZeRO-3 leaf module by default
(:data:`_Z3_LEAF`): one hooked module that fetches, releases and reduces every parameter
below it; its router, experts and shared expert get no hooks. DeepSeek's MoE block
(DeepseekV2Moe, DeepseekV3MoE) is not in DeepSpeed's default leaf list, so its gate, experts
(with act_fn) and shared_experts are hooked like any module.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ..model import ModelSpec
from ..modeltree import SELF, ModelTree, Node, model_tree
from .events import Checkpoint, Compute, ComputeCore, Event, Fetch, Grad, Leftovers, Release


@dataclass(frozen=True)
class DsModule:
    """A module with DeepSpeed hooks: HF name, direct parameter indices, the compute op it
    stands for ("" for containers), and whether its backward hooks fire."""

    name: str
    params: tuple[int, ...]
    compute: str = ""
    grad_out: bool = True   # pre-backward hook fires
    grad_in: bool = True    # post-backward hook fires
    children: tuple[int, ...] = ()
    kind: str = ""          # the module's kind in zsim.modeltree
    after_core: int = 1     # children called after the module's own op (its core)




#: Kinds whose inputs are integer ids (no gradient): their post-backward hook never fires.
_IDS_IN = frozenset({"causal_lm", "model", "embedding", "position_embedding"})
#: Kinds whose outputs need no gradient (rotary cos/sin): no backward hooks at all.
_NO_GRAD_OUT = frozenset({"rotary"})
#: Kinds that run as LinearFunctionForZeroStage3 under zero.Init (see _grad_order).
_LINEAR = frozenset({"linear", "lm_head"})
#: Kinds DeepSpeed treats as ZeRO-3 leaf modules by default: MixtralSparseMoeBlock,
#: Qwen2MoeSparseMoeBlock and Qwen3MoeSparseMoeBlock are DEFAULT_LEAF_MODULE_CLASSES
#: (zero/leaf_module_config.py:11-15, applied by engine.py:2076). A leaf's children get no
#: hooks (parameter_offload.py:350-356), its pre-forward hook fetches every parameter below
#: it (recurse=True, :546), and its parameters' gradients are reduced together, in
#: parameter order, by one full backward hook when the block's backward is done
#: (stage3.py:1534-1559) [E: the CPU truth trace of a tiny Mixtral].
_Z3_LEAF = frozenset({"moe_block"})


def build_tree(model: ModelSpec) -> list[DsModule]:
    """The modules in DeepSpeed's view; index 0 is the root (LlamaForCausalLM).

    Read from :func:`zsim.modeltree.model_tree`: children in forward call order, each
    module after its children (the root first); an ``nn.ModuleList`` is never called, so it
    has no hooks and its layers are the children of the module that iterates over them.
    """
    tree = model_tree(model)
    mods: list[DsModule] = [None]  # type: ignore[list-item]  # the root, filled last
    mods[0] = _ds_module(tree, tree.root, tuple(_add(tree, c, mods) for c in _hooked_calls(tree.root)))
    return mods


def _add(tree: ModelTree, node: Node, mods: list[DsModule]) -> int:
    children = () if node.kind in _Z3_LEAF else tuple(_add(tree, c, mods) for c in _hooked_calls(node))
    mods.append(_ds_module(tree, node, children))
    return len(mods) - 1


def _ds_module(tree: ModelTree, node: Node, children: tuple[int, ...]) -> DsModule:
    grad_out = node.kind not in _NO_GRAD_OUT
    grad_in = grad_out and node.kind not in _IDS_IN
    if node.kind in _Z3_LEAF:
        # one hooked module holding its subtree's parameters; its compute is the block's ops
        # (zsim.workload prices a block name as its ops in forward order)
        params = tuple(i for n in node.walk() for i in tree.uses(n))
        return DsModule(node.name, params, node.name, grad_out, grad_in, (), node.kind)
    return DsModule(node.name, tree.uses(node), node.op, grad_out, grad_in, children, node.kind,
                    _children_after_core(node))


def _children_after_core(node: Node) -> int:
    """How many children ``node`` calls after its own op; they must be leaves (one backward
    release each), so the core's backward runs after that many releases."""
    calls = list(node.calls)
    if SELF not in calls:
        return 1
    after = [node.child(c) for c in calls[calls.index(SELF) + 1:]]
    if not after or any(c.children for c in after):
        raise ValueError(f"z3modules: {node.name!r} runs its own op before a container or last")
    return len(after)


def _hooked_calls(node: Node) -> list[Node]:
    """The children ``node`` calls, in order, with module lists flattened. A container's own
    op (self_attn's core) runs before the leaves that follow it in ``calls`` (o_proj; GPT-2's
    c_proj and resid_dropout): :func:`_forward_events` and :func:`_place_attention_core`
    put it there from :func:`_children_after_core`."""
    out: list[Node] = []
    for c in node.called():
        if c is None:
            continue
        out += _hooked_calls(c) if c.kind == "module_list" else [c]
    return out


def _post_order(mods: list[DsModule], m: int, out: list[int]) -> None:
    for c in mods[m].children:
        _post_order(mods, c, out)
    out.append(m)


def _forward_events(mods: list[DsModule], m: int, pass_: str, out: list) -> None:
    """Pre hook (fetch), the module's own compute (leaves; the attention core of self_attn
    runs between v and o), the children, post hook (release)."""
    mod = mods[m]
    out.append(Fetch(m, True))
    if not mod.children and mod.compute:
        out.append(Compute(mod.compute, pass_))
    for k, c in enumerate(mod.children):
        if mod.compute and k == len(mod.children) - mod.after_core:  # attention core before o_proj
            out.append(Compute(mod.compute, pass_))
        _forward_events(mods, c, pass_, out)
    out.append(Release(m, True))


def micro_step_events(mods: list[DsModule], first_use: dict[int, int], checkpointing: bool) -> list[Event]:
    """Host-order events of one forward+backward (the records of :mod:`.events`).

    ``first_use`` maps a parameter to the module index whose backward completes its
    gradient (the first user in forward order). With activation checkpointing, a decoder
    layer's forward is recomputed (its children's forward hooks fire again, forward=True)
    when its first module with saved tensors — the last leaf of the layer — starts its
    backward, i.e. after the pre-backward hooks of the layer, its mlp and down_proj.
    Checkpointing's own host work is a ``Checkpoint`` event before each layer's forward and
    before its recompute.
    """
    events: list = []
    _forward_events(mods, 0, "fwd", events)
    if checkpointing:
        events = _with_checkpoint_frames(mods, events)
    order: list[int] = []
    _post_order(mods, 0, order)
    layer_of: dict[int, int] = {}
    for idx, mod in enumerate(mods):
        if mod.kind == "decoder_layer":
            for d in _descendants(mods, idx):
                layer_of[d] = idx
    recomputed: set[int] = set()
    for m in reversed(order):
        mod = mods[m]
        if not mod.grad_out:
            continue
        events.append(Fetch(m, False))
        if mod.children:
            if mod.compute:  # the attention core's backward runs after o_proj's
                grads = tuple(p for p in _grad_order(mod) if first_use.get(p) == m)
                events.append(_CoreAfterChild(m, mod.after_core, grads, bool(mod.params) and mod.grad_in))
            continue
        layer = layer_of.get(m)
        if checkpointing and layer is not None and layer not in recomputed:
            # transformers checkpoints the layer's forward(), not __call__ (modeling_layers.py:
            # "so module hooks stay outside the checkpoint"): the recompute runs the hooks of
            # the layer's children but not the layer's own [E: DeepSpeed's recorded trace]
            recomputed.add(layer)
            events.append(Checkpoint("recompute"))
            for child in mods[layer].children:
                _forward_events(mods, child, "recompute", events)
        if mod.compute:  # a leaf with hooks but no kernels (a p=0 dropout) computes nothing
            events.append(Compute(mod.compute, "bwd"))
        for p in _grad_order(mod):
            if first_use.get(p) == m:
                events.append(Grad(p))
        if mod.grad_in:
            events.append(Release(m, False))
    events.append(Leftovers())
    return _place_attention_core(events)


def _with_checkpoint_frames(mods: list[DsModule], events: list) -> list:
    """``events`` with a ``Checkpoint("fwd")`` right after each decoder layer's pre-forward
    hook: transformers checkpoints the layer's forward(), inside its module hooks
    (modeling_layers.py), so the checkpoint's frame is set up after DeepSpeed's fetch."""
    out: list = []
    for ev in events:
        out.append(ev)
        if isinstance(ev, Fetch) and ev.forward and mods[ev.module].kind == "decoder_layer":
            out.append(Checkpoint("fwd"))
    return out


@dataclass(frozen=True)
class _CoreAfterChild:
    """Placeholder: the container's own backward compute goes right after its last child's
    backward (o_proj for self_attn); :func:`_place_attention_core` resolves it."""

    module: int
    after: int = 1   # backward releases (of the children called after the core) to wait for
    #: gradient hooks of the container's own parameters, after its core's backward: DeepSeek's
    #: experts module (not a ZeRO-3 leaf there) owns gate_up_proj and down_proj and calls its
    #: act_fn child between the two grouped GEMMs; zsim times both GEMMs as one op after
    #: act_fn's backward, so down_proj's hook (really before act_fn's backward) fires with
    #: gate_up_proj's, after it
    grads: tuple[int, ...] = ()
    #: the container owns parameters: its post-backward hook releases them after its core
    #: (containers without parameters release nothing, so their hook is not emitted)
    release: bool = False


def _grad_order(mod: DsModule) -> tuple[int, ...]:
    """Order of a module's gradient hooks. zero.Init replaces F.linear by
    LinearFunctionForZeroStage3 (partition_parameters.py:411-419, memory_efficient_linear on
    by default), whose single backward node returns (input, weight, bias) grads
    (runtime/zero/linear.py:80-142): the WEIGHT's hook fires before the bias's [E] — the
    opposite of plain autograd (stage 1/2)."""
    if mod.kind in _Z3_LEAF:   # reduce_leaf_module_grads: the leaf's parameters in order
        return mod.params
    return mod.params if mod.kind in _LINEAR else tuple(reversed(mod.params))


def _place_attention_core(events: list) -> list[Event]:
    out: list = []
    pending: list[list] = []   # [module, releases still to wait for, its own gradient hooks]
    for ev in events:
        if isinstance(ev, _CoreAfterChild):
            pending.append([ev.module, ev.after, ev.grads, ev.release])
            continue
        out.append(ev)
        if pending and isinstance(ev, Release) and not ev.forward:
            # the backward releases after self_attn's pre-backward hook are those of the
            # leaves called after the core (o_proj's alone in Llama)
            pending[-1][1] -= 1
            if pending[-1][1] == 0:
                module, _, grads, release = pending.pop()
                out.append(ComputeCore(module))
                out += [Grad(p) for p in grads]
                if release:
                    out.append(Release(module, False))
    return out


def _descendants(mods: list[DsModule], m: int) -> list[int]:
    out = [m]
    for c in mods[m].children:
        out += _descendants(mods, c)
    return out


def first_use_modules(mods: list[DsModule]) -> dict[int, int]:
    """Parameter -> the module that uses it first in forward order (its gradient hook fires
    after that module's backward; a tied embedding after embed_tokens, not lm_head)."""
    events: list = []
    _forward_events(mods, 0, "fwd", events)
    out: dict[int, int] = {}
    for ev in events:
        if isinstance(ev, Fetch):
            for p in mods[ev.module].params:
                out.setdefault(p, ev.module)
    return out


@functools.lru_cache(maxsize=8)
def hook_events(model: ModelSpec, checkpointing: bool) -> tuple[tuple[DsModule, ...], tuple[Event, ...]]:
    """``build_tree(model)`` and the events of its micro-step (:func:`micro_step_events`),
    made once per model and checkpointing: every stage-3 build and bucket recount of a search
    reads the same ones (70B: 1,046 modules, ~8,000 events), and both are immutable (frozen
    records in tuples)."""
    mods = build_tree(model)
    return tuple(mods), tuple(micro_step_events(mods, first_use_modules(mods), checkpointing))


def module_trace(model: ModelSpec, checkpointing: bool = False) -> list[str]:
    """The coordinator's recorded trace of one micro-step: every module whose pre-forward or
    pre-backward hook fetches, in order ("" = the root). Checked against DeepSpeed's own
    ``__submodule_order`` in the CPU truth suite."""
    mods = build_tree(model)
    events = micro_step_events(mods, first_use_modules(mods), checkpointing)
    return [mods[e.module].name for e in events if isinstance(e, Fetch)]
