"""The shared shape of both sides of a diagnosis: phase windows and per-stream cells."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

#: Phases in step order; "other" collects time outside every labelled phase.
PHASES = ("forward", "backward", "step", "other")
#: Streams in display order (copies are split by direction).
STREAMS = ("compute", "comm", "copy_h2d", "copy_d2h", "copy_d2d", "memset", "host_busy", "host_wait",
           "cpu_optimizer")
#: What each stream means, for the legend of the text output.
STREAM_HELP = {
    "compute": "GPU kernels other than collectives",
    "comm": "collective kernels (NCCL; gloo threads on CPU runs)",
    "copy_h2d": "host-to-device copies", "copy_d2h": "device-to-host copies",
    "copy_d2d": "device-to-device copies", "memset": "GPU memsets",
    "host_busy": "the Python thread issuing work, minus its waits",
    "host_wait": "host blocked on the GPU (synchronize, item(), blocking memcpy)",
    "cpu_optimizer": "DeepSpeedCPUAdam.step on the host",
}


@dataclass(frozen=True)
class OpTime:
    """Total time of the ops of one name inside a cell."""

    name: str
    time_s: float
    count: int


@dataclass(frozen=True)
class Window:
    """The wall time of one phase of one micro-step (``micro_step`` None: the phase's total)."""

    phase: str
    micro_step: int | None
    wall_s: float
    start_s: float | None = None   # from the start of the optimizer step, where known


@dataclass(frozen=True)
class Cell:
    """Time one stream spent on one phase of one micro-step, and the ops that took it."""

    phase: str
    micro_step: int | None
    stream: str
    time_s: float
    ops: tuple[OpTime, ...] = ()


@dataclass(frozen=True)
class Side:
    """One side of the comparison (the measurement or the prediction)."""

    source: str                    # "trace", "summary" or "zsim"
    step_time_s: float | None
    windows: tuple[Window, ...]
    cells: tuple[Cell, ...] = ()
    notes: tuple[str, ...] = ()


def top_ops(pairs: Iterable[tuple[str, float]], limit: int = 5) -> tuple[OpTime, ...]:
    """The ``limit`` names with the most total seconds among (name, seconds) pairs."""
    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for name, sec in pairs:
        total[name] += sec
        count[name] += 1
    ranked = sorted(total, key=lambda n: (-total[n], n))[:limit]
    return tuple(OpTime(n, total[n], count[n]) for n in ranked)


def build_cells(items: Iterable[tuple[str, int | None, str, str, float]]) -> tuple[Cell, ...]:
    """Cells from (phase, micro_step, stream, op name, seconds) items, ops ranked per cell."""
    grouped: dict[tuple[str, int | None, str], list[tuple[str, float]]] = defaultdict(list)
    for phase, micro, stream, name, sec in items:
        grouped[(phase, micro, stream)].append((name, sec))
    return tuple(Cell(p, m, s, sum(sec for _, sec in pairs), top_ops(pairs))
                 for (p, m, s), pairs in sorted(grouped.items(), key=lambda kv: _key(kv[0])))


def _key(k: tuple[str, int | None, str]) -> tuple:
    p, m, s = k
    return (PHASES.index(p) if p in PHASES else len(PHASES), -1 if m is None else m,
            STREAMS.index(s) if s in STREAMS else len(STREAMS), s)


def interval_union_s(intervals: Iterable[tuple[float, float]]) -> float:
    """Length of the union of (start, end) intervals, in their unit."""
    total, cur_lo, cur_hi = 0.0, None, None
    for lo, hi in sorted(intervals):
        if hi <= lo:
            continue
        if cur_hi is None or lo > cur_hi:
            if cur_hi is not None:
                total += cur_hi - cur_lo
            cur_lo, cur_hi = lo, hi
        else:
            cur_hi = max(cur_hi, hi)
    if cur_hi is not None:
        total += cur_hi - cur_lo
    return total
