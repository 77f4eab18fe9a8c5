"""`zsim predict` under tensor, Ulysses sequence and pipeline parallelism with ZeRO inside.

One representative rank per pipeline stage (the rank of tensor, sequence and data
coordinate 0 of that stage; every rank of a stage issues the same ops):

1. **The rank's model.** Tensor parallelism: the TP rank's shard of the model
   (:func:`zsim.parallel.tensor.shard_model`), kernels priced at their sharded shapes, with
   Megatron sequence parallelism the norms, dropouts and residual adds on 1/tp of the tokens.
   Ulysses: the rank's 1/sp of the sequence, attention over the whole sequence with 1/sp of
   the heads. Pipeline: stage i runs its ``stage_layer_counts`` layers, the first stage also
   the embedding, the last the final norm, lm_head and loss (DeepSpeed's
   ``partition_method="uniform"``).
2. **ZeRO inside the data-parallel group.** The schedule layer emits the stage's ZeRO ops as
   for data parallelism, over the ZeRO group: the data-parallel group (``world/(tp·pp·sp)``
   ranks) or, with Ulysses, the sequence-data-parallel group (``sp·dp`` ranks: DeepSpeed
   0.19.8 builds its ZeRO optimizers with ``dp_process_group=self.seq_data_parallel_group``,
   ``runtime/engine.py:2683,2768``, and partitions ZeRO-3 parameters over it,
   ``engine.py:2252``). The batch identity counts data-parallel ranks only: global batch =
   micro-batch × gradient accumulation × dp (``runtime/config.py:461-469``).
3. **The split's collectives** on the compute stream (zsim.parallel.tensor): Megatron's TP
   all-reduces (or reduce-scatter/all-gather pairs), Ulysses' all-to-alls.
4. **Pipeline.** Each stage's forward and backward of one micro-batch come from simulating
   the stage; :func:`zsim.parallel.pipeline.timeline` runs DeepSpeed's TrainSchedule with
   those per-stage times plus the send/recv of one micro-batch's ``b·s·h`` activations
   between stages; each stage then reduces its gradients and steps its optimizer in its
   data-parallel group (DeepSpeed's ``ReduceGrads`` after the last backward:
   ``runtime/pipe/engine.py:287-294``, which calls ``allreduce_gradients``; ZeRO-1's
   ``reduce_gradients(pipeline_parallel=True)``, ``runtime/zero/stage_1_and_2.py:958-978``,
   reduces every gradient there, after backward: zsim issues them as with ``overlap_comm``
   off). The step is the slowest stage's path. DeepSpeed's PipelineEngine refuses ZeRO-2 and
   ZeRO-3 (``runtime/pipe/engine.py:76-77``): so does zsim.

Memory per stage: the stage's parameters (per TP rank) under its ZeRO stage, and its layers'
activations for the micro-batches 1F1B keeps in flight, ``min(p - i, m)`` (zsim.parallel.
activation), through zsim's activation model (the one of data-parallel predictions, HF's
saved tensors) on the rank's shard; the last stage adds the logits and loss.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..collective_pricing import collective_timer
from ..compute import _shape_key, module_time_s, peak_flops
from ..defaults import DEFAULT_DS_CONFIG
from ..dsconfig import build_run_config
from ..errors import ZsimInputError
from ..groups import INTER_NODE, INTRA_NODE, WORLD, Dim, Group
from ..job import Job, JobSite, RunSettings, place
from ..collectives.base import bus_factor
from ..ops import LOGGER_TO_COLLECTIVE, Op, collectives_summary
from ..schedule.order import forward_modules
from ..predict import (JobMemory, Prediction, host_memory_verdict, memory_facts, predict_settings, present,
                       simulate_stage)
from ..memory import estimate_memory
from ..memory_curve import memory_moments
from ..schedule import Schedule, build_schedule
from ..workload import Workload
from .activation import in_flight_microbatches
from .layout import ParallelLayout, check_model, derive_layout, group_shape, place_layout, stage_layer_counts
from .pipeline import Kind, deepspeed_train_schedule, flatten, timeline
from .tensor import TensorComm, UlyssesComm, check_family, insert_collectives, shard_model


@dataclass(frozen=True)
class ParallelAsk:
    """The degrees asked for: tensor, pipeline, Ulysses sequence parallelism, and Megatron
    sequence parallelism inside the TP group."""

    tp: int = 1
    pp: int = 1
    sp: int = 1
    sequence_parallel: bool = False

    @property
    def data_only(self) -> bool:
        """Nothing but data parallelism (the plain prediction path)."""
        return self.tp == self.pp == self.sp == 1 and not self.sequence_parallel

    def flags(self) -> str:
        """The asked degrees as command-line flags (for messages)."""
        out = [f"--{k} {v}" for k, v in (("tp", self.tp), ("pp", self.pp), ("sp", self.sp)) if v > 1]
        return " ".join(out + (["--sequence-parallel"] if self.sequence_parallel else []))


@dataclass(frozen=True)
class StageResult:
    """One pipeline stage's representative rank (times per micro-batch, memory at its peak)."""

    stage: int
    layers: int
    first_layer: int
    parameters: int             # parameters the rank holds (its TP shard of the stage)
    in_flight: int              # micro-batches whose activations it holds at once
    forward_s: float            # one micro-batch (0 when pp = 1: see the step)
    backward_s: float
    reduce_and_step_s: float    # after its last backward: gradient reduction, optimizer step
    compute_s: float            # kernel time on its compute stream in the simulation (one
                                # micro-batch under a pipeline, the whole step without one)
    host_s: float               # busy time of its host thread in the same simulation
    comm_s: float               # busy time of its ZeRO communication stream in the same simulation
    split_comm_s: float         # its TP/Ulysses collectives (compute stream) in the same simulation
    peak_memory_bytes: int
    fits: bool
    memory_breakdown: dict[str, int]


