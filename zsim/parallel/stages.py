"""One representative rank per pipeline stage under tensor, Ulysses and pipeline
parallelism: the layout's checks, the rank's shard and workload, the ZeRO group, each stage's
schedule with the split's collectives, and its memory (zsim.parallel.predict3d composes them;
the sources of every rule are in its docstring)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from ..defaults import DEFAULT_DS_CONFIG
from ..dsconfig import build_run_config
from ..errors import ZsimInputError
from ..groups import INTER_NODE, INTRA_NODE, WORLD, Dim, Group
from ..job import Job, JobSite, RunSettings, place
from ..memory import estimate_memory
from ..ops import collectives_summary
from ..predict import JobMemory, host_memory_verdict, memory_facts
from ..schedule import Schedule, build_schedule
from ..schedule.order import forward_modules
from ..workload import Workload
from .activation import in_flight_microbatches
from .layout import ParallelLayout, check_model, derive_layout, group_shape, place_layout
from .autotp import AutoTPComm, check_autotp_model, shard_model_autotp
from .tensor import (TensorComm, UlyssesComm, add_model_parallel_collectives, check_family, insert_collectives,
                     shard_model)


@dataclass(frozen=True)
class ParallelAsk:
    """The degrees asked for: tensor, pipeline, Ulysses sequence parallelism, and Megatron
    sequence parallelism inside the TP group. ``autotp``: the tensor-parallel degree is
    DeepSpeed AutoTP's (``tensor_parallel.autotp_size`` of the ds_config, zsim.parallel.autotp),
    not Megatron's."""

    tp: int = 1
    pp: int = 1
    sp: int = 1
    sequence_parallel: bool = False
    autotp: bool = False

    @property
    def data_only(self) -> bool:
        """Nothing but data parallelism (the plain prediction path)."""
        return self.tp == self.pp == self.sp == 1 and not self.sequence_parallel

    def flags(self) -> str:
        """The asked degrees as command-line flags (for messages)."""
        out = [f"--{k} {v}" for k, v in (("tp", self.tp), ("pp", self.pp), ("sp", self.sp)) if v > 1]
        if self.autotp:
            out[0] = f"tensor_parallel.autotp_size {self.tp}"
        return " ".join(out + (["--sequence-parallel"] if self.sequence_parallel else []))


def _refuse(ask: ParallelAsk, spec, run, seq_len: int) -> None:
    """What zsim (or DeepSpeed) does not run, in one line each."""
    if ask.autotp and (ask.pp > 1 or ask.sp > 1 or ask.sequence_parallel):
        raise ZsimInputError(f"{ask.flags()}: DeepSpeed AutoTP together with pipeline, Ulysses or Megatron sequence "
                             "parallelism is not modelled")
    if ask.autotp and run.zero.stage == 3:
        raise ZsimInputError(f"tensor_parallel.autotp_size {ask.tp} with ZeRO-3 is not modelled (ZeRO-1 and ZeRO-2 "
                             "are, against DeepSpeed's own runs: tests/test_autotp.py)")
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


@lru_cache(maxsize=256)
def _zero_group(layout: ParallelLayout, gpus_per_node: int) -> tuple[Group, int]:
    """The ZeRO group of rank 0 (data, or with Ulysses sequence x data) and its size (cached:
    a search asks for it per candidate, and it walks every rank)."""
    ranks = tuple(r for r in range(layout.world_size)
                  if layout.coords(r).tp == 0 and layout.coords(r).pp == 0)
    per_node, nodes = group_shape(ranks, gpus_per_node)
    return Group("data", Dim.DATA, ranks_per_node=per_node, nodes=nodes, concurrent=True), len(ranks)


@lru_cache(maxsize=256)
def model_parallel_group(layout: ParallelLayout, gpus_per_node: int) -> Group | None:
    """The model-parallel group of rank 0 as DeepSpeed's ZeRO optimizer gets it from the
    ``mpu`` (zsim.parallel.tensor.add_model_parallel_collectives): the tensor and pipeline
    ranks of one data-parallel (and Ulysses) index, the tensor group itself without a
    pipeline; None when it has one rank (Ulysses alone: Megatron-DeepSpeed's model-parallel
    groups then hold one rank each)."""
    if layout.tp * layout.pp == 1:
        return None
    ranks = tuple(r for r in range(layout.world_size)
                  if layout.coords(r).sp == 0 and layout.coords(r).dp == 0)
    per_node, nodes = group_shape(ranks, gpus_per_node)
    dim = Dim.TENSOR if layout.pp == 1 else Dim.PIPELINE
    return Group("tensor" if layout.pp == 1 else "model_parallel", dim, ranks_per_node=per_node, nodes=nodes,
                 concurrent=True)


def _map_groups(schedule: Schedule, zero: Group) -> tuple:
    """The schedule's data-parallel groups as the ZeRO group's placement."""
    mapping = {WORLD: zero,
               INTRA_NODE: replace(zero, label="data_intra_node", nodes=1),
               INTER_NODE: Group("data_inter_node", Dim.DATA, ranks_per_node=1, nodes=zero.nodes or 1,
                                 concurrent=True)}
    return tuple(_regrouped(op, mapping.get(op.group, op.group)) if op.kind == "collective" else op
                 for op in schedule.ops)


