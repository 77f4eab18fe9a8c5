"""Model-state memory truth: live bytes of a real DeepSpeed 0.19.8 ZeRO run, on CPU.

One rank (gloo) trains a tiny HF Llama for three steps under the dispatch-mode tracker of
activation_memory.py, started after ``deepspeed.initialize``; the third step's live bytes
at its phase boundaries are printed per parameter, as one JSON line::

    python validation/cpu_truth/zero_memory.py STAGE [PORT] [ZERO_JSON]

``ZERO_JSON`` adds zero_optimization keys (e.g. '{"stage3_param_persistence_threshold": 0}').

What it shows is which of DeepSpeed's buffers exist at which moment of a step (the
gradient partition of stage 2, the accumulated gradients, the step's transients) — the
moments zsim's memory model (zsim/memory.py) takes its peak at.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

#: Phase boundaries recorded for the third step, in bytes per parameter.
MARKS = ("start_of_step", "loss_moment", "backward_peak", "after_backward", "step_peak", "after_step")


def run(stage: int, port: int, zero_extra: dict | None = None) -> dict:
    """Train three steps at ``stage`` and return the third step's marks (bytes/param)."""
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import deepspeed
    import torch
    import transformers
    from validation.cpu_truth.activation_memory import LiveBytes

    torch.set_num_threads(1)
    deepspeed.init_distributed(dist_backend="gloo")
    cfg = transformers.LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=4, vocab_size=1000,
                                   max_position_embeddings=512, use_cache=False)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    psi = sum(p.numel() for p in model.parameters())
    ds = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1,
          "bf16": {"enabled": True}, "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}}}
    if stage:
        ds["zero_optimization"] = {"stage": stage, "reduce_bucket_size": 20000, **(zero_extra or {})}
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=ds)
    gen = torch.Generator().manual_seed(0)
    mode = LiveBytes(set())
    marks: dict[str, int] = {}
    with mode:
        for _ in range(3):
            ids = torch.randint(0, cfg.vocab_size, (2, 256), generator=gen)
            marks["start_of_step"] = mode.current_bytes
            loss = engine(input_ids=ids, labels=ids).loss
            marks["loss_moment"] = mode.current_bytes
            mode.reset_peak()
            engine.backward(loss)
            marks["backward_peak"], marks["after_backward"] = mode.peak_bytes, mode.current_bytes
            mode.reset_peak()
            engine.step()
            marks["step_peak"], marks["after_step"] = mode.peak_bytes, mode.current_bytes
    return {"stage": stage, "num_parameters": psi, **{k: marks[k] / psi for k in MARKS}}


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 29517,
                         json.loads(sys.argv[3]) if len(sys.argv) > 3 else None)))
    sys.stdout.flush()
    os._exit(0)   # skip gloo/DeepSpeed teardown
