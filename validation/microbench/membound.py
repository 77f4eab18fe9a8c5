"""Memory-bound kernels: achieved HBM bandwidth counting bytes read plus bytes written."""

from __future__ import annotations

from microbench.common import time_cuda


def run(numel: int = 1 << 28) -> list[dict]:
    """copy, add, scale, SiLU·mul (the Llama MLP gate), RMSNorm and softmax on bf16 tensors."""
    import torch
    import torch.nn.functional as F
    a = torch.randn(numel, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(numel, device="cuda", dtype=torch.bfloat16)
    x2 = a.view(-1, 4096)
    w = torch.randn(4096, device="cuda", dtype=torch.bfloat16)
    e = 2  # bytes per bf16 element

    def rmsnorm():  # as HF LlamaRMSNorm: upcast, mean of squares, rsqrt, scale
        xf = x2.float()
        return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(x2.dtype)
    cases = [("copy", lambda: a.clone(), 2 * numel * e),
             ("add", lambda: a + b, 3 * numel * e),
             ("scale", lambda: a * 1.5, 2 * numel * e),
             ("silu_mul", lambda: F.silu(a) * b, 3 * numel * e),
             ("rmsnorm", rmsnorm, 2 * numel * e),
             ("softmax", lambda: torch.softmax(x2, dim=-1), 2 * numel * e)]
    out = []
    for name, fn, nbytes in cases:
        t = time_cuda(fn)
        out.append({"kernel": name, "numel": numel, "bytes": nbytes, "time_s": t,
                    "GBps": nbytes / t / 1e9, "minimal_bytes": True})
    return out