@dataclass(frozen=True)
class ParallelPrediction:
    """A 3D-parallel prediction: the worst stage's :class:`Prediction` (memory; step time and
    throughput of the whole pipeline), the layout, the ZeRO group and every stage."""

    prediction: Prediction
    layout: ParallelLayout
    sequence_parallel: bool
    zero_group_size: int
    stages: tuple[StageResult, ...]
    worst_stage: int
    bubble_fraction: float      # idle share of the pipeline's forward/backward span (0 for pp = 1)
    p2p_s: float                # one activation's send between adjacent stages
    tp_comm_s: float            # TP/Ulysses collectives of one step on the worst stage's compute stream
    #: bytes one GPU of the worst stage sends per comms-logger op in the step (not in to_dict)
    wire_bytes: dict[str, float] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """``prediction.to_dict()`` plus a ``parallel`` object (layout, stages)."""
        out = self.prediction.to_dict()
        lay = self.layout
        out["parallel"] = {
            "tp": lay.tp, "pp": lay.pp, "sp": lay.sp, "dp": lay.dp,
            "sequence_parallel": self.sequence_parallel, "zero_group_size": self.zero_group_size,
            "worst_stage": self.worst_stage, "bubble_fraction": self.bubble_fraction,
            "p2p_s": self.p2p_s, "tp_comm_s": self.tp_comm_s,
            "stages": [asdict(s) for s in self.stages],
        }
        return out


def predict_any(settings: RunSettings, ask: ParallelAsk, keep_timeline: bool = False) -> Prediction | ParallelPrediction:
    """The plain prediction when only data parallelism is asked (bit-identical to
    :func:`zsim.predict.predict_settings`), else :func:`predict_parallel`."""
    if ask.data_only:
        return predict_settings(settings, keep_timeline)
    return predict_parallel(settings, ask, keep_timeline)


