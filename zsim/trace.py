"""Chrome trace (Perfetto-readable JSON) of one simulated step: one track per stream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .io import atomic_write_json
from .system import Timeline

#: Track order in the viewer.
_TRACKS = ("host", "compute", "comm", "h2d", "d2h", "cpu")


def trace_events(timeline: Timeline, label: str = "rank 0",
                 link_utilisation: dict[str, float] | None = None) -> dict[str, Any]:
    """The Chrome trace-event object for ``timeline`` (times in microseconds).

    ``link_utilisation`` (fraction of the step each link type is busy) goes into the
    trace's metadata and as one counter track per link type.
    """
    tids = {s: i for i, s in enumerate(_TRACKS)}
    events: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": 0, "tid": 0, "args": {"name": f"zsim {label}"}}]
    for stream, tid in tids.items():
        events.append({"ph": "M", "name": "thread_name", "pid": 0, "tid": tid, "args": {"name": stream}})
        events.append({"ph": "M", "name": "thread_sort_index", "pid": 0, "tid": tid,
                       "args": {"sort_index": tid}})
    for s in timeline.spans:
        events.append({"ph": "X", "name": s.name, "cat": s.category, "pid": 0,
                       "tid": tids.get(s.stream, len(tids)),
                       "ts": round(s.start_s * 1e6, 3), "dur": round((s.end_s - s.start_s) * 1e6, 3)})
    for link, frac in sorted((link_utilisation or {}).items()):
        events.append({"ph": "C", "name": f"{link} utilisation", "pid": 0, "ts": 0,
                       "args": {"fraction": round(frac, 6)}})
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "metadata": {"link_utilisation": dict(sorted((link_utilisation or {}).items()))}}


def write_trace(path: str | Path, timeline: Timeline, label: str = "rank 0",
                link_utilisation: dict[str, float] | None = None) -> Path:
    """Write the trace of ``timeline`` to ``path`` atomically."""
    return atomic_write_json(path, trace_events(timeline, label, link_utilisation))
