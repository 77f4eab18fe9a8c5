"""The search of `zsim plan`, in three phases over a :class:`~.space.SearchSpace`:

1. structures (stage × offload × micro-batch × grad-accum × checkpointing): check memory,
   reject what does not fit (naming the overflowing term), screen the rest at one bucket
   setting, dropping those that provably cannot enter the top ``keep``;
2. buckets: for the best ``refine`` structures, screen every bucket setting that fits;
3. finalists: simulate the best ``top_n`` structures (each at its best bucket setting) at
   their real gradient accumulation and rank them by the metric.

Metrics (:data:`METRICS`): ``tokens-per-s`` (highest first), ``cost-per-token`` (GPU-seconds
per token, lowest first: on one cluster the same order as tokens/s, printed so plans of
different clusters compare) and ``memory`` (lowest predicted peak per GPU first; phase 1 then
keeps each structure's smallest buckets and phase 2 is skipped).

Bucket sizes change step time by a few percent while the structure changes it by integer
factors, which is why buckets are refined only around the best structures.

With an evaluator that fans out (``zsim plan --jobs N`` / ``--dask``), each phase sends the
simulations it may need to the backend in batches (:meth:`Evaluator.ahead`) and runs exactly
as in one process, taking the results as it asks for them: the same pruning, the same output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, TypeVar

from ..dsconfig import OffloadDevice
from ..gcpolicy import fewer_collections
from .evaluate import Ask, Evaluator, MemoryVerdict, Screened
from .space import Candidate, SearchSpace


@dataclass(frozen=True)
class Rejection:
    """A configuration that does not fit in GPU memory, and why."""

    candidate: Candidate
    memory: MemoryVerdict

    def reason(self) -> str:
        """Which term overflows and by how much."""
        return self.memory.reason()


@dataclass(frozen=True)
class Ranked:
    """A finalist: its exact prediction and the DeepSpeed config that produced it."""

    candidate: Candidate
    prediction: Any
    ds_config: dict


@dataclass(frozen=True)
class SearchOutcome:
    """Everything the search found: finalists best first, rejections, effort counters."""

    ranked: tuple[Ranked, ...]
    rejected: tuple[Rejection, ...]
    structures: int          # structures in the space
    fitting: int             # structures with at least one fitting bucket setting
    pruned: int              # fitting structures dropped by the lower bound
    screened: int            # candidates whose step time was predicted
    simulations: int         # predictor calls
    memory_checks: int


Progress = Callable[[int, int, str], None]
T = TypeVar("T")

#: Ranking metrics of `zsim plan --metric`.
METRICS = ("tokens-per-s", "memory", "cost-per-token")


def gpu_seconds_per_token(pred: Any) -> float:
    """GPU-seconds one trained token costs: GPUs x step time / tokens per step."""
    return float(getattr(pred, "world_size", 1)) / pred.tokens_per_s


def rank_key(metric: str) -> Callable[[Any], tuple]:
    """Sort key of a prediction under ``metric`` (smaller is better)."""
    if metric == "memory":
        return lambda p: (p.peak_memory_bytes, -p.tokens_per_s)
    if metric == "cost-per-token":
        return lambda p: (gpu_seconds_per_token(p),)
    return lambda p: (-p.tokens_per_s,)


def _target(values: tuple[int, ...]) -> int:
    """The middle value of an axis: the bucket setting phase 1 tries first."""
    return sorted(values)[len(values) // 2]


def _order(structures: Iterable[Candidate]) -> list[Candidate]:
    # Likely-fast first so the lower bound prunes early: no offload, no recomputation,
    # large micro-batches.
    return sorted(structures, key=lambda c: ((c.offload_optimizer != OffloadDevice.NONE) + (c.offload_param != OffloadDevice.NONE),
                                             c.activation_checkpointing, -c.micro_batch, -c.stage))


def _pick_buckets(space: SearchSpace, ev: Evaluator, cand: Candidate) -> tuple[Candidate | None, MemoryVerdict]:
    """The fitting bucket variant closest to the middle setting, or None with the smallest's verdict."""
    variants = sorted(space.bucket_variants(cand), key=lambda v: (v.reduce_bucket_size, v.prefetch_bucket_size))
    smallest = ev.memory(variants[0])
    if not smallest.fits:
        return None, smallest   # memory grows with bucket sizes: nothing larger fits
    r, p = _target(space.reduce_buckets), _target(space.prefetch_buckets)
    by_distance = sorted(variants, key=lambda v: (abs(math.log(v.reduce_bucket_size / r))
                                                  + abs(math.log(v.prefetch_bucket_size / p)),
                                                  v.reduce_bucket_size))
    for v in by_distance:
        if ev.memory(v).fits:
            return v, ev.memory(v)
    return variants[0], smallest


