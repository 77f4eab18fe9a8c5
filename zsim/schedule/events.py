"""Typed records of the stage-3 host events of one micro-step, in host program order.

:func:`zsim.schedule.z3modules.micro_step_events` lists them as tuples (``(FETCH, module,
forward)``, ...); :func:`typed_events` turns each into one of the frozen records below, which
the stage-3 replay (:mod:`.stage3`) matches on. ``module`` is an index into the hooked
module tree (:func:`zsim.schedule.z3modules.build_tree`), ``param`` an index into the
model's parameters in named_parameters order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Fetch:
    """A module's pre-forward (``forward``) or pre-backward hook: gather its parameters."""

    module: int
    forward: bool


@dataclass(frozen=True)
class Release:
    """A module's post-forward (``forward``) or post-backward hook: release its parameters."""

    module: int
    forward: bool


@dataclass(frozen=True)
class Compute:
    """A leaf module's kernels: ``pass_`` is "fwd", "bwd" or "recompute"."""

    name: str
    pass_: str


@dataclass(frozen=True)
class ComputeCore:
    """A container's own backward compute (the attention core, after o_proj's backward)."""

    module: int


@dataclass(frozen=True)
class Grad:
    """A parameter's gradient is complete: its hook adds it to the reduction bucket."""

    param: int


@dataclass(frozen=True)
class Checkpoint:
    """Activation checkpointing's own host work for one decoder layer: ``pass_`` "fwd" (before
    the layer's forward, inside its pre-forward hook) or "recompute" (before the recompute)."""

    pass_: str


@dataclass(frozen=True)
class Leftovers:
    """End of backward: flush the bucket, release what no post-backward hook released."""


#: One host event of a micro-step.
Event = Union[Fetch, Release, Compute, ComputeCore, Grad, Checkpoint, Leftovers]


__all__ = ["Fetch", "Release", "Compute", "ComputeCore", "Grad", "Checkpoint", "Leftovers", "Event"]
