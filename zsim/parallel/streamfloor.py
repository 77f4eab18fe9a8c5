"""A floor under a data-parallel step (no pipeline) from its ZeRO work, without simulating:
what `zsim plan --search-3d` (zsim.parallel.plan3d) adds to its compute floor.

Every stream of the engine runs its ops one at a time and an op's price does not depend on
when it runs (:class:`zsim.system.costs.OpCoster` prices it from its fields alone), so a
simulated step lasts at least the summed prices of any one stream's ops. ZeRO's own ops
(collectives, copies, optimizer kernels, host hooks and loops: every op but the model's
kernels) do not depend on the micro-batch: the schedule layer never reads it
(:func:`zsim.parallel.stages.schedule_fields`). So one schedule of one micro-step, priced
once per layout and ZeRO setting, bounds every micro-batch:

- ZeRO-3 repeats the same ops in every micro-step (each replays the module hooks from the
  same coordinator state; :func:`zsim.schedule.stage3.emit_stage3`): a stream's busy time
  over ``g`` micro-steps is its optimizer-step part plus ``g`` times its micro-step part;
- ZeRO-0/1/2 reduce once per step (stages 0-1) or per micro-step with a last-micro-step
  epilogue (stage 2): a step of ``g`` micro-steps issues at least the ops of a one-micro-step
  step, so that step's busy time bounds it.

On the compute stream the model's kernels and the split's collectives are the compute floor
(:meth:`zsim.parallel.stagemem.StageMemoryModel.floor_s`); ZeRO's ops there add to it.
Module hooks and host loops run on the host thread (:func:`zsim.system.host.split_host`
moves them); the kernels' dispatch is left out (it depends on the kernels), which only
lowers the floor. ``tests/test_parallel_plan.py`` checks the floor against simulated steps.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace

from ..collective_pricing import collective_timer
from ..job import JobSite, RunSettings
from ..predict import host_share
from ..system.costs import OpCoster
from ..system.host import HOST
from .stages import ParallelAsk, StageSetup, schedule_fields, stage_setup, under_mpu, zero_ops

#: Relative margin under the summed prices: the engine adds the same durations to its clock
#: one at a time, which can round the other way by a few ulps.
_ROUNDING = 1e-9


@dataclass(frozen=True)
class ZeroBusy:
    """Busy seconds of each stream from ZeRO's ops in a one-micro-step step: the optimizer
    step's part and one micro-step's part; ``repeats``: whether every micro-step issues the
    micro-step part again (ZeRO-3)."""

    step_s: dict[str, float]
    micro_s: dict[str, float]
    repeats: bool

    def stream_s(self, stream: str, grad_accum: int) -> float:
        """A floor of ``stream``'s busy seconds from ZeRO's ops over ``grad_accum`` micro-steps."""
        per = self.micro_s.get(stream, 0.0)
        return self.step_s.get(stream, 0.0) + (grad_accum if self.repeats else 1) * per


def _engine_stream(op) -> str:
    """The stream an op runs on in the engine (hooks and host loops move to the host thread)."""
    return HOST if op.stream == "compute" and op.kind in ("overhead", "host_loop") else op.stream


def zero_busy(s: StageSetup) -> ZeroBusy:
    """:class:`ZeroBusy` of ``s``'s ZeRO schedule at one micro-step (no pipeline)."""
    run = replace(s.run, grad_accum=1)
    ops, _ = zero_ops(s, run, 0, (s.shard.num_layers,))
    ops = under_mpu(s, ops)             # the step the simulation runs (model-parallel repeats)
    hw = s.site.hardware
    coster = OpCoster(s.workload, run.precision, hw, collective_timer(s.site.cluster, hw),
                      host_share(s.site.cluster, s.site.cpu_threads))
    step: dict[str, float] = defaultdict(float)
    micro: dict[str, float] = defaultdict(float)
    for op in ops:
        if op.kind == "compute":
            continue                    # the model's kernels: the compute floor's
        (step if op.phase == "step" else micro)[_engine_stream(op)] += coster(op).duration_s
    return ZeroBusy(dict(step), dict(micro), run.zero.stage == 3)


def stream_floor_s(busy: ZeroBusy, compute_floor_s: float, grad_accum: int, framework_s: float) -> float:
    """A floor of the step: the busiest stream's ZeRO work (the compute stream's plus the
    compute floor) over ``grad_accum`` micro-steps, plus the engine's per-step bookkeeping."""
    streams = set(busy.step_s) | set(busy.micro_s) | {"compute"}
    longest = max(busy.stream_s(st, grad_accum) + (compute_floor_s if st == "compute" else 0.0) for st in streams)
    return (longest + framework_s) * (1 - _ROUNDING)


class StreamFloors:
    """:func:`stream_floor_s` of a search's candidates, one :func:`zero_busy` per layout
    shard, ZeRO group and ZeRO setting (candidates that share them share the schedule)."""

    def __init__(self, settings: RunSettings, site: JobSite):
        self.settings, self.site = settings, site
        self._busy: dict[tuple, ZeroBusy] = {}

    def floor_s(self, ask: ParallelAsk, run_fields: dict, compute_floor_s: float) -> float:
        """The floor of one candidate (``run_fields``: its RunSettings.with_run fields)."""
        s = stage_setup(self.settings.with_run(**{**run_fields, "grad_accum": 1}), ask, self.site)
        key = (s.shard, s.zero, s.model_parallel, schedule_fields(s.run))
        if key not in self._busy:
            self._busy[key] = zero_busy(s)
        hw = self.site.hardware.overheads
        ga = run_fields["grad_accum"]
        return stream_floor_s(self._busy[key], compute_floor_s, ga, hw.step_fixed_s + ga * hw.micro_step_fixed_s)


__all__ = ["ZeroBusy", "zero_busy", "stream_floor_s", "StreamFloors"]