def _refuse(ask: ParallelAsk, spec, run, seq_len: int) -> None:
    """What zsim (or DeepSpeed) does not run, in one line each."""
    if ask.sequence_parallel and ask.tp == 1:
        raise ZsimInputError("--sequence-parallel is Megatron's, inside the tensor-parallel group: it needs --tp > 1 "
                             "(for DeepSpeed-Ulysses use --sp)")
    if ask.pp > 1 and run.zero.stage >= 2:
        raise ZsimInputError(f"--pp {ask.pp} with ZeRO-{run.zero.stage}: DeepSpeed's PipelineEngine refuses ZeRO-2 "
                             "and ZeRO-3 (runtime/pipe/engine.py:76-77: 'ZeRO-2 and ZeRO-3 are incompatible with "
                             "pipeline parallelism'); use --stage 0 or 1")
    if ask.sp > 1 and seq_len % ask.sp:
        raise ZsimInputError(f"--sp {ask.sp}: sequence length {seq_len} is not divisible by it (Ulysses splits "
                             "the sequence evenly)")
    if ask.sequence_parallel and seq_len * run.micro_batch % ask.tp:
        raise ZsimInputError(f"--sequence-parallel: {run.micro_batch} x {seq_len} tokens are not divisible by "
                             f"--tp {ask.tp}")
    if run.zero.zero_hpz_partition_size > 1 or run.zero.zero_quantized_gradients or run.zero.zero_quantized_weights:
        raise ZsimInputError(f"{ask.flags()} with ZeRO++ (hpZ/qgZ/qwZ) is not modelled")


def _zero_group(layout: ParallelLayout, gpus_per_node: int) -> tuple[Group, int]:
    """The ZeRO group of rank 0 (data, or with Ulysses sequence x data) and its size."""
    ranks = tuple(r for r in range(layout.world_size)
                  if layout.coords(r).tp == 0 and layout.coords(r).pp == 0)
    per_node, nodes = group_shape(ranks, gpus_per_node)
    return Group("data", Dim.DATA, ranks_per_node=per_node, nodes=nodes, concurrent=True), len(ranks)


def _map_groups(schedule: Schedule, zero: Group) -> tuple:
    """The schedule's data-parallel groups as the ZeRO group's placement."""
    mapping = {WORLD: zero,
               INTRA_NODE: replace(zero, label="data_intra_node", nodes=1),
               INTER_NODE: Group("data_inter_node", Dim.DATA, ranks_per_node=1, nodes=zero.nodes or 1,
                                 concurrent=True)}
    return tuple(replace(op, group=mapping.get(op.group, op.group)) if op.kind == "collective" else op
                 for op in schedule.ops)


@lru_cache(maxsize=64)
def _modules(spec) -> tuple:
    """The model's modules in forward order (cached: a search asks for them per candidate)."""
    return tuple(forward_modules(spec))


def _stage_keep(first_layer: int, layers: int, first: bool, last: bool, num_layers: int):
    """The modules stage ``[first_layer, first_layer + layers)`` runs (with the embedding on
    the first stage and the final norm and lm_head on the last)."""
    def keep(m) -> bool:
        if m.layer < 0:
            return first
        if m.layer >= num_layers:
            return last
        return first_layer <= m.layer < first_layer + layers
    return keep


@dataclass(frozen=True)
class _Setup:
    """What every stage shares: the job parts, the groups, the rank's workload."""

    settings: RunSettings
    site: Any
    layout: ParallelLayout
    shard: Any                 # the TP rank's ModelSpec
    run: Any                   # RunConfig of the ZeRO group (per micro-batch)
    workload: Workload
    zero: Group
    zero_size: int
    tp_comm: TensorComm | None
    ulysses: UlyssesComm | None
    p2p: Group | None


