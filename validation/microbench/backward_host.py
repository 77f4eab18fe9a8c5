"""Host cost of backward: per launch against forward's, and per gradient of ZeRO's hooks.

zsim prices every kernel launch of module code at one rate (``host.module_launch_per_linear_call``)
in forward and in backward alike, and the per-gradient work of DeepSpeed's backward hooks as
counted aten ops at the flat-loop rate (zsim.schedule.hostwork: AccumulateGrad 2 ops, stage
1/2's bucket copy 1, stage 2's hook 5, when this was written). The DeepSpeed-MoE runs
questioned both at once: zsim's stage-0 backward came out 13-47 % long while its stage-2
backward matched (session m15), as if the hook cost more than its ops and backward's launches
less. validation/README.md ("Backward's host costs measured apart") has what this found.

This measures both on tiny shapes (the GPU idles, so wall time is host time), in one process,
interleaved, with the validation job's host probe after each round:

- ``layers``: a stack of tiny HF Llama decoder layers and one of tiny Mixtral layers whose MLP
  is a DeepSpeed-MoE layer (top-2, 8 experts, as the validation job builds them), each at two
  depths: seconds and kernel launches per layer of forward and of backward (the slopes), and
  the backward's seconds per launch over the forward's;
- ``hooks``: the dense stack under a real DeepSpeed engine at ZeRO stages 0, 1 and 2 (bf16,
  a client torch AdamW, one process), at two depths: seconds per layer of ``engine.backward``;
  the stage-1/2 slope less stage 0's, over the gradients per layer, is the hook's host
  seconds per gradient; and of ``engine.step`` (its per-tensor loops: overflow check, norm,
  casts; a fused torch AdamW in place of FusedAdam), per gradient.

    python validation/microbench/backward_host.py [--output FILE] [--device cuda]
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from microbench.checkpoint import BATCH, DEPTHS, SEQ, TINY, _model, _time_phases   # noqa: E402
from microbench.common import bench_main, kernel_profile                          # noqa: E402

#: Layer counts of the two DeepSpeed-MoE stacks (each layer launches ~4x a dense one).
MOE_DEPTHS = (2, 6)
#: The tiny Mixtral: 8 experts, top-2, the dense stack's widths.
MOE_SHAPE = {**TINY, "num_local_experts": 8, "num_experts_per_tok": 2}
MOE_KWARGS = {"ep_size": 1, "k": 2}
#: ZeRO stages timed under a DeepSpeed engine.
STAGES = (0, 1, 2)


def _sync_of(dev):
    import torch
    return torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)


def _moe_model(layers: int, dev):
    """A tiny Mixtral decoder whose MLPs are DeepSpeed-MoE layers (validation/train.py's way)."""
    import torch
    from transformers import MixtralConfig, MixtralForCausalLM
    from cpu_truth.expert_parallel import replace_moe_blocks
    cfg = MixtralConfig(num_hidden_layers=layers, **MOE_SHAPE)
    cfg._attn_implementation = "sdpa"
    lm = MixtralForCausalLM(cfg)
    replace_moe_blocks(lm, MOE_KWARGS)
    model = lm.model.to(dev, torch.bfloat16)   # the decoder alone, as the dense stack
    model.train()
    return model


def _phases(model, ids, sync) -> tuple[float, float]:
    """(forward, backward) wall seconds of one training micro-step, gradients cleared after."""
    out = _time_phases(model, ids, sync)
    model.zero_grad(set_to_none=True)
    return out


def _launches(model, ids) -> tuple[float, float]:
    """(forward, backward) GPU kernels, memsets and copies per micro-step."""
    def fwd():
        model(input_ids=ids)

    def step():
        model(input_ids=ids).last_hidden_state.float().sum().backward()
        model.zero_grad(set_to_none=True)
    f = kernel_profile(fwd, reps=5)[1]
    return f, kernel_profile(step, reps=5)[1] - f


def _interleaved(items: dict, measure, rounds: int, warmup: int, probe) -> tuple[dict, list]:
    """``measure(item)`` (a pair of seconds) for every item, round after round, interleaved so
    that drift hits them alike, the first ``warmup`` rounds dropped; the probe after each
    kept round. Returns ({key: (first values, second values)}, probes)."""
    times = {k: ([], []) for k in items}
    probes = []
    for r in range(warmup + rounds):
        for key, item in items.items():
            a, b = measure(item)
            if r >= warmup:
                times[key][0].append(a)
                times[key][1].append(b)
        if r >= warmup:
            probes.append(probe())
    return times, probes


def _slope(values: dict, depths) -> float:
    return (values[depths[1]] - values[depths[0]]) / (depths[1] - depths[0])


def layer_rows(dev, rounds: int, warmup: int, probe) -> tuple[list, list]:
    """Per-layer forward/backward seconds and launches of the dense and the MoE stacks."""
    import torch
    sync = _sync_of(dev)
    ids = torch.zeros(BATCH, SEQ, dtype=torch.long, device=dev)
    stacks = {("dense", n): _model(n, False, dev) for n in DEPTHS}
    stacks.update({("moe", n): _moe_model(n, dev) for n in MOE_DEPTHS})
    times, probes = _interleaved(stacks, lambda m: _phases(m, ids, sync), rounds, warmup, probe)
    counts = {k: _launches(m, ids) for k, m in stacks.items()} if dev.type == "cuda" else {}
    rows = []
    for kind, depths in (("dense", DEPTHS), ("moe", MOE_DEPTHS)):
        med = [{n: statistics.median(times[(kind, n)][i]) for n in depths} for i in (0, 1)]
        row = {"kind": kind, "depths": list(depths), "forward_s": _slope(med[0], depths),
               "backward_s": _slope(med[1], depths),
               "medians_s": {str(n): [med[0][n], med[1][n]] for n in depths}}
        if counts:
            launches = [{n: counts[(kind, n)][i] for n in depths} for i in (0, 1)]
            row["forward_launches"] = _slope(launches[0], depths)
            row["backward_launches"] = _slope(launches[1], depths)
            row["forward_s_per_launch"] = row["forward_s"] / row["forward_launches"]
            row["backward_s_per_launch"] = row["backward_s"] / row["backward_launches"]
            row["backward_per_forward_launch"] = row["backward_s_per_launch"] / row["forward_s_per_launch"]
        rows.append(row)
    return rows, probes


def _engine(layers: int, stage: int, dev, shape: dict = TINY):
    import torch
    import deepspeed
    model = _model(layers, False, dev, shape)
    config = {"train_micro_batch_size_per_gpu": BATCH, "gradient_accumulation_steps": 1,
              "bf16": {"enabled": True}, "zero_optimization": {"stage": stage},
              "steps_per_print": 10 ** 9}
    # fused: one multi-tensor kernel per step, as DeepSpeed's FusedAdam (no JIT build needed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=dev.type == "cuda")
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), optimizer=opt,
                                      config=config)
    return engine


