"""Model shapes used by the validation runs (Hugging Face config.json fields): Llama presets and
one Mixtral-shaped MoE preset.

Every run writes the exact config it trained into its results folder, so these presets are a
convenience for the plan, not a source of truth for zsim.
"""

from __future__ import annotations

import json
from pathlib import Path

#: name -> Hugging Face LlamaConfig fields. Random init only; nothing is downloaded.
PRESETS: dict[str, dict] = {
    # ~0.13B: GPT-2-small width with a Llama block
    "llama-0.13b": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        num_key_value_heads=12, intermediate_size=2048),
    # ~0.55B
    "llama-0.55b": dict(hidden_size=1536, num_hidden_layers=16, num_attention_heads=12,
                        num_key_value_heads=12, intermediate_size=4096),
    # TinyLlama-1.1B shape (GQA, 4 KV heads)
    "tinyllama-1.1b": dict(hidden_size=2048, num_hidden_layers=22, num_attention_heads=32,
                           num_key_value_heads=4, intermediate_size=5632),
    # OpenLLaMA-3B shape (~3.4B)
    "llama-3b": dict(hidden_size=3200, num_hidden_layers=26, num_attention_heads=32,
                     num_key_value_heads=32, intermediate_size=8640),
    # Llama-2-7B shape
    "llama-2-7b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, intermediate_size=11008),
    # head_dim 128 with GQA (8 KV heads), ~1.2B
    "llama-1.2b-hd128": dict(hidden_size=2048, num_hidden_layers=20, num_attention_heads=16,
                             num_key_value_heads=8, intermediate_size=5632),
    # a Llama-3-size vocabulary (128,256) on a small body: embeddings and lm_head dominate
    "llama-0.7b-v128k": dict(hidden_size=1536, num_hidden_layers=12, num_attention_heads=24,
                             num_key_value_heads=8, intermediate_size=4096, vocab_size=128256),
    # session m5's unseen sizes: head_dim 128 with 5:1 GQA, ~1.5B
    "llama-1.5b-gqa": dict(hidden_size=2560, num_hidden_layers=20, num_attention_heads=20,
                           num_key_value_heads=4, intermediate_size=6912),
    # ~4.1B: a Qwen2-7B-like width (3584, 28 heads, 4 KV heads) on 24 layers
    "llama-4b-gqa": dict(hidden_size=3584, num_hidden_layers=24, num_attention_heads=28,
                         num_key_value_heads=4, intermediate_size=12288),
}

#: Mixture-of-experts presets (HF MixtralConfig fields): trained with DeepSpeed-MoE layers
#: (``Run.moe``), never with the HF sparse block. ~0.7B: 8 experts of width 2048, top-2.
MOE_PRESETS: dict[str, dict] = {
    "mixtral-0.7b-8e": dict(hidden_size=1024, num_hidden_layers=12, num_attention_heads=16,
                            num_key_value_heads=4, intermediate_size=2048, num_local_experts=8,
                            num_experts_per_tok=2, model_type="mixtral",
                            architectures=["MixtralForCausalLM"], router_aux_loss_coef=0.0),
}

_COMMON = dict(vocab_size=32000, tie_word_embeddings=False, max_position_embeddings=4096,
               rms_norm_eps=1e-5, hidden_act="silu", model_type="llama",
               architectures=["LlamaForCausalLM"])


def hf_config(name_or_path: str) -> dict:
    """The HF config dict of a preset name, or the contents of a config.json path."""
    if name_or_path in PRESETS or name_or_path in MOE_PRESETS:
        cfg = dict(_COMMON)
        cfg.update(PRESETS.get(name_or_path) or MOE_PRESETS[name_or_path])
        if cfg["max_position_embeddings"] < 8192:
            cfg["max_position_embeddings"] = 8192  # the long-sequence runs
        cfg["_name"] = name_or_path
        return cfg
    return json.loads(Path(name_or_path).read_text())


def hf_fields(name_or_path: str) -> dict:
    """:func:`hf_config` without this module's own keys (``_name``): what a LlamaConfig takes."""
    return {k: v for k, v in hf_config(name_or_path).items() if not k.startswith("_")}


def param_count(cfg: dict) -> int:
    """Parameter count of a Llama config (embeddings, attention, MLP, norms, lm_head)."""
    h, L, v = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    hd = cfg.get("head_dim") or h // heads
    ffn = cfg["intermediate_size"]
    attn = h * heads * hd * 2 + h * kv * hd * 2
    layer = attn + 3 * h * ffn + 2 * h
    emb = v * h * (1 if cfg.get("tie_word_embeddings") else 2)
    return L * layer + emb + h