def _setup(settings: RunSettings, ask: ParallelAsk, site: JobSite | None = None) -> _Setup:
    """Everything the stages share; ``site``: already placed (else placed here)."""
    site = site or place(settings)
    cluster, spec = site.cluster, site.model
    layout = derive_layout(cluster.world_size, ask.tp, ask.pp, ask.sp)
    check_family(spec, ask.flags())
    check_model(layout, spec.num_layers, spec.num_heads, spec.num_kv_heads)
    placed = place_layout(layout, cluster.gpus_per_node, cluster.num_nodes)
    shard = shard_model(spec, ask.tp)
    ds_config = DEFAULT_DS_CONFIG if settings.ds_config is None else settings.ds_config
    run = build_run_config(ds_config, shard, layout.dp, settings.overrides())   # batch over dp ranks
    _refuse(ask, spec, run, run.seq_len)
    zero, zero_size = _zero_group(layout, cluster.gpus_per_node)
    run = replace(run, world_size=zero_size)       # ZeRO partitions over its group
    if ask.pp > 1 and run.zero.stage == 1:
        run = replace(run, zero=replace(run.zero, overlap_comm=False))   # ReduceGrads after backward
    p, b = run.param_bytes, run.micro_batch
    local_seq = run.seq_len // ask.sp
    workload = Workload(shard, b, local_seq, p, sequence_shards=ask.tp if ask.sequence_parallel else 1,
                        ulysses=ask.sp)
    tokens = b * run.seq_len
    tp_comm = (TensorComm(ask.tp, ask.sequence_parallel, tokens * spec.hidden_size * p, tokens,
                          placed.group(Dim.TENSOR)) if ask.tp > 1 else None)
    ulysses = (UlyssesComm(b * local_seq * spec.q_dim * p, b * local_seq * spec.kv_dim * p,
                           placed.group(Dim.SEQUENCE)) if ask.sp > 1 else None)
    p2p = None
    if ask.pp > 1:
        # one stage's rank and the next one's: a node apart unless a stage spans less than a node
        stride = layout.stride(Dim.PIPELINE)
        same_node = stride < cluster.gpus_per_node
        p2p = Group("pipeline_pair", Dim.PIPELINE, ranks_per_node=2 if same_node else 1,
                    nodes=1 if same_node else 2, concurrent=True)
    return _Setup(settings, site, layout, shard, run, workload, zero, zero_size, tp_comm, ulysses, p2p)


def _stage_schedule(s: _Setup, run, stage: int, counts: tuple[int, ...]) -> Schedule:
    """The stage's ZeRO schedule over its ZeRO group with the split's collectives."""
    pp = len(counts)
    keep = None
    if pp > 1:
        keep = _stage_keep(sum(counts[:stage]), counts[stage], stage == 0, stage == pp - 1, s.shard.num_layers)
    per_node = s.zero.ranks_per_node or s.site.cluster.gpus_per_node
    base = build_schedule(s.shard, run, gpus_per_node=per_node, keep=keep)
    ops = _map_groups(base, s.zero)
    expected = 0
    for comm in (s.tp_comm, s.ulysses):
        if comm is not None:
            ops = insert_collectives(ops, comm.rule)
    if s.tp_comm is not None and not s.tp_comm.sequence_parallel:
        # 4 all-reduces per layer and micro-batch (more with recomputation): check they all landed
        passes = 6 if run.activation_checkpointing else 4
        expected = passes * counts[stage] * run.grad_accum
        found = sum(1 for op in ops if op.kind == "collective" and op.name.startswith("tp_")
                    and op.name.endswith(("o_proj", "down_proj", "fc2", "q_proj_grad", "gate_proj_grad",
                                          "fc1_grad")))
        if found != expected:
            raise ZsimInputError(f"--tp {s.tp_comm.tp}: the schedule names its modules in a way zsim cannot "
                                 "split (ZeRO-3 leaf modules?): not modelled")
    return Schedule(ops=ops, collectives=collectives_summary(ops), facts=base.facts)


def _stage_job(s: _Setup, run) -> Job:
    site = s.site
    return Job(s.settings, s.shard, site.cluster, site.hardware, run, site.provenance, site.cpu_threads,
               tuple(run.notes))


