"""Activation-memory truth of the dense non-Llama families, on CPU.

The dispatch-mode tracker of activation_memory.py on a tiny model of each family built from
its config.json through ``AutoModelForCausalLM`` (bf16, sdpa, no KV cache; per-layer bytes =
(kept(4 layers) - kept(2 layers)) / 2, micro-batch 2 x 512 tokens), against zsim's
``Workload.layer_activation_bytes``.

What CPU cannot stand in for: SDPA with an explicit mask or with attention dropout runs the
math path on CPU, which keeps the score matrix; on CUDA the memory-efficient and flash kernels
keep none. So the cases run without attention dropout, and Falcon (transformers always
materialises its causal mask, modeling_falcon.py ``allow_is_causal_skip=False``) is measured
but not held to zsim: measured 16.5 MiB against zsim's 6.9 MiB per layer.

DeepSeek (MLA, DeepSeek-MoE) is compared less the one copy CPU makes and CUDA does not
(:func:`cpu_only_bytes`). BLOOM runs its own eager ALiBi attention (modeling_bloom.py: no sdpa
path), the same ops on CPU as on CUDA; it is compared less what CPU's kernels keep in other
dtypes (:func:`cpu_only_bytes`: LayerNorm statistics, the CPU dropout's noise tensor). Gemma-2 runs
transformers' eager_attention_forward (modeling_gemma2.py: no sdpa path), also the same ops on
both; its final-logit softcap is measured on the whole model (:func:`final_softcap_bytes`).

    python -m validation.cpu_truth.family_activation_memory     # measured vs zsim per layer
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from validation.cpu_truth.moe_activation_memory import kept_bytes

MICRO_BATCH, SEQ = 2, 512
_COMMON = dict(vocab_size=1000, max_position_embeddings=1024)

#: Tiny configs, attention dropout off (see the module docstring).
SHAPES: dict[str, dict] = {
    "gpt2": dict(model_type="gpt2", n_embd=256, n_head=4, n_positions=1024, vocab_size=1000,
                 tie_word_embeddings=True, attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0),
    "gpt_neox": dict(_COMMON, model_type="gpt_neox", hidden_size=256, intermediate_size=1024, num_attention_heads=4,
                     rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False),
    "opt": dict(_COMMON, model_type="opt", hidden_size=256, ffn_dim=1024, num_attention_heads=4,
                word_embed_proj_dim=256),
    "phi": dict(_COMMON, model_type="phi", hidden_size=256, intermediate_size=1024, num_attention_heads=4,
                partial_rotary_factor=0.5, resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0),
    "phi3": dict(_COMMON, model_type="phi3", hidden_size=256, intermediate_size=512, num_attention_heads=4,
                 num_key_value_heads=4, sliding_window=None, pad_token_id=0, bos_token_id=1, eos_token_id=1),
    "gemma": dict(_COMMON, model_type="gemma", hidden_size=256, intermediate_size=512, num_attention_heads=4,
                  num_key_value_heads=1, head_dim=64, hidden_act="gelu_pytorch_tanh"),
    "qwen3": dict(_COMMON, model_type="qwen3", hidden_size=256, intermediate_size=512, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=64, tie_word_embeddings=False),
    "falcon": dict(_COMMON, model_type="falcon", hidden_size=256, num_attention_heads=4, new_decoder_architecture=False,
                   multi_query=True, parallel_attn=True, bias=False, attention_dropout=0.0, hidden_dropout=0.0),
    # BLOOM: eager ALiBi attention, without and with attention dropout (the latter keeps the
    # dropout's output and its mask/noise); 4 heads of 64
    "bloom": dict(model_type="bloom", hidden_size=256, n_head=4, vocab_size=1000, attention_dropout=0.0,
                  hidden_dropout=0.0),
    "bloom-attn-dropout": dict(model_type="bloom", hidden_size=256, n_head=4, vocab_size=1000,
                               attention_dropout=0.1, hidden_dropout=0.0),
}
_GEMMA2 = dict(_COMMON, model_type="gemma2", hidden_size=256, intermediate_size=512, num_attention_heads=4,
               head_dim=64, query_pre_attn_scalar=64, sliding_window=4096)
SHAPES.update({
    # Gemma-2: transformers' eager_attention_forward (no sdpa path), grouped heads with both
    # softcaps; and ungrouped heads, no softcap, a sliding window shorter than the sequence (eager
    # attention computes and keeps the whole square on every layer either way)
    "gemma2": dict(_GEMMA2, num_key_value_heads=2, attn_logit_softcapping=50.0, final_logit_softcapping=30.0),
    "gemma2-mha-nocap-window": dict(_GEMMA2, num_key_value_heads=4, attn_logit_softcapping=None,
                                    final_logit_softcapping=None, sliding_window=128),
})
#: The attention transformers runs per model_type where the harness's sdpa is not it.
ATTN_IMPLEMENTATION = {"bloom": "eager", "gemma2": "eager"}
#: DeepSeek-V2-Lite-shaped (no q LoRA, softmax greedy routing, 2 shared experts, a dense first
#: layer) and DeepSeek-V3-shaped (q LoRA, sigmoid group-limited routing) tiny models. The q/k head
#: dim (qk_nope + qk_rope) equals v_head_dim here: CPU's SDPA runs its flash kernel only for equal
#: head dims (the math path, which keeps the score matrix, otherwise); the published shapes
#: (192 and 128) differ, so those sizes are covered by the same per-value accounting.
_DEEPSEEK = dict(_COMMON, hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=4,
                 kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=32, v_head_dim=64, n_routed_experts=16,
                 num_experts_per_tok=4, moe_intermediate_size=64, first_k_dense_replace=1, tie_word_embeddings=False)
SHAPES.update({
    "deepseek_v2-lite": dict(_DEEPSEEK, model_type="deepseek_v2", q_lora_rank=None, n_shared_experts=2),
    "deepseek_v2-lite-dense": dict(_DEEPSEEK, model_type="deepseek_v2", q_lora_rank=None, n_shared_experts=2,
                                   first_k_dense_replace=4),
    "deepseek_v2-group": dict(_DEEPSEEK, model_type="deepseek_v2", q_lora_rank=96, n_shared_experts=1,
                              topk_method="group_limited_greedy", n_group=4, topk_group=2),
    "deepseek_v3": dict(_DEEPSEEK, model_type="deepseek_v3", q_lora_rank=96, n_shared_experts=1, n_group=4,
                        topk_group=2),
})


def _layers_key(cfg: dict) -> str:
    return "n_layer" if cfg["model_type"] in ("gpt2", "bloom") else "num_hidden_layers"


def per_layer_bytes(name: str) -> float:
    """Bytes one decoder layer of :data:`SHAPES` ``name`` keeps for backward, measured."""
    cfg = SHAPES[name]
    key = _layers_key(cfg)
    attn = ATTN_IMPLEMENTATION.get(cfg["model_type"], "sdpa")
    return (kept_bytes(cfg, 4, MICRO_BATCH, SEQ, key, attn) - kept_bytes(cfg, 2, MICRO_BATCH, SEQ, key, attn)) / 2


def cpu_only_bytes(name: str) -> int:
    """Bytes per layer CPU keeps that CUDA does not, for :data:`SHAPES` ``name``.

    DeepSeek: o_proj's input is a copy of the SDPA output on CPU (p·heads·v_head_dim per
    token): CPU's flash kernel lays its output out like the query, which MLA concatenates
    head-major, so HF's ``transpose(1, 2).contiguous()`` copies; CUDA's memory-efficient kernel
    (the one MLA's unequal head dims get) allocates its output token-major
    (aten/src/ATen/native/transformers/cuda/attention.cu: ``at::empty({B, M, num_heads, Kv})``),
    so there the transpose copies nothing. Measured here: the copy is the storage o_proj saves.
    """
    cfg = SHAPES[name]
    if cfg["model_type"] == "bloom":
        return _bloom_cpu_only_bytes(cfg)
    if not cfg["model_type"].startswith("deepseek"):
        return 0
    return MICRO_BATCH * SEQ * 2 * cfg["num_attention_heads"] * cfg["v_head_dim"]


def _bloom_cpu_only_bytes(cfg: dict) -> int:
    """BLOOM's CPU-minus-CUDA bytes per layer (negative: CPU keeps less), bf16:

    - each LayerNorm's mean and rstd: CPU's native_layer_norm keeps them in the input's dtype
      when the weight has it too (2 + 2 bytes per row), CUDA's in fp32 (aten layer_norm_cuda:
      ``toAccumulateType``, 4 + 4): -4 per token per norm, two norms per layer;
    - attention dropout (p > 0): CPU's dropout multiplies by a bf16 noise tensor, which the
      multiply saves (2 bytes per score); CUDA's fused native_dropout keeps a bool mask (1 byte).
    """
    tokens = MICRO_BATCH * SEQ
    scores = MICRO_BATCH * cfg["n_head"] * SEQ * SEQ
    dropout = scores * (2 - 1) if cfg.get("attention_dropout", 0.0) > 0 else 0
    return -2 * 4 * tokens + dropout


def final_softcap_bytes() -> float:
    """Bytes Gemma-2's final-logit softcap keeps, measured: the whole 2-layer model's kept bytes
    of :data:`SHAPES` "gemma2" with final_logit_softcapping 30 less without it."""
    cfg = SHAPES["gemma2"]
    with_cap = kept_bytes(cfg, 2, MICRO_BATCH, SEQ, "num_hidden_layers", "eager")
    without = kept_bytes(dict(cfg, final_logit_softcapping=None), 2, MICRO_BATCH, SEQ, "num_hidden_layers", "eager")
    return with_cap - without


def zsim_final_softcap_bytes() -> int:
    """zsim's kept logits bytes of :data:`SHAPES` "gemma2" less those without the final softcap."""
    from zsim.model import from_hf_config
    from zsim.workload import Workload

    cfg = dict(SHAPES["gemma2"], num_hidden_layers=2)
    with_cap = Workload(from_hf_config(cfg), MICRO_BATCH, SEQ, 2).logits_bytes()[0]
    without = Workload(from_hf_config(dict(cfg, final_logit_softcapping=None)), MICRO_BATCH, SEQ, 2).logits_bytes()[0]
    return with_cap - without


def zsim_per_layer_bytes(name: str) -> int:
    """zsim's per-layer activation bytes for the same shape and batch."""
    from zsim.model import load_model
    from zsim.workload import Workload

    cfg = SHAPES[name]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "config.json"
        path.write_text(json.dumps(dict(cfg, **{_layers_key(cfg): 2})))
        return Workload(load_model(path), MICRO_BATCH, SEQ, 2).layer_activation_bytes()


def main() -> int:
    """Print measured vs zsim per-layer bytes for :data:`SHAPES`."""
    for name in SHAPES:
        meas, z = per_layer_bytes(name) - cpu_only_bytes(name), zsim_per_layer_bytes(name)
        print(f"{name:9s} measured {meas / 2**20:8.2f} MiB/layer  zsim {z / 2**20:8.2f}  {100 * (z / meas - 1):+6.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
