"""Schedule-truth cases of DeepSpeed-MoE expert parallelism, and zsim's side of them.

Each case is a harness case (harness.py) with a ``deepspeed_moe`` dict (the keyword
arguments of ``deepspeed.moe.layer.MoE``); the worker replaces every MoE block of the tiny
Mixtral by a DeepSpeed-MoE layer (expert_parallel.py) and records rank 0's collectives in
order WITH their groups. :func:`zsim_sequence` is zsim's schedule of the same case in the
same form, ``[(op, message bytes, sorted ranks of the group)]``, rank 0's view.

    python -m validation.cpu_truth.expert_cases       # run every case, print the comparison
"""

from __future__ import annotations

import copy
import dataclasses
import sys

from .cases import ds_config
from .grouped import compare_cases, truth_sequence  # noqa: F401  (truth_sequence: the tests')

#: Mixtral, 4 experts of width 96, top-2, hidden 64, 2 layers (expert params 6144 elements).
MIXTRAL_4E = dict(model_type="mixtral", hidden_size=64, intermediate_size=96, num_attention_heads=4,
                  num_key_value_heads=2, num_hidden_layers=2, vocab_size=256, num_local_experts=4,
                  num_experts_per_tok=2, max_position_embeddings=64, tie_word_embeddings=False)
#: Qwen3-MoE, 8 experts of width 32 (moe_intermediate_size), top-2.
QWEN3_MOE_8E = dict(model_type="qwen3_moe", hidden_size=64, intermediate_size=128, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, num_hidden_layers=2, vocab_size=256, num_experts=8,
                    num_experts_per_tok=2, moe_intermediate_size=32, max_position_embeddings=64,
                    tie_word_embeddings=False)

#: Qwen2-MoE, 8 experts of width 32, top-2, with a dense shared expert of width 48 (and its gate).
QWEN2_MOE_8E = dict(model_type="qwen2_moe", hidden_size=64, intermediate_size=128, num_attention_heads=4,
                    num_key_value_heads=2, num_hidden_layers=2, vocab_size=256, num_experts=8,
                    num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=48,
                    max_position_embeddings=64, tie_word_embeddings=False)

#: DeepSeek-V2 (MLA without q LoRA, a dense first layer, 8 experts of width 24, top-2, 2 shared)
#: and DeepSeek-V3 (q LoRA, 1 shared), three layers.
DEEPSEEK_V2_8E = dict(model_type="deepseek_v2", hidden_size=64, intermediate_size=128, num_attention_heads=4,
                      num_key_value_heads=4, num_hidden_layers=3, vocab_size=256, q_lora_rank=None,
                      kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=12, n_routed_experts=8,
                      n_shared_experts=2, num_experts_per_tok=2, moe_intermediate_size=24, first_k_dense_replace=1,
                      max_position_embeddings=64, tie_word_embeddings=False)
DEEPSEEK_V3_8E = dict(DEEPSEEK_V2_8E, model_type="deepseek_v3", q_lora_rank=20, n_shared_experts=1, n_group=2,
                      topk_group=1)


def ep_case(cid: str, model: dict, world: int, stage: int, moe: dict, precision: str = "bf16", gas: int = 1,
            micro: int = 1, seq_len: int = 16, checkpointing: bool = False, **zero) -> dict:
    """One expert-parallel case."""
    return {"id": cid, "model_name": cid, "model": copy.deepcopy(model), "world_size": world, "steps": 2,
            "ds_config": ds_config(stage, precision, gas, micro, **zero), "seq_len": seq_len,
            "activation_checkpointing": checkpointing, "deepspeed_moe": dict(moe)}


