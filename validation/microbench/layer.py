"""One Hugging Face LlamaDecoderLayer, forward and forward+backward, GPU busy time by kernel kind.

The validation presets' layers (bf16, SDPA attention, random weights) at two micro-batch
shapes each. Every kernel of a call is classed by name as GEMM, attention or other
(:func:`microbench.common.kernel_kind`), so that zsim's price of each kind for one layer can be
set beside the real layer's: the "other" kernels are the memory-bound module code (norms,
RoPE, the SiLU gate, residual adds, layout copies around attention) that zsim prices from the
bytes it counts per module.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from models import PRESETS, hf_fields  # noqa: E402
from microbench.common import gpu_events, kernel_kind  # noqa: E402

#: (micro-batch, seq) shapes per layer: 4096 tokens in two ways
SHAPES = ((4, 1024), (2, 2048))
KINDS = ("gemm", "attention", "other")


def _by_kind(events: list[tuple[str, float]], reps: int) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    count: dict[str, float] = defaultdict(float)
    for name, dur_s in events:
        kind = kernel_kind(name)
        out[kind] += dur_s / reps
        count[kind] += 1 / reps
    return {**{f"{k}_s": out.get(k, 0.0) for k in KINDS}, **{f"{k}_kernels": count.get(k, 0.0) for k in KINDS}}


def _layer(name: str):
    import torch
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding
    cfg = LlamaConfig(**hf_fields(name))
    cfg._attn_implementation = "sdpa"
    layer = LlamaDecoderLayer(cfg, layer_idx=0).to("cuda", torch.bfloat16)
    return cfg, layer, LlamaRotaryEmbedding(cfg).to("cuda")


def run(models=None, reps: int = 10) -> list[dict]:
    """Per preset and shape: forward and forward+backward busy seconds and kernels per kind."""
    import torch
    out = []
    for name in models or PRESETS:
        cfg, layer, rotary = _layer(name)
        for b, s in SHAPES:
            x = torch.randn(b, s, cfg.hidden_size, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            pos = torch.arange(s, device="cuda")[None].expand(b, s)
            pe = rotary(x, pos)
            g = torch.randn_like(x)
            params = [x, *layer.parameters()]

            def fwd():
                r = layer(x, position_embeddings=pe, position_ids=pos)
                return r[0] if isinstance(r, tuple) else r

            def fwd_bwd():   # autograd.grad: no accumulation kernels into .grad
                torch.autograd.grad(fwd(), params, g)
            f = _by_kind(gpu_events(fwd, reps=reps), reps)   # with autograd on, as in training
            fb = _by_kind(gpu_events(fwd_bwd, reps=reps), reps)
            out.append({"model": name, "batch": b, "seq": s, "tokens": b * s,
                        **{f"fwd_{k}": v for k, v in f.items()}, **{f"fwd_bwd_{k}": v for k, v in fb.items()}})
            del x, g, pe
        del layer
        torch.cuda.empty_cache()
    return out
