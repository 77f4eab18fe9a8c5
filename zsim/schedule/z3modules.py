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
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model import ModelSpec


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


#: Event kinds of one micro-step, in host program order.
FETCH, RELEASE, COMPUTE, GRAD, LEFTOVERS = range(5)


def build_tree(model: ModelSpec) -> list[DsModule]:
    """The modules in DeepSpeed's view; index 0 is the root (LlamaForCausalLM)."""
    params = model.parameters()
    by_module: dict[str, list[int]] = {}
    for i, p in enumerate(params):
        by_module.setdefault(p.module, []).append(i)
    mods: list[DsModule] = []

    def add(name: str, compute: str = "", children=(), grad_out=True, grad_in=True, own=None) -> int:
        own_params = tuple(by_module.get(name, ())) if own is None else own
        mods.append(DsModule(name, own_params, compute, grad_out, grad_in, tuple(children)))
        return len(mods) - 1

    root_slot = len(mods)
    mods.append(None)  # type: ignore[arg-type]  # filled last: children first
    model_children = [add("model.embed_tokens", "model.embed_tokens", grad_in=False)]
    if model.learned_positions:
        model_children.append(add("model.embed_positions", "model.embed_positions", grad_in=False))
    else:
        model_children.append(add("model.rotary_emb", grad_out=False, grad_in=False))
    for i in range(model.num_layers):
        p = f"model.layers.{i}"
        ln1 = add(f"{p}.input_layernorm", f"{p}.input_layernorm")
        qkv = [add(f"{p}.self_attn.{x}", f"{p}.self_attn.{x}") for x in ("q_proj", "k_proj", "v_proj")]
        o = add(f"{p}.self_attn.o_proj", f"{p}.self_attn.o_proj")
        attn = add(f"{p}.self_attn", f"{p}.self_attn", children=qkv + [o])
        ln2 = add(f"{p}.post_attention_layernorm", f"{p}.post_attention_layernorm")
        if model.mlp == "swiglu":
            mlp_kids = [add(f"{p}.mlp.gate_proj", f"{p}.mlp.gate_proj"), add(f"{p}.mlp.act_fn", f"{p}.mlp"),
                        add(f"{p}.mlp.up_proj", f"{p}.mlp.up_proj"), add(f"{p}.mlp.down_proj", f"{p}.mlp.down_proj")]
        else:
            mlp_kids = [add(f"{p}.mlp.fc1", f"{p}.mlp.fc1"), add(f"{p}.mlp.act", f"{p}.mlp"),
                        add(f"{p}.mlp.fc2", f"{p}.mlp.fc2")]
        mlp = add(f"{p}.mlp", children=mlp_kids)
        model_children.append(add(p, children=[ln1, attn, ln2, mlp]))
    model_children.append(add("model.norm", "model.norm"))
    inner = add("model", children=model_children, grad_in=False)
    head = (0,) if model.tie_word_embeddings else tuple(by_module["lm_head"])
    lm = add("lm_head", "lm_head", own=head)
    mods[root_slot] = DsModule("", (), "", True, False, (inner, lm))
    return mods


def _post_order(mods: list[DsModule], m: int, out: list[int]) -> None:
    for c in mods[m].children:
        _post_order(mods, c, out)
    out.append(m)


def _forward_events(mods: list[DsModule], m: int, pass_: str, out: list) -> None:
    """Pre hook (fetch), the module's own compute (leaves; the attention core of self_attn
    runs between v and o), the children, post hook (release)."""
    mod = mods[m]
    out.append((FETCH, m, True))
    if not mod.children and mod.compute:
        out.append((COMPUTE, mod.compute, pass_))
    for k, c in enumerate(mod.children):
        if mod.compute and k == len(mod.children) - 1:  # attention core before o_proj
            out.append((COMPUTE, mod.compute, pass_))
        _forward_events(mods, c, pass_, out)
    out.append((RELEASE, m, True))


