"""GEMM time (bf16, or fp32 without TF32 as torch runs fp32 training by default) over the real matmul shapes of Llama models (forward, dgrad, wgrad).

For tokens T and a linear layer in→out, forward is [T,in]x[in,out], the input gradient
[T,out]x[out,in] and the weight gradient [out,T]x[T,in]; each is 2·T·in·out FLOPs.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from models import PRESETS, hf_config  # noqa: E402
from microbench.common import kernel_busy_s, time_cuda  # noqa: E402

TOKENS = (512, 2048, 4096, 8192, 16384)


def layer_shapes(cfg: dict) -> dict[str, tuple[int, int]]:
    """(in, out) of each distinct linear layer kind of a Llama config."""
    h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads") or heads
    hd = cfg.get("head_dim") or h // heads
    return {"q": (h, heads * hd), "kv": (h, kv * hd), "o": (heads * hd, h),
            "gate_up": (h, cfg["intermediate_size"]), "down": (cfg["intermediate_size"], h),
            "lm_head": (h, cfg["vocab_size"])}


def shapes(models=None, tokens=TOKENS) -> list[dict]:
    """Distinct (m, n, k, pass) GEMMs over models × layer kinds × token counts."""
    seen, out = set(), []
    for name in models or PRESETS:
        for kind, (fin, fout) in layer_shapes(hf_config(name)).items():
            for t in tokens:
                for pas, (m, n, k) in (("fwd", (t, fout, fin)), ("dgrad", (t, fin, fout)),
                                       ("wgrad", (fout, fin, t))):
                    if (m, n, k, pas) in seen:
                        continue
                    seen.add((m, n, k, pas))
                    out.append({"model": name, "kind": kind, "tokens": t, "pass": pas,
                                "m": m, "n": n, "k": k})
    return out


def run(models=None, tokens=TOKENS, dtype: str = "bf16") -> list[dict]:
    """Time every shape in ``dtype`` ("bf16" or "fp32"); returns rows with time_s (GPU busy
    time), event_time_s (one call between CUDA events, host launch included), flops and
    TFLOP/s. fp32 keeps torch's default ``allow_tf32 = False`` (true fp32 FMA)."""
    import torch
    torch_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    results = []
    for sh in shapes(models, tokens):
        m, n, k = sh["m"], sh["n"], sh["k"]
        a = torch.randn(m, k, device="cuda", dtype=torch_dtype)
        b = torch.randn(k, n, device="cuda", dtype=torch_dtype)
        if sh["pass"] == "wgrad":  # dW = dY^T · X: a transposed left operand, as autograd issues it
            a = torch.randn(k, m, device="cuda", dtype=torch_dtype).t()
        t = kernel_busy_s(lambda: torch.matmul(a, b))   # the GPU's time, as in training
        flops = 2.0 * m * n * k
        results.append({**sh, "dtype": dtype, "allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
                        "time_s": t, "event_time_s": time_cuda(lambda: torch.matmul(a, b)),
                        "flops": flops, "tflops": flops / t / 1e12})
        del a, b
    return results
