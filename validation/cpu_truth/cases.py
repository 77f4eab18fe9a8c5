"""The CPU schedule-truth cases: tiny Hugging Face models × DeepSpeed configs × world sizes.

Each case is a plain dict (see harness.py). Models are tiny (hidden 64, 2 layers, vocab 256)
so that reduce_bucket_size / stage-3 thresholds of a few thousand elements split them into
many buckets and fetches, which is what the cases exercise.
"""

from __future__ import annotations

import copy

#: GQA (4 heads, 2 KV heads), untied embeddings.
LLAMA_GQA = dict(model_type="llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=128, vocab_size=256,
                 max_position_embeddings=64, tie_word_embeddings=False)
#: MHA, tied embeddings.
LLAMA_MHA_TIED = dict(LLAMA_GQA, num_key_value_heads=4, tie_word_embeddings=True, intermediate_size=96)
#: Qwen2 (q/k/v biases), GQA, untied; three layers.
QWEN2 = dict(LLAMA_GQA, model_type="qwen2", num_hidden_layers=3, intermediate_size=160)
#: Qwen2, tied, MHA.
QWEN2_TIED = dict(QWEN2, num_key_value_heads=4, tie_word_embeddings=True, num_hidden_layers=2)

MODELS = {"llama-gqa": LLAMA_GQA, "llama-mha-tied": LLAMA_MHA_TIED, "qwen2-gqa": QWEN2,
          "qwen2-mha-tied": QWEN2_TIED}


def ds_config(stage: int, precision: str = "bf16", gas: int = 1, micro: int = 1, **zero) -> dict:
    """A complete DeepSpeed config with the comms logger on."""
    cfg = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": gas,
        "zero_optimization": dict(stage=stage, **zero),
        "comms_logger": {"enabled": True, "verbose": False, "prof_all": True},
        "steps_per_print": 10_000,
        "wall_clock_breakdown": False,
    }
    if precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    return cfg


def case(cid: str, model: str, world: int, stage: int, precision: str = "bf16", gas: int = 1,
         steps: int = 3, top: dict | None = None, **zero) -> dict:
    """One case: id, model config, DeepSpeed config (``top``: extra top-level keys), world
    size, optimizer steps to run."""
    cfg = ds_config(stage, precision, gas, **zero)
    cfg.update(top or {})
    return {"id": cid, "model_name": model, "model": copy.deepcopy(MODELS[model]),
            "ds_config": cfg, "world_size": world, "steps": steps}


CASES: list[dict] = [
    # ---- stage 2: hook-order buckets every micro-step
    case("s2-bf16-w4-b1e4", "llama-gqa", 4, 2, reduce_bucket_size=10_000),
    case("s2-fp32-w3-gas2-b5000-tied", "llama-mha-tied", 3, 2, "fp32", gas=2, reduce_bucket_size=5_000),
    case("s2-bf16-w4-rs-off-b6000", "qwen2-gqa", 4, 2, reduce_bucket_size=6_000, reduce_scatter=False),
    case("s2-bf16-w3-multirank-off-b7000", "llama-gqa", 3, 2, reduce_bucket_size=7_000,
         use_multi_rank_bucket_allreduce=False),
    case("s2-fp32-w2-gas3-qwen2-b20000", "qwen2-gqa", 2, 2, "fp32", gas=3, reduce_bucket_size=20_000),
    case("s2-bf16-w4-nocontig-b3000", "qwen2-mha-tied", 4, 2, reduce_bucket_size=3_000,
         contiguous_gradients=False),
    # ---- stage 1: flat-order buckets at the boundary only
    case("s1-bf16-w4-gas2-b8000", "llama-gqa", 4, 1, gas=2, reduce_bucket_size=8_000),
    case("s1-fp32-w2-default", "llama-mha-tied", 2, 1, "fp32"),
    case("s1-bf16-w4-overlap-b9000-qwen2", "qwen2-gqa", 4, 1, reduce_bucket_size=9_000, overlap_comm=True),
    case("s1-bf16-w3-multirank-off-gas2-b4000", "qwen2-mha-tied", 3, 1, gas=2, reduce_bucket_size=4_000,
         use_multi_rank_bucket_allreduce=False),
    # ---- stage 0: the engine's all-reduce
    case("s0-bf16-w2", "llama-gqa", 2, 0),
    # gradient_clipping given explicitly: DeepSpeed's default is 1.0 (runtime/constants.py:203)
    case("s0-fp32-w3-gas2-clip", "llama-mha-tied", 3, 0, "fp32", gas=2, top={"gradient_clipping": 1.0}),
]

