"""`zsim plan --search-3d`: tensor x pipeline (x Ulysses) degrees searched jointly with the
ZeRO stage, CPU optimizer offload, micro-batch and activation checkpointing.

The global batch is fixed over the whole search (``--global-batch``, else about 1M tokens
rounded to a multiple of the world size, so every layout's data-parallel size divides it):
every candidate trains the same tokens per step and is ranked by tokens/s.

Phases:

1. **Memory first.** Every layout (powers of two: tp dividing the GPUs per node and the heads,
   KV heads and MLP width; pp up to the layers; Ulysses sp up to the GPUs per node unless
   pinned, only without tp and pp, as :func:`zsim.parallel.layout.derive_layout` requires) x ZeRO stage (0-1 under pp, which
   DeepSpeed's PipelineEngine requires) x offload x micro-batch x checkpointing is checked
   against GPU memory with :class:`zsim.parallel.predict3d.StageMemoryModel` (no
   simulation); a candidate fits when its worst stage fits under the headroom.
2. **Screen with a floor.** Fitting candidates are simulated in order of a compute floor,
   most promising first; a candidate whose floor (the kernels of its micro-batches on its
   slowest stage: the same for every ZeRO stage and offload of that layout, micro-batch and
   checkpointing, so known once one of them was simulated) cannot beat the ``top_n``-th
   step time found is dropped unsimulated. Without a pipeline the screen simulates gradient
   accumulation 1 and 2 and extrapolates linearly (each micro-step repeats the same ops:
   :mod:`zsim.decide.evaluate`); with one, each stage's one micro-batch is simulated and
   the pipeline timeline composes the step exactly. Without a pipeline the compute floor is
   raised, before any simulation, to the stream floor of
   :mod:`zsim.parallel.streamfloor` (ZeRO's collectives, copies, optimizer and host work
   priced per stream from one schedule per layout shard and ZeRO setting) and the candidate
   goes back in line under it; a further floor is the busy time of the host thread and of
   ZeRO's communication stream in simulations of the same layout, ZeRO stage, offload and
   checkpointing (:func:`_busy_floor`).
3. **Finalists.** The best ``top_n`` are predicted at their real gradient accumulation.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, replace
from typing import Any

from ..decide.space import default_global_batch
from ..errors import ZsimInputError
from ..gcpolicy import fewer_collections
from ..job import JobSite, RunSettings, place
from ..limits import MAX_GRAD_ACCUM
from ..provenance import DEFAULT_MEMORY_HEADROOM_PCT
from .predict3d import ParallelAsk, ParallelPrediction, predict_parallel, stage_memory_model
from .streamfloor import StreamFloors
from .tensor import TP_FAMILIES

#: Largest micro-batch the search tries (zsim.decide.space's bound).
MAX_MICRO_BATCH = 64


@dataclass(frozen=True)
class Pins:
    """Axes the user fixed (None: searched)."""

    tp: int | None = None
    pp: int | None = None
    sp: int | None = None
    sequence_parallel: bool | None = None   # Megatron's, with tp > 1 (None: both searched)
    stage: int | None = None
    micro_batch: int | None = None
    checkpointing: bool | None = None
    offload_optimizer: str | None = None


@dataclass(frozen=True)
class Candidate3D:
    """One configuration of the joint space."""

    ask: ParallelAsk
    stage: int
    offload_optimizer: str
    micro_batch: int
    grad_accum: int
    checkpointing: bool

    def label(self) -> str:
        """Short text naming the configuration."""
        a = self.ask
        parts = [f"tp{a.tp}" + ("+sp" if a.sequence_parallel else ""), f"pp{a.pp}"]
        if a.sp > 1:
            parts.append(f"ulysses{a.sp}")
        parts += [f"ZeRO-{self.stage}", f"mb{self.micro_batch}", f"ga{self.grad_accum}"]
        if self.checkpointing:
            parts.append("ckpt")
        if self.offload_optimizer != "none":
            parts.append(f"offload-opt {self.offload_optimizer}")
        return " ".join(parts)

    def run_fields(self) -> dict[str, Any]:
        """The candidate's run fields (:meth:`zsim.job.RunSettings.with_run`)."""
        return {"stage": self.stage, "micro_batch": self.micro_batch, "grad_accum": self.grad_accum,
                "activation_checkpointing": self.checkpointing, "offload_optimizer": self.offload_optimizer}


