"""A re-implementation of DeepSpeed's stage-3 PartitionedParameterCoordinator over sizes.

Follows runtime/zero/partitioned_param_coordinator.py (= PC) line by line where it decides
what is gathered and released; only numbers, no tensors. Surprises it reproduces:
- ``reset_step`` (PC:253-290) zeroes the available-numel counter at every forward although
  parameters left gathered by the previous backward stay gathered, and releases prefetched
  parameters still in flight;
- the fetch of a parameter-less container (the root module at step 0) already prefetches:
  with the default prefetch bucket (5e7) a small model is gathered in ONE call;
- prefetch pops trace entries of later uses of parameters that are already available and
  records the furthest use it popped (PC:454-470); ``__params_to_release`` then keeps any
  parameter whose later use was popped (PC:640-650), so with reuse distance 0 a model that
  fits in one prefetch is still not released after forward and never re-gathered in backward;
- ``__params_to_release`` is ``lru_cache``d on (module, step) (PC:636-637): the decision
  made the first time a trace step is released is reused in every later micro-step;
- the reuse-distance scan starts at the NEXT trace step and stops once it has seen
  max_reuse_distance elements (0: no scan) (PC:652-660);
- recording mode (the first micro-step) releases everything after use, persistent
  parameters included (PC:494-499; partition() has no persistence check, PP:1778-1804).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from .z3modules import DsModule


class ParamStatus(enum.IntEnum):
    """A parameter's ``ds_status`` (partition_parameters.py ZeroParamStatus)."""

    NOT_AVAILABLE = 0
    INFLIGHT = 1
    AVAILABLE = 2


NOT_AVAILABLE, INFLIGHT, AVAILABLE = ParamStatus.NOT_AVAILABLE, ParamStatus.INFLIGHT, ParamStatus.AVAILABLE
_NEVER = -10_000_000_000  # PC's defaultdict(lambda: int(-1e10))


class TraceMode(enum.Enum):
    """The coordinator's trace state (PC ``__trace_mode``): the first forward records the
    module order, every later one replays it (prefetch and reuse decisions need it)."""

    INVALID = "invalid"
    RECORD = "record"
    COMPLETE = "complete"


@dataclass(frozen=True)
class TraceUse:
    """One use of a parameter in the recorded trace: ``param`` is used at trace ``step``
    (PC ``__param_order``, one entry per parameter of each traced module)."""

    param: int
    step: int


