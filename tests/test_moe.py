"""Mixture-of-experts decoders (Mixtral, Qwen2-MoE, Qwen3-MoE) without expert parallelism.

- the tree is what transformers builds (module names, parameter names and shapes, counts)
  for tiny configs and for the config classes' defaults (Mixtral-8x7B, Qwen1.5-MoE-A2.7B,
  Qwen3-MoE), and its call order is the order HF's forward really calls the modules;
- forward GEMM FLOPs are 2 × the ACTIVE matrix parameters per token (top-k experts);
- the ZeRO-3 view is DeepSpeed's: the sparse MoE block is one leaf module (its children
  unhooked) holding every parameter below it (schedule truth: validation/cpu_truth/cases.py);
- activation bytes per layer equal what HF's graph keeps (measured on CPU);
- unmodelled MoE layouts are refused in one line; predict works. DeepSeek-V2/V3:
  tests/test_deepseek.py.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from hf_trees import calls_in_order, hf_forward_order, hf_model
from moe_flops import check_two_flops_per_active_parameter
from truth_packages import require_truth_packages
from zsim.cli import main
from zsim.errors import ZsimInputError
from zsim.model import from_hf_config
from zsim.modeltree import SELF, model_tree
from zsim.schedule.events import Grad
from zsim.schedule.order import forward_modules, hook_order
from zsim.schedule.z3modules import build_tree, first_use_modules, micro_step_events, module_trace
from zsim.workload import Workload, expert_groups

_BASE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=96, vocab_size=128)
MOE_CONFIGS = {
    "mixtral": dict(_BASE, model_type="mixtral", num_local_experts=4, num_experts_per_tok=2),
    "mixtral-alias-tied": dict(_BASE, model_type="mixtral", num_experts=3, num_experts_per_tok=1,
                               tie_word_embeddings=True),
    "qwen2_moe": dict(_BASE, model_type="qwen2_moe", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                      shared_expert_intermediate_size=48),
    "qwen2_moe-nobias-norm": dict(_BASE, model_type="qwen2_moe", num_experts=6, num_experts_per_tok=3,
                                  moe_intermediate_size=16, shared_expert_intermediate_size=40, qkv_bias=False,
                                  norm_topk_prob=True),
    "qwen3_moe": dict(_BASE, model_type="qwen3_moe", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                      head_dim=32),
}
REAL_SIZES = ["MixtralConfig", "Qwen2MoeConfig", "Qwen3MoeConfig"]


def _spec(name: str):
    return from_hf_config(MOE_CONFIGS[name], name=name)


def _hf_model(cfg: dict, device: str = "meta"):
    return hf_model(cfg, device, "MoE trees against transformers")


@pytest.mark.parametrize("name", sorted(MOE_CONFIGS))
def test_tree_is_what_transformers_builds(name):
    hf = _hf_model(MOE_CONFIGS[name])
    spec = _spec(name)
    tree = model_tree(spec)
    assert [n for n, _ in hf.named_modules()] == [n.name for n in tree.named_modules()]
    assert [(n, tuple(p.shape)) for n, p in hf.named_parameters()] == [(p.name, p.shape) for p in tree.parameters()]
    assert sum(p.numel() for p in hf.parameters()) == spec.num_parameters


@pytest.mark.parametrize("cls", REAL_SIZES)
def test_published_defaults_count_what_transformers_builds(cls):
    require_truth_packages("MoE parameter counts", "transformers")
    import transformers
    cfg = {k: v for k, v in getattr(transformers, cls)().to_dict().items() if not k.startswith("_")}
    hf = _hf_model(cfg)
    assert from_hf_config(cfg, name=cls).num_parameters == sum(p.numel() for p in hf.parameters())



@pytest.mark.parametrize("name", sorted(MOE_CONFIGS))
def test_call_order_is_hf_forward(name):
    """Forward pre-hooks on a real (CPU) tiny model fire in the tree's call order."""
    assert hf_forward_order(_hf_model(MOE_CONFIGS[name], device="cpu")) == calls_in_order(model_tree(_spec(name)))


@pytest.mark.parametrize("name", sorted(MOE_CONFIGS))
def test_forward_flops_are_two_per_active_parameter(name):
    check_two_flops_per_active_parameter(_spec(name))


def test_expert_groups_are_the_expected_rows():
    spec = _spec("mixtral")   # 4 experts, top-2
    assert expert_groups(spec, 64) == (4, 32.0)
    assert expert_groups(spec, 1) == (2, 1.0)   # fewer routed rows than experts: only those run
    w = Workload(spec, 1, 64, 2)
    gemms = [k for k in w.kernels("model.layers.0.mlp.experts", "fwd") if k.kind == "gemm"]
    assert len(gemms) == 2 * 4 and sum(k.launches for k in gemms) == 2   # one grouped launch each


