"""Module execution order and gradient-hook order of a Hugging Face decoder-only model.

Derived from shapes only (no torch). Forward runs the modules in the order listed by
:func:`forward_modules`; backward runs them in reverse. A parameter's gradient hook
(``register_post_accumulate_grad_hook``, deepspeed/utils/torch.py:40-46) fires when its
gradient is complete, i.e. after the backward of the FIRST module (in forward order) that uses
it: a tied embedding fires last, after the embedding's backward, not at the lm_head. Within a
module autograd finishes the bias before the weight. Checked against torch 2.13 autograd
for Llama and Qwen2 (tied/untied, with and without non-reentrant checkpointing): the hook
order is lm_head, model.norm, then per layer from the last: down, up, gate,
post_attention_layernorm, o, v(bias, weight), k, q, input_layernorm, and the embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ..model import ModelSpec
from ..modeltree import model_tree


@dataclass(frozen=True)
class Module:
    """One module the forward pass runs: its HF name, decoder layer and parameter indices.

    ``params`` index into ``ModelSpec.parameters()``; a tied lm_head lists the embedding.
    """

    name: str
    layer: int
    params: tuple[int, ...]
    in_layer: bool = False   # inside a decoder layer (recomputed with activation checkpointing)


def forward_modules(model: ModelSpec) -> list[Module]:
    """Modules in forward execution order, including parameter-less ones (attention core,
    MLP activation, timed as "model.layers.{i}.mlp") that the workload model times: the
    compute ops of :meth:`zsim.modeltree.ModelTree.forward`."""
    return list(_forward_modules(model))


@lru_cache(maxsize=64)
def _forward_modules(model: ModelSpec) -> tuple[Module, ...]:
    # cached (modules are frozen): a search builds a schedule per layout and ZeRO setting
    tree = model_tree(model)
    return tuple(Module(n.op, n.layer, tree.uses(n), 0 <= n.layer < model.num_layers) for n in tree.forward())


def hook_order(modules: list[Module]) -> list[tuple[int, int]]:
    """``[(param index, backward module position), ...]`` in gradient-hook order.

    The position is the index into ``reversed(modules)`` whose backward completes the
    gradient, so callers can place each hook right after that module's backward op.
    """
    first_use: dict[int, int] = {}
    for pos, m in enumerate(modules):
        for p in m.params:
            first_use.setdefault(p, pos)
    out = []
    n = len(modules)
    for bpos, m in enumerate(reversed(modules)):
        fpos = n - 1 - bpos
        for p in reversed(m.params):  # bias before weight (autograd order)
            if first_use[p] == fpos:
                out.append((p, bpos))
    return out
