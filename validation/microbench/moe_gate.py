"""DeepSpeed-MoE's gate on the GPU, kernel by kernel: the cumulative sums over tokens.

The gate of ``deepspeed.moe.sharded_moe`` turns each token's chosen experts into an
int64 one-hot mask ``[S, E]`` and numbers the tokens per expert with ``torch.cumsum(mask,
dim=0)`` (deepspeed 0.19.8 moe/sharded_moe.py: top1gating once, :299; top2gating for both
choices, :349-350). A scan along the
token axis with only E columns keeps few threads busy: in the first DeepSpeed-MoE training
trace (validation/results/h200/2026-12-02-m12/mixtral-0.7b-8e-z2-mb4-ga1-s1024-moe-m12,
S 4,096, E 8) each such scan ran 0.68 ms, 24 per forward, longer than all the layers' GEMMs.

This measures the scan's GPU busy time over S x E (profiler trace of back-to-back calls,
:func:`microbench.common.kernel_busy_s`), and the whole DeepSpeed gate by kernel, when
DeepSpeed is importable, for top-1 and top-2 at the same shapes.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from microbench.common import gpu_events, kernel_busy_s  # noqa: E402

TOKENS = (1024, 4096, 16384, 65536)
EXPERTS = (8, 16, 64, 128)


def run_scan() -> list[dict]:
    """GPU seconds of ``torch.cumsum(mask, dim=0)`` on an int64 [S, E] one-hot mask."""
    import torch
    out = []
    for s in TOKENS:
        for e in EXPERTS:
            idx = torch.randint(0, e, (s,), device="cuda")
            mask = torch.nn.functional.one_hot(idx, num_classes=e)   # int64, as the gate makes it
            t = kernel_busy_s(lambda: torch.cumsum(mask, dim=0), reps=20)
            out.append({"tokens": s, "experts": e, "dtype": str(mask.dtype), "time_s": t})
    return out


def run_gate() -> list[dict]:
    """GPU seconds per kernel name of DeepSpeed's top1gating / top2gating (fp32 logits)."""
    import torch
    try:
        from deepspeed.moe.sharded_moe import top1gating, top2gating
    except Exception as exc:   # no DeepSpeed on this machine: the scan rows still stand
        return [{"error": repr(exc)}]
    out = []
    for s in TOKENS[:3]:
        for e in EXPERTS:
            logits = torch.randn(s, e, device="cuda", dtype=torch.float32)
            for k, fn in ((1, lambda: top1gating(logits, 1.0, 4)), (2, lambda: top2gating(logits, 1.0, 4))):
                by_name: dict = defaultdict(float)
                for name, dur in gpu_events(fn, reps=10):
                    by_name[name[:80]] += dur / 10
                out.append({"tokens": s, "experts": e, "k": k, "time_s": sum(by_name.values()),
                            "scan_s": sum(v for n, v in by_name.items() if "scan" in n),
                            "kernels": dict(sorted(by_name.items(), key=lambda kv: -kv[1])[:8])})
    return out


if __name__ == "__main__":
    import json
    print(json.dumps({"scan": run_scan(), "gate": run_gate()}, indent=1))
