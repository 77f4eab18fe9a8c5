"""Model-state memory truth: live bytes of a real DeepSpeed 0.19.8 ZeRO run, on CPU.

One rank (gloo) trains a tiny HF Llama for three steps under the dispatch-mode tracker of
activation_memory.py, started after ``deepspeed.initialize``; the third step's live bytes
at its phase boundaries are printed per parameter, as one JSON line::

    python validation/cpu_truth/zero_memory.py STAGE [PORT] [ZERO_JSON]

``ZERO_JSON`` adds zero_optimization keys (e.g. '{"stage3_param_persistence_threshold": 0}').

    python validation/cpu_truth/zero_memory.py --moe STAGE [PORT] [MAX_GROUP_NUMEL]

trains a tiny Mixtral whose MoE blocks are DeepSpeed-MoE layers instead, its optimizer param
groups split as the engine splits them (deepspeed/moe/utils.py:72-149; ``MAX_GROUP_NUMEL``
lowers the 178,956,971-element limit so that a tiny model has several expert groups), and
adds the groups' numels to the JSON line: the step walks the groups one at a time.

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


def _start(port: int):
    """One gloo rank on this machine; the repository importable."""
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import deepspeed
    import torch
    torch.set_num_threads(1)
    deepspeed.init_distributed(dist_backend="gloo")


def _ds_config(stage: int, zero_extra: dict | None) -> dict:
    """bf16, AdamW from the config (DeepSpeed builds the optimizer), small buckets."""
    ds = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1,
          "bf16": {"enabled": True}, "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}}}
    if stage:
        ds["zero_optimization"] = {"stage": stage, "reduce_bucket_size": 20000, **(zero_extra or {})}
    return ds


def _marks(engine, vocab_size: int, seq_len: int) -> dict[str, int]:
    """Live bytes at the phase boundaries of the third of three steps."""
    import torch
    from validation.cpu_truth.activation_memory import LiveBytes
    gen = torch.Generator().manual_seed(0)
    mode = LiveBytes(set())
    marks: dict[str, int] = {}
    with mode:
        for _ in range(3):
            ids = torch.randint(0, vocab_size, (2, seq_len), generator=gen)
            marks["start_of_step"] = mode.current_bytes
            loss = engine(input_ids=ids, labels=ids).loss
            marks["loss_moment"] = mode.current_bytes
            mode.reset_peak()
            engine.backward(loss)
            marks["backward_peak"], marks["after_backward"] = mode.peak_bytes, mode.current_bytes
            mode.reset_peak()
            engine.step()
            marks["step_peak"], marks["after_step"] = mode.peak_bytes, mode.current_bytes
    return marks


def run(stage: int, port: int, zero_extra: dict | None = None) -> dict:
    """Train three steps at ``stage`` and return the third step's marks (bytes/param)."""
    _start(port)
    import deepspeed
    import torch
    import transformers
    cfg = transformers.LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=4, vocab_size=1000,
                                   max_position_embeddings=512, use_cache=False)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    psi = sum(p.numel() for p in model.parameters())
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                           config=_ds_config(stage, zero_extra))
    marks = _marks(engine, cfg.vocab_size, 256)
    return {"stage": stage, "num_parameters": psi, **{k: marks[k] / psi for k in MARKS}}


#: The tiny Mixtral of run_moe (4 experts of 98,304 elements per layer, 2 layers).
MOE_CONFIG = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=1000, num_local_experts=4, num_experts_per_tok=2,
                  max_position_embeddings=512, use_cache=False, tie_word_embeddings=False)
#: Its DeepSpeed-MoE layers (deepspeed.moe.layer.MoE keyword arguments).
MOE_LAYER = {"ep_size": 1, "k": 2}


def run_moe(stage: int, port: int, max_group_numel: int) -> dict:
    """Train three steps of the tiny DeepSpeed-MoE Mixtral at ``stage``; the third step's
    marks (bytes/param) and the optimizer param groups' numels, in step order."""
    _start(port)
    import deepspeed
    import torch
    import transformers
    from deepspeed.moe.utils import split_params_into_different_moe_groups_for_optimizer
    from validation.cpu_truth.expert_parallel import replace_moe_blocks
    cfg = transformers.MixtralConfig(**MOE_CONFIG)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = transformers.MixtralForCausalLM(cfg)
    replace_moe_blocks(model, MOE_LAYER)
    psi = sum(p.numel() for p in model.parameters())
    groups = split_params_into_different_moe_groups_for_optimizer(
        {"params": list(model.parameters()), "name": "dense-params"}, max_group_size=max_group_numel)
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=groups, config=_ds_config(stage, None))
    marks = _marks(engine, cfg.vocab_size, 128)
    return {"stage": stage, "num_parameters": psi, **{k: marks[k] / psi for k in MARKS},
            "group_numels": [sum(p.numel() for p in g["params"]) for g in groups]}


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--moe":
        out = run_moe(int(args[1]), int(args[2]) if len(args) > 2 else 29517,
                      int(args[3]) if len(args) > 3 else 178_956_971)
    else:
        out = run(int(args[0]), int(args[1]) if len(args) > 1 else 29517,
                  json.loads(args[2]) if len(args) > 2 else None)
    print(json.dumps(out))
    sys.stdout.flush()
    os._exit(0)   # skip gloo/DeepSpeed teardown
