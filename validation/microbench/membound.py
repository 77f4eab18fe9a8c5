"""Memory-bound kernels: achieved HBM bandwidth counting bytes read plus bytes written.

:func:`run` times six kernels on one large tensor (the profile's memory-bound efficiency in
files without step-pass rows);
:func:`run_sizes` times HF Llama's elementwise code (residual add, RMSNorm, SiLU-gate, RoPE,
upcast) at the [tokens, width] shapes training runs, with the kernels each launches, to see
how far per-kernel costs at those sizes sit from the large-tensor figure; :func:`run_step_passes`
times the optimizer step's flat passes (the profile's ``memory_bound_efficiency`` when present).
"""

from __future__ import annotations

from microbench.common import kernel_profile, time_cuda

#: (tokens, width) of the sizes training runs: 2-8k tokens per micro-batch, hidden and MLP widths
SIZES = ((2048, 768), (4096, 768), (4096, 2048), (8192, 2048), (4096, 3200), (4096, 4096),
         (4096, 5632), (4096, 8640), (4096, 11008), (8192, 4096))
#: (heads, head_dim) for RoPE at 4096 tokens (seq 1024, batch 4)
ROPE_HEADS = ((12, 64), (32, 64), (32, 100), (16, 128), (32, 128))


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
        t, kernels = kernel_profile(fn)
        out.append({"kernel": name, "numel": numel, "bytes": nbytes, "time_s": t, "kernels": kernels,
                    "event_time_s": time_cuda(fn), "GBps": nbytes / t / 1e9, "minimal_bytes": True})
    return out


def _rotate_half(x):
    """HF Llama's rotate_half: cat(-x2, x1) over the last dimension."""
    import torch
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _row(op: str, tokens: int, width: int, fn, nbytes: int) -> dict:
    t, kernels = kernel_profile(fn)
    return {"op": op, "tokens": tokens, "width": width, "bytes": nbytes, "time_s": t,
            "kernels": kernels, "GBps": nbytes / t / 1e9, "minimal_bytes": True}


def run_sizes() -> list[dict]:
    """HF Llama's elementwise ops at training shapes (bf16), minimal bytes read + written."""
    import torch
    import torch.nn.functional as F
    out = []
    for tokens, width in SIZES:
        x = torch.randn(tokens, width, device="cuda", dtype=torch.bfloat16)
        y = torch.randn(tokens, width, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(width, device="cuda", dtype=torch.bfloat16)
        n = tokens * width

        def rmsnorm():  # LlamaRMSNorm.forward, op by op
            xf = x.to(torch.float32)
            return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(torch.bfloat16)
        out += [_row("add", tokens, width, lambda: x + y, 6 * n),
                _row("rmsnorm", tokens, width, rmsnorm, 4 * n),
                _row("silu_mul", tokens, width, lambda: F.silu(x) * y, 6 * n),
                _row("upcast", tokens, width, lambda: x.to(torch.float32), 6 * n)]
        del x, y, w
    for heads, hd in ROPE_HEADS:
        b, s = 4, 1024
        q = torch.randn(b, s, heads, hd, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
        cos = torch.randn(b, 1, s, hd, device="cuda", dtype=torch.bfloat16)
        sin = torch.randn(b, 1, s, hd, device="cuda", dtype=torch.bfloat16)
        # apply_rotary_pos_emb on one of q/k: q*cos + rotate_half(q)*sin (q as the projection's
        # transposed view, as HF passes it)
        out.append(_row(f"rope_hd{hd}", b * s, heads * hd, lambda: q * cos + _rotate_half(q) * sin,
                        4 * b * s * heads * hd))
        del q, cos, sin
    return out


#: Parameter-tensor sizes of the optimizer step's flat passes (a 768 x 2048 to a 4096 x 11008
#: weight, and a 64M-value flat partition)
PASS_NUMELS = (768 * 2048, 3200 * 3200, 4096 * 11008, 1 << 26)


def run_step_passes() -> list[dict]:
    """The kinds of pass DeepSpeed's optimizer step runs over parameter-sized tensors
    (zsim.schedule.steppasses): casts bf16->fp32 and fp32->bf16 (the copy back), fp32->fp64
    (the norm's), an fp32 multiply by a 0-dim GPU tensor (the unscale), and an fp32 copy (the
    flatten); minimal bytes read + written."""
    import torch
    out = []
    for n in PASS_NUMELS:
        h = torch.randn(n, device="cuda", dtype=torch.bfloat16)
        f = torch.randn(n, device="cuda", dtype=torch.float32)
        dst = torch.empty_like(f)
        scale = torch.tensor(0.5, device="cuda")
        cases = [("cast_bf16_fp32", lambda: h.float(), 6 * n),
                 ("cast_fp32_bf16", lambda: h.copy_(f), 6 * n),
                 ("cast_fp32_fp64", lambda: f.double(), 12 * n),
                 ("unscale_fp32", lambda: f.mul_(scale), 8 * n),
                 ("copy_fp32", lambda: dst.copy_(f), 8 * n)]
        for name, fn, nbytes in cases:
            t, kernels = kernel_profile(fn)
            out.append({"op": name, "numel": n, "bytes": nbytes, "time_s": t, "kernels": kernels,
                        "GBps": nbytes / t / 1e9, "minimal_bytes": True})
        del h, f, dst
    return out
