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
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from typing import Any

from ..collective_pricing import collective_timer
from ..collectives.base import bus_factor
from ..compute import peak_flops
from ..errors import ZsimInputError
from ..job import JobSite, RunSettings
from ..memory_curve import memory_moments
from ..ops import LOGGER_TO_COLLECTIVE
from ..predict import Prediction, predict_settings, present, simulate_stage
from ..workload import Workload
from .layout import ParallelLayout, stage_layer_counts
from .pipeline import Kind, deepspeed_train_schedule, flatten, timeline
from .stagemem import StageMemoryModel, stage_memory_model
from .stages import (ParallelAsk, StageSetup, class_schedules, is_split, stage_class, stage_job, stage_memory,
                     stage_setup)


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
    :func:`zsim.predict.predict_settings`), else :func:`predict_parallel`. A ds_config with
    ``tensor_parallel.autotp_size > 1`` asks for DeepSpeed AutoTP (:func:`with_autotp`)."""
    ask = with_autotp(settings, ask)
    if ask.data_only:
        return predict_settings(settings, keep_timeline)
    return predict_parallel(settings, ask, keep_timeline)


def with_autotp(settings: RunSettings, ask: ParallelAsk) -> ParallelAsk:
    """``ask`` with the ds_config's AutoTP degree (zsim.parallel.autotp); ``--tp`` with a
    different ``tensor_parallel.autotp_size`` is refused (``--tp`` is Megatron's split)."""
    from ..dsconfig import autotp_size, load_ds_config
    size = autotp_size(load_ds_config(settings.ds_config)) if settings.ds_config is not None else 1
    if size == 1:
        return ask
    if ask.tp not in (1, size):
        raise ZsimInputError(f"--tp {ask.tp} and the ds_config's tensor_parallel.autotp_size {size} disagree: "
                             "give one tensor-parallel degree (AutoTP's is taken from the ds_config)")
    return replace(ask, tp=size, autotp=True)


def _pass_times(sim) -> tuple[float, float, float]:
    """(forward, backward, after-backward) seconds of a one-micro-batch simulation."""
    fwd_end = bwd_end = 0.0
    for span in sim.timeline.spans:
        op = sim.ops[span.op_id]
        if op.stream != "compute":
            continue
        mine = op.kind == "compute" or is_split(op)
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
    return sum(span.end_s - span.start_s for span in sim.timeline.spans if is_split(sim.ops[span.op_id]))


def predict_parallel(settings: RunSettings, ask: ParallelAsk, keep_timeline: bool = False,
                     site: JobSite | None = None) -> ParallelPrediction:
    """Predict one optimizer step under ``ask`` (see the module docstring); bad or unmodelled
    input raises :class:`~zsim.errors.ZsimInputError`. ``site``: the placed job (a search
    places once)."""
    s = stage_setup(settings, ask, site)
    pp, m = ask.pp, s.run.grad_accum
    counts = stage_layer_counts(s.shard.num_layers, pp)
    sim_run = replace(s.run, grad_accum=1) if pp > 1 else s.run
    job, step_job = stage_job(s, sim_run), stage_job(s, s.run)
    simulated = {}
    for key, (i, schedule) in class_schedules(s, sim_run, counts).items():
        sim = simulate_stage(job, schedule, s.workload)
        # a class's stages share its simulation: its stream and split seconds summed once
        simulated[key] = (schedule, sim, _pass_times(sim) if pp > 1 else (0.0, 0.0, 0.0),
                          (_stream_seconds(sim, "host"), _stream_seconds(sim, "comm"), _tp_seconds(sim)))
    stages, preds = [], []
    for i in range(pp):
        schedule, sim, (fwd, bwd, tail), (host_s, comm_s, tp_s) = simulated[stage_class(counts, i)]
        # memory under the whole step's run: gradients accumulate over the m micro-batches
        memory, in_flight = stage_memory(s, step_job, schedule, i, counts, m)
        stages.append(StageResult(i, counts[i], sum(counts[:i]), schedule.facts.num_params, in_flight, fwd, bwd,
                                  tail, sim.timeline.compute_s, host_s, comm_s, tp_s, memory.gpu.peak_bytes, memory.gpu.peak_bytes <= s.site.hardware.gpu.memory_bytes
                                  and memory.host.fits, dict(memory.gpu.breakdown)))
        preds.append(memory)
    worst = max(range(pp), key=lambda i: (stages[i].peak_memory_bytes, -i))
    schedule, sim, _, (_, _, worst_tp_s) = simulated[stage_class(counts, worst)]
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
    tflops = _model_flops_per_token(full) * tokens / s.site.cluster.world_size / step_s / 1e12
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
                              p2p_s, worst_tp_s * split, wire)


@lru_cache(maxsize=64)
def _model_flops_per_token(full: Workload) -> float:
    """``full.model_flops_per_token()`` (cached: a search asks for it per candidate, and it
    walks the whole model's kernels)."""
    return full.model_flops_per_token()


def _wire_bytes(ops, m: int, world_size: int, gpus_per_node: int) -> dict[str, float]:
    """Bytes one GPU sends per comms-logger op in the step (nccl-tests' bus convention), the
    split's collectives counted ``m`` times (a pipeline's one-micro-batch schedule)."""
    out: dict[str, float] = {}
    for op in ops:
        if op.kind == "collective":
            n = op.group.size(world_size, gpus_per_node)
            sent = bus_factor(LOGGER_TO_COLLECTIVE[op.collective], n) * op.buffer_bytes if n > 1 else 0.0
            out[op.collective] = out.get(op.collective, 0.0) + sent * (m if is_split(op) else 1)
    return out


def _step_collectives(ops, m: int) -> dict:
    """A stage's collectives of one step from its one-micro-batch schedule (pipeline): the
    split's (TP, Ulysses) repeat for each of the ``m`` micro-batches, ZeRO's reduction and
    step run once."""
    counts: Counter[tuple[str, int]] = Counter()
    for op in ops:
        if op.kind == "collective":
            counts[(op.collective, op.message_bytes)] += m if is_split(op) else 1
    out: dict[str, dict[str, int]] = {}
    for (name, size), n in sorted(counts.items()):
        out.setdefault(name, {})[str(size)] = n
    return out


def _pipeline_step(s: StageSetup, stages: list[StageResult], m: int) -> tuple[float, float, float, dict[str, float]]:
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
    if not breakdown["exposed_comm_split_s"]:
        del breakdown["exposed_comm_split_s"]       # no tensor or sequence parallelism
    return path + framework_s, tl.bubble_fraction, p2p_s, breakdown


def _notes(ask: ParallelAsk) -> tuple[str, ...]:
    out = []
    if ask.autotp:
        out.append("DeepSpeed AutoTP (HF tp_plan split): 2 forward and 5 backward all-reduces per layer on the "
                   "compute stream, lm_head's logits all-gathered (module_inject/layers.py:225, 313, 353)")
    elif ask.tp > 1:
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
           "stage_memory_model"]   # ParallelAsk and the memory model re-exported from zsim.parallel.stages/stagemem
