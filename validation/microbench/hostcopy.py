"""Pinned host-to-device and device-to-host copy bandwidth, 1 MiB to 1 GiB."""

from __future__ import annotations

from microbench.common import time_cuda


def run(max_log2: int = 30) -> list[dict]:
    """H2D and D2H seconds and GB/s for pinned buffers of 2^20 .. 2^max_log2 bytes."""
    import torch
    out = []
    for lg in range(20, max_log2 + 1, 2):
        n = 1 << lg
        host = torch.empty(n, dtype=torch.uint8, pin_memory=True)
        host.fill_(1)
        dev = torch.empty(n, dtype=torch.uint8, device="cuda")
        h2d = time_cuda(lambda: dev.copy_(host, non_blocking=True), warmup=2, max_reps=10)
        d2h = time_cuda(lambda: host.copy_(dev, non_blocking=True), warmup=2, max_reps=10)
        out.append({"bytes": n, "h2d_s": h2d, "d2h_s": d2h,
                    "h2d_GBps": n / h2d / 1e9, "d2h_GBps": n / d2h / 1e9})
        del host, dev
    return out
