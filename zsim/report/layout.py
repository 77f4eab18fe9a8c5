"""The numbers of a report for one tensor/pipeline/sequence layout, and the comparison of ZeRO
data parallelism with 3D layouts on the same cluster.

Both come from :mod:`zsim.parallel`: the layout's configurations from the joint search of
``zsim plan --search-3d`` pinned to the layout (:func:`zsim.parallel.plan3d.plan_parallel`),
its per-ZeRO-stage rows from :func:`zsim.parallel.predict3d.predict_parallel`, the prediction
``zsim predict --tp/--pp/--sp`` prints, so every number equals predict's with the same flags.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..decide.api import search_seq_len
from ..errors import ZsimInputError
from ..job import RunSettings, place
from ..model import load_model
from ..parallel.layout import LayoutPlacement, derive_layout, place_layout
from ..parallel.plan3d import Finalist, Pins, Plan3D, layouts, plan_parallel
from ..parallel.predict3d import ParallelAsk, ParallelPrediction, predict_parallel
from ..parallel.stages import stage_setup

STAGES = (0, 1, 2, 3)
#: Configurations each ranking of the report shows.
TOP_N = 5


@dataclass(frozen=True)
class StageRow:
    """One ZeRO stage at the recommended batch under the layout: its prediction, or the one
    line predict refuses it with (DeepSpeed's PipelineEngine runs ZeRO-0 and ZeRO-1 only)."""

    stage: int
    result: ParallelPrediction | None
    refusal: str | None = None


@dataclass(frozen=True)
class Comparison:
    """The joint search over every layout the model and cluster allow, at the report's global
    batch and sequence; ``data_parallel`` is the best tp 1 x pp 1 x sp 1 configuration when the
    ranking has none; ``reason`` says why there is no comparison (then ``plan`` is None)."""

    plan: Plan3D | None
    data_parallel: Finalist | None = None
    reason: str | None = None

    @property
    def rows(self) -> tuple[Finalist, ...]:
        """The ranking, with the best data-parallel configuration after it when it is not in it."""
        if self.plan is None:
            return ()
        return self.plan.ranked + ((self.data_parallel,) if self.data_parallel else ())


@dataclass(frozen=True)
class LayoutReportData:
    """All a report for one layout shows."""

    settings: RunSettings        # what every prediction ran on (model spec, hardware, seq loaded)
    ask: ParallelAsk
    placement: LayoutPlacement
    plan: Plan3D                 # the joint search pinned to the layout
    best: ParallelPrediction     # the winner's prediction, with its timeline
    per_stage: tuple[StageRow, ...]
    comparison: Comparison
    hardware_calibrated: bool
    provenance: Any              # zsim.provenance.Provenance of the hardware profile

    @property
    def winner(self) -> Finalist:
        """The recommended configuration of the layout."""
        return self.plan.ranked[0]


def report_settings(settings: RunSettings) -> RunSettings:
    """``settings`` without run fields, with the model and hardware profile loaded once and the
    sequence length decided (``zsim plan``'s rule: the model's positions capped at the default)."""
    spec = load_model(settings.model)
    base = replace(settings.without_run(), model=spec, seq=search_seq_len(settings.seq, spec))
    return replace(base, hardware=place(base).hardware)


def _no_comparison(settings: RunSettings) -> str | None:
    """Why the joint search has nothing to compare on this model and cluster, or None."""
    if settings.ep is not None or settings.moe_config is not None:
        return ("expert parallelism (--ep/--moe-config) combined with tensor/pipeline/sequence parallelism "
                "is not modelled, so there are no 3D layouts to compare with")
    if all(ask.data_only for ask in layouts(place(settings), Pins())):
        return ("zsim models tensor, pipeline and Ulysses sequence parallelism for dense Llama-family models "
                "only, so this model has no 3D layout to compare with")
    return None


def compare_layouts(settings: RunSettings, global_batch: int, top_n: int = TOP_N) -> Comparison:
    """ZeRO data parallelism against 3D layouts: ``zsim plan --search-3d`` at ``global_batch``
    (``settings`` as :func:`report_settings` returns them)."""
    reason = _no_comparison(settings)
    if reason:
        return Comparison(None, reason=reason)
    try:
        plan = plan_parallel(settings, Pins(), global_batch=global_batch, top_n=top_n)
    except ZsimInputError as e:        # e.g. a global batch no layout's data-parallel size divides
        return Comparison(None, reason=f"the joint search refuses this run: {e}")
    if not plan.ranked:
        return Comparison(None, reason="no configuration of the joint search fits in GPU memory")
    if any(f.candidate.ask.data_only for f in plan.ranked):
        return Comparison(plan)
    dp = plan_parallel(settings, Pins(tp=1, pp=1, sp=1), global_batch=global_batch, top_n=1)
    return Comparison(plan, dp.ranked[0] if dp.ranked else None)


def _stage_row(settings: RunSettings, ask: ParallelAsk, winner: Finalist, stage: int) -> StageRow:
    """The layout's prediction of ``stage`` at the winner's batch and checkpointing, no offload."""
    c = winner.candidate
    run = settings.with_run(stage=stage, micro_batch=c.micro_batch, grad_accum=c.grad_accum,
                            activation_checkpointing=c.checkpointing)
    try:
        return StageRow(stage, predict_parallel(run, ask))
    except ZsimInputError as e:
        return StageRow(stage, None, str(e))


def collect_layout(settings: RunSettings, ask: ParallelAsk, global_batch: int | None = None,
                   top_n: int = TOP_N) -> LayoutReportData:
    """Search the layout's configurations, predict each ZeRO stage at the winner's batch, and
    compare with the joint search; bad or unmodelled input raises ZsimInputError."""
    base = report_settings(settings)
    site = place(base)
    # predict's checks first (layout, family, divisibility): the search would skip the layout silently
    stage_setup(base.with_run(stage=0, micro_batch=1, grad_accum=1), ask, site)
    pins = Pins(tp=ask.tp, pp=ask.pp, sp=ask.sp, sequence_parallel=ask.sequence_parallel)
    plan = plan_parallel(base, pins, global_batch=global_batch, top_n=top_n)
    if not plan.ranked:
        raise ZsimInputError(f"report: no configuration of {site.model.name} with {ask.flags()} fits in GPU "
                             f"memory on {site.cluster.world_size} GPUs (global batch {plan.global_batch})")
    winner = plan.ranked[0]
    best = predict_parallel(base.with_run(**winner.candidate.run_fields()), ask, keep_timeline=True)
    layout = derive_layout(site.cluster.world_size, ask.tp, ask.pp, ask.sp)
    return LayoutReportData(
        settings=base, ask=ask, placement=place_layout(layout, site.cluster.gpus_per_node, site.cluster.num_nodes),
        plan=plan, best=best, per_stage=tuple(_stage_row(base, ask, winner, s) for s in STAGES),
        comparison=compare_layouts(base, plan.global_batch, top_n),
        hardware_calibrated=bool(site.hardware.calibrated), provenance=site.provenance)


__all__ = ["StageRow", "Comparison", "LayoutReportData", "report_settings", "compare_layouts", "collect_layout"]
