"""The discrete-event engine: streams of ops, one event per op.

Each stream runs its ops in list order; an op starts when its stream is free and every op
in ``deps`` has finished. When the compute stream has to wait, the wait is charged to the
category of the dependency that finished last: that is how "exposed communication" emerges
from the simulation instead of being assumed.

Two runners compute the same times. The general one is a SimPy process per stream. The
schedule layer numbers ops in program order, so every dependency precedes its op; for such a
list the events fire in list order, and one pass over the list computes every op's start and
finish with the same arithmetic, without the event loop (about 12x faster: 3.2 against
39 ms for the 4,008 ops of llama-2-7b ZeRO-3 on dgx-a100).
``tests/test_engine_in_order.py`` holds the two equal, field for field, on random graphs and
real schedules.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import simpy

from ..ops import Op


@dataclass(frozen=True)
class OpCost:
    """What an op costs: seconds, and the category its time is reported under.

    Categories: "compute", "comm:<link_type>", "copy:h2d", "copy:d2h", "cpu_optimizer",
    "optimizer", "overhead".
    """

    duration_s: float
    category: str


@dataclass(frozen=True)
class Span:
    """One op as it ran: for the Chrome trace and the Gantt chart."""

    op_id: int
    stream: str
    name: str
    category: str
    start_s: float
    end_s: float


@dataclass
class Timeline:
    """The result of one simulation."""

    step_time_s: float
    spans: list[Span]
    busy_s: dict[str, float] = field(default_factory=dict)       # per category, all streams
    exposed_s: dict[str, float] = field(default_factory=dict)    # compute-stream time per category

    @property
    def compute_s(self) -> float:
        """Seconds the compute stream spent on compute kernels."""
        return self.exposed_s.get("compute", 0.0)


@dataclass(frozen=True, slots=True)
class _Wait:
    """An op of the critical stream that was ready at ``ready_s`` but started at ``start_s``."""

    op_id: int
    ready_s: float
    start_s: float


def simulate(ops: Sequence[Op], cost: Callable[[Op], OpCost],
             critical_stream: str = "compute", spans: bool = True) -> Timeline:
    """Run ``ops`` and return their timeline. ``cost`` prices each op (one with a ``prices``
    method, :class:`~zsim.system.costs.OpCoster`, the whole list at once). ``spans``: False
    leaves ``Timeline.spans`` empty (a search that keeps no timeline reads only its totals,
    and a step is tens of thousands of spans to make and sort)."""
    prices = getattr(cost, "prices", None)   # a pricer of whole lists (OpCoster): one call
    costs = prices(ops) if prices is not None else [cost(op) for op in ops]
    if all(op.id == i for i, op in enumerate(ops)):
        start_s, finish_s, prev_on_stream, waits = _run_in_order(ops, costs, critical_stream)
    else:
        start_s, finish_s, prev_on_stream, waits = _run_simpy(ops, costs, critical_stream)
    return _timeline(ops, costs, start_s, finish_s, prev_on_stream, waits, critical_stream, spans)


def _run_in_order(ops: Sequence[Op], costs: list[OpCost], critical_stream: str):
    """(start, finish, stream predecessor, critical-stream waits) of ops numbered in list
    order, in one pass: what the SimPy processes of :func:`_run_simpy` compute, without
    the event loop. Every dependency precedes its op (:class:`~zsim.ops.Op` checks it) and
    a stream runs its ops in list order, so when an op comes up its stream predecessor and
    its dependencies have finished times already; the op starts at the latest of them (its
    stream's process resumes when its stream is free and the last pending dependency's event
    fires, at that event's time) and finishes ``duration`` later. The same arithmetic as the
    event loop (``now + delay``, the same comparisons), hence bit-identical times."""
    n = len(ops)
    start_s: list[float] = [0.0] * n
    finish_s: list[float] = [0.0] * n
    prev_on_stream: list[int | None] = [None] * n
    waits: list[_Wait] = []
    last: dict[str, int] = {}
    for i, op in enumerate(ops):
        stream = op.stream
        prev = last.get(stream)
        prev_on_stream[i] = prev
        last[stream] = i
        ready = finish_s[prev] if prev is not None else 0     # SimPy's clock starts at int 0
        now = ready
        for d in op.deps:
            if finish_s[d] > now:
                now = finish_s[d]
        start_s[i] = now
        if stream == critical_stream and now > ready:
            waits.append(_Wait(i, ready, now))
        duration = costs[i].duration_s
        finish_s[i] = now + duration if duration > 0 else now
    return start_s, finish_s, prev_on_stream, waits


def _run_simpy(ops: Sequence[Op], costs: list[OpCost], critical_stream: str):
    """The same as :func:`_run_in_order` with one SimPy process per stream (for op lists
    not numbered in list order)."""
    env = simpy.Environment()
    done = [env.event() for _ in ops]
    start_s = [0.0] * len(ops)
    finish_s = [0.0] * len(ops)
    prev_on_stream: list[int | None] = [None] * len(ops)
    waits: list[_Wait] = []
    by_stream: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        lst = by_stream[op.stream]
        prev_on_stream[op.id] = lst[-1].id if lst else None
        lst.append(op)

    def run_stream(stream: str, stream_ops: list[Op]):
        for op in stream_ops:
            ready = env.now
            pending = [done[d] for d in op.deps if not done[d].triggered]
            if pending:
                yield env.all_of(pending)
            start_s[op.id] = env.now
            if stream == critical_stream and env.now > ready:
                waits.append(_Wait(op.id, ready, env.now))
            if costs[op.id].duration_s > 0:
                yield env.timeout(costs[op.id].duration_s)
            finish_s[op.id] = env.now
            done[op.id].succeed()

    for stream in sorted(by_stream):
        env.process(run_stream(stream, by_stream[stream]))
    env.run()
    return start_s, finish_s, prev_on_stream, waits


def _timeline(ops, costs, start_s, finish_s, prev_on_stream, waits, critical_stream: str,
              with_spans: bool = True) -> Timeline:
    exposed: dict[str, float] = defaultdict(float)
    crit = [op.id for op in ops if op.stream == critical_stream]
    for i in crit:
        exposed[costs[i].category] += finish_s[i] - start_s[i]
    blame = _Blame(ops, costs, start_s, finish_s, prev_on_stream, exposed)
    for wait in waits:
        blame.charge(_blocker(ops[wait.op_id], finish_s), wait.ready_s, wait.start_s)
    step = max(finish_s, default=0.0)
    critical_end = max((finish_s[i] for i in crit), default=0.0)
    if step > critical_end:
        # The step ends on another stream (e.g. the all-gather after the optimizer step).
        last = max(range(len(ops)), key=lambda i: (finish_s[i], i))
        blame.charge(last, critical_end, step)
    busy: dict[str, float] = defaultdict(float)
    for op in ops:   # in list order, as the spans are made
        i = op.id
        busy[costs[i].category] += finish_s[i] - start_s[i]
    spans = _spans(ops, costs, start_s, finish_s) if with_spans else []
    return Timeline(step_time_s=step, spans=spans, busy_s=dict(sorted(busy.items())),
                    exposed_s=dict(sorted(exposed.items())))


def _spans(ops, costs, start_s, finish_s) -> list[Span]:
    """One span per op, by start time (ties by op id)."""
    spans = [_span(op.id, op.stream, op.name, costs[op.id].category, start_s[op.id], finish_s[op.id])
             for op in ops]
    spans.sort(key=lambda sp: (sp.start_s, sp.op_id))
    return spans


def _span(op_id: int, stream: str, name: str, category: str, start_s: float, end_s: float) -> Span:
    """``Span(op_id, stream, name, category, start_s, end_s)``: the same object, its fields
    set in order as the frozen dataclass's ``__init__`` sets them, without one
    ``object.__setattr__`` call per field (a step has one span per op)."""
    span = _new(Span)
    fields = span.__dict__
    fields["op_id"] = op_id
    fields["stream"] = stream
    fields["name"] = name
    fields["category"] = category
    fields["start_s"] = start_s
    fields["end_s"] = end_s
    return span


_new = object.__new__


def _blocker(op: Op, finish_s: list[float]) -> int:
    """The dependency that released ``op`` (the one that finished last)."""
    return max(op.deps, key=lambda d: (finish_s[d], d))


class _Blame:
    """Charges a wait interval along the chain of ops that caused it (critical-path blame).

    An interval [lo, hi] ending at op X's finish is charged to X's category for the part X
    ran; the part before X started goes to whatever X itself waited for (its last dependency
    or the op before it on its stream), and so on back in time.
    """

    def __init__(self, ops, costs, start_s, finish_s, prev_on_stream, exposed):
        self.ops, self.costs = ops, costs
        self.start_s, self.finish_s, self.prev = start_s, finish_s, prev_on_stream
        self.exposed = exposed

    def charge(self, op_id: int | None, lo: float, hi: float) -> None:
        while op_id is not None and hi > lo + 1e-15:
            s = self.start_s[op_id]
            self.exposed[self.costs[op_id].category] += hi - max(lo, s)
            hi = s
            if hi <= lo:
                return
            op_id = self._released_by(op_id)
        if hi > lo + 1e-15:
            self.exposed["idle"] += hi - lo

    def _released_by(self, op_id: int) -> int | None:
        # Whichever finished last among the stream predecessor and the dependencies.
        cands = list(self.ops[op_id].deps)
        if self.prev[op_id] is not None:
            cands.append(self.prev[op_id])
        if not cands:
            return None
        return max(cands, key=lambda d: (self.finish_s[d], d))
