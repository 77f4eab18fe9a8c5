"""One Chrome/Perfetto trace with the measured and the simulated step as two track groups.

Process "measured" holds the traced optimizer step (host threads, GPU kernels and copies per
CUDA stream, gloo threads, the CPU optimizer), process "zsim" the simulated step, one track
per stream; both carry a "phases" track. Times are microseconds from the start of the
optimizer step (``zsim.step`` on the measured side, t = 0 on the simulated one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import atomic_write_json
from .compare import Diagnosis
from .measured import CPU_ADAM, HOST_CATEGORIES, PhaseClock, gpu_stream, host_threads, phase_clock
from .trace import KinetoTrace

MEASURED_PID, ZSIM_PID = 1, 2
_ZSIM_TRACKS = ("host", "compute", "comm", "h2d", "d2h", "cpu")


class _Tracks:
    """Hands out one tid per track name within a process, in first-use order."""

    def __init__(self, pid: int, label: str):
        self.pid, self.tids = pid, {}
        self.meta = [{"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": label}},
                     {"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": pid}}]

    def tid(self, track: str) -> int:
        if track not in self.tids:
            t = len(self.tids) + 1
            self.tids[track] = t
            self.meta += [{"ph": "M", "name": "thread_name", "pid": self.pid, "tid": t, "args": {"name": track}},
                          {"ph": "M", "name": "thread_sort_index", "pid": self.pid, "tid": t,
                           "args": {"sort_index": t}}]
        return self.tids[track]

    def span(self, track: str, name: str, cat: str, ts_us: float, dur_us: float) -> dict[str, Any]:
        return {"ph": "X", "pid": self.pid, "tid": self.tid(track), "name": name, "cat": cat,
                "ts": round(ts_us, 3), "dur": round(max(dur_us, 0.0), 3)}


def _phase_name(phase: str, micro: int | None) -> str:
    return phase if micro is None else f"{phase}.{micro}"


def measured_events(trace: KinetoTrace, clock: PhaseClock | None = None) -> list[dict[str, Any]]:
    """The traced step's events, re-timed to start at ``zsim.step``."""
    clock = clock or phase_clock(trace)
    t0, tracks = clock.step.start_us, _Tracks(MEASURED_PID, "measured")
    hosts = host_threads(trace, clock)
    out = [tracks.span("phases", "step", "phase", 0.0, clock.step.dur_us)]
    out += [tracks.span("phases", _phase_name(r.phase, r.micro), "phase", r.start_us - t0, r.end_us - r.start_us)
            for r in clock.ranges]
    launches = {e.correlation: e.start_us for e in trace.of("cuda_runtime", "cuda_driver") if e.correlation}
    for e in trace.events:
        if e.category in HOST_CATEGORIES and e.thread in hosts and clock.inside_step(e.start_us):
            if e.name.startswith("zsim."):
                continue
            main = e.thread == clock.step.thread
            out.append(tracks.span("host" if main else f"host (thread {e.tid})", e.name, e.category,
                                   e.start_us - t0, e.dur_us))
            if e.name == CPU_ADAM:
                out.append(tracks.span("cpu_optimizer", e.name, e.category, e.start_us - t0, e.dur_us))
        elif e.category == "user_annotation" and e.name.startswith("gloo:") and clock.inside_step(e.start_us):
            out.append(tracks.span(f"comm (gloo thread {e.tid})", e.name, e.category, e.start_us - t0, e.dur_us))
        elif e.category in ("kernel", "gpu_memcpy", "gpu_memset") and clock.inside_step(
                launches.get(e.correlation, e.start_us)):
            out.append(tracks.span(f"{gpu_stream(e)} (cuda stream {e.cuda_stream})", e.name, e.category,
                                   e.start_us - t0, e.dur_us))
    return tracks.meta + out


def zsim_events(diagnosis: Diagnosis) -> list[dict[str, Any]]:
    """The simulated step: one track per stream, plus the phase windows."""
    tracks = _Tracks(ZSIM_PID, "zsim")
    for name in ("phases",) + _ZSIM_TRACKS:
        tracks.tid(name)
    out = [tracks.span("phases", "step", "phase", 0.0, (diagnosis.predicted.step_time_s or 0.0) * 1e6)]
    out += [tracks.span("phases", _phase_name(w.phase, w.micro_step), "phase", w.start_s * 1e6, w.wall_s * 1e6)
            for w in diagnosis.predicted.windows if w.start_s is not None]
    for s in diagnosis.timeline.spans if diagnosis.timeline else ():
        out.append(tracks.span(s.stream, s.name, s.category, s.start_s * 1e6, (s.end_s - s.start_s) * 1e6))
    return tracks.meta + out


def combined_trace(diagnosis: Diagnosis) -> dict[str, Any]:
    """The trace-event object with both track groups (measured only when a trace exists)."""
    events = measured_events(diagnosis.trace) if diagnosis.trace else []
    return {"traceEvents": events + zsim_events(diagnosis), "displayTimeUnit": "ms",
            "metadata": {"run_id": diagnosis.run_id, "aligned_at": "start of the optimizer step",
                         "measured": str(diagnosis.trace_path) if diagnosis.trace_path else None}}


def write_combined_trace(path: str | Path, diagnosis: Diagnosis) -> Path:
    """Write :func:`combined_trace` to ``path`` atomically."""
    return atomic_write_json(path, combined_trace(diagnosis))