def _engine_micro_step_s(engine, ids, sync) -> tuple[float, float]:
    """Wall seconds of ``engine.backward`` and of ``engine.step`` (the forward untimed)."""
    loss = engine(input_ids=ids).last_hidden_state.float().sum()
    sync()
    t0 = time.perf_counter()
    engine.backward(loss)
    sync()
    t1 = time.perf_counter()
    engine.step()
    sync()
    return t1 - t0, time.perf_counter() - t1


def init_one_rank(dev) -> None:
    """torch.distributed for one process, as the launcher would set it up."""
    import deepspeed
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    deepspeed.init_distributed(dist_backend="nccl" if dev.type == "cuda" else "gloo")


def hook_rows(dev, rounds: int, warmup: int, probe) -> tuple[list, list]:
    """Per-layer seconds of engine.backward and engine.step by stage; the hook's seconds per
    gradient (the stage's backward slope less stage 0's) and the step's."""
    import torch
    init_one_rank(dev)
    sync = _sync_of(dev)
    ids = torch.zeros(BATCH, SEQ, dtype=torch.long, device=dev)
    engines = {(s, n): _engine(n, s, dev) for s in STAGES for n in DEPTHS}
    grads = _slope({n: sum(1 for p in engines[(0, n)].module.parameters() if p.requires_grad) for n in DEPTHS},
                   DEPTHS)
    times, probes = _interleaved(engines, lambda e: _engine_micro_step_s(e, ids, sync), rounds, warmup, probe)

    def per_layer(phase: int) -> dict:
        return {s: _slope({n: statistics.median(times[(s, n)][phase]) for n in DEPTHS}, DEPTHS) for s in STAGES}
    bwd, step = per_layer(0), per_layer(1)
    rows = [{"stage": s, "backward_s_per_layer": bwd[s], "gradients_per_layer": grads,
             "hook_s_per_gradient": (bwd[s] - bwd[0]) / grads,
             "step_s_per_layer": step[s], "step_s_per_gradient": step[s] / grads} for s in STAGES]
    return rows, probes


def _median_probe(probes: list) -> dict:
    return {k: statistics.median(p[k] for p in probes) for k in probes[0]}


def run(device: str = "cuda", rounds: int = 30, warmup: int = 4) -> dict:
    """Both measurements, with the host snapshot before them and the probes' medians."""
    import torch
    from train import HostProbe, host_speed
    dev = torch.device(device)
    speed = host_speed(dev)
    probe = HostProbe(dev)
    layers, p1 = layer_rows(dev, rounds, warmup, probe)
    hooks, p2 = hook_rows(dev, rounds, warmup, probe)
    return {"host_speed": speed, "host_probe": _median_probe(p1 + p2), "rounds": rounds,
            "batch": BATCH, "seq": SEQ, "shape": TINY, "moe_shape": MOE_SHAPE, "moe_kwargs": MOE_KWARGS,
            "layers": layers, "hooks": hooks}


def main(argv=None) -> int:
    """Run and write (atomically) or print the measurement."""
    return bench_main(argv, __doc__, "backward_host", run)


if __name__ == "__main__":
    sys.exit(main())
