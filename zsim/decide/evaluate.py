"""Evaluating candidates: memory first (cheap), then step time, each result cached.

Memory is the memory stage of :mod:`zsim.predict` (schedule facts + the memory model) on the
candidate's :class:`~zsim.job.Job`, without the discrete-event simulation, so a candidate that does not fit costs a
schedule build, not a simulation. It does not depend on gradient accumulation, so it is
evaluated at ``grad_accum = 1``.

Step time is linear in gradient accumulation: every micro-step after the first repeats the
same ops (t(G) = t(1) + (G - 1)·(t(2) - t(1)), exact for the simulator to float precision).
Screening therefore simulates G = 1 and G = 2 and extrapolates; the finalists are simulated
at their real G. Two lower bounds drop candidates that cannot enter the ranking: before any
simulation, G micro-steps of compute (known once any candidate of the same micro-batch and
checkpointing was simulated: the kernels do not depend on stage, offload or buckets); before
the second, t(1) plus (G - 1) micro-steps of compute.
"""

from __future__ import annotations

import json
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from ..errors import ZsimInputError
from ..hardware import HardwareProfile
from ..job import Job, JobSite, RunSettings, job_at, place
from ..memory import MemoryFacts
from ..model import ModelSpec
from ..output import format_bytes
from ..predict import ScheduleMemo, memory_facts_of, memory_stage, predict_job
from ..provenance import DEFAULT_MEMORY_HEADROOM_PCT, Provenance, profile_provenance
from ..schedule.api import schedule_facts
from .autoconfig import UserConfig, candidate_config
from .fanout import Backend, Serial
from .space import Candidate


@dataclass(frozen=True)
class Setting:
    """What stays the same across candidates: the base run settings (model, cluster, sequence
    length; no run field pinned), where they run, and the user's config."""

    settings: RunSettings
    site: JobSite            # resolved once; every candidate's Job is made on it
    user: UserConfig
    provenance: Provenance | None = None
    memory_headroom_pct: float = 0.0     # share of GPU memory a candidate must leave free

    @property
    def model(self) -> ModelSpec:
        """The model every candidate trains."""
        return self.site.model

    @property
    def topo(self) -> str | Path:
        """Topology name or path, as given."""
        return self.settings.topo

    @property
    def gpus(self) -> int | None:
        """GPUs of one node, as given (None: whole nodes)."""
        return self.settings.gpus

    @property
    def nodes(self) -> int | None:
        """Whole nodes, as given."""
        return self.settings.nodes

    @property
    def hardware(self) -> HardwareProfile:
        """The loaded hardware profile."""
        return self.site.hardware

    @property
    def seq_len(self) -> int:
        """Sequence length of every candidate."""
        return int(self.settings.seq)

    @property
    def world_size(self) -> int:
        """Ranks of the cluster."""
        return self.site.cluster.world_size

    @property
    def gpu_memory_bytes(self) -> int:
        """Memory of one GPU."""
        return self.hardware.gpu.memory_bytes

    @property
    def headroom_bytes(self) -> int:
        """GPU memory kept free for the memory model's error."""
        return int(self.gpu_memory_bytes * self.memory_headroom_pct / 100.0)

    @property
    def usable_memory_bytes(self) -> int:
        """What a candidate's predicted peak may use: the GPU less the headroom."""
        return self.gpu_memory_bytes - self.headroom_bytes


def make_setting(model: ModelSpec, topo: str | Path, gpus: int | None, nodes: int | None,
                 hardware: str | Path | HardwareProfile | None, seq_len: int,
                 user: UserConfig, memory_headroom_pct: float = 0.0) -> Setting:
    """Resolve the cluster and hardware profile once (and where the profile comes from)."""
    return setting_of(RunSettings(model=model, topo=topo, gpus=gpus, nodes=nodes, hardware=hardware,
                                  seq=seq_len), user, memory_headroom_pct)


