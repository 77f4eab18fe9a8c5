"""`zsim.predict`: model + topology + DeepSpeed config -> memory, step time, where time goes.

A prediction is a chain of stages, each a function of the :class:`~zsim.job.Job` and what
the stages before it returned (``plan``, ``sweep``, ``report``, ``capacity`` and ``diagnose``
compose the same functions)::

    RunSettings ──resolve──► Job ──schedule_stage──► Schedule (ops of one rank)
                              │      └─memory_stage──► JobMemory (GPU peak, host memory)
                              │      └─simulate_stage► Simulated (SimPy timeline, step time)
                              └──────────present─────► Prediction

The layers underneath::

    model spec ──► workload (kernels, activation bytes)
    ds config  ──► RunConfig ──► schedule (ops of one rank) ──► SimPy system ──► timeline
    topology   ──► cluster ──► collective costs ────────────────┘
    hardware profile ──► compute/copy/collective prices
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from .collective_pricing import collective_timer, link_utilisation
from .compute import peak_flops
from .defaults import DEFAULT_DS_CONFIG, DEFAULT_TOPO
from .dsconfig import RunConfig
from .errors import ZsimInputError
from .hardware import HardwareProfile
from .hostcost import HostSpeed
from .job import Job, RunSettings, resolve
from .memory import (HostMemoryVerdict, MemoryEstimate, MemoryFacts, estimate_memory,
                     host_memory)
from .memory_curve import MemoryMoment, memory_moments
from .model import ModelSpec
from .ops import Op
from .schedule import Schedule, build_schedule
from .schedule.api import schedule_key
from .schedule.facts import ScheduleFacts
from .system import Timeline, simulate, split_host
from .system.costs import HostShare, OpCoster
from .workload import Workload

__all__ = ["Prediction", "predict", "predict_job", "ScheduleMemo", "predict_settings", "schedule_stage",
           "memory_stage", "simulate_stage", "present", "JobMemory", "Simulated", "memory_facts",
           "memory_facts_of", "host_share", "host_memory_verdict", "op_coster", "DEFAULT_DS_CONFIG"]


@dataclass(frozen=True)
class Prediction:
    """Everything `zsim predict --json` prints (per optimizer step, per GPU where stated)."""

    model: str
    num_parameters: int
    topology: str
    hardware: str
    world_size: int
    num_nodes: int
    gpus_per_node: int
    stage: int
    micro_batch: int
    grad_accum: int
    train_batch: int
    seq_len: int
    precision: str
    offload_optimizer: str
    offload_param: str
    activation_checkpointing: bool
    step_time_s: float
    tokens_per_s: float
    tflops_per_gpu: float
    mfu: float
    peak_memory_bytes: int
    gpu_memory_bytes: int
    fits: bool
    memory_breakdown: Mapping[str, int]
    memory_peak_phase: str
    model_states_bytes: int
    exposed_comm_s: float
    time_breakdown: Mapping[str, float]
    comm_busy_s: Mapping[str, float]
    link_utilisation: Mapping[str, float]
    collectives: Mapping[str, Mapping[str, int]]
    notes: tuple[str, ...] = ()
    timeline: Timeline | None = field(default=None, repr=False, compare=False)
    #: The simulated ops (after split_host) the timeline's spans index, kept with the timeline.
    ops: tuple[Op, ...] | None = field(default=None, repr=False, compare=False)
    ds_config_resolved: Mapping[str, Any] = field(default_factory=dict, repr=False)
    #: Which hardware profile priced the step, calibrated or not, its measured error
    #: (:class:`zsim.provenance.Provenance` as a dict).
    provenance: Mapping[str, Any] = field(default_factory=dict)
    host_memory_bytes_per_node: int = 0     # host memory the offloaded states of a node's ranks need
    host_memory_available_bytes: int = 0    # the node's host memory (0: the topology does not say)
    #: GPU memory at each moment of a micro-step the memory model compares
    #: (:func:`zsim.memory_curve.memory_moments`; kept with the timeline, for drawings).
    memory_moments: tuple[MemoryMoment, ...] = field(default=(), repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (no timeline, ops or resolved config)."""
        out = asdict(replace(self, timeline=None, ops=None, memory_moments=()))   # nothing large to deep-copy
        for key in ("timeline", "ops", "ds_config_resolved", "memory_moments"):
            out.pop(key)
        out["notes"] = list(self.notes)
        return out


