"""Activation-memory truth of DeepSpeed-MoE layers, on CPU, in one process (torch is
imported only to measure: zsim's side and the shapes need no torch).

The dispatch-mode tracker of activation_memory.py (:class:`LiveBytes`) on a tiny MoE model
whose MoE blocks are ``deepspeed.moe.layer.MoE`` layers (expert_parallel.py), bf16, sdpa.
It runs with ep_size 1: no process group is needed (no all-to-all, SM:700-703), and what
autograd saves does not depend on ep — the all-to-all saves nothing (SM:97-109) and the
local experts' rows, E/ep experts of ep·C each, total E·C for every ep. Per-layer bytes:
(kept(4 layers) - kept(2 layers)) / 2.

    python -m validation.cpu_truth.expert_activation_memory      # measured vs zsim per layer
"""

from __future__ import annotations

import dataclasses

from validation.cpu_truth.expert_cases import DEEPSEEK_V2_8E, DEEPSEEK_V3_8E, MIXTRAL_4E, QWEN2_MOE_8E, QWEN3_MOE_8E

#: (model config, MoE arguments, micro-batch, sequence length) per shape.
SHAPES: dict[str, tuple[dict, dict, int, int]] = {
    "mixtral-4e-top2": (dict(MIXTRAL_4E, hidden_size=256, intermediate_size=384), dict(k=2), 2, 256),
    "mixtral-4e-top1-cf1.5": (dict(MIXTRAL_4E, hidden_size=256, intermediate_size=384),
                              dict(k=1, capacity_factor=1.5), 1, 512),
    "qwen3-moe-8e-top2-cf0.5": (dict(QWEN3_MOE_8E, hidden_size=256, moe_intermediate_size=128),
                                dict(k=2, capacity_factor=0.5), 1, 512),
    "qwen3-moe-8e-top3": (dict(QWEN3_MOE_8E, hidden_size=256, moe_intermediate_size=128, num_experts_per_tok=3),
                          dict(k=3), 2, 256),
    "mixtral-4e-top2-residual": (dict(MIXTRAL_4E, hidden_size=256, intermediate_size=384),
                                 dict(k=2, use_residual=True), 1, 256),
    "qwen2-moe-8e-top2-shared": (dict(QWEN2_MOE_8E, hidden_size=256, moe_intermediate_size=128,
                                      shared_expert_intermediate_size=192), dict(k=2), 2, 256),
    # DeepSeek: a dense first layer, so the per-layer difference is a MoE layer's
    "deepseek-v2-8e-top2-shared": (dict(DEEPSEEK_V2_8E, hidden_size=256, moe_intermediate_size=96), dict(k=2), 2, 256),
    "deepseek-v3-8e-top2-shared": (dict(DEEPSEEK_V3_8E, hidden_size=256, moe_intermediate_size=96), dict(k=2), 1, 512),
}


def kept_bytes(cfg: dict, moe: dict, layers: int, micro_batch: int, seq_len: int, replace: bool = True) -> int:
    """Bytes live after one bf16 forward + loss of the DeepSpeed-MoE model (output dropped);
    ``replace`` False: of the model with its own MoE blocks."""
    import torch
    import transformers

    from validation.cpu_truth.moe_activation_memory import forward_kept_bytes
    from validation.cpu_truth.expert_parallel import replace_moe_blocks

    hf_cfg = transformers.AutoConfig.for_model(**dict(cfg, num_hidden_layers=layers))
    hf_cfg._attn_implementation = "sdpa"
    hf_cfg.use_cache = False
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(hf_cfg)
    if replace:
        replace_moe_blocks(model, dict(moe, ep_size=1))
    return forward_kept_bytes(model.to(torch.bfloat16), cfg["vocab_size"], micro_batch, seq_len)


#: Shapes whose check is the replacement's difference (:func:`per_layer_delta_bytes`): MLA's
#: attention under this tracker keeps more than the family truth (family_activation_memory.py)
#: measures, the same with or without DeepSpeed-MoE layers.
DELTA_SHAPES = ("deepseek-v2-8e-top2-shared", "deepseek-v3-8e-top2-shared")


def per_layer_bytes(name: str, replace: bool = True) -> float:
    """Bytes one decoder layer of :data:`SHAPES` ``name`` keeps for backward (``replace``
    False: with the model's own MoE block)."""
    cfg, moe, b, s = SHAPES[name]
    return (kept_bytes(cfg, moe, 4, b, s, replace) - kept_bytes(cfg, moe, 2, b, s, replace)) / 2


def zsim_per_layer_bytes(name: str, ep: int = 1, replace: bool = True) -> int:
    """zsim's per-layer activation bytes for the same shape, batch and ``ep``."""
    from zsim.model import from_hf_config
    from zsim.parallel.expert import moe_config
    from zsim.workload import Workload

    cfg, moe, b, s = SHAPES[name]
    spec = from_hf_config(dict(cfg, num_hidden_layers=2), name)
    if replace:
        spec = dataclasses.replace(spec, deepspeed_moe=moe_config(dict(moe, ep_size=ep), None))
    return Workload(spec, b, s, 2).layer_activation_bytes()


def per_layer_delta_bytes(name: str) -> tuple[float, int]:
    """(measured, zsim) change of a layer's kept bytes when its MoE block becomes the
    DeepSpeed-MoE wrapper."""
    return (per_layer_bytes(name) - per_layer_bytes(name, False),
            zsim_per_layer_bytes(name) - zsim_per_layer_bytes(name, replace=False))


def main() -> int:
    """Print measured vs zsim per-layer bytes for :data:`SHAPES`."""
    for name in SHAPES:
        real, zsim = per_layer_delta_bytes(name) if name in DELTA_SHAPES else (
            per_layer_bytes(name), zsim_per_layer_bytes(name))
        print(f"{name:26s} per layer: measured {real / 2**20:8.3f} MiB  zsim {zsim / 2**20:8.3f} MiB "
              f"({100 * (zsim / real - 1):+.2f} %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