def setting_of(settings: RunSettings, user: UserConfig, memory_headroom_pct: float = 0.0) -> Setting:
    """The :class:`Setting` of base run settings (their cluster fields and ``seq``)."""
    site = place(settings)
    # The candidates' predictions name the loaded profile, as predict(hardware=<profile>)
    # does; the plan's own provenance names the profile as it was asked for.
    job_site = replace(site, provenance=profile_provenance(site.hardware))
    return Setting(settings, job_site, user, site.provenance, check_headroom(memory_headroom_pct))


def check_headroom(pct: Any) -> float:
    """A memory headroom in percent of GPU memory: a finite number in [0, 100)."""
    if pct is None:
        return DEFAULT_MEMORY_HEADROOM_PCT
    if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0.0 <= pct < 100.0:
        raise ZsimInputError(f"--memory-headroom must be a percentage in [0, 100), got {pct!r}")
    return float(pct)


@dataclass(frozen=True)
class MemoryVerdict:
    """Whether a candidate fits, and if not, which term overflows and by how much."""

    fits: bool
    peak_bytes: int
    gpu_memory_bytes: int
    breakdown: Mapping[str, int] = field(default_factory=dict)
    headroom_bytes: int = 0       # kept free for the memory model's error
    host_note: str = ""           # set when the offloaded states exceed the node's host memory
    host_bytes_per_node: int = 0  # host memory the offloaded states of a node's ranks need
    host_available_bytes: int = 0  # the node's host memory (0: the topology does not say)

    @property
    def overflow_bytes(self) -> int:
        """Bytes by which the peak exceeds the GPU less the headroom (0 when it fits)."""
        return max(0, self.peak_bytes - (self.gpu_memory_bytes - self.headroom_bytes))

    @property
    def largest_term(self) -> tuple[str, int]:
        """The largest memory term at the peak: (name, bytes)."""
        if not self.breakdown:
            return ("total", self.peak_bytes)
        name = max(sorted(self.breakdown), key=lambda k: self.breakdown[k])
        return name, int(self.breakdown[name])

    def reason(self) -> str:
        """Why it does not fit, e.g. ``params 130.4 GiB is the largest term; peak 160.2 GiB
        exceeds 80.0 GiB by 80.2 GiB``."""
        if self.host_note and not self.overflow_bytes:
            return self.host_note
        name, size = self.largest_term
        limit = format_bytes(self.gpu_memory_bytes)
        if self.headroom_bytes:
            pct = 100.0 * self.headroom_bytes / self.gpu_memory_bytes
            limit += f" less {pct:.1f} % headroom ({format_bytes(self.gpu_memory_bytes - self.headroom_bytes)})"
        return (f"{name} {format_bytes(size)} is the largest term; peak {format_bytes(self.peak_bytes)} "
                f"exceeds {limit} by {format_bytes(self.overflow_bytes)}")


@dataclass(frozen=True)
class Screened:
    """A candidate's predicted step time (extrapolated in G unless ``exact``)."""

    candidate: Candidate
    step_time_s: float
    tokens_per_s: float
    exact: bool


Predictor = Callable[..., Any]

#: One simulation the search asks for: a candidate at a gradient accumulation (None: its own).
Ask = tuple[Candidate, int | None]

#: Simulations the search sends to the backend at once, per worker: a little more than one so
#: no worker idles on a short one, few so that what a batch teaches (a higher floor) prunes the next.
ASKS_PER_WORKER = 2
#: Workers assumed of a backend that does not say how many it has (a Dask cluster).
DEFAULT_WORKERS = 8

#: Memory verdicts shared by every Evaluator of the process (capacity searches and reports
#: ask the same questions many times). Keyed by everything the memory model reads.
_MEMORY_CACHE: dict[tuple, "MemoryVerdict"] = {}
_MEMORY_CACHE_LIMIT = 65536

#: Schedule facts (partition, bucket and gather sizes) are element counts: they depend on the
#: model, the world size and the ZeRO settings, not on micro-batch, sequence length or
#: gradient accumulation, so one replay serves every batch shape.
_FACTS_CACHE: dict[tuple, MemoryFacts] = {}