def _regrouped(op, group: Group):
    """``dataclasses.replace(op, group=group)`` for a valid op and a :class:`Group`: the
    fields copied as ``copy.copy`` copies them, the group set (the op's checks, which replace
    would rerun, hold as they did)."""
    new = object.__new__(type(op))
    fields = new.__dict__
    fields.update(op.__dict__)
    fields["group"] = group
    return new


@lru_cache(maxsize=64)
def model_modules(spec) -> tuple:
    """The model's modules in forward order (cached: a search asks for them per candidate)."""
    return tuple(forward_modules(spec))


def stage_keep(first_layer: int, layers: int, first: bool, last: bool, num_layers: int):
    """The modules stage ``[first_layer, first_layer + layers)`` runs (with the embedding on
    the first stage and the final norm and lm_head on the last)."""
    def keep(m) -> bool:
        if m.layer < 0:
            return first
        if m.layer >= num_layers:
            return last
        return first_layer <= m.layer < first_layer + layers
    return keep


#: :func:`place_layout`, cached (a search places each layout once per candidate).
_placed = lru_cache(maxsize=256)(place_layout)


@dataclass(frozen=True)
class StageSetup:
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
    autotp: AutoTPComm | None = None    # DeepSpeed AutoTP's collectives (instead of tp_comm)
    model_parallel: Group | None = None   # the mpu's model-parallel group (None: one rank)


def stage_setup(settings: RunSettings, ask: ParallelAsk, site: JobSite | None = None) -> StageSetup:
    """Everything the stages share; ``site``: already placed (else placed here)."""
    site = site or place(settings)
    cluster, spec = site.cluster, site.model
    layout = derive_layout(cluster.world_size, ask.tp, ask.pp, ask.sp)
    if ask.autotp:
        check_autotp_model(spec, ask.tp)
    else:
        check_family(spec, ask.flags())
    check_model(layout, spec.num_layers, spec.num_heads, spec.num_kv_heads)
    placed = _placed(layout, cluster.gpus_per_node, cluster.num_nodes)
    shard = shard_model_autotp(spec, ask.tp) if ask.autotp else shard_model(spec, ask.tp)
    ds_config = DEFAULT_DS_CONFIG if settings.ds_config is None else settings.ds_config
    run = build_run_config(ds_config, shard, layout.dp, settings.overrides(),   # batch over dp ranks
                           autotp=ask.tp if ask.autotp else 1)
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
                          placed.group(Dim.TENSOR)) if ask.tp > 1 and not ask.autotp else None)
    autotp = (AutoTPComm(ask.tp, tokens * spec.hidden_size * p, tokens * shard.vocab_size * p,
                         placed.group(Dim.TENSOR)) if ask.autotp and ask.tp > 1 else None)
    ulysses = (UlyssesComm(b * local_seq * spec.q_dim * p, b * local_seq * spec.kv_dim * p,
                           placed.group(Dim.SEQUENCE)) if ask.sp > 1 else None)
    p2p = None
    if ask.pp > 1:
        # one stage's rank and the next one's: a node apart unless a stage spans less than a node
        stride = layout.stride(Dim.PIPELINE)
        same_node = stride < cluster.gpus_per_node
        p2p = Group("pipeline_pair", Dim.PIPELINE, ranks_per_node=2 if same_node else 1,
                    nodes=1 if same_node else 2, concurrent=True)
    return StageSetup(settings, site, layout, shard, run, workload, zero, zero_size, tp_comm, ulysses, p2p, autotp,
                      model_parallel_group(layout, cluster.gpus_per_node))


def schedule_fields(run) -> tuple:
    """The fields of a :class:`~zsim.dsconfig.RunConfig` that :func:`zsim.schedule.build_schedule`
    reads: the schedule layer never reads the micro-batch, sequence length, train batch or the
    resolved JSON (the kernels' sizes enter when ops are priced), so runs equal in these
    fields issue the same ZeRO ops (tests/test_parallel_plan.py checks it)."""
    return (run.world_size, run.grad_accum, run.precision, run.comm_dtype_bytes, run.zero,
            run.activation_checkpointing, run.gradient_clipping)


def zero_ops(s: StageSetup, run, stage: int, counts: tuple[int, ...]) -> tuple[tuple, Any]:
    """(ops, size facts) of the stage's ZeRO schedule over its ZeRO group, before the split's
    collectives. Cached: a search simulates many candidates that differ only in the
    micro-batch or in the split of a layout with the same shard and ZeRO group (Ulysses
    degrees, Megatron sequence parallelism on or off), and they share these ops."""
    pp = len(counts)
    per_node = s.zero.ranks_per_node or s.site.cluster.gpus_per_node
    where = (sum(counts[:stage]), counts[stage], stage == 0, stage == pp - 1) if pp > 1 else None
    key = (s.shard, schedule_fields(run), per_node, where, s.zero)
    hit = _ZERO_OPS.get(key)
    if hit is not None:
        _ZERO_OPS.move_to_end(key)
        return hit
    keep = stage_keep(*where, s.shard.num_layers) if where else None
    base = build_schedule(s.shard, run, gpus_per_node=per_node, keep=keep)
    _ZERO_OPS[key] = hit = (_map_groups(base, s.zero), base.facts)
    if len(_ZERO_OPS) > _ZERO_OPS_LIMIT:
        _ZERO_OPS.popitem(last=False)
    return hit


