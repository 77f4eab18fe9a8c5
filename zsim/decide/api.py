"""`zsim.plan` and `zsim.capacity`: from predictions to a DeepSpeed config someone can launch.

:func:`plan` searches ZeRO stage × offload × micro-batch × gradient accumulation × activation
checkpointing × bucket sizes under ``GlobalBatch = micro_batch × grad_accum × data_parallel``,
rejects what does not fit (naming the overflowing memory term), ranks the rest by tokens/s
and returns the winner's DeepSpeed config. With a user's config, only the ``"auto"`` or absent
values of the searched axes change: every other value is written as the user wrote it, and
``"auto"`` is kept for the Hugging Face Trainer (see :mod:`zsim.decide.autoconfig`).

:func:`capacity` (from :mod:`zsim.decide.capacity`) finds the largest Llama-shaped model
that fits per stage and offload choice.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from .autoconfig import (AXIS_KEYS, Change, UserConfig, config_target, describe_changes, read_user_config,
                         target_notes, written_config)
from .capacity import CapacityResult, capacity
from .evaluate import Evaluator, Predictor, check_headroom, setting_of
from .fanout import Backend
from .search import METRICS, Ranked, Rejection, SearchOutcome, gpu_seconds_per_token, search
from .space import (OFFLOAD_DEVICES, PREFETCH_BUCKETS, REDUCE_BUCKETS, STAGES, SearchSpace,
                    check_global_batch, default_global_batch, micro_batch_choices)
from ..defaults import DEFAULT_SEQ_LEN, DEFAULT_TOPO
from ..errors import ZsimInputError
from ..hardware import HardwareProfile
from ..job import RunSettings
from ..limits import MAX_GRAD_ACCUM, MAX_TOP, check_int_range
from ..model import load_model
from ..provenance import Provenance


@dataclass(frozen=True)
class Constraints:
    """Axes pinned on the command line (they win over the config file, as in `zsim predict`):
    the run fields of :class:`zsim.job.RunSettings` that :func:`plan` takes apart from ``seq``
    (:func:`plan_settings` reads them from the settings themselves)."""

    stage: int | None = None
    offload_optimizer: str | None = None
    offload_param: str | None = None
    micro_batch: int | None = None
    grad_accum: int | None = None
    activation_checkpointing: bool | None = None


@dataclass(frozen=True)
class PlanResult:
    """The ranked configurations and the winner's ``deepspeed_config_auto.json``."""

    model: str
    num_parameters: int
    topology: str
    world_size: int
    seq_len: int
    global_batch_note: str
    ranked: tuple[Ranked, ...]
    rejected: tuple[Rejection, ...]
    outcome: SearchOutcome = field(repr=False)
    changes: tuple[Change, ...] = ()
    notes: tuple[str, ...] = ()
    user_config: str = ""
    space_size: int = 0
    elapsed_s: float = 0.0
    target: str = "deepspeed"
    ds_config_written: Mapping[str, Any] = field(default_factory=dict, repr=False)
    metric: str = "tokens-per-s"
    provenance: Provenance | None = None
    memory_headroom_pct: float = 0.0
    usable_memory_bytes: int = 0
    tie_band_pct: float = 0.0
    ties: tuple[int, ...] = ()        # ranks (2, 3, ...) within the model's error of #1

    @property
    def best(self) -> Ranked | None:
        """The winner (highest tokens/s among fitting configurations), or None."""
        return self.ranked[0] if self.ranked else None

    @property
    def ds_config_auto(self) -> dict[str, Any]:
        """The winner's DeepSpeed config as written ({} when nothing fits): the user's values,
        the search's choices, "auto" kept or resolved per :attr:`target`."""
        return dict(self.ds_config_written) if self.best else {}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: the ranking, rejections, changes."""
        def cand(c):
            return {"stage": c.stage, "offload_optimizer": c.offload_optimizer,
                    "offload_param": c.offload_param, "micro_batch": c.micro_batch,
                    "grad_accum": c.grad_accum, "activation_checkpointing": c.activation_checkpointing,
                    "reduce_bucket_size": c.reduce_bucket_size, "prefetch_bucket_size": c.prefetch_bucket_size,
                    "overlap_comm": c.overlap_comm}
        return {
            "model": self.model, "num_parameters": self.num_parameters, "topology": self.topology,
            "world_size": self.world_size, "seq_len": self.seq_len,
            "global_batch_note": self.global_batch_note, "user_config": self.user_config,
            "target": self.target, "metric": self.metric,
            "provenance": self.provenance.to_dict() if self.provenance else {},
            "memory_headroom_pct": self.memory_headroom_pct, "usable_memory_bytes": self.usable_memory_bytes,
            "tie": {"band_pct": self.tie_band_pct, "within_band_of_first": list(self.ties)},
            "ranked": [{**cand(r.candidate), "gpu_seconds_per_token": gpu_seconds_per_token(r.prediction),
                        "prediction": r.prediction.to_dict()} for r in self.ranked],
            "rejected": [{**cand(r.candidate), "peak_memory_bytes": r.memory.peak_bytes,
                          "gpu_memory_bytes": r.memory.gpu_memory_bytes,
                          "overflow_bytes": r.memory.overflow_bytes,
                          "largest_term": r.memory.largest_term[0], "reason": r.reason()}
                         for r in self.rejected],
            "changes": [{"key": c.key, "before": c.before, "after": c.after, "reason": c.reason}
                        for c in self.changes],
            "deepspeed_config_auto": self.ds_config_auto,
            "search": {"space_size": self.space_size, "structures": self.outcome.structures,
                       "fitting_structures": self.outcome.fitting, "pruned": self.outcome.pruned,
                       "screened": self.outcome.screened, "simulations": self.outcome.simulations,
                       "memory_checks": self.outcome.memory_checks},
            "notes": list(self.notes),
        }


#: What pins the search's axes: the run fields of a RunSettings, or a Constraints.
Pins = RunSettings | Constraints


def _axis(fixed: Mapping[str, Any], pinned: Pins, name: str, default: tuple) -> tuple:
    value = getattr(pinned, name, None)
    if value is None:
        value = fixed.get(name)
    return default if value is None else (value,)


def _batch_axes(fixed: Mapping[str, Any], pinned: Pins, dp: int, seq: int,
                global_batch: int | None) -> tuple[tuple[int, ...], tuple[int, ...] | None, int | None, str]:
    """(micro choices, grad-accum choices or None, global batch or None, note)."""
    micro = pinned.micro_batch or fixed.get("micro_batch")
    ga = pinned.grad_accum or fixed.get("grad_accum")
    note = ""
    if global_batch is not None:
        check_global_batch(global_batch, dp)
        note = f"global batch {global_batch} (--global-batch)"
    elif "train_batch" in fixed and pinned.micro_batch is None and pinned.grad_accum is None:
        global_batch = fixed["train_batch"]
        check_global_batch(global_batch, dp, "train_batch_size")
        note = f"global batch {global_batch} (train_batch_size in the config)"
    elif micro and ga:
        global_batch = micro * ga * dp
        note = f"global batch {global_batch} = {micro} x {ga} x {dp} (micro-batch and grad-accum fixed)"
    elif ga:
        note = (f"global batch not fixed: train_batch_size = micro-batch x {ga} x {dp} follows the "
                "chosen micro-batch (give --global-batch to fix it)")
        return micro_batch_choices(None) if micro is None else (micro,), (ga,), None, note
    else:
        global_batch = default_global_batch(dp, seq, micro)
        note = (f"global batch {global_batch} sequences = {global_batch * seq:,} tokens (default: about "
                "1M tokens per step; give --global-batch to choose)")
    per_rank = global_batch // dp
    for name, value in (("micro-batch", micro), ("grad-accum", ga)):
        if value and per_rank % value:
            raise ZsimInputError(f"{name} {value} does not divide the per-rank batch {per_rank} "
                                 f"(global batch {global_batch} / data parallel {dp})")
    if micro:
        micros = (micro,)
    elif ga:
        micros = (per_rank // ga,)
    else:
        micros = micro_batch_choices(per_rank)
    return micros, None, global_batch, note


def build_space(user: UserConfig, pinned: Pins, data_parallel: int, seq_len: int,
                global_batch: int | None = None) -> SearchSpace:
    """The search space: every axis the user (config or flags) did not fix."""
    fixed = user.fixed
    micros, gas, gb, note = _batch_axes(fixed, pinned, data_parallel, seq_len, global_batch)
    ckpt = (False, True) if pinned.activation_checkpointing is None else (pinned.activation_checkpointing,)
    space = SearchSpace(
        data_parallel=data_parallel,
        stages=_axis(fixed, pinned, "stage", STAGES),
        offload_optimizer=_axis(fixed, pinned, "offload_optimizer", OFFLOAD_DEVICES),
        offload_param=_axis(fixed, pinned, "offload_param", OFFLOAD_DEVICES),
        micro_batches=micros, grad_accums=gas, checkpointing=ckpt,
        reduce_buckets=_axis(fixed, pinned, "reduce_bucket_size", REDUCE_BUCKETS),
        prefetch_buckets=_axis(fixed, pinned, "prefetch_bucket_size", PREFETCH_BUCKETS),
        global_batch=gb, global_batch_note=note,
        overlap_comm=(fixed["overlap_comm"],) if "overlap_comm" in fixed else None)
    if not any(True for _ in space.batches()):
        raise ZsimInputError(
            f"no batch shape gives global batch {gb} on {space.data_parallel} data-parallel ranks with "
            f"micro-batch in {list(space.micro_batches)} and grad-accum at most {MAX_GRAD_ACCUM} "
            "(give --global-batch or another --micro-batch)")
    if not any(True for _ in space.structures()):
        raise ZsimInputError("no valid configuration in the search space (offload_param needs stage 3, "
                             "offload_optimizer needs stage >= 1)")
    return space


#: What the winner has most of (or least), per metric.
METRIC_WORDS = {"tokens-per-s": "highest predicted tokens/s", "memory": "lowest predicted peak memory",
                "cost-per-token": "fewest predicted GPU-seconds per token"}


def _search_reasons(space: SearchSpace, pinned: Pins, best: Ranked, fitting: int,
                    metric: str = "tokens-per-s") -> dict[str, str]:
    """Why each searched key of the written config has its value (dotted key -> reason)."""
    c, dp = best.candidate, space.data_parallel
    why = f"chosen by the search: {METRIC_WORDS[metric]} of {fitting} fitting stage/offload/batch choices"
    identity = (f"GlobalBatch {c.micro_batch * c.grad_accum * dp} = micro {c.micro_batch} x "
                f"grad_accum {c.grad_accum} x data_parallel {dp}")
    reasons = {}
    for axis, key in AXIS_KEYS.items():
        if getattr(pinned, axis, None) is not None:
            reasons[key] = "given on the command line"
        elif axis in ("micro_batch", "grad_accum", "train_batch"):
            reasons[key] = identity + (f"; the micro-batch with the {METRIC_WORDS[metric]}"
                                       if axis == "micro_batch" else "")
        else:
            reasons[key] = why
    reasons["zero_optimization.offload_optimizer"] = reasons[AXIS_KEYS["offload_optimizer"]]
    reasons["zero_optimization.offload_param"] = reasons[AXIS_KEYS["offload_param"]]
    return reasons


def _ties(ranked: tuple[Ranked, ...], metric: str, prov: Provenance | None) -> tuple[float, tuple[int, ...]]:
    """(band in %, ranks within it of #1): predictions closer than the model's measured error
    (step time, or peak memory for the memory metric) cannot be told apart by the model."""
    if metric == "memory":
        band = prov.memory_headroom_pct if prov else 5.0
        value = [float(r.prediction.peak_memory_bytes) for r in ranked]
    else:
        band = prov.step_time_error_pct if prov else 10.0
        value = [1.0 / r.prediction.tokens_per_s for r in ranked]   # time per token
    if not value:
        return band, ()
    return band, tuple(i + 1 for i in range(1, len(value)) if (value[i] / value[0] - 1.0) * 100.0 <= band)


def plan(model: Any = None, topo: str | Path = DEFAULT_TOPO, *, gpus: int | None = None,
         nodes: int | None = None, global_batch: int | None = None, seq: int | None = None,
         ds_config: str | Path | Mapping[str, Any] | None = None,
         hardware: str | Path | HardwareProfile | None = None,
         constraints: Constraints = Constraints(), top_n: int = 5, refine: int = 3,
         predictor: Predictor | None = None, progress: Any = None,
         target: str | None = None, metric: str = "tokens-per-s",
         memory_headroom_pct: float | None = None, backend: Backend | None = None) -> PlanResult:
    """Search DeepSpeed configurations of ``model`` on ``topo``; see the module docstring.

    ``target`` (``deepspeed`` or ``hf-trainer``; default: ``hf-trainer`` when the user's
    config holds "auto") says who launches the written config. ``metric`` ranks (see
    :data:`zsim.decide.search.METRICS`). ``memory_headroom_pct`` of GPU memory stays free
    (default: the profile's measured peak-memory error, 5 % where none was measured).
    ``predictor`` (default: the stages of :mod:`zsim.predict`) may be replaced in tests by a
    callable with the keyword arguments of :func:`zsim.predict.predict`. ``backend``
    (:mod:`zsim.decide.fanout`: a process pool, a Dask cluster; default this process) runs
    the candidates' simulations; the result is the same wherever they run.
    """
    settings = RunSettings(model=model, topo=topo, gpus=gpus, nodes=nodes, ds_config=ds_config,
                           hardware=hardware, seq=seq, **asdict(constraints))
    return plan_settings(settings, global_batch=global_batch, top_n=top_n, refine=refine, predictor=predictor,
                         progress=progress, target=target, metric=metric, memory_headroom_pct=memory_headroom_pct,
                         backend=backend)


def search_seq_len(seq: int | None, spec: Any) -> int:
    """The sequence length a search (and a report) runs at: ``seq`` when given, else the default
    capped at the model's ``max_position_embeddings``."""
    return seq if seq is not None else min(DEFAULT_SEQ_LEN, spec.max_position_embeddings)


def plan_settings(settings: RunSettings, *, global_batch: int | None = None, top_n: int = 5, refine: int = 3,
                  predictor: Predictor | None = None, progress: Any = None, target: str | None = None,
                  metric: str = "tokens-per-s", memory_headroom_pct: float | None = None,
                  backend: Backend | None = None) -> PlanResult:
    """:func:`plan` of run settings: their cluster fields place the search, ``ds_config`` is
    the user's config, and every other run field that is set pins its axis; ``backend`` runs
    the simulations (see :func:`plan`)."""
    t0 = time.monotonic()
    check_int_range(top_n, "--top", 1, MAX_TOP)
    spec = load_model(settings.model)
    if metric not in METRICS:
        raise ZsimInputError(f"--metric must be one of {', '.join(METRICS)}, got {str(metric)[:40]!r}")
    user = read_user_config(settings.ds_config)
    target = config_target(user, target)
    seq_len = search_seq_len(settings.seq, spec)
    setting = setting_of(replace(settings.without_run(), model=spec, seq=seq_len), user)
    if memory_headroom_pct is None and setting.provenance is not None:
        memory_headroom_pct = setting.provenance.memory_headroom_pct
    setting = replace(setting, memory_headroom_pct=check_headroom(memory_headroom_pct))
    space = build_space(user, settings, setting.world_size, seq_len, global_batch)
    if settings.ep is not None or settings.moe_config is not None:   # DeepSpeed-MoE layers
        from ..parallel.expert import expert_space
        space = expert_space(space)
    ev = Evaluator(setting, predictor, backend)
    outcome = search(space, ev, top_n=top_n, refine=refine, progress=progress, metric=metric)
    band, ties = _ties(outcome.ranked, metric, setting.provenance)
    notes = [space.global_batch_note]
    changes: tuple[Change, ...] = ()
    written: dict[str, Any] = {}
    if outcome.ranked:
        best = outcome.ranked[0]
        reasons = _search_reasons(space, settings, best, outcome.fitting, metric)
        written, still_auto = written_config(best.ds_config, best.prediction.ds_config_resolved, target)
        changes = describe_changes(user, written, reasons, tuple(best.prediction.notes))
        notes += target_notes(target, still_auto, best.candidate)
        if best.candidate.activation_checkpointing:
            notes.append("activation checkpointing is not a DeepSpeed JSON key: enable it in the "
                         "training script (HF: gradient_checkpointing=True)")
    return PlanResult(model=spec.name, num_parameters=spec.num_parameters, topology=str(settings.topo),
                      world_size=setting.world_size, seq_len=seq_len, global_batch_note=space.global_batch_note,
                      ranked=outcome.ranked, rejected=outcome.rejected, outcome=outcome, changes=changes,
                      notes=tuple(n for n in notes if n), user_config=user.source,
                      space_size=space.size(), elapsed_s=time.monotonic() - t0, target=target,
                      ds_config_written=written, metric=metric, provenance=setting.provenance,
                      memory_headroom_pct=setting.memory_headroom_pct,
                      usable_memory_bytes=setting.usable_memory_bytes, tie_band_pct=band, ties=ties)


__all__ = ["plan", "plan_settings", "search_seq_len", "capacity", "PlanResult", "CapacityResult", "Constraints", "build_space"]
