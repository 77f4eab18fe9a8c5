"""Shared timing helpers for the microbenchmarks: GPU busy time from a profiler trace
(:func:`kernel_busy_s`), event-pair wall time of one call (:func:`time_cuda`), host time."""

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


#: Kernel-name tags of the kinds zsim prices apart (GEMM, attention; the rest is memory-bound).
GEMM_TAGS = ("nvjet", "gemm", "cutlass", "xmma")
ATTENTION_TAGS = ("flash", "fmha")
#: as zsim.diagnose.measured's: the microbenchmarks run on the GPU machine without zsim installed
NCCL_PREFIXES = ("ncclDevKernel", "ncclKernel")


def kernel_kind(name: str) -> str:
    """"comm", "attention", "gemm" or "other" for a CUDA kernel's name."""
    if name.startswith(NCCL_PREFIXES):
        return "comm"
    low = name.lower()
    if any(t in low for t in ATTENTION_TAGS):
        return "attention"
    if any(t in low for t in GEMM_TAGS):
        return "gemm"
    return "other"


def gpu_events(fn, *, warmup: int = 3, reps: int = 20) -> list[tuple[str, float]]:
    """(name, seconds) of every kernel, memset and copy of ``reps`` back-to-back calls of
    ``fn()`` after ``warmup``, from a torch.profiler trace.

    This is what the work costs inside training, where the host runs ahead and kernels queue
    back to back. :func:`time_cuda`'s event pair around one call also holds the time the GPU
    waits for the host to launch the call: in the H200 training traces a llama-3b q/k/v/o GEMM
    (4096x3200x3200) runs 112 us, while time_cuda gives 159 us for it (validation/README.md,
    "Kernel time by kind").
    """
    import tempfile

    import torch
    from torch.profiler import ProfilerActivity, profile
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = json.loads(path.read_text()).get("traceEvents", [])
    gpu = [(str(e.get("name", "")), float(e.get("dur", 0)) * 1e-6) for e in events
           if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    if not gpu or sum(d for _, d in gpu) <= 0:
        raise RuntimeError("the profiler recorded no GPU kernel for this call")
    return gpu


def kernel_profile(fn, *, warmup: int = 3, reps: int = 20) -> tuple[float, float]:
    """(GPU busy seconds, GPU kernels) per call of ``fn()`` (see :func:`gpu_events`)."""
    gpu = gpu_events(fn, warmup=warmup, reps=reps)
    return sum(d for _, d in gpu) / reps, len(gpu) / reps


def kernel_busy_s(fn, *, warmup: int = 3, reps: int = 20) -> float:
    """GPU busy seconds per call of ``fn()`` (see :func:`kernel_profile`)."""
    return kernel_profile(fn, warmup=warmup, reps=reps)[0]


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


def bench_main(argv, doc: str, section: str, run) -> int:
    """The command line of a one-section microbenchmark: ``run(device, rounds)``'s record
    under ``section``, written atomically to ``--output`` or printed."""
    import argparse
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--output", default=None)
    p.add_argument("--device", default="cuda")
    p.add_argument("--rounds", type=int, default=30)
    args = p.parse_args(argv)
    out = {section: run(args.device, args.rounds)}
    if args.output:
        write_json(Path(args.output), out)
    else:
        print(json.dumps(out, indent=1))
    return 0