def _memory(s: _Setup, job: Job, schedule: Schedule, stage: int, counts: tuple[int, ...], m: int) -> tuple[JobMemory, int]:
    pp = len(counts)
    facts = memory_facts(schedule, job.run, job.model)
    stage_model = replace(s.shard, num_layers=counts[stage])
    work = replace(s.workload, model=stage_model)
    in_flight = in_flight_microbatches(stage, pp, m) if pp > 1 else 1
    gpu = estimate_memory(work, job.run, facts, job.hardware.memory.allocator_overhead_fraction,
                          parameters=schedule.facts.num_params, in_flight=in_flight, logits=stage == pp - 1)
    return JobMemory(facts, gpu, host_memory_verdict(job.run, facts, job.model, job.cluster)), in_flight


def _pass_times(sim) -> tuple[float, float, float]:
    """(forward, backward, after-backward) seconds of a one-micro-batch simulation."""
    fwd_end = bwd_end = 0.0
    for span in sim.timeline.spans:
        op = sim.ops[span.op_id]
        if op.stream != "compute":
            continue
        mine = op.kind == "compute" or _is_split(op)
        if op.phase == "forward" and mine:
            fwd_end = max(fwd_end, span.end_s)
        elif op.phase == "backward" and mine:
            bwd_end = max(bwd_end, span.end_s)
    return fwd_end, bwd_end - fwd_end, sim.timeline.step_time_s - bwd_end


def _stream_seconds(sim, stream: str) -> float:
    """Seconds ``stream`` was busy in the simulation (a stream runs its ops one at a time)."""
    return sum(span.end_s - span.start_s for span in sim.timeline.spans if span.stream == stream)


def _tp_seconds(sim) -> float:
    """Seconds the split's collectives took in the simulation."""
    return sum(span.end_s - span.start_s for span in sim.timeline.spans if _is_split(sim.ops[span.op_id]))


def _stage_class(counts: tuple[int, ...], stage: int) -> tuple[int, bool, bool]:
    """Stages of equal layer count, both not first or last, issue the same ops (every decoder
    layer has one shape): they are simulated once."""
    return counts[stage], stage == 0, stage == len(counts) - 1


def _class_schedules(s: _Setup, run, counts: tuple[int, ...]) -> dict[tuple[int, bool, bool], tuple[int, Schedule]]:
    """One schedule per stage class: ``{class: (first stage of the class, schedule)}``."""
    out: dict[tuple[int, bool, bool], tuple[int, Schedule]] = {}
    for i in range(len(counts)):
        key = _stage_class(counts, i)
        if key not in out:
            out[key] = (i, _stage_schedule(s, run, i, counts))
    return out


