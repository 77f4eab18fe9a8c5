"""Forward and backward walks over the modules, with per-module hooks for the stages.

With activation checkpointing (HF non-reentrant, one checkpoint per decoder layer) the
layer's forward is recomputed when its backward starts: the walk emits ``recompute`` ops
for the layer's modules in forward order (running the stage's pre/post hooks for them, as
DeepSpeed's module hooks fire again) before the layer's first backward op.
"""

from __future__ import annotations

from typing import Callable

from .emit import Emitter
from .order import Module

Hook = Callable[[int, Module, str], None]


def _noop(pos: int, module: Module, pass_: str) -> None:
    return None


def forward(em: Emitter, modules: list[Module], pre: Hook = _noop, post: Hook = _noop) -> None:
    """Forward ops; ``pre``/``post`` get (forward position, module, "fwd")."""
    em.phase = "forward"
    for pos, m in enumerate(modules):
        pre(pos, m, "fwd")
        em.compute(m.name, "fwd")
        post(pos, m, "fwd")


def backward(em: Emitter, modules: list[Module], checkpointing: bool,
             pre: Hook = _noop, post: Hook = _noop) -> None:
    """Backward ops in reverse module order; hooks get (backward position, module, pass_).

    For recompute ops the position is the module's FORWARD position.
    """
    em.phase = "backward"
    layers: dict[int, list[tuple[int, Module]]] = {}
    for fpos, r in enumerate(modules):
        if r.in_layer:
            layers.setdefault(r.layer, []).append((fpos, r))
    current_layer = None
    for bpos, m in enumerate(reversed(modules)):
        if checkpointing and m.in_layer and m.layer != current_layer:
            current_layer = m.layer
            for fpos, r in layers[m.layer]:
                pre(fpos, r, "recompute")
                em.compute(r.name, "recompute")
                post(fpos, r, "recompute")
        pre(bpos, m, "bwd")
        em.compute(m.name, "bwd")
        post(bpos, m, "bwd")
