"""The numbers behind a report: per-stage predictions, scaling, micro-batch sweep, memory vs N.

Everything is predicted by the stages of :mod:`zsim.predict` on :class:`~zsim.job.RunSettings`
that differ from the plan's winner in one field (or by its memory model); step times at
large gradient accumulation are extrapolated from G = 1 and G = 2, which is exact for the
simulator (see :mod:`zsim.decide.evaluate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from ..decide.api import plan_settings
from ..decide.autoconfig import read_user_config
from ..decide.evaluate import Evaluator, setting_of
from ..decide.space import Candidate
from ..defaults import DEFAULT_TOPO
from ..dsconfig import OffloadDevice
from ..errors import ZsimInputError
from ..hardware import HardwareProfile
from ..job import RunSettings, place
from ..model import load_model
from ..predict import predict_settings
from .layout import Comparison, compare_layouts

STAGES = (0, 1, 2, 3)
SCALING_NODES = (1, 2, 4, 8, 16, 32, 64)
MICRO_BATCHES = (1, 2, 4, 8, 16, 32)


@dataclass(frozen=True)
class Point:
    """One predicted point of a curve (tokens/s is None when the run does not fit)."""

    x: int
    tokens_per_s: float | None
    peak_memory_bytes: int
    fits: bool


@dataclass(frozen=True)
class MemoryPoint:
    """Per-GPU bytes at N GPUs: ZeRO-3 (peak, model states) and the stage-0 baseline / N."""

    gpus: int
    zero3_peak_bytes: int
    zero3_states_bytes: int
    baseline_peak_over_n: float
    baseline_states_over_n: float


@dataclass(frozen=True)
class ReportData:
    """All a report shows."""

    plan: Any                      # zsim.decide.api.PlanResult
    best: Any                      # Prediction of the winner, with its timeline
    per_stage: dict[int, Any]      # stage -> Prediction at the winner's batch and checkpointing
    scaling: dict[int, list[Point]]
    micro: dict[int, list[Point]]
    memory_vs_n: list[MemoryPoint]
    nodes: int | None
    gpus: int | None
    hardware_calibrated: bool = False
    comparison: Comparison | None = None   # ZeRO data parallelism against 3D layouts (None: not asked)
    refused: dict[int, str] = field(default_factory=dict)   # stage -> why predict does not run it


def _tokens_per_s(settings: RunSettings, grad_accum: int) -> tuple[Any, float]:
    """(prediction at G = 1, tokens/s at ``grad_accum``) by linear extrapolation in G."""
    p1 = predict_settings(replace(settings, grad_accum=1))
    if grad_accum == 1:
        return p1, p1.tokens_per_s
    p2 = predict_settings(replace(settings, grad_accum=2))
    step = p1.step_time_s + (grad_accum - 1) * (p2.step_time_s - p1.step_time_s)
    # tokens per step grow with G: tokens(G) = tokens(1) * G.
    return p1, p1.tokens_per_s * p1.step_time_s * grad_accum / step


def collect(model: Any = None, topo: str | Path = DEFAULT_TOPO, *, gpus: int | None = None,
            nodes: int | None = None, seq: int | None = None, global_batch: int | None = None,
            hardware: str | Path | HardwareProfile | None = None,
            scaling_nodes: tuple[int, ...] = SCALING_NODES, micro_batches: tuple[int, ...] = MICRO_BATCHES,
            progress: Callable | None = None) -> ReportData:
    """Plan, then predict what the figures need."""
    return collect_settings(RunSettings(model=model, topo=topo, gpus=gpus, nodes=nodes, seq=seq, hardware=hardware),
                            global_batch=global_batch, scaling_nodes=scaling_nodes, micro_batches=micro_batches,
                            progress=progress)


def collect_settings(settings: RunSettings, *, global_batch: int | None = None,
                     scaling_nodes: tuple[int, ...] = SCALING_NODES, micro_batches: tuple[int, ...] = MICRO_BATCHES,
                     progress: Callable | None = None, compare: bool = True) -> ReportData:
    """:func:`collect` of run settings (their run fields pin the plan's search); ``compare``:
    also run the joint tensor/pipeline/sequence search (:func:`~.layout.compare_layouts`)."""
    spec = load_model(settings.model)
    topo, gpus, nodes = settings.topo, settings.gpus, settings.nodes
    result = plan_settings(replace(settings, model=spec), global_batch=global_batch, progress=progress)
    if result.best is None:
        closest = min(result.rejected, key=lambda r: r.memory.overflow_bytes)
        raise ZsimInputError(f"report: no configuration of {spec.name} fits on {topo}; closest "
                             f"{closest.candidate.label()}: {closest.reason()}")
    c = result.best.candidate
    # Every prediction below uses the profile loaded once (hardware=<profile>).
    hw = place(replace(settings.without_run(), model=spec)).hardware
    # without_run keeps where the job runs, DeepSpeed-MoE's --ep/--moe-config included
    base = replace(settings.without_run(), model=spec, hardware=hw, seq=result.seq_len)
    best = predict_settings(replace(base, ds_config=result.best.ds_config,
                                    activation_checkpointing=c.activation_checkpointing), keep_timeline=True)
    common = replace(base, micro_batch=c.micro_batch, activation_checkpointing=c.activation_checkpointing)
    per_stage, refused = _per_stage(replace(common, grad_accum=c.grad_accum))
    scaling: dict[int, list[Point]] = {}
    for s in per_stage:
        scaling[s] = []
        for n in scaling_nodes:
            try:
                p1, tps = _tokens_per_s(replace(common, gpus=None, nodes=n, stage=s), c.grad_accum)
            except ZsimInputError:
                continue   # the topology has fewer nodes
            scaling[s].append(Point(n, tps if p1.fits else None, p1.peak_memory_bytes, p1.fits))
    per_rank = c.micro_batch * c.grad_accum
    micro: dict[int, list[Point]] = {}
    for s in per_stage:
        micro[s] = []
        for m in micro_batches:
            if per_rank % m:
                continue
            p1, tps = _tokens_per_s(replace(common, micro_batch=m, stage=s), per_rank // m)
            micro[s].append(Point(m, tps if p1.fits else None, p1.peak_memory_bytes, p1.fits))
    return ReportData(plan=result, best=best, per_stage=per_stage, scaling=scaling, micro=micro,
                      memory_vs_n=[] if 3 in refused else _memory_vs_n(base, c, scaling_nodes), refused=refused,
                      nodes=nodes, gpus=gpus, hardware_calibrated=bool(hw.calibrated),
                      comparison=compare_layouts(base, best.train_batch) if compare else None)


def _per_stage(common: RunSettings) -> tuple[dict[int, Any], dict[int, str]]:
    """(stage -> prediction, stage -> the line predict refuses it with) at the winner's batch:
    a stage predict refuses (ZeRO-3 with DeepSpeed-MoE layers) is named, not dropped silently."""
    per_stage, refused = {}, {}
    for s in STAGES:
        try:
            per_stage[s] = predict_settings(replace(common, stage=s))
        except ZsimInputError as e:
            refused[s] = str(e)
    return per_stage, refused


def _memory_vs_n(base: RunSettings, c: Candidate, scaling_nodes) -> list[MemoryPoint]:
    """ZeRO-3 per-GPU memory against the guides' Memory_baseline / N."""
    user = read_user_config(None)
    none = OffloadDevice.NONE.value
    out = []
    for n in scaling_nodes:
        try:
            setting = setting_of(replace(base, gpus=None, nodes=n), user)
        except ZsimInputError:
            continue
        ev = Evaluator(setting)
        z3 = ev.memory(Candidate(3, none, none, c.micro_batch, 1, c.activation_checkpointing,
                                 c.reduce_bucket_size, c.prefetch_bucket_size, overlap_comm=True))
        z0 = ev.memory(Candidate(0, none, none, c.micro_batch, 1, c.activation_checkpointing,
                                 c.reduce_bucket_size, c.prefetch_bucket_size))
        states = ("params", "grads", "optimizer_states")
        world = setting.world_size
        out.append(MemoryPoint(world, z3.peak_bytes, sum(z3.breakdown.get(k, 0) for k in states),
                               z0.peak_bytes / world, sum(z0.breakdown.get(k, 0) for k in states) / world))
    return out