@dataclass(frozen=True)
class StageMemoryModel:
    """Every stage's memory under one layout and ZeRO configuration, for any micro-batch,
    gradient accumulation and checkpointing (the schedule's size facts do not depend on
    them): what a search checks before it simulates anything."""

    setup: _Setup
    counts: tuple[int, ...]
    facts: dict                # stage class -> (MemoryFacts, parameters held)

    def peaks(self, micro_batch: int, grad_accum: int, checkpointing: bool) -> tuple[int, ...]:
        """Peak GPU bytes of every stage."""
        s = self.setup
        run = replace(s.run, micro_batch=micro_batch, grad_accum=grad_accum, activation_checkpointing=checkpointing,
                      train_batch=micro_batch * grad_accum * s.layout.dp)
        work = replace(s.workload, micro_batch=micro_batch)
        pp = len(self.counts)
        out = []
        for i in range(pp):
            facts, held = self.facts[_stage_class(self.counts, i)]
            stage_work = replace(work, model=replace(s.shard, num_layers=self.counts[i]))
            in_flight = in_flight_microbatches(i, pp, grad_accum) if pp > 1 else 1
            gpu = estimate_memory(stage_work, run, facts, s.site.hardware.memory.allocator_overhead_fraction,
                                  parameters=held, in_flight=in_flight, logits=i == pp - 1)
            out.append(gpu.peak_bytes)
        return tuple(out)

    def floor_s(self, micro_batch: int, grad_accum: int, checkpointing: bool) -> float:
        """A lower bound of the step: the kernels and the split's collectives (both on the
        compute stream, whatever the ZeRO stage or offload) of every micro-batch on each
        stage, stage i waiting at least for one micro-batch's work on the stages before it
        (its first forward needs theirs, their last backward follows its own):
        ``max_i (m·c_i + sum_{j<i} c_j)``."""
        per = self._per_micro_batch(micro_batch, checkpointing)
        c = [per[_stage_class(self.counts, i)] for i in range(len(self.counts))]
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
        out = {}
        for i in range(len(self.counts)):
            key = _stage_class(self.counts, i)
            if key in out:
                continue
            keep = _stage_keep(sum(self.counts[:i]), self.counts[i], i == 0, i == len(self.counts) - 1,
                               s.shard.num_layers)
            # layers share shapes (zsim.compute prices by shape): each distinct module once, times its count
            shapes: Counter[tuple[str, bool]] = Counter(
                (_shape_key(mod.name), mod.in_layer) for mod in _modules(s.shard) if keep(mod))
            total = 0.0
            for (name, in_layer), count in shapes.items():
                passes = ("fwd", "bwd") + (("recompute",) if checkpointing and in_layer else ())
                for pass_ in passes:
                    t = module_time_s(work, name, pass_, hw, precision)[0]
                    op = Op(id=0, stream="compute", kind="compute", name="", modules=(name,), pass_=pass_)
                    for comm in (tp, uly):
                        if comm is not None:
                            before, after = comm.rule(op)
                            t += sum(timer(LOGGER_TO_COLLECTIVE[x.collective], x.buffer_bytes, x.group)[0]
                                     for x in before + after)
                    total += count * t
            out[key] = total
        return out


def stage_memory_model(settings: RunSettings, ask: ParallelAsk, site: JobSite | None = None) -> StageMemoryModel:
    """The :class:`StageMemoryModel` of ``settings``' ZeRO configuration under ``ask``."""
    s = _setup(settings, ask, site)
    counts = stage_layer_counts(s.shard.num_layers, ask.pp)
    one = replace(s.run, grad_accum=1)
    facts = {}
    for i in range(ask.pp):
        key = _stage_class(counts, i)
        if key in facts:
            continue
        # layouts with the same TP shard, ZeRO group and stage split share the facts (Ulysses
        # degrees at one world size, Megatron sequence parallelism on or off)
        cache_key = (s.shard, one.world_size, one.zero, one.precision, s.zero, counts, key)
        if cache_key not in _FACTS_CACHE:
            if len(_FACTS_CACHE) >= _FACTS_CACHE_LIMIT:
                _FACTS_CACHE.clear()
            keep = None if ask.pp == 1 else _stage_keep(sum(counts[:i]), counts[i], i == 0, i == ask.pp - 1,
                                                         s.shard.num_layers)
            base = build_schedule(s.shard, one, gpus_per_node=s.zero.ranks_per_node or s.site.cluster.gpus_per_node,
                                  keep=keep)
            _FACTS_CACHE[cache_key] = (memory_facts(base, one, s.shard), base.facts.num_params)
        facts[key] = _FACTS_CACHE[cache_key]
    return StageMemoryModel(s, counts, facts)


#: Schedule size facts by (shard, ZeRO group, ZeRO config, stage split) (a search's cache).
_FACTS_CACHE: dict[tuple, tuple] = {}
_FACTS_CACHE_LIMIT = 4096


