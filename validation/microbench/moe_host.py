"""Host cost per kernel launch of DeepSpeed-MoE's gate against a decoder layer's module code.

zsim prices the host time of a model's forward per kernel launch at one rate for module code
(``host.module_launch_per_linear_call``, fitted on dense training runs). DeepSpeed-MoE's gate
is different code: ``TopKGate.forward`` casts the input, runs one ``F.linear`` and then
``top1gating`` / ``top2gating`` (deepspeed 0.19.8 moe/sharded_moe.py:559-596, 183-423),
dozens of plain torch calls (softmax, argmax, one_hot, cumsum, masks, sums) with no
``nn.Module`` call around each and a few host reads (``exp_counts ... .to('cpu')``). In the
DeepSpeed-MoE training runs zsim's forward came out 10-32 % long while its launch count matched
the trace (validation/README.md, "DeepSpeed-MoE on one H200"; session m15).

This measures, in one process on tiny shapes (the GPU idles, so wall time is host time):

- the gate: seconds per ``TopKGate`` forward (top-1 and top-2) and its launches per call;
- module code: a stack of tiny HF Llama decoder layers at two depths (as
  validation/microbench/checkpoint.py), seconds and launches per layer from the slopes;
- the host probe of the validation job (validation/train.py ``HostProbe``) after each round.

The ratio of the gate's seconds per launch to the layers' is what zsim needs
(``host.functional_launch_per_module_launch``, read by `zsim calibrate` from the ``moe_host``
rows): both sides run in the same process, interleaved, so the machine's speed cancels.

    python validation/microbench/moe_host.py [--output FILE]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from microbench.checkpoint import BATCH, DEPTHS, SEQ, _model   # noqa: E402
from microbench.common import bench_main, kernel_profile       # noqa: E402

#: Tokens, hidden size and experts of the gate: tiny, so every kernel is far below its launch.
TOKENS, HIDDEN, EXPERTS = 64, 64, 8
CALLS = 50   # calls per timed round (one host sync at the end of each round)


def _per_call_s(fn, sync, calls: int = CALLS) -> float:
    sync()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    sync()
    return (time.perf_counter() - t0) / calls


def _gates(dev):
    import torch
    from deepspeed.moe.sharded_moe import TopKGate
    x = torch.randn(TOKENS, HIDDEN, device=dev, dtype=torch.bfloat16, requires_grad=True)
    out = {}
    for k in (1, 2):
        gate = TopKGate(HIDDEN, EXPERTS, k=k, capacity_factor=1.0, min_capacity=4).to(dev)
        gate.train()
        out[k] = (lambda g=gate: g(x))
    return out


def _layers(dev):
    import torch
    ids = torch.zeros(BATCH, SEQ, dtype=torch.long, device=dev)
    return {n: (lambda m=_model(n, False, dev): m(input_ids=ids)) for n in DEPTHS}


def run(device: str = "cuda", rounds: int = 30, warmup: int = 3) -> dict:
    """Per-launch host seconds of the gate and of decoder-layer module code, same process."""
    import torch
    from train import HostProbe, host_speed
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    speed = host_speed(dev)
    gates, layers = _gates(dev), _layers(dev)
    fns = {**{f"gate_top{k}": f for k, f in gates.items()}, **{f"layers_{n}": f for n, f in layers.items()}}
    launches = {name: kernel_profile(fn, reps=5)[1] for name, fn in fns.items()} if dev.type == "cuda" else {}
    probe, probes, times = HostProbe(dev), [], {name: [] for name in fns}
    for r in range(warmup + rounds):
        for name, fn in fns.items():     # interleaved: drift hits every kind alike
            t = _per_call_s(fn, sync)
            if r >= warmup:
                times[name].append(t)
        if r >= warmup:
            probes.append(probe())
    med = {name: statistics.median(v) for name, v in times.items()}
    span = DEPTHS[1] - DEPTHS[0]
    layer_s = (med[f"layers_{DEPTHS[1]}"] - med[f"layers_{DEPTHS[0]}"]) / span
    rows = []
    if launches:
        layer_launches = (launches[f"layers_{DEPTHS[1]}"] - launches[f"layers_{DEPTHS[0]}"]) / span
        module_per_launch = layer_s / layer_launches
        for k in gates:
            per_launch = med[f"gate_top{k}"] / launches[f"gate_top{k}"]
            rows.append({"k": k, "tokens": TOKENS, "experts": EXPERTS, "gate_s": med[f"gate_top{k}"],
                         "gate_launches": launches[f"gate_top{k}"], "gate_s_per_launch": per_launch,
                         "layer_s": layer_s, "layer_launches": layer_launches,
                         "module_s_per_launch": module_per_launch, "ratio": per_launch / module_per_launch})
    in_run = {k: statistics.median(p[k] for p in probes) for k in probes[0]}
    return {"host_speed": speed, "host_probe": in_run, "rounds": rounds, "calls_per_round": CALLS,
            "depths": list(DEPTHS), "medians_s": med, "launches": launches, "rows": rows}


def main(argv=None) -> int:
    """Run and write (atomically) or print the measurement."""
    return bench_main(argv, __doc__, "moe_host", run)


if __name__ == "__main__":
    sys.exit(main())