def host_share(cluster, cpu_threads: float | None = None) -> HostShare:
    """How the used GPUs of a node share the host: CPU cores and PCIe switch uplinks.

    ``cpu_threads``: threads each rank's CPU passes run on (the launcher's
    OMP_NUM_THREADS); None shares the node's cores among its ranks."""
    node = cluster.spec.node
    used = set(range(cluster.gpus_per_node))
    per_switch = [len(used.intersection(sw.gpus)) for sw in node.switches if sw.cpu is not None]
    k = max(per_switch, default=1) or 1
    gpu_link = node.pcie_gpu_bandwidth_GBps
    share = min(1.0, node.pcie_uplink_bandwidth_GBps / (k * gpu_link)) if gpu_link > 0 else 1.0
    return HostShare(ranks_per_node=cluster.gpus_per_node, pcie_share=share,
                     cpu_threads_per_rank=float(cpu_threads or 0.0))


def host_memory_verdict(run: RunConfig, facts: MemoryFacts, model: ModelSpec, cluster) -> HostMemoryVerdict:
    """Host memory the offloaded states of one node's ranks need, against the node's memory
    (``node.host.host_memory_bytes`` of the topology). ``plan`` and ``capacity`` call this too."""
    need = host_memory(run, facts, cluster.gpus_per_node, model.largest_parameter_numel())
    return HostMemoryVerdict(need=need, available_bytes=cluster.spec.node.host.host_memory_bytes)


def memory_facts(schedule, run: RunConfig, model: ModelSpec) -> MemoryFacts:
    """The memory model's inputs from a schedule's facts."""
    return memory_facts_of(schedule.facts)


def memory_facts_of(f: ScheduleFacts) -> MemoryFacts:
    """The memory model's inputs from schedule size facts (a search computes them without
    building the ops: :func:`zsim.schedule.api.schedule_facts`)."""
    return MemoryFacts(
        partition_numel=int(f.partition_numel),
        ipg_buffer_elems=int(f.ipg_buffer_elems),
        ipg_buffer_count=int(f.ipg_buffer_count),
        max_gathered_numel=int(getattr(f, "max_gathered_numel", 0)),
        persistent_numel=int(getattr(f, "persistent_numel", 0)),
        group_numels=tuple(getattr(f, "group_numels", ())),
        group_partition_numels=tuple(getattr(f, "group_partition_numels", ())),
    )


def _time_breakdown(t: Timeline, framework_s: float) -> dict[str, float]:
    """Compute-stream time per category, link types grouped under ``exposed_comm_<link>_s``."""
    out: dict[str, float] = {}
    for cat, sec in t.exposed_s.items():
        kind, _, sub = cat.partition(":")
        if sec <= 0 and cat != "compute":
            continue  # e.g. collectives of a one-rank group
        key = {"comm": f"exposed_comm_{sub}_s", "copy": f"exposed_offload_{sub}_s"}.get(kind, f"{cat}_s")
        out[key] = out.get(key, 0.0) + sec
    out["framework_s"] = framework_s
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class JobMemory:
    """The memory stage's result: the schedule facts it read, the GPU estimate, host memory."""

    facts: MemoryFacts
    gpu: MemoryEstimate
    host: HostMemoryVerdict


@dataclass(frozen=True)
class Simulated:
    """The simulate stage's result: the simulated ops, their timeline and the step time
    (timeline plus the engine's per-step and per-micro-step bookkeeping)."""

    ops: tuple[Op, ...]
    timeline: Timeline
    framework_s: float
    step_time_s: float


def workload_of(job: Job) -> Workload:
    """Kernels of one micro-step of ``job`` (model, micro-batch, sequence, precision)."""
    return Workload(job.model, job.run.micro_batch, job.run.seq_len, job.run.param_bytes)


def schedule_stage(job: Job) -> Schedule:
    """What rank 0 issues in one optimizer step of ``job``."""
    return build_schedule(job.model, job.run, gpus_per_node=job.cluster.gpus_per_node)


def memory_stage(job: Job, facts: MemoryFacts, workload: Workload | None = None) -> JobMemory:
    """GPU peak memory and host memory of ``job`` from the schedule's size ``facts``
    (:func:`memory_facts`; a search passes cached ones: they do not depend on the batch).
    ``workload``: the rank's kernels when they are not :func:`workload_of` the job (a
    tensor- or sequence-parallel shard, zsim.parallel)."""
    gpu = estimate_memory(workload or workload_of(job), job.run, facts,
                          job.hardware.memory.allocator_overhead_fraction)
    return JobMemory(facts, gpu, host_memory_verdict(job.run, facts, job.model, job.cluster))