#: ZeRO ops by shard, schedule fields, placement and stage (least recently used dropped first).
_ZERO_OPS: OrderedDict[tuple, tuple] = OrderedDict()
_ZERO_OPS_LIMIT = 64


def stage_schedule(s: StageSetup, run, stage: int, counts: tuple[int, ...]) -> Schedule:
    """The stage's ZeRO schedule over its ZeRO group with the split's collectives."""
    ops, facts = zero_ops(s, run, stage, counts)
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
    if s.autotp is not None:
        ops = insert_collectives(ops, s.autotp.rule)
        # per layer and micro-batch 2 forward and 5 backward all-reduces (2 more with recomputation)
        passes = 9 if run.activation_checkpointing else 7
        expected = passes * counts[stage] * run.grad_accum
        found = sum(1 for op in ops if op.kind == "collective" and op.name.startswith("autotp_")
                    and not op.name.startswith("autotp_lm_head"))
        if found != expected:
            raise ZsimInputError(f"tensor_parallel.autotp_size {s.autotp.tp}: the schedule names its modules in a way "
                                 "zsim cannot split: not modelled")
    ops = under_mpu(s, ops)
    return Schedule(ops=ops, collectives=collectives_summary(ops), facts=facts)


def under_mpu(s: StageSetup, ops: tuple) -> tuple:
    """``ops`` with ZeRO's step as DeepSpeed runs it under the layout's model-parallel unit:
    the overflow and norm repeats over the model-parallel group, no stage-1/2 parameter
    all-gather over a ZeRO group of one rank (zsim.parallel.tensor.add_model_parallel_collectives);
    ``ops`` itself when neither applies (data and Ulysses parallelism over several ranks)."""
    if s.model_parallel is None and s.zero_size > 1:
        return ops
    return add_model_parallel_collectives(ops, s.model_parallel, s.zero_size)


def stage_job(s: StageSetup, run) -> Job:
    """The :class:`~zsim.job.Job` of the rank: its shard of the model under ``run`` on the
    whole cluster (collectives are priced on their own groups)."""
    site = s.site
    return Job(s.settings, s.shard, site.cluster, site.hardware, run, site.provenance, site.cpu_threads,
               tuple(run.notes))


def stage_memory(s: StageSetup, job: Job, schedule: Schedule, stage: int, counts: tuple[int, ...],
                 m: int) -> tuple[JobMemory, int]:
    """(memory, in-flight micro-batches) of ``stage``: its parameters, its layers'
    activations for the micro-batches 1F1B holds at once, the logits on the last stage."""
    pp = len(counts)
    facts = memory_facts(schedule, job.run, job.model)
    stage_model = replace(s.shard, num_layers=counts[stage])
    if s.autotp is not None:   # AutoTP gathers the logits: every rank holds (and takes the loss of) all of them
        stage_model = replace(stage_model, vocab_size=s.shard.embed_vocab_size)
    work = replace(s.workload, model=stage_model)
    in_flight = in_flight_microbatches(stage, pp, m) if pp > 1 else 1
    gpu = estimate_memory(work, job.run, facts, job.hardware.memory.allocator_overhead_fraction,
                          parameters=schedule.facts.num_params, in_flight=in_flight, logits=stage == pp - 1)
    return JobMemory(facts, gpu, host_memory_verdict(job.run, facts, job.model, job.cluster)), in_flight


def is_split(op) -> bool:
    """A TP or Ulysses collective (repeats per micro-batch), not one of ZeRO's."""
    return op.name.startswith(("tp_", "ulysses_", "autotp_"))


def stage_class(counts: tuple[int, ...], stage: int) -> tuple[int, bool, bool]:
    """Stages of equal layer count, both not first or last, issue the same ops (every decoder
    layer has one shape): they are simulated once."""
    return counts[stage], stage == 0, stage == len(counts) - 1


def class_schedules(s: StageSetup, run, counts: tuple[int, ...]) -> dict[tuple[int, bool, bool], tuple[int, Schedule]]:
    """One schedule per stage class: ``{class: (first stage of the class, schedule)}``."""
    out: dict[tuple[int, bool, bool], tuple[int, Schedule]] = {}
    for i in range(len(counts)):
        key = stage_class(counts, i)
        if key not in out:
            out[key] = (i, stage_schedule(s, run, i, counts))
    return out


__all__ = ["ParallelAsk", "StageSetup", "stage_setup", "schedule_fields", "zero_ops", "stage_schedule", "stage_job", "stage_memory",
           "stage_class", "class_schedules", "stage_keep", "model_modules", "is_split", "model_parallel_group",
           "under_mpu"]