CASES += [
    # ---- stage 3: fetch/prefetch/release, reduce_scatter buckets, persistent re-gather
    case("s3-bf16-w4-defaults", "llama-gqa", 4, 3),
    case("s3-fp32-w4-allzero", "llama-gqa", 4, 3, "fp32", stage3_prefetch_bucket_size=0,
         stage3_max_reuse_distance=0, stage3_param_persistence_threshold=0),
    case("s3-bf16-w3-prefetch5000-reuse0-persist100-qwen2", "qwen2-gqa", 3, 3,
         stage3_prefetch_bucket_size=5_000, stage3_max_reuse_distance=0,
         stage3_param_persistence_threshold=100),
    case("s3-bf16-w2-gas2-b10000-tied", "llama-mha-tied", 2, 3, gas=2, reduce_bucket_size=10_000,
         stage3_param_persistence_threshold=0),
    case("s3-fp32-w3-qwen2-tied-prefetch0-persist0", "qwen2-mha-tied", 3, 3, "fp32",
         stage3_prefetch_bucket_size=0, stage3_param_persistence_threshold=0),
    case("s3-bf16-w4-reuse5000-prefetch20000-persist64-b7000", "llama-gqa", 4, 3,
         stage3_max_reuse_distance=5_000, stage3_prefetch_bucket_size=20_000,
         stage3_param_persistence_threshold=64, reduce_bucket_size=7_000),
    case("s3-bf16-w4-rs-off-b8000-reuse0", "qwen2-gqa", 4, 3, reduce_bucket_size=8_000, reduce_scatter=False,
         stage3_max_reuse_distance=0, stage3_param_persistence_threshold=0),
    case("s3-bf16-w3-gas3-maxlive9000-reuse0", "llama-gqa", 3, 3, gas=3, stage3_max_live_parameters=9_000,
         stage3_max_reuse_distance=0, stage3_param_persistence_threshold=0, stage3_prefetch_bucket_size=30_000),
]


def _ckpt(c: dict) -> dict:
    """The case with HF activation checkpointing (non-reentrant) on."""
    c["activation_checkpointing"] = True
    return c


#: A client torch AdamW with offload_optimizer needs this (engine.py:2342-2346).
_CLIENT_OPT_OFFLOAD = {"zero_force_ds_cpu_optimizer": False}

CASES += [
    # ---- activation checkpointing: recompute re-fetches in stage 3, hook order unchanged
    _ckpt(case("s3-bf16-w2-ckpt-defaults", "llama-gqa", 2, 3)),
    _ckpt(case("s3-bf16-w3-ckpt-allzero-qwen2", "qwen2-gqa", 3, 3, stage3_prefetch_bucket_size=0,
               stage3_max_reuse_distance=0, stage3_param_persistence_threshold=0)),
    _ckpt(case("s2-bf16-w2-ckpt-b5000", "llama-gqa", 2, 2, reduce_bucket_size=5_000)),
    # ---- offload: same collectives in stage 1/2; stage 3's norm becomes a 4-byte fp32 scalar
    case("s2-bf16-w2-offload-b6000", "llama-gqa", 2, 2, reduce_bucket_size=6_000,
         offload_optimizer={"device": "cpu"}, top=_CLIENT_OPT_OFFLOAD),
    case("s3-bf16-w2-offload-opt-param-reuse0", "llama-gqa", 2, 3, offload_optimizer={"device": "cpu"},
         offload_param={"device": "cpu"}, stage3_max_reuse_distance=0, top=_CLIENT_OPT_OFFLOAD),
    # ---- ZeRO++ hpZ: re-gathers from the secondary shard inside groups of 2
    case("s3-bf16-w4-hpz2-allzero", "llama-gqa", 4, 3, zero_hpz_partition_size=2,
         stage3_max_reuse_distance=0, stage3_param_persistence_threshold=0, stage3_prefetch_bucket_size=0),
]

CASES += [
    # ---- communication_data_type, allgather_bucket_size (ignored), sub-groups, round robin
    case("s2-bf16-w4-commfp32-agb5000-b12000", "qwen2-mha-tied", 4, 2, reduce_bucket_size=12_000,
         allgather_bucket_size=5_000, top={"communication_data_type": "fp32"}),
    case("s3-bf16-w3-subgroup20000-commfp32-reuse0", "llama-gqa", 3, 3, sub_group_size=20_000,
         stage3_max_reuse_distance=0, stage3_param_persistence_threshold=0, reduce_bucket_size=15_000,
         top={"communication_data_type": "fp32"}),
    case("s1-fp32-w3-gas2-b2500-qwen2-tied", "qwen2-mha-tied", 3, 1, "fp32", gas=2, reduce_bucket_size=2_500),
    case("s2-bf16-w3-roundrobin-multirank-off-b4000", "llama-gqa", 3, 2, reduce_bucket_size=4_000,
         round_robin_gradients=True, use_multi_rank_bucket_allreduce=False),
]

