"""The discrete-event engine: one SimPy process per stream, one event per op.

Each stream runs its ops in list order; an op starts when its stream is free and every op
in ``deps`` has finished. When the compute stream has to wait, the wait is charged to the
category of the dependency that finished last: that is how "exposed communication" emerges
from the simulation instead of being assumed.
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


def simulate(ops: Sequence[Op], cost: Callable[[Op], OpCost],
             critical_stream: str = "compute") -> Timeline:
    """Run ``ops`` and return their timeline. ``cost`` prices each op."""
    env = simpy.Environment()
    done = [env.event() for _ in ops]
    costs = [cost(op) for op in ops]
    finish_s = [0.0] * len(ops)
    spans: list[Span] = []
    exposed: dict[str, float] = defaultdict(float)
    by_stream: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        by_stream[op.stream].append(op)

    def run_stream(stream: str, stream_ops: list[Op]):
        for op in stream_ops:
            ready_s = env.now
            pending = [done[d] for d in op.deps if not done[d].processed]
            if pending:
                yield env.all_of(pending)
            if stream == critical_stream and env.now > ready_s:
                # Charge the wait to whatever the stream waited for last.
                last = max(op.deps, key=lambda d: finish_s[d])
                exposed[costs[last].category] += env.now - ready_s
            c = costs[op.id]
            start_s = env.now
            if c.duration_s > 0:
                yield env.timeout(c.duration_s)
            finish_s[op.id] = env.now
            spans.append(Span(op.id, stream, op.name, c.category, start_s, env.now))
            if stream == critical_stream:
                exposed[c.category] += env.now - start_s
            done[op.id].succeed()

    for stream in sorted(by_stream):
        env.process(run_stream(stream, by_stream[stream]))
    env.run()
    step_s = max(finish_s, default=0.0)
    critical_end = max((s.end_s for s in spans if s.stream == critical_stream), default=0.0)
    if step_s > critical_end:
        # The step ends on another stream (e.g. the all-gather after the optimizer step).
        last = max(range(len(ops)), key=lambda i: finish_s[i])
        exposed[costs[last].category] += step_s - critical_end
    busy: dict[str, float] = defaultdict(float)
    for s in spans:
        busy[s.category] += s.end_s - s.start_s
    spans.sort(key=lambda s: (s.start_s, s.op_id))
    return Timeline(step_time_s=step_s, spans=spans, busy_s=dict(sorted(busy.items())),
                    exposed_s=dict(sorted(exposed.items())))