def predict_parallel(settings: RunSettings, ask: ParallelAsk, keep_timeline: bool = False,
                     site: JobSite | None = None) -> ParallelPrediction:
    """Predict one optimizer step under ``ask`` (see the module docstring); bad or unmodelled
    input raises :class:`~zsim.errors.ZsimInputError`. ``site``: the placed job (a search
    places once)."""
    s = _setup(settings, ask, site)
    pp, m = ask.pp, s.run.grad_accum
    counts = stage_layer_counts(s.shard.num_layers, pp)
    sim_run = replace(s.run, grad_accum=1) if pp > 1 else s.run
    job, step_job = _stage_job(s, sim_run), _stage_job(s, s.run)
    simulated = {}
    for key, (i, schedule) in _class_schedules(s, sim_run, counts).items():
        sim = simulate_stage(job, schedule, s.workload)
        simulated[key] = (schedule, sim, _pass_times(sim) if pp > 1 else (0.0, 0.0, 0.0))
    stages, preds = [], []
    for i in range(pp):
        schedule, sim, (fwd, bwd, tail) = simulated[_stage_class(counts, i)]
        # memory under the whole step's run: gradients accumulate over the m micro-batches
        memory, in_flight = _memory(s, step_job, schedule, i, counts, m)
        stages.append(StageResult(i, counts[i], sum(counts[:i]), schedule.facts.num_params, in_flight, fwd, bwd,
                                  tail, sim.timeline.compute_s, _stream_seconds(sim, "host"),
                                  _stream_seconds(sim, "comm"), _tp_seconds(sim), memory.gpu.peak_bytes, memory.gpu.peak_bytes <= s.site.hardware.gpu.memory_bytes
                                  and memory.host.fits, dict(memory.gpu.breakdown)))
        preds.append(memory)
    worst = max(range(pp), key=lambda i: (stages[i].peak_memory_bytes, -i))
    schedule, sim, _ = simulated[_stage_class(counts, worst)]
    base = present(job, schedule, preds[worst], sim, keep_timeline, s.workload)
    if keep_timeline:     # the worst stage's memory over a micro-step, as its estimate sees it
        stage_work = replace(s.workload, model=replace(s.shard, num_layers=counts[worst]))
        base = replace(base, memory_moments=memory_moments(
            stage_work, s.run, preds[worst].facts, s.site.hardware.memory.allocator_overhead_fraction,
            parameters=schedule.facts.num_params, in_flight=stages[worst].in_flight, logits=worst == pp - 1))
    hw = s.site.hardware
    if pp > 1:
        step_s, bubble, p2p_s, breakdown = _pipeline_step(s, stages, m)
    else:
        step_s, bubble, p2p_s, breakdown = base.step_time_s, 0.0, 0.0, dict(base.time_breakdown)
    full = Workload(s.site.model, s.run.micro_batch, s.run.seq_len, s.run.param_bytes)
    tokens = s.run.tokens_per_step
    tflops = full.model_flops_per_token() * tokens / s.site.cluster.world_size / step_s / 1e12
    split = m if pp > 1 else 1
    pred = replace(base, model=s.site.model.name, num_parameters=s.site.model.num_parameters,
                   grad_accum=m, train_batch=s.run.train_batch, step_time_s=step_s, tokens_per_s=tokens / step_s,
                   tflops_per_gpu=tflops, mfu=tflops * 1e12 / peak_flops(hw, s.run.precision),
                   time_breakdown=breakdown, fits=all(st.fits for st in stages),
                   collectives=_step_collectives(schedule.ops, m) if pp > 1 else base.collectives,
                   exposed_comm_s=sum(v for k, v in breakdown.items() if k.startswith("exposed_comm_")),
                   notes=base.notes + _notes(ask))
    wire = _wire_bytes(schedule.ops, split, s.site.cluster.world_size, s.site.cluster.gpus_per_node)
    return ParallelPrediction(pred, s.layout, ask.sequence_parallel, s.zero_size, tuple(stages), worst, bubble,
                              p2p_s, _tp_seconds(sim) * split, wire)


def _is_split(op) -> bool:
    """A TP or Ulysses collective (repeats per micro-batch), not one of ZeRO's."""
    return op.name.startswith(("tp_", "ulysses_"))


def _wire_bytes(ops, m: int, world_size: int, gpus_per_node: int) -> dict[str, float]:
    """Bytes one GPU sends per comms-logger op in the step (nccl-tests' bus convention), the
    split's collectives counted ``m`` times (a pipeline's one-micro-batch schedule)."""
    out: dict[str, float] = {}
    for op in ops:
        if op.kind == "collective":
            n = op.group.size(world_size, gpus_per_node)
            sent = bus_factor(LOGGER_TO_COLLECTIVE[op.collective], n) * op.buffer_bytes if n > 1 else 0.0
            out[op.collective] = out.get(op.collective, 0.0) + sent * (m if _is_split(op) else 1)
    return out