def _best_per_structure(screened: list[Screened]) -> list[Screened]:
    """The fastest screened variant of each structure, fastest first."""
    best: dict[tuple, Screened] = {}
    for s in screened:
        key = s.candidate.structure
        if key not in best or s.tokens_per_s > best[key].tokens_per_s:
            best[key] = s
    return sorted(best.values(), key=lambda s: -s.tokens_per_s)


def _floor(screened: list[Screened], keep: int) -> float:
    """tokens/s a structure must beat to enter the best ``keep`` structures (0: not yet full)."""
    ranked = _best_per_structure(screened)
    return ranked[keep - 1].tokens_per_s if len(ranked) >= keep else 0.0


@dataclass
class _State:
    """What the phases share: screened candidates, rejections, counters."""

    keep: int
    screened: list[Screened]
    rejected: list[Rejection]
    fitting: int = 0
    pruned: int = 0
    metric: str = "tokens-per-s"
    fits: list[tuple[Candidate, MemoryVerdict]] = field(default_factory=list)

    def screen(self, ev: Evaluator, cand: Candidate) -> None:
        result = ev.screen(cand, _floor(self.screened, self.keep))
        if result is None:
            self.pruned += 1
        else:
            self.screened.append(result)


def _batches(ev: Evaluator, items: Iterable[T],
             asks_of: Callable[[T], list[Ask]]) -> Iterator[tuple[list[T], list[Ask]]]:
    """Consecutive runs of ``items``, each with the simulations its items may ask for: just
    enough asks to keep the backend's workers busy (``ev.batch_size``), so that what one run
    learns (a higher floor, a known compute time) prunes the next run's asks, as it prunes the
    serial search. ``asks_of`` is called when a run is formed, after the previous run was
    searched. Without a fan-out: one run of every item, no asks (the serial search as it was)."""
    if not ev.fans_out:
        yield list(items), []
        return
    run: list[T] = []
    asks: list[Ask] = []
    for item in items:
        run.append(item)
        asks += asks_of(item)
        if len(asks) >= ev.batch_size:
            yield run, asks
            run, asks = [], []
    if run:
        yield run, asks


def _structure_asks(space: SearchSpace, ev: Evaluator, st: _State, cand: Candidate) -> list[Ask]:
    """The simulations phase 1 may ask for on ``cand``: its screen at today's floor (the floor
    only rises: the phase asks for these or fewer). The memory checks are the phase's own,
    cached, so counted once."""
    if st.metric == "memory":
        return []
    chosen, _ = _pick_buckets(space, ev, cand)
    return [] if chosen is None else ev.screen_asks(chosen, _floor(st.screened, st.keep))


def _phase_structures(space: SearchSpace, ev: Evaluator, st: _State, structures: list[Candidate],
                      progress: Progress | None, total: int) -> None:
    asks_of = lambda item: _structure_asks(space, ev, st, item[1])   # noqa: E731 - runs here, never pickled
    for run, asks in _batches(ev, enumerate(structures), asks_of):
        with ev.ahead(asks):
            for i, cand in run:
                if progress:
                    progress(i, total, f"structures: {cand.label()}")
                _structure_step(space, ev, st, cand)


