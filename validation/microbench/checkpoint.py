"""Host cost of Hugging Face activation checkpointing, per checkpointed decoder layer.

The validation job checkpoints the way transformers does when asked for it
(``gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})``):
each decoder layer's forward runs inside ``torch.utils.checkpoint.checkpoint`` without
reentrance. Besides recomputing the forward, that machinery is Python on the host thread:

- forward: per layer, the checkpoint frame and the stash of the CPU and CUDA RNG states
  (``preserve_rng_state``), and a pack hook for every tensor autograd saves;
- backward: per layer, the unpack of the first saved tensor restores the RNG states and
  reruns the forward under recomputation hooks (one per tensor saved again), then every
  unpack hook hands a recomputed tensor back.

None of that launches a GPU kernel, so it only shows where the host is the critical path:
ZeRO-3 on a few GPUs, small models. This benchmark measures it on a stack of tiny HF Llama
layers (bf16, SDPA; the GPU idles, so wall time is host time) at two depths, with and without
checkpointing, in the same process and interleaved. Per-layer slopes separate it from the
fixed embedding/norm/loss work:

    checkpoint_forward_s   = slope(forward, checkpointed) - slope(forward)
    checkpoint_recompute_s = slope(backward, checkpointed) - slope(backward) - slope(forward)

the second without the recomputed forward itself (which zsim prices as a forward). After
each round the host speed is probed as the validation job probes it between steps
(validation/train.py ``HostProbe``); `zsim calibrate` turns the seconds into zsim's unit,
the small ``nn.Linear`` call, with the median of those probes (the snapshot before the first
round, ``host_speed``, is kept too: two processes on one machine read 13 and 20 us in it
while their layers ran equally fast).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: Layer counts of the two stacks (the slopes' end points).
DEPTHS = (4, 16)
#: A tiny Llama shape: every kernel is a few microseconds, far below its launch cost.
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 4,
        "vocab_size": 256, "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "use_cache": False}
BATCH, SEQ = 1, 32


def _model(layers: int, checkpointed: bool, device, shape: dict = TINY):
    import torch
    from transformers import LlamaConfig, LlamaModel
    cfg = LlamaConfig(num_hidden_layers=layers, **shape)
    cfg._attn_implementation = "sdpa"
    model = LlamaModel(cfg).to(device, torch.bfloat16)
    model.train()
    if checkpointed:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def saved_tensors_per_layer(device) -> int:
    """Tensors autograd saves in one decoder layer's forward (each gets a pack hook)."""
    import torch
    counts = []
    for layers in DEPTHS:
        model = _model(layers, False, device)
        ids = torch.zeros(BATCH, SEQ, dtype=torch.long, device=device)
        n = [0]

        def pack(t):
            n[0] += 1
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=ids)
        counts.append(n[0])
    return round((counts[1] - counts[0]) / (DEPTHS[1] - DEPTHS[0]))


def _time_phases(model, ids, sync) -> tuple[float, float]:
    sync()
    t0 = time.perf_counter()
    out = model(input_ids=ids).last_hidden_state
    sync()
    t1 = time.perf_counter()
    out.float().sum().backward()
    sync()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def run(device: str = "cuda", reps: int = 40, warmup: int = 5) -> dict:
    """Per-layer host seconds of checkpointing's forward and recompute machinery."""
    import torch
    from train import HostProbe, host_speed
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    speed = host_speed(dev)
    probe, probes = HostProbe(dev), []
    models = {(n, c): _model(n, c, dev) for n in DEPTHS for c in (False, True)}
    ids = torch.zeros(BATCH, SEQ, dtype=torch.long, device=dev)
    times: dict = {k: ([], []) for k in models}
    for r in range(warmup + reps):
        for key, model in models.items():   # interleaved: drift hits all four alike
            f, b = _time_phases(model, ids, sync)
            model.zero_grad(set_to_none=True)
            if r >= warmup:
                times[key][0].append(f)
                times[key][1].append(b)
        if r >= warmup:
            probes.append(probe())
    med = {k: (statistics.median(v[0]), statistics.median(v[1])) for k, v in times.items()}
    span = DEPTHS[1] - DEPTHS[0]

    def slope(checkpointed: bool, phase: int) -> float:
        return (med[(DEPTHS[1], checkpointed)][phase] - med[(DEPTHS[0], checkpointed)][phase]) / span
    fwd, fwd_ck = slope(False, 0), slope(True, 0)
    bwd, bwd_ck = slope(False, 1), slope(True, 1)
    in_run = {k: statistics.median(p[k] for p in probes) for k in probes[0]}
    return {"host_speed": speed, "host_probe": in_run,
            "probe_small_linear_call_s": in_run["probe_small_linear_call_s"], "depths": list(DEPTHS), "batch": BATCH, "seq": SEQ, "shape": TINY,
            "reps": reps, "saved_tensors_per_layer": saved_tensors_per_layer(dev),
            "medians_s": [{"layers": n, "checkpointed": c, "forward_s": f, "backward_s": b}
                          for (n, c), (f, b) in med.items()],
            "per_layer_s": {"forward": fwd, "forward_checkpointed": fwd_ck,
                            "backward": bwd, "backward_checkpointed": bwd_ck},
            "checkpoint_forward_s": fwd_ck - fwd, "checkpoint_recompute_s": bwd_ck - bwd - fwd}


if __name__ == "__main__":
    import json
    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "cuda"), indent=1))