def micro_step_events(mods: list[DsModule], first_use: dict[int, int], checkpointing: bool) -> list[tuple]:
    """Host-order events of one forward+backward: (FETCH, module, forward), (RELEASE, module,
    forward), (COMPUTE, name, pass_), (GRAD, param), (LEFTOVERS,).

    ``first_use`` maps a parameter to the module index whose backward completes its
    gradient (the first user in forward order). With activation checkpointing, a decoder
    layer's forward is recomputed (its children's forward hooks fire again, forward=True)
    when its first module with saved tensors — the last leaf of the layer — starts its
    backward, i.e. after the pre-backward hooks of the layer, its mlp and down_proj.
    """
    events: list = []
    _forward_events(mods, 0, "fwd", events)
    order: list[int] = []
    _post_order(mods, 0, order)
    layer_of: dict[int, int] = {}
    for idx, mod in enumerate(mods):
        if mod.name.startswith("model.layers.") and mod.name.count(".") == 2:
            for d in _descendants(mods, idx):
                layer_of[d] = idx
    recomputed: set[int] = set()
    for m in reversed(order):
        mod = mods[m]
        if not mod.grad_out:
            continue
        events.append((FETCH, m, False))
        if mod.children:
            if mod.compute:  # the attention core's backward runs after o_proj's
                events.append((COMPUTE_AFTER_CHILD, m))
            continue
        layer = layer_of.get(m)
        if checkpointing and layer is not None and layer not in recomputed:
            # transformers checkpoints the layer's forward(), not __call__ (modeling_layers.py:
            # "so module hooks stay outside the checkpoint"): the recompute runs the hooks of
            # the layer's children but not the layer's own [E: DeepSpeed's recorded trace]
            recomputed.add(layer)
            for child in mods[layer].children:
                _forward_events(mods, child, "recompute", events)
        events.append((COMPUTE, mod.compute, "bwd"))
        for p in _grad_order(mod):
            if first_use.get(p) == m:
                events.append((GRAD, p))
        if mod.grad_in:
            events.append((RELEASE, m, False))
    events.append((LEFTOVERS,))
    return _place_attention_core(events)


#: Placeholder event: the container's own compute goes right after its last child's backward
#: (o_proj for self_attn), resolved by :func:`_place_attention_core`.
COMPUTE_AFTER_CHILD = 99


def _grad_order(mod: DsModule) -> tuple[int, ...]:
    """Order of a module's gradient hooks. zero.Init replaces F.linear by
    LinearFunctionForZeroStage3 (partition_parameters.py:411-419, memory_efficient_linear on
    by default), whose single backward node returns (input, weight, bias) grads
    (runtime/zero/linear.py:80-142): the WEIGHT's hook fires before the bias's [E] — the
    opposite of plain autograd (stage 1/2)."""
    linear = mod.name.endswith(("_proj", "lm_head", ".fc1", ".fc2"))
    return mod.params if linear else tuple(reversed(mod.params))


def _place_attention_core(events: list) -> list:
    out, pending = [], []
    for ev in events:
        if ev[0] == COMPUTE_AFTER_CHILD:
            pending.append(ev[1])
            continue
        out.append(ev)
        if pending and ev[0] == RELEASE and not ev[2]:
            # the first backward release after self_attn's pre-backward hook is o_proj's
            out.append((COMPUTE_CORE, pending.pop()))
    return out


#: A container's own compute in backward (attention core): (COMPUTE_CORE, module index).
COMPUTE_CORE = 98


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
        if ev[0] == FETCH:
            for p in mods[ev[1]].params:
                out.setdefault(p, ev[1])
    return out


def module_trace(model: ModelSpec, checkpointing: bool = False) -> list[str]:
    """The coordinator's recorded trace of one micro-step: every module whose pre-forward or
    pre-backward hook fetches, in order ("" = the root). Checked against DeepSpeed's own
    ``__submodule_order`` in the CPU truth suite."""
    mods = build_tree(model)
    events = micro_step_events(mods, first_use_modules(mods), checkpointing)
    return [mods[e[1]].name for e in events if e[0] == FETCH]