@dataclass(frozen=True)
class Finalist:
    """A ranked configuration and its prediction."""

    candidate: Candidate3D
    result: ParallelPrediction


@dataclass(frozen=True)
class Plan3D:
    """What the joint search found and what it cost."""

    global_batch: int
    seq_len: int
    world_size: int
    ranked: tuple[Finalist, ...]
    layouts: int              # layouts the model and cluster allow
    candidates: int           # configurations checked for memory
    fitting: int
    pruned: int               # fitting ones the floor dropped unsimulated
    simulated: int            # candidates screened by simulation
    elapsed_s: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (each finalist's configuration and headline figures)."""
        return {
            "global_batch": self.global_batch, "seq_len": self.seq_len, "world_size": self.world_size,
            "layouts": self.layouts, "candidates": self.candidates, "fitting": self.fitting,
            "pruned": self.pruned, "simulated": self.simulated,
            "ranked": [{"label": f.candidate.label(), "tp": f.candidate.ask.tp, "pp": f.candidate.ask.pp,
                        "sp": f.candidate.ask.sp, "sequence_parallel": f.candidate.ask.sequence_parallel,
                        "dp": f.result.layout.dp, **f.candidate.run_fields(),
                        "step_time_s": f.result.prediction.step_time_s,
                        "tokens_per_s": f.result.prediction.tokens_per_s, "mfu": f.result.prediction.mfu,
                        "peak_memory_bytes": f.result.prediction.peak_memory_bytes,
                        "worst_stage": f.result.worst_stage} for f in self.ranked],
        }


def _powers_of_two(limit: int) -> list[int]:
    return [1 << i for i in range(limit.bit_length()) if 1 << i <= limit]


def layouts(site: JobSite, pins: Pins) -> list[ParallelAsk]:
    """Every layout the model and cluster allow, within the pins (powers of two)."""
    spec, cluster = site.model, site.cluster
    world, gpn = cluster.world_size, cluster.gpus_per_node
    llama = spec.family in TP_FAMILIES and not spec.is_moe
    out = []
    for tp in ([pins.tp] if pins.tp else _powers_of_two(gpn)):
        if tp > 1 and (not llama or spec.num_heads % tp or spec.num_kv_heads % tp or spec.intermediate_size % tp):
            continue
        for pp in ([pins.pp] if pins.pp else _powers_of_two(min(spec.num_layers, world // tp))):
            if pp > 1 and not llama:
                continue
            if world % (tp * pp):
                continue
            # Ulysses degrees up to a node's GPUs unless pinned: the all-to-alls stay on NVLink
            sps = [pins.sp] if pins.sp else (_powers_of_two(min(world, gpn)) if tp == pp == 1 and llama else [1])
            for sp in sps:
                if sp > 1 and (tp > 1 or pp > 1 or spec.num_heads % sp or world % sp):
                    continue
                for seqpar in ((False, True) if tp > 1 else (False,)):
                    if pins.sequence_parallel is not None and seqpar != pins.sequence_parallel:
                        continue
                    out.append(ParallelAsk(tp, pp, sp, seqpar))
    return out


def _zero_configs(ask: ParallelAsk, pins: Pins, offload: bool) -> list[tuple[int, str]]:
    """(ZeRO stage, optimizer offload) of one layout: stages 0-1 under a pipeline (DeepSpeed's
    PipelineEngine), 0-3 without; CPU offload only in the second pass (``offload``)."""
    stages = [pins.stage] if pins.stage is not None else ([0, 1] if ask.pp > 1 else [0, 1, 2, 3])
    if pins.offload_optimizer:
        return [(st, pins.offload_optimizer) for st in stages if pins.offload_optimizer == "none" or st]
    return [(st, "cpu") for st in stages if st] if offload else [(st, "none") for st in stages]


def _batch_configs(pins: Pins, per_rank: int) -> list[tuple[bool, int]]:
    """(checkpointing, micro-batch) pairs: powers of two dividing the per-rank batch, at a
    gradient accumulation DeepSpeed's config check accepts (as zsim.decide.space skips them)."""
    micros = [pins.micro_batch] if pins.micro_batch else [
        m for m in _powers_of_two(min(per_rank, MAX_MICRO_BATCH)) if per_rank % m == 0]
    ckpts = [pins.checkpointing] if pins.checkpointing is not None else [False, True]
    return [(ck, mb) for ck in ckpts for mb in micros if per_rank % mb == 0 and per_rank // mb <= MAX_GRAD_ACCUM]


def _layout_fits(settings: RunSettings, site: JobSite, ask: ParallelAsk, pins: Pins, per_rank: int,
                 usable_bytes: float, floors: dict) -> tuple[int, list[tuple[float, Candidate3D]]]:
    """(configurations checked, fitting ones with their step floor) of one layout. CPU
    offload is tried only when nothing fits without it: in zsim's model an offloaded step
    runs the same GPU kernels plus copies and the host optimizer, so it is never the faster
    of two configurations that both fit."""
    checked, fit = 0, []
    for offload in (False, True):
        if fit and offload:
            break
        for stage, off in _zero_configs(ask, pins, offload):
            try:
                model = stage_memory_model(
                    settings.with_run(stage=stage, offload_optimizer=off, micro_batch=1, grad_accum=1), ask, site)
            except ZsimInputError:
                continue            # a combination zsim or DeepSpeed refuses
            for ckpt, mb in _batch_configs(pins, per_rank):
                checked += 1
                ga = per_rank // mb
                if max(model.peaks(mb, ga, ckpt)) > usable_bytes:
                    continue
                key = (ask, mb, ckpt)
                if key not in floors:
                    floors[key] = model.floor_s(mb, ga, ckpt)
                fit.append((floors[key], Candidate3D(ask, stage, off, mb, ga, ckpt)))
    return checked, fit


def _screen(settings: RunSettings, site: JobSite, cand: Candidate3D) -> tuple[float, ParallelPrediction | None,
                                                                           list[tuple[int, float]]]:
    """(step seconds, the prediction when it is the exact one, (micro-steps, host busy
    seconds) samples) of a candidate: exact with a pipeline (each stage's one micro-batch
    composes the step) or at most 2 micro-steps, else extrapolated from gradient
    accumulation 1 and 2. CPU optimizer offload is always simulated in full: its micro-steps
    do not repeat the same work (the full simulation of ZeRO-2 with offload at 4 micro-steps
    was 2-6 % faster than the line through 1 and 2: bench/README.md)."""
    fields = cand.run_fields()
    if cand.ask.pp > 1 or cand.grad_accum <= 2 or cand.offload_optimizer != "none":
        exact = predict_parallel(settings.with_run(**fields), cand.ask, site=site)
        busy = [] if cand.ask.pp > 1 else [(cand.grad_accum, _busy(exact))]
        return exact.prediction.step_time_s, exact, busy
    one = predict_parallel(settings.with_run(**{**fields, "grad_accum": 1}), cand.ask, site=site)
    two = predict_parallel(settings.with_run(**{**fields, "grad_accum": 2}), cand.ask, site=site)
    t1, t2 = one.prediction.step_time_s, two.prediction.step_time_s
    return t1 + (cand.grad_accum - 1) * (t2 - t1), None, [(1, _busy(one)), (2, _busy(two))]


def _busy(result: ParallelPrediction) -> tuple[float, float]:
    """(host thread, ZeRO communication stream) busy seconds of a one-stage simulation."""
    return result.stages[0].host_s, result.stages[0].comm_s


def _busy_floor(samples: list[tuple[int, tuple[float, float]]], grad_accum: int) -> float:
    """A lower bound of the step from two serial streams whose work does not depend on the
    micro-batch: the host thread (the same ops, launches and loops) and ZeRO's communication
    stream (the same parameter gathers and gradient reductions; the split's collectives run
    on the compute stream). Both grow with the micro-steps: the step takes at least what a
    run of no more micro-steps kept either busy, and, once runs of 1 and 2 micro-steps were
    simulated, their line (every micro-step repeats the same work: the linearity the
    step-time extrapolation rests on)."""
    floor = 0.0
    for k in (0, 1):
        known = {g: busy[k] for g, busy in samples}
        floor = max(floor, max((b for g, b in known.items() if g <= grad_accum), default=0.0))
        if 1 in known and 2 in known:
            floor = max(floor, known[1] + (grad_accum - 1) * (known[2] - known[1]))
    return floor


def plan_parallel(settings: RunSettings, pins: Pins, global_batch: int | None = None, top_n: int = 5,
                  memory_headroom_pct: float | None = None) -> Plan3D:
    """Search the joint space (see the module docstring) and rank the best ``top_n``."""
    with fewer_collections():   # a search builds and drops many ops (zsim/gcpolicy.py)
        return _plan_parallel(settings, pins, global_batch, top_n, memory_headroom_pct)


def _plan_parallel(settings: RunSettings, pins: Pins, global_batch: int | None, top_n: int,
                   memory_headroom_pct: float | None) -> Plan3D:
    start = time.perf_counter()
    site = place(settings)
    world = site.cluster.world_size
    seq = settings.seq or 2048
    settings = replace(settings, seq=seq)
    gb = global_batch or default_global_batch(world, seq)
    headroom = DEFAULT_MEMORY_HEADROOM_PCT if memory_headroom_pct is None else memory_headroom_pct
    usable = site.hardware.gpu.memory_bytes * (1 - headroom / 100)
    all_layouts = layouts(site, pins)
    checked, fit, floors = 0, [], {}
    for ask in all_layouts:
        dp = world // (ask.tp * ask.pp * ask.sp)
        if gb % dp:
            continue
        n, found = _layout_fits(settings, site, ask, pins, gb // dp, usable, floors)
        checked += n
        fit += found
    # lowest floor first; stop once the floor cannot beat the top_n-th step found. A candidate
    # without a pipeline first gets its stream floor (priced, not simulated) and goes back in
    # line under it: the queue is ordered by floors that are all lower bounds.
    queue = [(floor, cand.label(), cand.ask.pp > 1, cand) for floor, cand in fit]
    heapq.heapify(queue)
    streams = StreamFloors(settings, site)
    screened: list[tuple[float, Candidate3D]] = []
    exact: dict[Candidate3D, ParallelPrediction] = {}
    busy: dict[tuple, list] = {}   # (layout, ZeRO, offload, ckpt) -> (micro-steps, (host, comm) busy s)
    while queue:
        floor, label, tight, cand = heapq.heappop(queue)
        bar = sorted(t for t, _ in screened)[top_n - 1] if len(screened) >= top_n else float("inf")
        if floor >= bar:
            break
        if not tight:
            floor = max(floor, streams.floor_s(cand.ask, cand.run_fields(), floor))
            heapq.heappush(queue, (floor, label, True, cand))
            continue
        key = (cand.ask, cand.stage, cand.offload_optimizer, cand.checkpointing)
        if cand.ask.pp == 1 and _busy_floor(busy.get(key, []), cand.grad_accum) >= bar:
            continue                  # host- or communication-bound: cannot enter the ranking
        step, pred, samples = _screen(settings, site, cand)
        screened.append((step, cand))
        busy.setdefault(key, []).extend(samples)
        if pred is not None:
            exact[cand] = pred
    screened.sort(key=lambda x: (x[0], x[1].label()))
    ranked = tuple(Finalist(c, exact.get(c) or predict_parallel(settings.with_run(**c.run_fields()), c.ask,
                                                                 site=site))
                   for _, c in screened[:top_n])
    ranked = tuple(sorted(ranked, key=lambda f: (f.result.prediction.step_time_s, f.candidate.label())))
    return Plan3D(gb, seq, world, ranked, len(all_layouts), checked, len(fit), len(fit) - len(screened),
                  len(screened), time.perf_counter() - start)


def plan_lines(plan: Plan3D) -> list[str]:
    """What `zsim plan --search-3d` prints."""
    out = [f"joint search: {plan.layouts} layouts, {plan.candidates} configurations checked for memory, "
           f"{plan.fitting} fit, {plan.simulated} simulated, {plan.pruned} dropped by the floors",
           f"global batch {plan.global_batch} sequences of {plan.seq_len} tokens on {plan.world_size} GPUs", "",
           "  #  configuration                                     step s   tokens/s      MFU  peak GiB"]
    for k, f in enumerate(plan.ranked, 1):
        p = f.result.prediction
        out.append(f"  {k}  {f.candidate.label():<48} {p.step_time_s:>7.2f} {p.tokens_per_s:>10,.0f} "
                   f"{p.mfu * 100:>7.1f}% {p.peak_memory_bytes / 2 ** 30:>9.1f}")
    if not plan.ranked:
        out.append("  no configuration fits in GPU memory")
    return out


__all__ = ["Pins", "Candidate3D", "Finalist", "Plan3D", "layouts", "plan_parallel", "plan_lines"]