def simulate_stage(job: Job, schedule: Schedule, workload: Workload | None = None,
                   host_ops: tuple[Op, ...] | None = None, spans: bool = True) -> Simulated:
    """Simulate one optimizer step of ``schedule`` on ``job``'s cluster and hardware
    (``workload``: as in :func:`memory_stage`; ``host_ops``: ``split_host(schedule.ops)``
    when the caller kept it, see :class:`ScheduleMemo`; ``spans``: False leaves the
    timeline's spans empty, for a caller that keeps no timeline)."""
    hw = job.hardware
    ops = tuple(split_host(schedule.ops)) if host_ops is None else host_ops
    timeline = simulate(ops, op_coster(job, workload), spans=spans)
    # Engine bookkeeping outside the simulated ops: per step and per micro-step.
    framework_s = hw.overheads.step_fixed_s + job.run.grad_accum * hw.overheads.micro_step_fixed_s
    step_s = timeline.step_time_s + framework_s
    if step_s <= 0:
        raise ZsimInputError("prediction produced a zero step time (empty schedule)")
    return Simulated(ops, timeline, framework_s, step_s)


#: The op pricers of the last few simulations (see :func:`op_coster`).
_COSTERS: dict[tuple, OpCoster] = {}
COSTERS_KEPT = 8


def op_coster(job: Job, workload: Workload | None = None) -> OpCoster:
    """The :class:`OpCoster` that prices ``job``'s ops (``workload``: as in
    :func:`memory_stage`), kept by everything it prices from: the workload, precision,
    hardware profile, cluster and host share (a cluster by equality, as the collective
    layer's own cache keys it). A search simulates dozens of schedules of a few workloads,
    each thousands of op shapes (every layer's modules by name): the shapes are priced once
    per coster, not once per simulation."""
    work = workload or workload_of(job)
    share = host_share(job.cluster, job.cpu_threads)
    key = (work, job.run.precision, job.hardware, job.cluster, share)
    coster = _COSTERS.pop(key, None)
    if coster is None:
        hw = job.hardware
        coster = OpCoster(work, job.run.precision, hw, collective_timer(job.cluster, hw), share)
        if len(_COSTERS) >= COSTERS_KEPT:
            del _COSTERS[next(iter(_COSTERS))]
    _COSTERS[key] = coster   # the most recently used last
    return coster


def _whole_model_parameters(spec: ModelSpec) -> int:
    """The model's parameter count over all ranks: under DeepSpeed-MoE expert parallelism
    ``spec`` is one rank's model (num_experts / ep_size experts per layer), so the experts
    of the other ranks are added back (zsim.parallel.expert.global_parameter_count)."""
    if spec.deepspeed_moe is None:
        return spec.num_parameters
    from .parallel.expert import global_parameter_count
    return global_parameter_count(spec)


def present(job: Job, schedule: Schedule, memory: JobMemory, sim: Simulated,
            keep_timeline: bool = False, workload: Workload | None = None) -> Prediction:
    """The :class:`Prediction` of the stages' results (``keep_timeline``: with timeline and ops;
    ``workload``: as in :func:`memory_stage`)."""
    run, spec, cluster, hw = job.run, job.model, job.cluster, job.hardware
    work = workload or workload_of(job)
    step_s = sim.step_time_s
    tokens_per_gpu = run.micro_batch * run.grad_accum * run.seq_len
    tflops = work.model_flops_per_token() * tokens_per_gpu / step_s / 1e12
    breakdown = _time_breakdown(sim.timeline, sim.framework_s)
    host_note = () if memory.host.fits else (memory.host.note(),)
    return Prediction(
        model=spec.name, num_parameters=_whole_model_parameters(spec), topology=cluster.topology,
        hardware=hw.name, world_size=cluster.world_size, num_nodes=cluster.num_nodes,
        gpus_per_node=cluster.gpus_per_node, stage=run.zero.stage, micro_batch=run.micro_batch,
        grad_accum=run.grad_accum, train_batch=run.train_batch, seq_len=run.seq_len,
        precision=run.precision, offload_optimizer=run.zero.offload_optimizer,
        offload_param=run.zero.offload_param, activation_checkpointing=run.activation_checkpointing,
        step_time_s=step_s, tokens_per_s=run.tokens_per_step / step_s, tflops_per_gpu=tflops,
        mfu=tflops * 1e12 / peak_flops(hw, run.precision),
        peak_memory_bytes=memory.gpu.peak_bytes, gpu_memory_bytes=hw.gpu.memory_bytes,
        fits=memory.gpu.peak_bytes <= hw.gpu.memory_bytes and memory.host.fits,
        memory_breakdown=memory.gpu.breakdown, memory_peak_phase=memory.gpu.peak_phase,
        model_states_bytes=memory.gpu.model_states_bytes,
        exposed_comm_s=sum(v for k, v in breakdown.items() if k.startswith("exposed_comm_")),
        time_breakdown=breakdown,
        comm_busy_s={k: v for k, v in sim.timeline.busy_s.items() if k.startswith("comm:")},
        link_utilisation=link_utilisation(schedule.ops, cluster, hw, step_s),
        collectives=schedule.collectives, notes=job.notes + host_note,
        timeline=sim.timeline if keep_timeline else None, ops=sim.ops if keep_timeline else None,
        ds_config_resolved=run.resolved, provenance=job.provenance.to_dict(),
        host_memory_bytes_per_node=memory.host.need.bytes_per_node,
        host_memory_available_bytes=memory.host.available_bytes,
        memory_moments=memory_moments(work, run, memory.facts,
                                      hw.memory.allocator_overhead_fraction) if keep_timeline else (),
    )