CASES += [
    # ---- combinations: overlap off in stage 3, checkpointing + accumulation + tied, tight
    # max_live, stage-1 offload with accumulation, stage 0 with accumulation
    _ckpt(case("s3-fp32-w3-overlap-off-gas2-tied-ckpt-prefetch3000-reuse3000", "llama-mha-tied", 3, 3, "fp32",
               gas=2, overlap_comm=False, stage3_prefetch_bucket_size=3_000, stage3_max_reuse_distance=3_000,
               stage3_param_persistence_threshold=70)),
    case("s1-bf16-w2-offload-gas3-b7000", "qwen2-gqa", 2, 1, gas=3, reduce_bucket_size=7_000,
         offload_optimizer={"device": "cpu"}, top=_CLIENT_OPT_OFFLOAD),
    case("s3-bf16-w4-gas2-maxlive3000-prefetch2000-reuse20000-qwen2", "qwen2-gqa", 4, 3, gas=2,
         stage3_max_live_parameters=3_000, stage3_prefetch_bucket_size=2_000, stage3_max_reuse_distance=20_000,
         stage3_param_persistence_threshold=0, reduce_bucket_size=25_000),
    case("s0-bf16-w4-gas3-qwen2-tied", "qwen2-mha-tied", 4, 0, gas=3),
    case("s2-fp32-w4-gas2-overlap-roundrobin-b9000", "qwen2-gqa", 4, 2, "fp32", gas=2, overlap_comm=True,
         round_robin_gradients=True, reduce_bucket_size=9_000),
]

#: Mixtral (4 experts, top-2; fused 3-D experts), untied, GQA.
MIXTRAL = dict(LLAMA_GQA, model_type="mixtral", num_local_experts=4, num_experts_per_tok=2)
#: Qwen2-MoE (4 experts, top-2, a shared expert and its gate), q/k/v biases.
QWEN2_MOE = dict(LLAMA_GQA, model_type="qwen2_moe", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                 shared_expert_intermediate_size=48)
MODELS.update({"mixtral-gqa": MIXTRAL, "qwen2-moe-gqa": QWEN2_MOE})

CASES += [
    # ---- mixture of experts without expert parallelism: the sparse MoE block is a ZeRO-3
    # leaf module by default (DeepSpeed 0.19.8 DEFAULT_LEAF_MODULE_CLASSES)
    case("s3-bf16-w2-mixtral-reuse0-persist0", "mixtral-gqa", 2, 3, stage3_param_persistence_threshold=0,
         stage3_max_reuse_distance=0),
    case("s3-bf16-w2-qwen2moe-persist0-prefetch3000-b5000", "qwen2-moe-gqa", 2, 3,
         stage3_param_persistence_threshold=0, reduce_bucket_size=5_000, stage3_prefetch_bucket_size=3_000),
    case("s2-bf16-w2-mixtral-b10000", "mixtral-gqa", 2, 2, reduce_bucket_size=10_000),
    case("s1-bf16-w2-qwen2moe-gas2-b8000", "qwen2-moe-gqa", 2, 1, gas=2, reduce_bucket_size=8_000),
]

#: DeepSeek-V2 (V2-Lite-shaped: MLA without q LoRA, a dense first layer, 4 experts top-2, 2 shared)
#: and DeepSeek-V3 (q LoRA, group-limited sigmoid routing); their MoE block is NOT a ZeRO-3 leaf
#: module (not in DEFAULT_LEAF_MODULE_CLASSES), so the experts module fetches its own parameters.
DEEPSEEK_V2 = dict(LLAMA_GQA, model_type="deepseek_v2", num_hidden_layers=3, num_key_value_heads=4,
                   q_lora_rank=None, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=12,
                   n_routed_experts=4, n_shared_experts=2, num_experts_per_tok=2, moe_intermediate_size=24,
                   first_k_dense_replace=1)
DEEPSEEK_V3 = dict(DEEPSEEK_V2, model_type="deepseek_v3", q_lora_rank=20, n_shared_experts=1, n_group=2,
                   topk_group=1)
MODELS.update({"deepseek-v2-lite-shaped": DEEPSEEK_V2, "deepseek-v3-qlora": DEEPSEEK_V3})

CASES += [
    case("s3-bf16-w2-deepseekv2-persist0-prefetch3000-b5000", "deepseek-v2-lite-shaped", 2, 3,
         stage3_param_persistence_threshold=0, reduce_bucket_size=5_000, stage3_prefetch_bucket_size=3_000),
    case("s3-bf16-w2-deepseekv3-reuse0-persist0", "deepseek-v3-qlora", 2, 3, stage3_param_persistence_threshold=0,
         stage3_max_reuse_distance=0),
    case("s2-bf16-w2-deepseekv3-b8000", "deepseek-v3-qlora", 2, 2, reduce_bucket_size=8_000),
    _ckpt(case("s3-bf16-w2-deepseekv2-ckpt-b6000", "deepseek-v2-lite-shaped", 2, 3, reduce_bucket_size=6_000)),
]

#: Cases whose recorded DeepSpeed order is not reproducible: s3-bf16-w3-mixtral-ckpt-b6000 matched
#: zsim exactly when run alone (twice, in two environments) but not once inside the full suite's
#: load (CI rehearsal of 2026-12-01), so its order depends on timing (a world-3 stage-3 run with
#: checkpointing and the MoE block's thread-synchronised leaf-module fetch, S3 coordinator
#: fetch_sub_module's __leaf_module_lock). Kept out of CASES until that is understood; the
#: runner takes them by id (--only).
TIMING_DEPENDENT_CASES = [
    _ckpt(case("s3-bf16-w3-mixtral-ckpt-b6000", "mixtral-gqa", 3, 3, reduce_bucket_size=6_000)),
]
