"""Causal scaled-dot-product attention (torch SDPA, bf16) forward and forward+backward.

FLOPs follow the flash-attention convention: forward 4·b·h·s²·d, halved for causal masking
(2·b·h·s²·(d_qk + d_v) with unequal q/k and v head dims); backward 2.5 × forward. The MLA shape
(q/k head dim 192, v head dim 128, DeepSeek-V2/V3) runs SDPA's memory-efficient kernel, not
flash; its rows carry ``v_head_dim`` and calibrate makes them a curve of their own ("192x128").
"""

from __future__ import annotations

from microbench.common import kernel_busy_s, time_cuda

#: (label, heads, kv_heads, head_dim) of the validation models
HEADS = (("llama-0.13b", 12, 12, 64), ("llama-0.55b", 12, 12, 128), ("tinyllama-1.1b", 32, 4, 64),
         ("llama-3b", 32, 32, 100), ("llama-2-7b", 32, 32, 128))
#: (label, heads, q/k head dim, v head dim) of MLA attention (DeepSeek-V2-Lite: 16 heads,
#: qk_nope 128 + qk_rope 64, v 128)
MLA_HEADS = (("deepseek-v2-lite", 16, 192, 128),)
SEQS = (512, 1024, 2048, 4096)


def run(tokens: int = 8192) -> list[dict]:
    """GPU busy time of fwd and fwd+bwd per model head shape and sequence length (b = tokens /
    seq); the ``*_event_s`` fields time one call between CUDA events (host launch included)."""
    import torch
    import torch.nn.functional as F
    out = []
    shapes = [(label, h, kv, d, d) for label, h, kv, d in HEADS] + [(label, h, h, d, v) for label, h, d, v in MLA_HEADS]
    for label, h, kv, d, dv in shapes:
        for s in SEQS:
            b = max(1, tokens // s)
            q = torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            # HF Llama repeats the KV heads before SDPA, so attention runs with h heads
            k = torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            v = torch.randn(b, h, s, dv, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            g = torch.randn(b, h, s, dv, device="cuda", dtype=torch.bfloat16)
            fwd = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731

            def fwdbwd():   # autograd.grad: no accumulation kernels into q/k/v.grad
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                torch.autograd.grad(o, (q, k, v), g)
            with torch.no_grad():
                tf, tf_event = kernel_busy_s(fwd), time_cuda(fwd)
            tfb, tfb_event = kernel_busy_s(fwdbwd), time_cuda(fwdbwd)
            f_fwd = 2.0 * b * h * s * s * (d + dv) / 2
            out.append({"model": label, "batch": b, "heads": h, "kv_heads": kv, "head_dim": d, "v_head_dim": dv,
                        "seq": s, "fwd_s": tf, "fwd_bwd_s": tfb, "fwd_event_s": tf_event,
                        "fwd_bwd_event_s": tfb_event, "fwd_flops": f_fwd,
                        "fwd_bwd_flops": 3.5 * f_fwd,
                        "fwd_tflops": f_fwd / tf / 1e12, "fwd_bwd_tflops": 3.5 * f_fwd / tfb / 1e12})
            del q, k, v, g
    return out