@pytest.mark.parametrize("name", sorted(MOE_CONFIGS))
@pytest.mark.parametrize("checkpointing", [False, True])
def test_zero3_sees_the_moe_block_as_one_leaf(name, checkpointing):
    """DeepSpeed 0.19.8's default leaf modules (the three SparseMoeBlock classes): the block
    is hooked, its children are not; it holds every parameter below it and reduces their
    gradients together, in parameter order, after its backward."""
    spec = _spec(name)
    tree = model_tree(spec)
    mods = build_tree(spec)
    uses = Counter(p for m in mods for p in m.params)
    assert set(uses) == set(range(len(tree.parameters())))
    blocks = [m for m in mods if m.kind == "moe_block"]
    assert [m.name for m in blocks] == [f"model.layers.{i}.mlp" for i in range(spec.num_layers)]
    for m in blocks:
        below = [p for n in tree.node(m.name).walk() for p in n.params]
        assert not m.children and [tree.parameters()[i] for i in m.params] == below
    assert not any(".mlp." in m.name for m in mods)
    events = micro_step_events(mods, first_use_modules(mods), checkpointing)
    grads = [e.param for e in events if isinstance(e, Grad)]
    assert sorted(grads) == list(range(len(tree.parameters())))
    block = blocks[-1].params
    assert [p for p in grads if p in block] == list(block)
    trace = module_trace(spec, checkpointing)
    assert trace.count("model.layers.0.mlp") == (3 if checkpointing else 2)
    # the block's op is priced as its ops (router, experts, act_fn [, shared expert])
    w = Workload(spec, 1, 32, 2)
    ops = [n.op for n in tree.forward(tree.node("model.layers.0.mlp"))]
    assert w.kernels("model.layers.0.mlp", "bwd") == tuple(k for op in ops for k in w.kernels(op, "bwd"))
    # stages 1/2 (plain autograd hooks): down_proj's gradient completes before gate_up_proj's
    order = [p for p, _ in hook_order(forward_modules(spec))]
    down = tree.param_index("model.layers.1.mlp.experts.down_proj")
    assert order.index(down) < order.index(tree.param_index("model.layers.1.mlp.experts.gate_up_proj"))
    assert tree.node("model.layers.0.mlp.experts").calls == (SELF, "act_fn")


@pytest.mark.parametrize("shape", ["mixtral-8e-top2", "qwen2-moe-shared", "qwen3-moe", "qwen3-moe-norm-top2"])
def test_activation_bytes_are_what_hf_keeps(shape):
    require_truth_packages("MoE activation bytes", "torch", "transformers")
    from validation.cpu_truth.moe_activation_memory import per_layer_bytes, zsim_per_layer_bytes
    assert zsim_per_layer_bytes(shape) == pytest.approx(per_layer_bytes(shape), rel=0.005)


@pytest.mark.parametrize("cfg, field", [
    (dict(MOE_CONFIGS["qwen2_moe"], decoder_sparse_step=2), "decoder_sparse_step"),
    (dict(MOE_CONFIGS["qwen3_moe"], mlp_only_layers=[0]), "mlp_only_layers"),
    (dict(MOE_CONFIGS["mixtral"], output_router_logits=True), "output_router_logits"),
    (dict(MOE_CONFIGS["mixtral"], router_jitter_noise=0.01), "router_jitter_noise"),
    (dict(MOE_CONFIGS["mixtral"], num_experts_per_tok=5), "num_experts_per_tok"),
    (dict(MOE_CONFIGS["mixtral"], num_experts=5), "disagree"),
    (dict(MOE_CONFIGS["qwen2_moe"], use_sliding_window=True), "use_sliding_window"),
    (dict(_BASE, model_type="llama", num_local_experts=8), "mixture of experts"),
    (dict(_BASE, model_type="qwen2_moe", num_experts=4, kv_lora_rank=16), "MLA"),
    (dict(_BASE, model_type="mixtral", n_routed_experts=8), "n_routed_experts"),
])
def test_unmodelled_moe_is_refused_in_one_line(cfg, field):
    with pytest.raises(ZsimInputError, match=field) as err:
        from_hf_config(cfg, name="x")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_predict_runs(tmp_path: Path, stage, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(MOE_CONFIGS["qwen2_moe"]))
    assert main(["predict", "--model", str(path), "--stage", str(stage), "--gpus", "4", "--micro-batch", "1",
                 "--seq", "256", "--no-output"]) == 0
    assert "step time" in capsys.readouterr().out


def test_mixtral_8x7b_predicts_its_published_size(tmp_path: Path, capsys):
    require_truth_packages("Mixtral's published defaults", "transformers")
    import transformers
    cfg = {k: v for k, v in transformers.MixtralConfig().to_dict().items() if not k.startswith("_")}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    assert main(["predict", "--model", str(path), "--stage", "3", "--nodes", "2", "--micro-batch", "1",
                 "--seq", "4096", "--json", "--no-output"]) == 0
    out = json.loads(capsys.readouterr().out)
    spec = from_hf_config(cfg, name="mixtral")
    assert spec.num_parameters == 46_702_792_704
    # model FLOPs per token: 6 × the active matrix parameters (2 of the 8 experts, no embedding
    # table) plus causal attention (2·s·q forward per layer, 2.5 × that backward)
    w = Workload(spec, 1, 4096, 2)
    h, layers, inter, vocab = 4096, 32, 14336, 32000
    idle_experts = layers * (8 - 2) * 3 * inter * h
    active = spec.num_parameters - vocab * h - idle_experts
    norms = (2 * layers + 1) * h
    attention = layers * 3.5 * 2 * 4096 * 4096
    assert w.model_flops_per_token() == pytest.approx(6 * (active - norms) + attention, rel=1e-9)
    assert out["step_time_s"] > 0 and 0 < out["mfu"] < 1