def _step_collectives(ops, m: int) -> dict:
    """A stage's collectives of one step from its one-micro-batch schedule (pipeline): the
    split's (TP, Ulysses) repeat for each of the ``m`` micro-batches, ZeRO's reduction and
    step run once."""
    counts: Counter[tuple[str, int]] = Counter()
    for op in ops:
        if op.kind == "collective":
            counts[(op.collective, op.message_bytes)] += m if _is_split(op) else 1
    out: dict[str, dict[str, int]] = {}
    for (name, size), n in sorted(counts.items()):
        out.setdefault(name, {})[str(size)] = n
    return out


def _pipeline_step(s: _Setup, stages: list[StageResult], m: int) -> tuple[float, float, float, dict[str, float]]:
    """Step time of DeepSpeed's TrainSchedule with the stages' times and send/recv priced
    on the pipeline group; the bubble; one send; the step's breakdown."""
    pp = len(stages)
    hw = s.site.hardware
    timer = collective_timer(s.site.cluster, hw)
    act_bytes = s.run.micro_batch * s.run.seq_len * s.shard.hidden_size * s.run.param_bytes
    if s.tp_comm is not None and s.tp_comm.sequence_parallel:
        act_bytes //= s.layout.tp          # the sequence-parallel region's shard crosses stages
    act_bytes //= s.layout.sp
    # a send/recv between two ranks, priced as a two-rank broadcast (one transfer of the buffer)
    p2p_s, _ = timer("broadcast", act_bytes, s.p2p)
    per_stage = [flatten(deepspeed_train_schedule(i, pp, m)) for i in range(pp)]
    tl = timeline(per_stage, tuple(st.forward_s for st in stages), tuple(st.backward_s for st in stages), p2p_s)
    ends = [max(end for kind, _, _, end in tl.stages[i] if kind is Kind.BACKWARD) + stages[i].reduce_and_step_s
            for i in range(pp)]
    framework_s = hw.overheads.step_fixed_s + m * hw.overheads.micro_step_fixed_s
    slowest = max(range(pp), key=lambda i: ends[i])
    st = stages[slowest]
    busy = tl.busy_s(slowest)
    path = ends[slowest]
    # the slowest stage's path: its m forward/backward passes (kernels, the split's
    # collectives, the rest: host and waits inside a pass), idle time, reduction and step
    breakdown = {"compute_s": m * st.compute_s, "exposed_comm_split_s": m * st.split_comm_s,
                 "pipeline_pass_other_s": busy - m * (st.compute_s + st.split_comm_s),
                 "pipeline_bubble_s": path - busy - st.reduce_and_step_s,
                 "reduce_and_step_s": st.reduce_and_step_s, "framework_s": framework_s}
    return path + framework_s, tl.bubble_fraction, p2p_s, breakdown


def _notes(ask: ParallelAsk) -> tuple[str, ...]:
    out = []
    if ask.tp > 1:
        out.append("tensor parallelism: the backward TP collectives are placed on the compute stream; Megatron "
                   "overlaps them with the weight-gradient GEMMs (layers.py:694-710), so that time is an upper bound")
    if ask.sp > 1:
        out.append("Ulysses: activation memory is the rank's sequence shard through zsim's activation model; "
                   "copies the all-to-alls keep are not counted")
    if ask.pp > 1:
        out.append("pipeline: per-stage times from one simulated micro-batch; send/recv add latency between "
                   "stages but do not occupy the sender's stream; memory and breakdown are the worst stage's")
    return tuple(out)


__all__ = ["ParallelAsk", "StageResult", "ParallelPrediction", "predict_any", "predict_parallel", "StageMemoryModel",
           "stage_memory_model"]
