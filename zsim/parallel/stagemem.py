"""Every pipeline stage's memory, and a floor under the step, without simulating: what
`zsim plan --search-3d` checks first (zsim.parallel.plan3d)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from functools import lru_cache

from ..collective_pricing import collective_timer
from ..compute import _shape_key, module_time_s
from ..job import JobSite, RunSettings
from ..memory import estimate_memory
from ..ops import LOGGER_TO_COLLECTIVE, Op
from ..predict import memory_facts
from ..schedule import Schedule
from ..schedule.api import schedule_facts
from .activation import in_flight_microbatches
from .layout import stage_layer_counts
from .stages import ParallelAsk, StageSetup, model_modules, stage_class, stage_keep, stage_setup, zero_ops


@dataclass(frozen=True)
class StageMemoryModel:
    """Every stage's memory under one layout and ZeRO configuration, for any micro-batch,
    gradient accumulation and checkpointing (the schedule's size facts do not depend on
    them): what a search checks before it simulates anything."""

    setup: StageSetup
    counts: tuple[int, ...]
    facts: dict                # stage class -> (MemoryFacts, parameters held)
    #: micro-batch -> {(module shape, pass): seconds} (:meth:`floor_s`'s cache)
    _times: dict = field(default_factory=dict, compare=False, repr=False)

    def peaks(self, micro_batch: int, grad_accum: int, checkpointing: bool) -> tuple[int, ...]:
        """Peak GPU bytes of every stage."""
        s = self.setup
        run = replace(s.run, micro_batch=micro_batch, grad_accum=grad_accum, activation_checkpointing=checkpointing,
                      train_batch=micro_batch * grad_accum * s.layout.dp)
        work = replace(s.workload, micro_batch=micro_batch)
        pp = len(self.counts)
        out = []
        # a stage's estimate reads its class (layer count, first, last: its facts, layers and
        # logits) and its in-flight micro-batches alone: stages that share both share it
        peak: dict[tuple, int] = {}
        works: dict[int, object] = {}       # by layer count: a pipeline's stages have one or two
        for i in range(pp):
            cls = stage_class(self.counts, i)
            in_flight = in_flight_microbatches(i, pp, grad_accum) if pp > 1 else 1
            key = (cls, in_flight)
            if key not in peak:
                facts, held = self.facts[cls]
                stage_work = works.get(self.counts[i])
                if stage_work is None:
                    stage_work = works[self.counts[i]] = replace(work, model=replace(s.shard,
                                                                                     num_layers=self.counts[i]))
                peak[key] = estimate_memory(stage_work, run, facts, s.site.hardware.memory.allocator_overhead_fraction,
                                            parameters=held, in_flight=in_flight, logits=i == pp - 1).peak_bytes
            out.append(peak[key])
        return tuple(out)

    def floor_s(self, micro_batch: int, grad_accum: int, checkpointing: bool) -> float:
        """A lower bound of the step: the kernels and the split's collectives (both on the
        compute stream, whatever the ZeRO stage or offload) of every micro-batch on each
        stage, stage i waiting at least for one micro-batch's work on the stages before it
        (its first forward needs theirs, their last backward follows its own):
        ``max_i (m·c_i + sum_{j<i} c_j)``."""
        per = self._per_micro_batch(micro_batch, checkpointing)
        c = [per[stage_class(self.counts, i)] for i in range(len(self.counts))]
        return max(grad_accum * c[i] + sum(c[:i]) for i in range(len(c)))

    def _per_micro_batch(self, micro_batch: int, checkpointing: bool) -> dict:
        s = self.setup
        hw, precision = s.site.hardware, s.run.precision
        work = replace(s.workload, micro_batch=micro_batch)
        tp = replace(s.tp_comm, activation_bytes=s.tp_comm.activation_bytes // s.run.micro_batch * micro_batch,
                     tokens=s.tp_comm.tokens // s.run.micro_batch * micro_batch) if s.tp_comm else None
        uly = replace(s.ulysses, q_bytes=s.ulysses.q_bytes // s.run.micro_batch * micro_batch,
                      kv_bytes=s.ulysses.kv_bytes // s.run.micro_batch * micro_batch) if s.ulysses else None
        timer = collective_timer(s.site.cluster, hw)
        # one module shape's seconds in one pass at this micro-batch, whatever the stage
        # (the stages' decoder layers share their shapes) or checkpointing (which adds passes)
        times = self._times.setdefault(micro_batch, {})
        out = {}
        for i in range(len(self.counts)):
            key = stage_class(self.counts, i)
            if key in out:
                continue
            shapes = _stage_shapes(s.shard, sum(self.counts[:i]), self.counts[i], i == 0, i == len(self.counts) - 1)
            total = 0.0
            for (name, in_layer), count in shapes:
                passes = ("fwd", "bwd") + (("recompute",) if checkpointing and in_layer else ())
                for pass_ in passes:
                    t = times.get((name, pass_))
                    if t is None:
                        t = module_time_s(work, name, pass_, hw, precision)[0]
                        op = Op(id=0, stream="compute", kind="compute", name="", modules=(name,), pass_=pass_)
                        for comm in (tp, uly):
                            if comm is not None:
                                before, after = comm.rule(op)
                                t += sum(timer(LOGGER_TO_COLLECTIVE[x.collective], x.buffer_bytes, x.group)[0]
                                         for x in before + after)
                        times[(name, pass_)] = t
                    total += count * t
            out[key] = total
        return out


@lru_cache(maxsize=1024)
def _stage_shapes(shard, first_layer: int, layers: int, first: bool, last: bool) -> tuple:
    """``((module shape, in a layer), count)`` of the modules a stage runs, in forward order:
    layers share shapes (zsim.compute prices by shape), so each distinct module is priced
    once, times its count (cached: the compute floor asks per micro-batch and checkpointing)."""
    keep = stage_keep(first_layer, layers, first, last, shard.num_layers)
    return tuple(Counter((_shape_key(mod.name), mod.in_layer) for mod in model_modules(shard) if keep(mod)).items())


def stage_memory_model(settings: RunSettings, ask: ParallelAsk, site: JobSite | None = None) -> StageMemoryModel:
    """The :class:`StageMemoryModel` of ``settings``' ZeRO configuration under ``ask``."""
    s = stage_setup(settings, ask, site)
    counts = stage_layer_counts(s.shard.num_layers, ask.pp)
    one = replace(s.run, grad_accum=1)
    facts = {}
    for i in range(ask.pp):
        key = stage_class(counts, i)
        if key in facts:
            continue
        # layouts with the same TP shard, ZeRO group and stage split share the facts (Ulysses
        # degrees at one world size, Megatron sequence parallelism on or off)
        cache_key = (s.shard, one.world_size, one.zero, one.precision, s.zero, counts, key)
        if cache_key not in _FACTS_CACHE:
            if len(_FACTS_CACHE) >= _FACTS_CACHE_LIMIT:
                _FACTS_CACHE.clear()
            if ask.pp == 1 and one.zero.stage == 3:
                # the schedule the screen and the stream floor simulate or price at one
                # micro-step (zero_ops' cache): built once for the three
                sched_facts = zero_ops(s, one, 0, counts)[1]
            else:         # stages 0-2: the facts without the ops (build_schedule's facts)
                keep = None if ask.pp == 1 else stage_keep(sum(counts[:i]), counts[i], i == 0, i == ask.pp - 1,
                                                             s.shard.num_layers)
                sched_facts = schedule_facts(s.shard, one, s.zero.ranks_per_node or s.site.cluster.gpus_per_node,
                                             keep=keep)
            base = Schedule(ops=(), collectives={}, facts=sched_facts)
            _FACTS_CACHE[cache_key] = (memory_facts(base, one, s.shard), sched_facts.num_params)
        facts[key] = _FACTS_CACHE[cache_key]
    return StageMemoryModel(s, counts, facts)


#: Schedule size facts by (shard, ZeRO group, ZeRO config, stage split) (a search's cache).
_FACTS_CACHE: dict[tuple, tuple] = {}
_FACTS_CACHE_LIMIT = 4096


__all__ = ["StageMemoryModel", "stage_memory_model"]
