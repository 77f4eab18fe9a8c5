"""The measured side: per-phase, per-stream time from a trace or from summary.json.

Streams of a trace (see :data:`~.cells.STREAM_HELP`): compute = non-NCCL kernels,
comm = NCCL kernels (and, on CPU-only runs, ``gloo:*`` ranges of gloo's worker threads),
copies = ``gpu_memcpy``/``gpu_memset`` split by direction, cpu_optimizer =
``ds.DeepSpeedCPUAdam.step`` ranges, host_wait = time the issuing thread spends in
synchronising calls (:data:`WAIT_OPS`), host_busy = the rest of the phase's wall time. A GPU
event belongs to the phase of the CPU call that launched it (matched by correlation id),
not to the phase its GPU time falls in. Phase wall times follow train.py's CUDA events (see
:func:`event_windows`), so that they compare with summary.json's fwd/bwd/opt medians.
"""

from __future__ import annotations

import bisect
import re
import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from ..errors import ZsimInputError
from .cells import Side, Window, build_cells, interval_union_s
from .trace import KinetoTrace, TraceEvent

#: zsim.<phase>.<micro-step> labels set by validation/train.py -> phase names used here.
PHASE_OF_LABEL = {"forward": "forward", "backward": "backward", "engine_step": "step"}
_LABEL = re.compile(r"^zsim\.(forward|backward|engine_step)\.(\d+)$")
#: Host calls that block on the GPU: their time is "host_wait".
WAIT_OPS = frozenset({"cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize",
                      "cudaMemcpy", "aten::item", "aten::_local_scalar_dense"})
#: Categories of host-side events.
HOST_CATEGORIES = ("cpu_op", "cuda_runtime", "cuda_driver", "user_annotation")
#: Labels that mark windows, not work (never listed as a host op).
_FRAME = re.compile(r"^(zsim\.|ProfilerStep#)")
NCCL_PREFIXES = ("ncclDevKernel", "ncclKernel")
CPU_ADAM = "ds.DeepSpeedCPUAdam.step"
US = 1e-6


@dataclass(frozen=True, order=True)
class PhaseRange:
    """One labelled phase window of a micro-step (trace microseconds); orders by start."""

    start_us: float
    end_us: float
    phase: str
    micro: int


@dataclass(frozen=True)
class PhaseClock:
    """The labelled phase windows of the traced optimizer step (trace microseconds)."""

    step: TraceEvent
    ranges: tuple[PhaseRange, ...]   # by start

    def locate(self, t_us: float) -> tuple[str, int | None]:
        """(phase, micro-step) of the window holding ``t_us``; ("other", None) outside all."""
        i = bisect.bisect_right([r.start_us for r in self.ranges], t_us) - 1
        if i >= 0 and t_us < self.ranges[i].end_us:
            return self.ranges[i].phase, self.ranges[i].micro
        return "other", None

    def inside_step(self, t_us: float) -> bool:
        """True when ``t_us`` lies within the traced optimizer step."""
        return self.step.start_us <= t_us <= self.step.end_us


def phase_clock(trace: KinetoTrace) -> PhaseClock:
    """The last ``zsim.step`` range of ``trace`` and the phase labels inside it."""
    steps = [e for e in trace.of("user_annotation") if e.name == "zsim.step"]
    if not steps:
        raise ZsimInputError(f"trace {trace.path} has no 'zsim.step' range: record it with "
                             "validation/train.py --profile")
    step = steps[-1]
    ranges = []
    for e in trace.of("user_annotation"):
        m = _LABEL.match(e.name)
        if m and e.thread == step.thread and step.start_us <= e.start_us <= step.end_us:
            ranges.append(PhaseRange(e.start_us, e.end_us, PHASE_OF_LABEL[m.group(1)], int(m.group(2))))
    if not ranges:
        raise ZsimInputError(f"trace {trace.path} has no zsim.forward/backward/engine_step ranges "
                             "inside its zsim.step")
    return PhaseClock(step=step, ranges=tuple(sorted(ranges)))


def host_threads(trace: KinetoTrace, clock: PhaseClock) -> set[tuple[str, str]]:
    """Threads of the training process that run ops (main thread, autograd workers)."""
    out = {clock.step.thread}
    for e in trace.of("cpu_op", "cuda_runtime"):
        if e.pid == clock.step.pid:
            out.add(e.thread)
    return out


def top_level(events: Iterable[TraceEvent]) -> list[TraceEvent]:
    """Events not nested inside another of ``events`` on the same thread."""
    out, open_until = [], {}
    for e in sorted(events, key=lambda e: (e.start_us, -e.dur_us)):
        if e.start_us >= open_until.get(e.thread, float("-inf")):
            out.append(e)
            open_until[e.thread] = e.end_us
    return out


def _clip_us(e: TraceEvent, lo: float, hi: float) -> float:
    return max(0.0, min(e.end_us, hi) - max(e.start_us, lo))


def gpu_stream(e: TraceEvent) -> str:
    """The diagnosis stream of a kernel, memcpy or memset."""
    if e.category == "kernel":
        return "comm" if e.name.startswith(NCCL_PREFIXES) else "compute"
    if e.category == "gpu_memset":
        return "memset"
    for tag, stream in (("HtoD", "copy_h2d"), ("DtoH", "copy_d2h")):
        if tag in e.name:
            return stream
    return "copy_d2d"


