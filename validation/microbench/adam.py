"""Optimizer throughput: DeepSpeed CPU Adam (offload) and FusedAdam on the GPU."""

from __future__ import annotations

import os

from microbench.common import time_cuda, time_host


def cpu_adam(numel: int = 1 << 27) -> dict:
    """DeepSpeedCPUAdam.step over ``numel`` fp32 params (all host cores), params per second."""
    import torch
    from deepspeed.ops.adam import DeepSpeedCPUAdam
    p = torch.nn.Parameter(torch.randn(numel, dtype=torch.float32))
    p.grad = torch.randn(numel, dtype=torch.float32)
    opt = DeepSpeedCPUAdam([p], lr=1e-4)
    t = time_host(opt.step, warmup=1, reps=3)
    return {"numel": numel, "time_s": t, "params_per_s": numel / t, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count()}


def fused_adam(numel: int = 1 << 28) -> dict:
    """DeepSpeed FusedAdam step over ``numel`` fp32 params on the GPU."""
    import torch
    from deepspeed.ops.adam import FusedAdam
    p = torch.nn.Parameter(torch.randn(numel, device="cuda", dtype=torch.float32))
    p.grad = torch.randn(numel, device="cuda", dtype=torch.float32)
    opt = FusedAdam([p], lr=1e-4)
    t = time_cuda(opt.step, warmup=2, max_reps=10)
    return {"numel": numel, "time_s": t, "params_per_s": numel / t, "s_per_param": t / numel}