class ScheduleMemo:
    """The last few schedules built, with their ops split for the system layer, by
    :func:`~zsim.schedule.api.schedule_key`: a search simulates candidates that differ only
    in their batch shape (a ZeRO-3 candidate of micro-batch 4 at its own grad-accum 1, one of
    micro-batch 1 screened at grad-accum 1), whose schedules are equal; each is built and
    split once. Only the last ``size`` are kept: a ZeRO-3 step of a 70B model is tens of
    thousands of ops, and the search asks again soon after (within 6 builds on
    ``zsim plan --model llama-2-70b --nodes 16``) or never."""

    def __init__(self, size: int = 6):
        self.size = size
        self._items: dict[tuple, tuple[Schedule, tuple[Op, ...]]] = {}

    def built(self, job: Job) -> tuple[Schedule, tuple[Op, ...] | None]:
        """``job``'s schedule and its split ops (None: not split yet, no key to keep it by)."""
        key = schedule_key(job.model, job.run, job.cluster.gpus_per_node)
        if key is None:
            return schedule_stage(job), None
        if key in self._items:
            self._items[key] = self._items.pop(key)   # the most recently used last
        else:
            schedule = schedule_stage(job)
            self._items[key] = (schedule, tuple(split_host(schedule.ops)))
            if len(self._items) > self.size:
                del self._items[next(iter(self._items))]
        schedule, ops = self._items[key]
        # each prediction gets its own collectives dict (the schedule's ops are immutable)
        return replace(schedule, collectives=copy.deepcopy(schedule.collectives)), ops


def predict_job(job: Job, keep_timeline: bool = False, memo: ScheduleMemo | None = None) -> Prediction:
    """Every stage on one resolved job: schedule, memory, simulate, present (``memo``: reuse
    the schedules built for other jobs with the same schedule inputs)."""
    schedule, host_ops = memo.built(job) if memo is not None else (schedule_stage(job), None)
    memory = memory_stage(job, memory_facts(schedule, job.run, job.model))
    sim = simulate_stage(job, schedule, host_ops=host_ops, spans=keep_timeline)
    return present(job, schedule, memory, sim, keep_timeline)


def predict_settings(settings: RunSettings, keep_timeline: bool = False) -> Prediction:
    """Resolve ``settings`` and predict the job (what the CLI and the API wrappers call)."""
    return predict_job(resolve(settings), keep_timeline)


def predict(model: str | Path | ModelSpec | None = None, topo: str | Path = DEFAULT_TOPO, *,
            gpus: int | None = None, nodes: int | None = None,
            ds_config: str | Path | Mapping[str, Any] | None = None,
            hardware: str | Path | HardwareProfile | None = None,
            stage: int | None = None, micro_batch: int | None = None, grad_accum: int | None = None,
            seq: int | None = None, offload_optimizer: str | None = None,
            offload_param: str | None = None, activation_checkpointing: bool | None = None,
            host_speed: HostSpeed | None = None, cpu_threads: float | None = None,
            keep_timeline: bool = False) -> Prediction:
    """Predict one optimizer step of ``model`` on ``topo`` under a DeepSpeed config.

    ``gpus`` takes the first N GPUs of one node, ``nodes`` M whole nodes (default: one whole
    node). Explicit arguments override ``ds_config``. ``host_speed`` is the measured speed of
    the host thread (a run's ``host_speed`` record; default: the profile's reference machine),
    ``cpu_threads`` the threads per rank of CPU-side passes (default: the node's cores shared
    by its ranks). A config that does not fit is a result
    (``fits`` False), not an error; bad input raises :class:`~zsim.errors.ZsimInputError`.
    The arguments are the fields of :class:`zsim.job.RunSettings`.
    """
    return predict_settings(RunSettings(
        model=model, topo=topo, gpus=gpus, nodes=nodes, ds_config=ds_config, hardware=hardware,
        stage=stage, micro_batch=micro_batch, grad_accum=grad_accum, seq=seq,
        offload_optimizer=offload_optimizer, offload_param=offload_param,
        activation_checkpointing=activation_checkpointing, host_speed=host_speed,
        cpu_threads=cpu_threads), keep_timeline)
