"""Speed of `zsim.predict`: wall time of one simulated step vs GPU count and vs layers.

Usage: python bench/bench_predict.py [--repeat 5] [--plot bench/predict_scaling.png]

Each figure is the median of --repeat runs in a fresh cache state (caches cleared between
runs), so it includes schedule building, collective pricing and the SimPy simulation.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace

from zsim.model import load_model
from zsim.predict import predict


def _clear_caches() -> None:
    import zsim.compute as c
    import zsim.workload as w
    c.module_time_s.cache_clear()
    c._module_time_by_shape.cache_clear()
    w._kernels.cache_clear()
    try:
        from zsim import collectives
        for name in dir(collectives):
            fn = getattr(collectives, name)
            if hasattr(fn, "cache_clear"):
                fn.cache_clear()
    except ImportError:
        pass


def time_predict(repeat: int, **kwargs) -> tuple[float, int]:
    """Median seconds of ``predict(**kwargs)`` over ``repeat`` cold runs, and the op count."""
    times = []
    n_ops = 0
    for _ in range(repeat):
        _clear_caches()
        t0 = time.perf_counter()
        pred = predict(keep_timeline=True, **kwargs)
        times.append(time.perf_counter() - t0)
        n_ops = len(pred.timeline.spans)
    return statistics.median(times), n_ops


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--plot", default=None)
    args = ap.parse_args()
    base = dict(model="llama-2-70b", topo="dgx-h100", stage=3, micro_batch=1, seq=4096,
                activation_checkpointing=True)
    print("## llama-2-70b ZeRO-3, dgx-h100 nodes (8 GPUs each), micro-batch 1, seq 4096, ckpt")
    print("| nodes | GPUs | ops simulated | wall s (median) |")
    print("|---:|---:|---:|---:|")
    node_rows = []
    for nodes in (1, 16, 128, 1024):
        sec, n_ops = time_predict(args.repeat, nodes=nodes, **base)
        node_rows.append((nodes * 8, sec))
        print(f"| {nodes} | {nodes * 8} | {n_ops} | {sec:.3f} |")
        sys.stdout.flush()
    print()
    print("## layers scaling: llama-2-70b shape with L layers, 128 nodes (1,024 GPUs)")
    print("| layers | ops simulated | wall s (median) |")
    print("|---:|---:|---:|")
    spec = load_model("llama-2-70b")
    layer_rows = []
    for layers in (20, 40, 80, 160):
        s = replace(spec, name=f"llama-70b-L{layers}", num_layers=layers)
        kw = dict(base, model=s)
        sec, n_ops = time_predict(args.repeat, nodes=128, **kw)
        layer_rows.append((layers, sec))
        print(f"| {layers} | {n_ops} | {sec:.3f} |")
        sys.stdout.flush()
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
        a.plot([g for g, _ in node_rows], [s for _, s in node_rows], "o-")
        a.set_xscale("log"); a.set_xlabel("GPUs"); a.set_ylabel("wall s per predicted step")
        a.set_ylim(bottom=0)
        b.plot([l for l, _ in layer_rows], [s for _, s in layer_rows], "o-")
        b.set_xlabel("layers"); b.set_ylabel("wall s"); b.set_ylim(bottom=0)
        fig.suptitle("zsim predict cost: llama-2-70b ZeRO-3")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=80)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
