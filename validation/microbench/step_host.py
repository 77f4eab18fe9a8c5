"""Host cost of the optimizer step per gradient at two layer widths, and of one host sync.

zsim prices DeepSpeed's per-tensor step loops (zsim.schedule.hostwork) by their counted
launches, and every host sync (``.item()``, stream synchronize) at the profile's ``sync_s``.
backward_host.py measured the step per gradient on tiny layers only (64 wide): stage 1/2 came
out ~20 % above the counted launches, stage 0 too, while real stage-0 runs were priced too
long (validation/README.md, "The fit on four machines", has what this found). This asks
whether the per-gradient cost depends on the tensors' size, and measures the sync:

- ``steps``: a real DeepSpeed engine (bf16, a fused torch AdamW, one process) at ZeRO stages
  0, 1 and 2 on stacks of HF Llama decoder layers, tiny (64 wide) and llama-0.13b's width
  (768, MLP 2048: its gradients are 0.6-1.6M elements), each at two depths, interleaved:
  seconds of ``engine.step`` per layer (the slope) and per gradient;
- ``sync``: on an idle GPU, seconds of ``x.item()`` on a one-element tensor, of
  ``torch.cuda.synchronize()``, and of DeepSpeed's per-tensor overflow test
  (``CheckOverflow.has_overflow_serial``, runtime/utils.py:291-295) per tensor on the
  llama-0.13b-wide gradients.

    python validation/microbench/step_host.py [--output FILE] [--device cuda]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from microbench.backward_host import (STAGES, _engine, _interleaved, _median_probe, _slope,  # noqa: E402
                                      _sync_of, init_one_rank)
from microbench.checkpoint import BATCH, SEQ, TINY                                          # noqa: E402
from microbench.common import bench_main                                                   # noqa: E402

#: llama-0.13b's layer widths (validation/models.py) on the tiny stack's vocabulary.
WIDE = {**TINY, "hidden_size": 768, "intermediate_size": 2048, "num_attention_heads": 12,
        "num_key_value_heads": 12}
SHAPES = {"tiny": TINY, "llama-0.13b-wide": WIDE}
DEPTHS = (2, 6)


def _step_s(engine, ids, sync) -> tuple[float, float]:
    """(0, wall seconds of engine.step) after an untimed forward and backward."""
    engine.backward(engine(input_ids=ids).last_hidden_state.float().sum())
    sync()
    t0 = time.perf_counter()
    engine.step()
    sync()
    return 0.0, time.perf_counter() - t0


def step_rows(dev, rounds: int, warmup: int, probe) -> tuple[list, list]:
    """engine.step seconds per layer and per gradient, by width and stage."""
    import torch
    sync = _sync_of(dev)
    ids = torch.zeros(BATCH, SEQ, dtype=torch.long, device=dev)
    engines = {(w, s, n): _engine(n, s, dev, SHAPES[w]) for w in SHAPES for s in STAGES for n in DEPTHS}
    times, probes = _interleaved(engines, lambda e: _step_s(e, ids, sync), rounds, warmup, probe)
    rows = []
    for w in SHAPES:
        grads = _slope({n: sum(1 for p in engines[(w, 0, n)].module.parameters() if p.requires_grad)
                        for n in DEPTHS}, DEPTHS)
        for s in STAGES:
            per_layer = _slope({n: statistics.median(times[(w, s, n)][1]) for n in DEPTHS}, DEPTHS)
            rows.append({"shape": w, "stage": s, "step_s_per_layer": per_layer, "gradients_per_layer": grads,
                         "step_s_per_gradient": per_layer / grads,
                         "medians_s": {str(n): statistics.median(times[(w, s, n)][1]) for n in DEPTHS}})
    return rows, probes


def _median_s(fn, reps: int, sync) -> float:
    out = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def sync_row(dev, reps: int = 400) -> dict:
    """Seconds of one host sync on an idle GPU, and of the overflow test per tensor."""
    import torch
    from deepspeed.runtime.utils import CheckOverflow
    sync = _sync_of(dev)
    x = torch.zeros(1, device=dev)
    grads = [p.detach().clone() for p in _engine(6, 0, dev, WIDE).module.parameters()]
    check = CheckOverflow()

    class _P:   # what has_overflow_serial reads: .grad.data
        def __init__(self, g):
            self.grad = g
    params = [_P(g) for g in grads]
    return {"item_s": _median_s(x.item, reps, sync),
            "synchronize_s": _median_s(torch.cuda.synchronize if dev.type == "cuda" else (lambda: None), reps, sync),
            "overflow_tensors": len(params),
            "overflow_s_per_tensor": _median_s(lambda: check.has_overflow_serial(params), 40, sync) / len(params)}


def run(device: str = "cuda", rounds: int = 30, warmup: int = 4) -> dict:
    """Both measurements, with the host snapshot before them and the probes' medians."""
    import torch
    from train import HostProbe, host_speed
    dev = torch.device(device)
    speed = host_speed(dev)
    probe = HostProbe(dev)
    init_one_rank(dev)
    steps, probes = step_rows(dev, rounds, warmup, probe)
    sync = sync_row(dev)
    probes.append(probe())
    return {"host_speed": speed, "host_probe": _median_probe(probes), "rounds": rounds, "batch": BATCH,
            "seq": SEQ, "shapes": SHAPES, "depths": list(DEPTHS), "steps": steps, "sync": sync}


def main(argv=None) -> int:
    """Run and write (atomically) or print the measurement."""
    return bench_main(argv, __doc__, "step_host", run)


if __name__ == "__main__":
    sys.exit(main())