EP_CASES: list[dict] = [
    # ep = world: the expert-data-parallel group has one rank (its all-reduces still run)
    ep_case("ep2-w2-s2-bf16", MIXTRAL_4E, 2, 2, dict(ep_size=2, k=2)),
    # ep 2 of 4: expert states partitioned over [0, 2]; small buckets split experts from the rest
    ep_case("ep2-w4-s2-bf16-b6000", MIXTRAL_4E, 4, 2, dict(ep_size=2, k=2), reduce_bucket_size=6000),
    ep_case("ep2-w4-s1-fp32-gas2-b20000-top1-cf1.5", MIXTRAL_4E, 4, 1,
            dict(ep_size=2, k=1, capacity_factor=1.5, min_capacity=2), "fp32", gas=2, reduce_bucket_size=20000),
    ep_case("ep4-w4-s2-bf16-qwen3-mb2-cf0.7-ckpt", QWEN3_MOE_8E, 4, 2,
            dict(ep_size=4, k=2, capacity_factor=0.7, min_capacity=3), micro=2, checkpointing=True,
            reduce_bucket_size=5000),
    # 8 ranks: ep 4 (expert-data-parallel groups [0, 4], [1, 5], ...), stage 1 with overlap_comm
    ep_case("ep4-w8-s1-bf16-overlap-qwen3-b3000", QWEN3_MOE_8E, 8, 1, dict(ep_size=4, k=2, min_capacity=0),
            overlap_comm=True, reduce_bucket_size=3000),
    ep_case("ep2-w8-s2-fp32-gas2-b4000", MIXTRAL_4E, 8, 2, dict(ep_size=2, k=2), "fp32", gas=2,
            reduce_bucket_size=4000),
    # stage 0: the engine all-reduces non-expert, then expert gradients; bf16's overflow flag
    # goes over the expert-parallel group
    ep_case("ep2-w4-s0-bf16-gas2", MIXTRAL_4E, 4, 0, dict(ep_size=2, k=2), gas=2),
    ep_case("ep2-w4-s0-fp32", MIXTRAL_4E, 4, 0, dict(ep_size=2, k=2), "fp32"),
    ep_case("ep2-w4-s2-bf16-residual-overlap", MIXTRAL_4E, 4, 2, dict(ep_size=2, k=2, use_residual=True),
            overlap_comm=True, reduce_bucket_size=9000),
    # Qwen2-MoE: the shared expert and its gate stay dense, in the non-expert param group
    ep_case("ep2-w4-s2-bf16-qwen2-shared-b5000", QWEN2_MOE_8E, 4, 2, dict(ep_size=2, k=2), reduce_bucket_size=5000),
    ep_case("ep4-w8-s1-fp32-qwen2-shared-gas2-ckpt", QWEN2_MOE_8E, 8, 1, dict(ep_size=4, k=2, min_capacity=0),
            "fp32", gas=2, checkpointing=True, reduce_bucket_size=4000),
    ep_case("ep2-w4-s0-bf16-qwen2-shared", QWEN2_MOE_8E, 4, 0, dict(ep_size=2, k=2)),
    # DeepSeek: the first layer stays dense, the shared experts stay dense next to the layer
    ep_case("ep2-w4-s2-bf16-deepseekv2-b5000", DEEPSEEK_V2_8E, 4, 2, dict(ep_size=2, k=2), reduce_bucket_size=5000),
    ep_case("ep4-w4-s1-bf16-deepseekv3-ckpt-b4000", DEEPSEEK_V3_8E, 4, 1, dict(ep_size=4, k=2, min_capacity=0),
            checkpointing=True, reduce_bucket_size=4000),
]


def zsim_spec(case: dict):
    """zsim's model of a case: the HF config with DeepSpeed-MoE layers."""
    from zsim.model import from_hf_config
    from zsim.parallel.expert import moe_config
    spec = from_hf_config(case["model"], name=case["model_name"])
    return dataclasses.replace(spec, deepspeed_moe=moe_config(case["deepspeed_moe"], None))


def zsim_sequence(case: dict) -> list[tuple[str, int, list[int]]]:
    """zsim's collectives of one steady-state step in issue order, as rank 0 sees them."""
    from zsim.dsconfig import Overrides, build_run_config
    from zsim.schedule import build_schedule
    spec = zsim_spec(case)
    world = case["world_size"]
    run = build_run_config(case["ds_config"], spec, world, Overrides(
        activation_checkpointing=bool(case.get("activation_checkpointing")), seq_len=case.get("seq_len", 16)))
    ep = spec.deepspeed_moe.ep_size
    out = []
    for op in build_schedule(spec, run).ops:
        if op.kind != "collective":
            continue
        out.append((op.collective, op.message_bytes, rank0_ranks(op.group.label, world, ep)))
    return out


def rank0_ranks(label: str, world: int, ep: int) -> list[int]:
    """Global ranks of rank 0's copy of a group, by its label (DeepSpeed's layout,
    deepspeed/utils/groups.py:433-445)."""
    if label.startswith("expert_data_"):
        return list(range(0, world, ep))
    if label.startswith("expert_"):
        return list(range(ep))
    return list(range(world))


def main() -> int:
    """Run every case; print whether zsim's grouped sequence equals DeepSpeed's."""
    return compare_cases(EP_CASES, zsim_sequence)


if __name__ == "__main__":
    sys.exit(main())
