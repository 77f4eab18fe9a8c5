"""GPU memory over one micro-step as the memory model sees it: the moments between which
:func:`zsim.memory.estimate_memory` reasons, each with what is live.

:func:`estimate_memory` prices a handful of moments (start of forward, the loss's backward,
the first layers backward visits or, for stages 1/2, the first gradient hook and the first
bucket reduction, the end of backward, the optimizer step) and reports the
largest. This module returns every one of them, built from the same terms, so a drawing of
memory over a step peaks exactly where the estimate does (tests/test_memory_curve_ux.py
checks that the largest moment equals ``estimate_memory(...).peak_bytes``). Between moments
the model has memory change linearly (activations fill through forward and drain through
backward while gradients fill), so a curve through the moments is the model's curve.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

from .dsconfig import RunConfig
from .memory import MemoryFacts, _activations, _buffers, _model_states, backward_moments, step_terms
from .workload import Workload

#: The phase of the step each moment belongs to, and where in that phase (0: its start,
#: 1: its end; "first layers" is one decoder layer into backward).
PHASES = ("forward", "backward", "step")
#: zsim.memory.backward_moments' keys -> the names the curve shows.
MOMENT_NAMES = {"loss": "loss backward", "layers": "first layers backward", "hook": "first gradient hook",
                "reduce": "first bucket reduction", "end": "end of backward"}


@dataclass(frozen=True)
class MemoryMoment:
    """Allocated bytes per GPU at one moment of a micro-step, by memory term.

    ``phase`` is forward, backward or step; ``position`` where in the phase (0 to 1);
    ``breakdown`` uses :attr:`zsim.memory.MemoryEstimate.breakdown`'s keys, allocator
    overhead included."""

    name: str
    phase: str
    position: float
    breakdown: Mapping[str, int]

    @property
    def total_bytes(self) -> int:
        """Everything live at this moment."""
        return int(sum(self.breakdown.values()))


def _moment(name: str, phase: str, position: float, terms: dict[str, int], overhead: float) -> MemoryMoment:
    raw = sum(terms.values())
    return MemoryMoment(name, phase, position,
                        {**{k: int(v) for k, v in terms.items()}, "allocator_overhead": int(raw * overhead)})


def memory_moments(workload: Workload, run: RunConfig, facts: MemoryFacts,
                   allocator_overhead_fraction: float = 0.0, *, parameters: int | None = None,
                   in_flight: int = 1, logits: bool = True) -> tuple[MemoryMoment, ...]:
    """The moments of one micro-step that :func:`zsim.memory.estimate_memory` compares, in
    time order (the optimizer step's moment applies to the last micro-step only);
    ``parameters``, ``in_flight`` and ``logits`` as in :func:`~zsim.memory.estimate_memory`
    (a pipeline stage)."""
    psi = workload.model.num_parameters if parameters is None else parameters
    states = _model_states(run, psi, facts.partition_numel)
    buffers = _buffers(run, facts, psi)
    act = _activations(workload, run, in_flight, logits)
    f = allocator_overhead_fraction
    start = {"params": states.params, "optimizer_states": states.optimizer,
             "grads": states.grads_static + states.grads_prev, "buffers": buffers.static + buffers.live,
             "activations": 0, "logits_loss": 0}
    backward = backward_moments(run, facts, psi, act, states, buffers, workload.model.num_layers)
    return (_moment("forward starts", "forward", 0.0, start, f),
            *(_moment(MOMENT_NAMES[m.key], "backward", m.position, dict(m.terms), f) for m in backward),
            _moment("optimizer step", "step", 0.5, step_terms(states, buffers), f))


@dataclass(frozen=True)
class CurvePoint:
    """One point of the curve: ``time_s`` from the start of the optimizer step, the moment
    in force there and its micro-step."""

    time_s: float
    moment: MemoryMoment
    micro_step: int


def memory_curve(moments: tuple[MemoryMoment, ...], windows) -> tuple[CurvePoint, ...]:
    """The moments placed on the step's phase windows (``windows``: objects with ``phase``,
    ``micro_step``, ``start_s`` and ``wall_s``, as :func:`zsim.diagnose.predicted.predicted_side`
    gives them), in time order. A moment that starts a phase is repeated at the same time
    as the moment it follows ends, so a line through the points draws the jumps (buffers
    freed between phases) as vertical steps."""
    by_phase = {m.phase: [] for m in moments}
    for m in moments:
        by_phase[m.phase].append(m)
    points: list[CurvePoint] = []
    for w in sorted((w for w in windows if w.phase in PHASES and w.start_s is not None),
                    key=lambda w: (w.start_s, PHASES.index(w.phase))):
        for m in by_phase.get(w.phase, ()):
            if w.phase == "step":   # the step's transients last the whole step
                points.append(CurvePoint(w.start_s, m, w.micro_step))
                points.append(CurvePoint(w.start_s + w.wall_s, m, w.micro_step))
            else:
                points.append(CurvePoint(w.start_s + m.position * w.wall_s, m, w.micro_step))
    if points:   # after the step: back to what forward starts from
        points.append(CurvePoint(points[-1].time_s, by_phase["forward"][0], points[-1].micro_step))
    # A window's end (start + wall) and the next window's start are one instant computed two
    # ways: keep the rounding of the sums from ordering them backwards.
    for i in range(1, len(points)):
        if points[i].time_s < points[i - 1].time_s:
            points[i] = replace(points[i], time_s=points[i - 1].time_s)
    return tuple(points)


def peak_point(points: tuple[CurvePoint, ...]) -> CurvePoint:
    """The first point where the curve is highest."""
    return max(points, key=lambda p: (p.moment.total_bytes, -p.time_s))