def _structure_step(space: SearchSpace, ev: Evaluator, st: _State, cand: Candidate) -> None:
    """Phase 1 on one structure: reject it, or keep its smallest buckets (memory metric), or screen it."""
    chosen, verdict = _pick_buckets(space, ev, cand)
    if chosen is None:
        st.rejected.append(Rejection(cand, verdict))
        return
    st.fitting += 1
    if st.metric == "memory":   # the smallest buckets need the least memory; no timing
        smallest = min(space.bucket_variants(cand), key=lambda v: (v.reduce_bucket_size, v.prefetch_bucket_size))
        st.fits.append((smallest, ev.memory(smallest)))
    else:
        st.screen(ev, chosen)


def _unscreened_variants(space: SearchSpace, ev: Evaluator, st: _State,
                         refine: int) -> Iterator[tuple[int, list[Candidate]]]:
    """For each of the best ``refine`` structures (best first): its index and its bucket
    variants that fit and were not screened yet."""
    seen = {s.candidate for s in st.screened}
    for j, top in enumerate(_best_per_structure(st.screened)[:refine]):
        fresh = []
        for variant in space.bucket_variants(top.candidate):
            if variant not in seen and ev.memory(variant).fits:
                seen.add(variant)
                fresh.append(variant)
        yield j, fresh


def _bucket_asks(space: SearchSpace, ev: Evaluator, st: _State, refine: int) -> list[Ask]:
    """The simulations phase 2 may ask for, in its order (see :func:`_structure_asks`)."""
    if not ev.fans_out:
        return []
    floor = _floor(st.screened, st.keep)
    return [ask for _, variants in _unscreened_variants(space, ev, st, refine)
            for variant in variants for ask in ev.screen_asks(variant, floor)]


def _phase_buckets(space: SearchSpace, ev: Evaluator, st: _State, refine: int, progress: Progress | None,
                   done: int, total: int) -> None:
    with ev.ahead(_bucket_asks(space, ev, st, refine)):
        for j, variants in _unscreened_variants(space, ev, st, refine):
            if progress:
                progress(done + j, total, "buckets: refining the best structures")
            for variant in variants:
                pruned = st.pruned
                st.screen(ev, variant)
                st.pruned = pruned        # a slower bucket setting is not a pruned structure


def _finalists(ev: Evaluator, st: _State, top_n: int) -> list[Ranked]:
    # One column per structure (its best bucket setting): alternatives, not bucket noise.
    if st.metric == "memory":
        chosen = [c for c, _ in sorted(st.fits, key=lambda cv: (cv[1].peak_bytes, cv[0]))[:top_n]]
    else:
        chosen = [s.candidate for s in _best_per_structure(st.screened)[:top_n]]
    ranked = []
    with ev.ahead([(cand, None) for cand in chosen]):   # no pruning here: every one is asked
        for cand in chosen:
            pred = ev.predict(cand)
            verdict = ev.verdict(pred)
            if verdict.fits:
                ranked.append(Ranked(cand, pred, ev.ds_config(cand)))
            else:   # the full prediction is the last word on fit
                st.rejected.append(Rejection(cand, verdict))
    key = rank_key(st.metric)
    return sorted(ranked, key=lambda r: key(r.prediction))


def search(space: SearchSpace, ev: Evaluator, top_n: int = 5, refine: int = 3,
           progress: Progress | None = None, metric: str = "tokens-per-s") -> SearchOutcome:
    """Run the three phases; see the module docstring."""
    with fewer_collections():   # a search builds and drops many ops (zsim/gcpolicy.py)
        return _search(space, ev, top_n, refine, progress, metric)


def _search(space: SearchSpace, ev: Evaluator, top_n: int, refine: int, progress: Progress | None,
            metric: str) -> SearchOutcome:
    structures = _order(space.structures())
    st = _State(keep=max(top_n, refine), screened=[], rejected=[], metric=metric)
    total = len(structures) + refine
    _phase_structures(space, ev, st, structures, progress, total)
    if metric != "memory":
        _phase_buckets(space, ev, st, refine, progress, len(structures), total)
    if progress:
        progress(total, total, "finalists: full predictions")
    ranked = _finalists(ev, st, top_n)
    return SearchOutcome(ranked=tuple(ranked), rejected=tuple(st.rejected), structures=len(structures),
                         fitting=st.fitting, pruned=st.pruned, screened=len(st.screened),
                         simulations=ev.simulations, memory_checks=ev.memory_checks)