def _schedule_facts(model: ModelSpec, run: Any) -> MemoryFacts:
    """The memory model's size facts of ``run`` (cached), computed without the schedule's
    ops (:func:`schedule_facts`: a stage-3 replay building no ops costs about half a build)."""
    key = (model, run.world_size, run.zero, run.activation_checkpointing, run.precision)
    if key not in _FACTS_CACHE:
        if len(_FACTS_CACHE) >= _MEMORY_CACHE_LIMIT:
            _FACTS_CACHE.clear()
        _FACTS_CACHE[key] = memory_facts_of(schedule_facts(model, run))
    return _FACTS_CACHE[key]


class Evaluator:
    """Cached memory and time evaluation of candidates in one :class:`Setting`.

    Each candidate is a :class:`~zsim.job.Job` on the setting's site, run through the stages
    of :mod:`zsim.predict`. A test may inject ``predictor``, a callable with the keyword
    arguments of :func:`zsim.predict.predict` (memory then comes from it too).

    ``backend`` (:mod:`zsim.decide.fanout`) lets :meth:`ahead` simulate a batch of candidates
    on other processes while the search goes on here; an injected predictor always runs here
    (it need not be picklable).
    """

    def __init__(self, setting: Setting, predictor: Predictor | None = None, backend: Backend | None = None):
        self.setting = setting
        self._real = predictor is None
        self._predictor = predictor
        self._backend = backend
        # Simulations the backend was asked for ahead of the search: results not taken yet
        # (ok, prediction or error) and the asks still on their way (see ahead()).
        self._ahead: dict[Ask, tuple[bool, Any]] = {}
        self._pending: set[Ask] = set()
        self._stream: Iterator[tuple[Ask, tuple[bool, Any]]] | None = None
        self._memory: dict[Candidate, MemoryVerdict] = {}
        self._predictions: dict[tuple[Candidate, bool], Any] = {}
        self.simulations = 0
        self.memory_checks = 0
        # Compute-stream seconds of one micro-step per (micro-batch, checkpointing): the same
        # kernels run whatever the stage, offload or buckets, so it bounds any candidate.
        self._compute_s: dict[tuple[int, bool], float] = {}
        # Candidates that differ only in their batch shape simulate the same schedule.
        self._schedules = ScheduleMemo()

    # ---- configs ------------------------------------------------------------------------
    def ds_config(self, cand: Candidate) -> dict[str, Any]:
        """The candidate as a DeepSpeed config (the user's fixed values kept)."""
        return candidate_config(self.setting.user, cand, self.setting.world_size)

    def tokens_per_step(self, cand: Candidate) -> int:
        """Tokens of one optimizer step over all ranks."""
        return cand.micro_batch * cand.grad_accum * self.setting.world_size * self.setting.seq_len

    # ---- memory -------------------------------------------------------------------------
    def memory(self, cand: Candidate) -> MemoryVerdict:
        """Fit verdict of ``cand`` (cached). It depends on grad_accum: stages 0/1 keep full
        gradients across micro-steps."""
        key = cand
        if key not in self._memory:
            self.memory_checks += 1
            self._memory[key] = self._fast_memory(key) if self._real else self._memory_from_prediction(key)
        return self._memory[key]

    def _memory_from_prediction(self, cand: Candidate) -> MemoryVerdict:
        return self.verdict(self._run(cand, None))

    def verdict(self, p: Any) -> MemoryVerdict:
        """Fit verdict of a full prediction, the headroom kept."""
        usable = int(p.gpu_memory_bytes) - self.setting.headroom_bytes
        host_note = next((n for n in getattr(p, "notes", ()) if n.startswith("host memory:")), "")
        return MemoryVerdict(bool(p.fits) and int(p.peak_memory_bytes) <= usable, int(p.peak_memory_bytes),
                             int(p.gpu_memory_bytes), dict(p.memory_breakdown), self.setting.headroom_bytes,
                             host_note)

    def _fast_memory(self, cand: Candidate) -> MemoryVerdict:
        s = self.setting
        hw = s.hardware
        key = (s.model, s.world_size, s.seq_len, hw.gpu.memory_bytes, hw.memory.allocator_overhead_fraction,
               s.headroom_bytes, str(s.topo), s.gpus, s.nodes,
               json.dumps(s.user.raw, sort_keys=True, default=str), cand)
        if key not in _MEMORY_CACHE:
            if len(_MEMORY_CACHE) >= _MEMORY_CACHE_LIMIT:
                _MEMORY_CACHE.clear()
            _MEMORY_CACHE[key] = self._memory_model(cand)
        return _MEMORY_CACHE[key]

    def _memory_model(self, cand: Candidate) -> MemoryVerdict:
        s = self.setting
        # Memory depends on grad_accum (stages 0/1 keep full gradients across micro-steps).
        job = self.job(cand, cand.grad_accum)
        mem = memory_stage(job, _schedule_facts(job.model, job.run))
        return MemoryVerdict(mem.gpu.peak_bytes <= s.usable_memory_bytes and mem.host.fits, mem.gpu.peak_bytes,
                             s.gpu_memory_bytes, dict(mem.gpu.breakdown), s.headroom_bytes, mem.host.note(),
                             mem.host.need.bytes_per_node, mem.host.available_bytes)

    # ---- time ---------------------------------------------------------------------------
    def job(self, cand: Candidate, grad_accum: int | None) -> Job:
        """``cand`` as a Job at ``grad_accum`` (None: the candidate's own, from its config)."""
        batch = {"micro_batch": cand.micro_batch, "grad_accum": grad_accum} if grad_accum else {}
        return job_at(self.setting.site, self.setting.settings.with_run(
            ds_config=self.ds_config(cand), activation_checkpointing=cand.activation_checkpointing, **batch))

    @staticmethod
    def _key(cand: Candidate, grad_accum: int | None, keep_timeline: bool) -> tuple[Candidate, bool]:
        return (cand if grad_accum is None else cand.with_grad_accum(grad_accum), keep_timeline)

    def _run(self, cand: Candidate, grad_accum: int | None, keep_timeline: bool = False) -> Any:
        """Predict ``cand`` at ``grad_accum`` (None: the candidate's own, from its config)."""
        key = self._key(cand, grad_accum, keep_timeline)
        if grad_accum == cand.grad_accum:
            return self._run(cand, None, keep_timeline)
        if key not in self._predictions:
            # Counted when the search asks, wherever it was computed: the counters (and
            # plan.json) are the serial search's.
            self.simulations += 1
            self._predictions[key] = self._simulate(cand, grad_accum, keep_timeline)
        return self._predictions[key]

    def _simulate(self, cand: Candidate, grad_accum: int | None, keep_timeline: bool) -> Any:
        if not self._real:
            return self._injected(cand, grad_accum, keep_timeline)
        ask = (cand, grad_accum)
        if not keep_timeline and (ask in self._pending or ask in self._ahead):
            return self._take_ahead(ask)
        return predict_job(self.job(cand, grad_accum), keep_timeline, self._schedules)

    # ---- simulations on the backend ------------------------------------------------------
    @property
    def fans_out(self) -> bool:
        """Whether :meth:`ahead` runs simulations elsewhere: the real predictor and a backend
        of more than this process (``ProcessPool(1)`` runs here: speculating would only waste)."""
        b = self._backend
        return self._real and b is not None and not isinstance(b, Serial) and getattr(b, "workers", 2) > 1

    @property
    def batch_size(self) -> int:
        """How many simulations the search sends to the backend at once."""
        return ASKS_PER_WORKER * int(getattr(self._backend, "workers", DEFAULT_WORKERS))

    def screen_asks(self, cand: Candidate, floor_tokens_per_s: float = 0.0) -> list[Ask]:
        """The simulations :meth:`screen` of ``cand`` would ask for at this floor (a higher
        floor later may ask fewer: the second, or both, may be pruned)."""
        if self._compute_prunes(cand, floor_tokens_per_s):
            return []
        return [(cand, None)] if cand.grad_accum <= 2 else [(cand, 1), (cand, 2)]

    @contextmanager
    def ahead(self, asks: Iterable[Ask]) -> Iterator[None]:
        """Within the block, the simulations of ``asks`` run on the backend, in their order,
        while the search goes on here. The search takes each result when (and only if) it asks
        for it, so its decisions and counters are the serial search's; what it never asks for
        (pruned meanwhile) is dropped at the end. Does nothing unless :attr:`fans_out`."""
        todo = list(dict.fromkeys(a for a in asks if self._key(*a, False) not in self._predictions))
        if not self.fans_out or len(todo) < 2:   # one simulation: shipping it saves nothing
            yield
            return
        jobs = [self.job(cand, grad_accum) for cand, grad_accum in todo]
        # closing(): leaving the block early (an error, Ctrl-C) still shuts the workers down.
        with closing(self._backend.map_in_order(_predict_or_error, jobs)) as results:
            self._stream, self._pending = zip(todo, results), set(todo)
            try:
                yield
            finally:
                self._stream, self._pending = None, set()
                self._ahead.clear()

    def _take_ahead(self, ask: Ask) -> Any:
        """The backend's answer to ``ask``: earlier results in the stream wait in _ahead."""
        while ask not in self._ahead:
            done, result = next(self._stream)   # in input order; ``ask`` is still pending
            self._pending.discard(done)
            self._ahead[done] = result
        ok, value = self._ahead.pop(ask)
        if not ok:
            raise value   # the input error the serial search would have raised here
        return value

    def _injected(self, cand: Candidate, grad_accum: int | None, keep_timeline: bool) -> Any:
        """The injected predictor's answer, asked with :func:`zsim.predict.predict`'s keywords."""
        s = self.setting
        extra: dict[str, Any] = {}
        if grad_accum is not None:
            extra = {"micro_batch": cand.micro_batch, "grad_accum": grad_accum}
        return self._predictor(
            model=s.model, topo=s.topo, gpus=s.gpus, nodes=s.nodes, ds_config=self.ds_config(cand),
            hardware=s.hardware, seq=s.seq_len, activation_checkpointing=cand.activation_checkpointing,
            keep_timeline=keep_timeline, **extra)

    def predict(self, cand: Candidate, keep_timeline: bool = False) -> Any:
        """The full prediction of ``cand`` at its own gradient accumulation (cached)."""
        return self._run(cand, None, keep_timeline)

    def screen(self, cand: Candidate, floor_tokens_per_s: float = 0.0) -> Screened | None:
        """Predicted step time of ``cand``; None when it provably stays below the floor."""
        g = cand.grad_accum
        tokens = self.tokens_per_step(cand)
        shape = (cand.micro_batch, cand.activation_checkpointing)
        if self._compute_prunes(cand, floor_tokens_per_s):
            return None
        if g <= 2:
            p = self.predict(cand)
            return Screened(cand, p.step_time_s, tokens / p.step_time_s, True)
        p1 = self._run(cand, 1)
        compute_s = float(dict(getattr(p1, "time_breakdown", {}) or {}).get("compute_s", 0.0))
        self._compute_s.setdefault(shape, compute_s)
        bound_s = p1.step_time_s + (g - 1) * compute_s
        if floor_tokens_per_s and tokens / bound_s < floor_tokens_per_s:
            return None
        p2 = self._run(cand, 2)
        step_s = p1.step_time_s + (g - 1) * (p2.step_time_s - p1.step_time_s)
        return Screened(cand, step_s, tokens / step_s, False)

    def _compute_prunes(self, cand: Candidate, floor_tokens_per_s: float) -> bool:
        """Before any simulation: the step is at least G micro-steps of compute, known once a
        candidate of the same micro-batch and checkpointing was simulated."""
        shape = (cand.micro_batch, cand.activation_checkpointing)
        if not (floor_tokens_per_s and shape in self._compute_s):
            return False
        return self.tokens_per_step(cand) / (cand.grad_accum * self._compute_s[shape]) < floor_tokens_per_s


def _predict_or_error(job: Job) -> tuple[bool, Any]:
    """Run on a worker: (True, the prediction of ``job``) or (False, the input error it raised).

    The error comes back as a value: a speculative simulation the search never asks for must
    not fail the search, and one it asks for raises there, as the serial search would."""
    try:
        return True, predict_job(job)
    except ZsimInputError as exc:
        return False, exc
