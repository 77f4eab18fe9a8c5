"""Forward and backward walks over the modules, with per-module hooks for the stages.

With activation checkpointing (HF non-reentrant, one checkpoint per decoder layer) the
layer's forward is recomputed when its backward starts: the walk emits ``recompute`` ops
for the layer's modules in forward order (running the stage's pre/post hooks for them, as
DeepSpeed's module hooks fire again) before the layer's first backward op.

Checkpointing is also Python of its own, once per layer and pass (torch 2.13
torch/utils/checkpoint.py, ``_checkpoint_without_reentrant_generator``: the frame and the RNG
stash before the forward, a pack hook per saved tensor; on the first unpack in backward the
RNG restore, the recompute under ``_recomputation_hook`` and the unpack hooks): one host
``overhead`` op per checkpointed layer before its forward (``checkpoint_forward_s``) and
before its recompute (``checkpoint_recompute_s``), priced from
validation/microbench/checkpoint.py.
"""

from __future__ import annotations

from typing import Callable

from .emit import Emitter
from .order import Module

Hook = Callable[[int, Module, str], None]


def _noop(pos: int, module: Module, pass_: str) -> None:
    return None


#: The hardware profile's overheads priced once per checkpointed layer, per pass.
CHECKPOINT_OVERHEAD = {"fwd": "checkpoint_forward_s", "recompute": "checkpoint_recompute_s"}


def checkpoint_overhead(em: Emitter, pass_: str) -> None:
    """Activation checkpointing's own host time for one layer in ``pass_`` (see above)."""
    em.add("compute", "overhead", f"checkpoint_{pass_}", overhead=CHECKPOINT_OVERHEAD[pass_], count=1)


def forward(em: Emitter, modules: list[Module], pre: Hook = _noop, post: Hook = _noop,
            checkpointing: bool = False) -> None:
    """Forward ops; ``pre``/``post`` get (forward position, module, "fwd")."""
    em.phase = "forward"
    current_layer = None
    for pos, m in enumerate(modules):
        if checkpointing and m.in_layer and m.layer != current_layer:
            current_layer = m.layer
            checkpoint_overhead(em, "fwd")
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
            checkpoint_overhead(em, "recompute")
            for fpos, r in layers[m.layer]:
                pre(fpos, r, "recompute")
                em.compute(r.name, "recompute")
                post(fpos, r, "recompute")
        pre(bpos, m, "bwd")
        em.compute(m.name, "bwd")
        post(bpos, m, "bwd")