@dataclass
class Coordinator:
    """State of one rank's coordinator. ``gather(params, forward)`` is called for every
    all_gather_coalesced DeepSpeed would issue and returns a handle (op id) or None."""

    mods: list[DsModule]
    numel: list[int]
    persistent: list[bool]
    prefetch_bucket: int
    max_live: int
    max_reuse: int
    gather: Callable[[list[int], bool], int | None]
    status: list[ParamStatus] = field(default_factory=list)
    active: list[set] = field(default_factory=list)
    inflight: dict[int, int | None] = field(default_factory=dict)
    n_available: int = 0
    step_id: int = 0
    mode: TraceMode = TraceMode.INVALID
    trace: list[int] = field(default_factory=list)      # module index per trace step
    param_order: list[TraceUse] = field(default_factory=list)
    queue: deque[TraceUse] = field(default_factory=deque)
    most_recent: dict[int, int] = field(default_factory=dict)
    active_backward: dict[int, None] = field(default_factory=dict)
    release_cache: dict[tuple[int, int], frozenset] = field(default_factory=dict)
    released: Callable[[int], None] | None = None

    def __post_init__(self) -> None:
        n = len(self.numel)
        self.status = [AVAILABLE if self.persistent[p] else NOT_AVAILABLE for p in range(n)]
        self.active = [set() for _ in range(n)]

    # ---- PC:253-290
    def reset_step(self) -> None:
        """Start of a forward: clean in-flight prefetches, finish/advance trace recording."""
        for p in list(self.inflight):
            self.status[p] = AVAILABLE
            self._release_param(p)
        self.inflight.clear()
        if self.mode is TraceMode.RECORD:
            self.param_order = [TraceUse(p, s) for s, m in enumerate(self.trace)
                                for p in sorted(set(self.mods[m].params))]
            self.mode = TraceMode.COMPLETE
        elif self.mode is TraceMode.INVALID:
            self.mode = TraceMode.RECORD
        self.queue = deque(self.param_order)
        self.most_recent = {}
        self.step_id = 0
        self.n_available = 0

    def _release_param(self, p: int) -> None:
        if self.status[p] == AVAILABLE and not self.active[p]:
            self.status[p] = NOT_AVAILABLE
            self.n_available -= self.numel[p]
            if self.released:
                self.released(p)

    def _all_gather(self, params: list[int], forward: bool) -> None:
        todo = [p for p in params if self.status[p] == NOT_AVAILABLE]
        if not todo:
            return
        self.n_available += sum(self.numel[p] for p in todo)
        handle = self.gather(todo, forward)
        for p in todo:
            self.status[p] = INFLIGHT
            self.inflight[p] = handle

    # ---- PC:353-492
    def fetch(self, m: int, forward: bool) -> list[int | None]:
        """A module's pre hook. Returns the handles its compute must wait for."""
        if self.mode is TraceMode.RECORD:
            self.trace.append(m)
        if not forward:
            self.active_backward[m] = None
        params = list(dict.fromkeys(self.mods[m].params))
        self._all_gather(params, forward)
        waits = []
        for p in params:
            self.active[p].add(m)
            if p in self.inflight:
                waits.append(self.inflight.pop(p))
                self.status[p] = AVAILABLE
        if self.mode is TraceMode.COMPLETE:
            self._pop_own(params)
            if self.prefetch_bucket > 0:
                self._prefetch(forward)
        self.step_id += 1
        return waits

    def _pop_own(self, params: list[int]) -> None:
        want = [p for p in params if self.most_recent.get(p, _NEVER) < self.step_id]
        popped: set[int] = set()
        while self.queue and len(popped) < len(want):
            use = self.queue.popleft()
            self.most_recent[use.param] = use.step
            popped.add(use.param)

    def _prefetch(self, forward: bool) -> None:
        limit = min(self.max_live - self.n_available, self.prefetch_bucket)
        chosen: dict[int, None] = {}
        numel = 0
        while self.queue and numel < limit:
            use = self.queue.popleft()
            p = use.param
            do = self.status[p] == NOT_AVAILABLE and p not in chosen
            self.most_recent[p] = max(self.most_recent.get(p, _NEVER), use.step)
            if do:
                chosen[p] = None
                numel += self.numel[p]
        if numel > 0:
            self._all_gather(list(chosen), forward)

    # ---- PC:494-535, 634-665
    def _to_release(self, m: int) -> frozenset:
        key = (m, self.step_id)
        cached = self.release_cache.get(key)
        if cached is not None:
            return cached
        params = self.mods[m].params
        out = {p for p in params if not self.persistent[p]}
        for p in params:
            if self.most_recent.get(p, _NEVER) > self.step_id:
                out.discard(p)
        seen = 0
        for mod in self.trace[self.step_id:]:
            if seen >= self.max_reuse or not out:
                break
            for p in self.mods[mod].params:
                out.discard(p)
                seen += self.numel[p]
        result = frozenset(out)
        self.release_cache[key] = result
        return result

    def release(self, m: int, forward: bool) -> None:
        """A module's post hook (post-forward or post-backward)."""
        params = self.mods[m].params
        if self.mode is TraceMode.COMPLETE:
            to_release = self._to_release(m)
        else:
            to_release = frozenset(params)
        if not forward:
            self.active_backward.pop(m, None)
        for p in params:
            self.active[p].discard(m)
            if p in to_release:
                self._release_param(p)

    # ---- PC:554-566, called from stage3.py:3059-3068
    def release_backward_leftovers(self) -> None:
        """End of backward: release what modules without a post-backward hook still hold."""
        for m in reversed(list(self.active_backward)):
            for p in self.mods[m].params:
                self.active[p].discard(m)
                if not self.persistent[p]:
                    self._release_param(p)
        self.active_backward.clear()

    def held_count(self) -> int:
        """How many parameters are gathered or in flight now (what partition_all releases)."""
        return sum(1 for st in self.status if st != NOT_AVAILABLE)

    # ---- stage3.py:2873-2878 + _post_step 2835-2841
    def partition_all(self) -> None:
        """The optimizer step releases every parameter (release_and_reset_all)."""
        for p in range(len(self.numel)):
            if p in self.inflight:
                self.status[p] = AVAILABLE
            self.active[p].clear()
            self._release_param(p)
        self.inflight.clear()

    def regather_persistent(self) -> None:
        """After the step the persistent parameters are all-gathered again (one call each)."""
        for p in range(len(self.numel)):
            if self.persistent[p]:
                self.status[p] = AVAILABLE
