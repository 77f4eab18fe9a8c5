"""Activation-memory truth of the MoE decoders (Mixtral, Qwen2-MoE, Qwen3-MoE), on CPU.

The same dispatch-mode tracker as activation_memory.py (:class:`LiveBytes`), on a tiny model
of each MoE family built from its config.json through ``AutoModelForCausalLM`` (bf16, sdpa,
no KV cache, transformers' default experts implementation: on CPU with torch >= 2.10 that
is grouped_mm, as on CUDA SM80+). Per-layer bytes: (kept(4 layers) - kept(2 layers)) / 2.

    python validation/cpu_truth/moe_activation_memory.py      # measured vs zsim per layer
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from validation.cpu_truth.activation_memory import LiveBytes

#: Tiny configs (every field that changes shapes given) and the batch each is measured at.
MOE_SHAPES: dict[str, tuple[dict, int, int]] = {
    "mixtral-8e-top2": (dict(model_type="mixtral", hidden_size=256, intermediate_size=512, num_attention_heads=4,
                             num_key_value_heads=2, vocab_size=1000, num_local_experts=8, num_experts_per_tok=2,
                             max_position_embeddings=1024, tie_word_embeddings=False), 2, 512),
    "qwen2-moe-shared": (dict(model_type="qwen2_moe", hidden_size=256, intermediate_size=512,
                              num_attention_heads=4, num_key_value_heads=4, vocab_size=1000, num_experts=16,
                              num_experts_per_tok=4, moe_intermediate_size=128,
                              shared_expert_intermediate_size=384, max_position_embeddings=1024,
                              tie_word_embeddings=False), 1, 1024),
    "qwen3-moe": (dict(model_type="qwen3_moe", hidden_size=256, intermediate_size=512, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=64, vocab_size=1000, num_experts=16, num_experts_per_tok=4,
                       moe_intermediate_size=96, max_position_embeddings=1024, tie_word_embeddings=False), 1, 1024),
}
#: Qwen3-MoE with the k routing weights renormalised (norm_topk_prob), top-2.
MOE_SHAPES["qwen3-moe-norm-top2"] = (dict(MOE_SHAPES["qwen3-moe"][0], norm_topk_prob=True, num_experts_per_tok=2),
                                     2, 512)


def kept_bytes(cfg: dict, layers: int, micro_batch: int, seq_len: int, layers_key: str = "num_hidden_layers",
               attn_implementation: str = "sdpa") -> int:
    """Bytes live after one bf16 forward + loss of the HF model (the output dropped);
    ``layers_key`` names the config's layer count (GPT-2: ``n_layer``); ``attn_implementation``
    the attention transformers runs ("eager": BLOOM's default, it has no sdpa path)."""
    import transformers

    hf_cfg = transformers.AutoConfig.for_model(**dict(cfg, **{layers_key: layers}))
    hf_cfg._attn_implementation = attn_implementation
    hf_cfg.use_cache = False
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(hf_cfg).to(torch.bfloat16)
    return forward_kept_bytes(model, cfg["vocab_size"], micro_batch, seq_len)


def forward_kept_bytes(model, vocab_size: int, micro_batch: int, seq_len: int) -> int:
    """Bytes live after one forward + loss of ``model`` in train mode on random tokens (the
    parameters' own storage and the output dropped)."""
    model.train()
    skip = {p.untyped_storage().data_ptr() for p in model.parameters()}
    ids = torch.randint(0, vocab_size, (micro_batch, seq_len))
    mode = LiveBytes(skip)
    with mode:
        loss = model(input_ids=ids, labels=ids).loss
        kept = mode.current_bytes
    del loss
    return kept


def per_layer_bytes(name: str) -> float:
    """Bytes one decoder layer of :data:`MOE_SHAPES` ``name`` keeps for backward."""
    cfg, b, s = MOE_SHAPES[name]
    return (kept_bytes(cfg, 4, b, s) - kept_bytes(cfg, 2, b, s)) / 2


def zsim_per_layer_bytes(name: str) -> int:
    """zsim's per-layer activation bytes for the same shape and batch."""
    from zsim.model import load_model
    from zsim.workload import Workload

    cfg, b, s = MOE_SHAPES[name]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "config.json"
        path.write_text(json.dumps(dict(cfg, num_hidden_layers=2)))
        return Workload(load_model(path), b, s, 2).layer_activation_bytes()


def main() -> int:
    """Print measured vs zsim per-layer bytes for :data:`MOE_SHAPES`."""
    for name in MOE_SHAPES:
        real, zsim = per_layer_bytes(name), zsim_per_layer_bytes(name)
        print(f"{name:18s} per layer: measured {real / 2**20:8.3f} MiB  zsim {zsim / 2**20:8.3f} MiB "
              f"({100 * (zsim / real - 1):+.2f} %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