def gpu_items(trace: KinetoTrace, clock: PhaseClock) -> list[tuple]:
    """(phase, micro-step, stream, name, seconds, end_us) of every kernel, memcpy and memset
    launched inside the traced step, in the phase of the CPU call that launched it."""
    launches = {e.correlation: e for e in trace.of("cuda_runtime", "cuda_driver") if e.correlation is not None}
    items = []
    for e in trace.of("kernel", "gpu_memcpy", "gpu_memset"):
        launch = launches.get(e.correlation)
        t = launch.start_us if launch is not None else e.start_us
        if clock.inside_step(t):
            items.append((*clock.locate(t), gpu_stream(e), e.name, e.dur_us * US, e.end_us))
    return items


def event_windows(clock: PhaseClock, gpu_ends: Sequence[tuple[str, int | None, float]]) -> tuple[Window, ...]:
    """Phase windows as CUDA events time them: a boundary passes once the host reached it and
    the GPU finished the work launched before it. Without GPU work: the labels' own ranges."""
    index = {(r.phase, r.micro): i for i, r in enumerate(clock.ranges)}
    drain = [float("-inf")] * len(clock.ranges)
    for p, m, end in gpu_ends:
        if (p, m) in index:
            drain[index[(p, m)]] = max(drain[index[(p, m)]], end)
    out, lo, drained = [], clock.ranges[0].start_us, float("-inf")
    for i, r in enumerate(clock.ranges):
        drained = max(drained, drain[i])
        lo = max(lo, r.start_us)
        hi = max(r.end_us, drained, lo)
        out.append(Window(r.phase, r.micro, (hi - lo) * US, (lo - clock.step.start_us) * US))
        lo = hi
    return tuple(out)


def _range_items(trace: KinetoTrace, clock: PhaseClock, hosts: set) -> list[tuple]:
    items = []
    for e in trace.of("user_annotation"):
        if not clock.inside_step(e.start_us):
            continue
        if e.name == CPU_ADAM:
            items.append((*clock.locate(e.start_us), "cpu_optimizer", e.name, e.dur_us * US))
        elif e.name.startswith("gloo:") and e.thread not in hosts:
            items.append((*clock.locate(e.start_us), "comm", e.name, e.dur_us * US))
    return items


def _host_items(trace: KinetoTrace, clock: PhaseClock, hosts: set) -> list[tuple]:
    events = [e for e in trace.of(*HOST_CATEGORIES) if e.thread in hosts and not _FRAME.match(e.name)]
    work = top_level(events)
    waits = top_level(e for e in events if e.name in WAIT_OPS)
    items = []
    for r in clock.ranges:
        lo, hi, phase, micro = r.start_us, r.end_us, r.phase, r.micro
        wait_us = interval_union_s((max(e.start_us, lo), min(e.end_us, hi)) for e in waits)
        wait_ops = [(e.name, _clip_us(e, lo, hi) * US) for e in waits if _clip_us(e, lo, hi) > 0]
        busy_ops = [(e.name, _clip_us(e, lo, hi) * US) for e in work
                    if e.name not in WAIT_OPS and _clip_us(e, lo, hi) > 0]
        items += [(phase, micro, "host_wait", n, s) for n, s in wait_ops]
        items += [(phase, micro, "host_busy", n, s) for n, s in busy_ops]
        # Python time between ops is host time too: the remainder of the window, unnamed.
        named = sum(s for _, s in busy_ops)
        rest = (hi - lo - wait_us) * US - named
        if rest > 0:
            items.append((phase, micro, "host_busy", "(python between ops)", rest))
    return items


def measure_trace(trace: KinetoTrace) -> Side:
    """Per-phase windows and per-stream cells of the traced optimizer step."""
    clock = phase_clock(trace)
    hosts = host_threads(trace, clock)
    gpu = gpu_items(trace, clock)
    windows = event_windows(clock, [(p, m, end) for p, m, _, _, _, end in gpu])
    items = [g[:5] for g in gpu] + _range_items(trace, clock, hosts) + _host_items(trace, clock, hosts)
    notes = [] if trace.has_gpu else [
        "CPU-only trace: no kernels or copies; comm is gloo's worker threads, host is the Python thread"]
    return Side(source="trace", step_time_s=clock.step.dur_us * US, windows=windows,
                cells=build_cells(items), notes=tuple(notes))


SUMMARY_KEYS = {"forward": ("fwd_time_s_median", "fwd_s_micro"),
                "backward": ("bwd_time_s_median", "bwd_s_micro"),
                "step": ("opt_time_s_median", "opt_s_micro")}


def _median_per_micro(rows: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    lists = [r[key] for r in rows if isinstance(r.get(key), list)]
    width = min((len(x) for x in lists), default=0)
    out = []
    for i in range(width):
        vals = [float(x[i]) for x in lists if isinstance(x[i], (int, float))]
        if vals:
            out.append(statistics.median(vals))
    return out


def measure_summary(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> Side:
    """Phase times of ``summary.json`` (medians over timed steps, CUDA-event timed) and, where
    ``raw_metrics.json`` rows have them, per-micro-step medians."""
    timed = [r for r in rows if isinstance(r, Mapping) and r.get("phase") == "timed"]
    windows = []
    for phase, (total_key, micro_key) in SUMMARY_KEYS.items():
        total = summary.get(total_key)
        if isinstance(total, (int, float)):
            windows.append(Window(phase, None, float(total)))
        windows += [Window(phase, i, v) for i, v in enumerate(_median_per_micro(timed, micro_key))]
    step = summary.get("step_time_s_median")
    return Side(source="summary", step_time_s=float(step) if isinstance(step, (int, float)) else None,
                windows=tuple(windows))
