"""Shared timing helpers for the microbenchmarks (CUDA events; median of repeats)."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path


def time_cuda(fn, *, warmup: int = 3, min_reps: int = 5, max_reps: int = 50,
              target_s: float = 0.03) -> float:
    """Median seconds of ``fn()`` on the current CUDA stream, timed with events per call."""
    import torch
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    est = max(time.perf_counter() - t0, 1e-6)
    reps = int(min(max_reps, max(min_reps, target_s / est)))
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return statistics.median(times)


def time_host(fn, *, warmup: int = 1, reps: int = 3) -> float:
    """Median wall seconds of a host-side ``fn()``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def write_json(path: Path, data) -> None:
    """Atomic JSON write (temp file in the same folder, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
