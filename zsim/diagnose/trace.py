"""Read a torch.profiler (Kineto) Chrome trace into typed records.

Only complete events (``"ph": "X"``) are kept; times stay in microseconds, as Kineto writes
them, counted from the trace's first event. Both CPU-only traces (``cpu_op``/``user_annotation`` only) and GPU traces (kernels,
memcpys, CUDA runtime calls linked to kernels by ``args.correlation``) are read.
"""

from __future__ import annotations

import gzip
import json
import math
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from ..errors import ZsimInputError

#: Event categories the diagnosis uses (others, e.g. python_function, are dropped).
KEPT_CATEGORIES = frozenset({"cpu_op", "user_annotation", "gpu_user_annotation", "kernel",
                             "gpu_memcpy", "gpu_memset", "cuda_runtime", "cuda_driver"})
#: Categories of events that run on the GPU.
GPU_CATEGORIES = frozenset({"kernel", "gpu_memcpy", "gpu_memset", "gpu_user_annotation"})


@dataclass(frozen=True)
class TraceEvent:
    """One complete event of the trace."""

    name: str
    category: str
    pid: str
    tid: str
    start_us: float
    dur_us: float
    correlation: int | None = None
    cuda_stream: int | None = None

    @property
    def end_us(self) -> float:
        """When the event ended (microseconds, trace clock)."""
        return self.start_us + self.dur_us

    @property
    def thread(self) -> tuple[str, str]:
        """(pid, tid): the thread (CPU) or stream row (GPU) the event sits on."""
        return self.pid, self.tid


@dataclass(frozen=True)
class KinetoTrace:
    """The kept events of one trace, sorted by start time."""

    path: Path
    events: tuple[TraceEvent, ...]
    base_us: float = 0.0           # subtracted from every start time of the file

    def of(self, *categories: str) -> list[TraceEvent]:
        """Events whose category is one of ``categories``."""
        return [e for e in self.events if e.category in categories]

    @property
    def has_gpu(self) -> bool:
        """True when the trace recorded GPU activity (kernels, copies)."""
        return any(e.category in GPU_CATEGORIES for e in self.events)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _event(raw: Mapping[str, Any]) -> TraceEvent | None:
    if raw.get("ph") != "X" or raw.get("cat") not in KEPT_CATEGORIES:
        return None
    try:
        start, dur = float(raw["ts"]), float(raw.get("dur", 0.0))
    except (KeyError, TypeError, ValueError):
        return None
    args = raw.get("args") if isinstance(raw.get("args"), Mapping) else {}
    return TraceEvent(name=str(raw.get("name", "")), category=str(raw["cat"]), pid=str(raw.get("pid", "")),
                      tid=str(raw.get("tid", "")), start_us=start, dur_us=max(dur, 0.0),
                      correlation=_int_or_none(args.get("correlation")),
                      cuda_stream=_int_or_none(args.get("stream")))


def _read_json(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ZsimInputError(f"trace file not found: {path}") from None
    except OSError as exc:
        raise ZsimInputError(f"cannot read trace {path}: {exc.strerror or exc}") from None
    try:
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        return json.loads(data)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, ValueError) as exc:
        raise ZsimInputError(f"cannot read trace {path}: not a (gzipped) JSON trace "
                             f"({exc.__class__.__name__})") from None


def load_trace(path: str | Path) -> KinetoTrace:
    """Read ``path`` (``.json`` or ``.json.gz``); a malformed file raises ZsimInputError."""
    path = Path(path)
    data = _read_json(path)
    raw = data.get("traceEvents") if isinstance(data, Mapping) else data
    if not isinstance(raw, list):
        raise ZsimInputError(f"cannot read trace {path}: no traceEvents list")
    events = [e for e in (_event(r) for r in raw if isinstance(r, Mapping)) if e is not None]
    # Kineto's clock reads ~1e12 us; rebase to the first event so that differences stay exact.
    base = math.floor(min((e.start_us for e in events), default=0.0))
    events = [replace(e, start_us=e.start_us - base) for e in events]
    events.sort(key=lambda e: (e.start_us, -e.dur_us))
    return KinetoTrace(path=path, events=tuple(events), base_us=float(base))
