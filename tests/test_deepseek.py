"""DeepSeek-V2 and DeepSeek-V3: multi-head latent attention (MLA) and DeepSeek-MoE.

- the tree is what transformers 5 builds (module names, parameter names and shapes, counts)
  for tiny configs (with and without q LoRA, greedy and group-limited routing, dense first
  layers, tied heads) and for DeepseekV2Config's and DeepseekV3Config's defaults, and its call
  order is the order HF's forward really calls the modules (CPU forward pre-hooks);
- forward GEMM FLOPs are 2 × the active matrix parameters per token; the router GEMM runs in
  fp32 (DeepseekV2TopkRouter casts input and weight); attention FLOPs use the q/k head dim for
  QKᵀ and the v head dim for PV;
- the ZeRO-3 view: DeepSeek's MoE block is not one of DeepSpeed's default leaf modules, so
  every module below it is hooked; every parameter's gradient hook fires once (DeepSpeed's own
  collectives, their order and its stage-3 module trace, with and without checkpointing, are
  the schedule-truth cases s*-deepseekv2/v3-* of validation/cpu_truth/cases.py);
- the MLA kernel is refused by profiles with measured (flash, equal head dims) attention
  curves and priced by a one-figure profile; predict answers there;
- activation bytes: DeepSeek's dense first layers keep less than its MoE layers, and the
  memory model sums them; the per-layer bytes are checked against HF on CPU in
  tests/test_family_activation_truth.py;
- layouts transformers would build differently from the checkpoint are refused in one line.
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
from zsim.hardware import load_profile
from zsim.model import from_hf_config
from zsim.modeltree import SELF, model_tree
from zsim.schedule.events import ComputeCore, Grad, Release
from zsim.schedule.z3modules import build_tree, first_use_modules, micro_step_events
from zsim.workload import Workload

_BASE = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
             intermediate_size=96, vocab_size=128, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8,
             v_head_dim=12, n_routed_experts=4, n_shared_experts=2, num_experts_per_tok=2,
             moe_intermediate_size=24, first_k_dense_replace=1)
CONFIGS = {
    "v2-lite-shaped": dict(_BASE, model_type="deepseek_v2", q_lora_rank=None),
    "v2-qlora-group-bias": dict(_BASE, model_type="deepseek_v2", q_lora_rank=20, topk_method="group_limited_greedy",
                                n_group=2, topk_group=1, attention_bias=True, mlp_bias=True),
    "v3": dict(_BASE, model_type="deepseek_v3", q_lora_rank=20, n_group=2, topk_group=1),
    "v3-all-moe-tied": dict(_BASE, model_type="deepseek_v3", q_lora_rank=None, n_group=1, topk_group=1,
                            first_k_dense_replace=0, tie_word_embeddings=True),
}


def _spec(name: str):
    return from_hf_config(CONFIGS[name], name=name)


def _hf_model(cfg: dict, device: str = "meta"):
    return hf_model(cfg, device, "DeepSeek trees against transformers")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_tree_is_what_transformers_builds(name):
    hf = _hf_model(CONFIGS[name])
    spec = _spec(name)
    tree = model_tree(spec)
    assert [n for n, _ in hf.named_modules()] == [n.name for n in tree.named_modules()]
    assert [(n, tuple(p.shape)) for n, p in hf.named_parameters()] == [(p.name, p.shape) for p in tree.parameters()]
    assert sum(p.numel() for p in hf.parameters()) == spec.num_parameters
    assert (hf.lm_head.weight is hf.get_input_embeddings().weight) == bool(tree.node("lm_head").shares)


@pytest.mark.parametrize("cls", ["DeepseekV2Config", "DeepseekV3Config"])
def test_config_class_defaults_count_what_transformers_builds(cls):
    require_truth_packages("DeepSeek parameter counts", "transformers")
    import transformers
    cfg = {k: v for k, v in getattr(transformers, cls)().to_dict().items() if not k.startswith("_")}
    if cfg.get("num_experts_per_tok") is None:   # DeepseekV2Config leaves top-k unset (None)
        cfg["num_experts_per_tok"] = 6
    hf = _hf_model(cfg)
    assert from_hf_config(cfg, name=cls).num_parameters == sum(p.numel() for p in hf.parameters())



@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_call_order_is_hf_forward(name):
    """Forward pre-hooks on a real (CPU) tiny model fire in the tree's call order."""
    assert hf_forward_order(_hf_model(CONFIGS[name], device="cpu")) == calls_in_order(model_tree(_spec(name)))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_forward_flops_are_two_per_active_parameter(name):
    ops, w = check_two_flops_per_active_parameter(_spec(name))
    # the router's GEMMs, and only they, run in fp32
    router = [k for n in ops if n.kind == "router" for k in w.kernels(n.op, "bwd") if k.kind == "gemm"]
    assert router and all(k.precision == "fp32" for k in router)
    assert all(k.precision == "" for n in ops if n.kind != "router" for k in w.kernels(n.op, "bwd"))


def test_mla_attention_flops_use_both_head_dims():
    spec = _spec("v3")   # q/k head dim 8 + 8, v head dim 12, 4 heads
    w = Workload(spec, 2, 64, 2)
    core = [k for k in w.kernels("model.layers.1.self_attn", "fwd") if k.kind == "attention"]
    assert len(core) == 1 and (core[0].head_dim, core[0].v_head_dim) == (16, 12)
    # causal: QKᵀ 2·s²·16 and PV 2·s²·12 per head per sequence, halved
    assert core[0].flops == 2 * 4 * (2 * 64 * 64 * 16 + 2 * 64 * 64 * 12) / 2
    back = [k for k in w.kernels("model.layers.1.self_attn", "bwd") if k.kind == "attention"]
    assert back[0].flops == 2.5 * core[0].flops and back[0].backward


def test_unequal_head_dims_need_their_own_measured_curve():
    """h200-sxm's '192x128' curve (microbenchmark of validation/results/h200/2026-12-01-m8d)
    prices MLA; measured curves without it refuse in one line; one figure prices everything."""
    from dataclasses import replace
    measured = load_profile("h200-sxm").compute
    mla = next(c for c in measured.attention_curves if c.v_head_dim == 128 and c.head_dim == 192)
    assert measured.attention_eff(192, 4096, False, 128) == pytest.approx(mla.points[-1][1])
    assert measured.attention_eff(128, 4096, False, 128) == measured.attention_eff(128, 4096, False)
    flash_only = replace(measured, attention_curves=tuple(c for c in measured.attention_curves if not c.v_head_dim))
    with pytest.raises(ZsimInputError, match="memory-efficient") as err:
        flash_only.attention_eff(192, 4096, False, 128)
    assert "\n" not in str(err.value)
    single = load_profile("h200-sxm-datasheet").compute
    assert not single.attention_curves
    assert single.attention_eff(192, 4096, True, 128) == single.attention_efficiency


def test_dense_first_layers_and_their_activation_bytes():
    spec = _spec("v2-lite-shaped")   # first_k_dense_replace 1 of 3 layers
    tree = model_tree(spec)
    assert tree.node("model.layers.0.mlp").kind == "mlp"
    assert [tree.node(f"model.layers.{i}.mlp").kind for i in (1, 2)] == ["moe_container"] * 2
    w = Workload(spec, 1, 64, 2)
    per_layer = w.activation_bytes_per_layer()
    assert per_layer[0] == w.layer_activation_bytes(0) and per_layer[1] == per_layer[2] == w.layer_activation_bytes()
    assert per_layer[0] != per_layer[1]


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("checkpointing", [False, True])
def test_zero3_hooks_every_module_of_the_moe_block(name, checkpointing):
    """DeepseekV2Moe / DeepseekV3MoE are not in DeepSpeed 0.19.8's DEFAULT_LEAF_MODULE_CLASSES
    (zero/leaf_module_config.py:11-15): gate, experts (and its act_fn) and shared_experts are
    hooked; the experts module fetches its own two 3-D parameters, reduces them after its
    core's backward and releases them at its post-backward hook."""
    spec = _spec(name)
    tree = model_tree(spec)
    mods = build_tree(spec)
    assert sorted(m.name for m in mods) == sorted(n.name for n in tree.named_modules() if n.kind != "module_list")
    assert not any(m.kind == "moe_block" for m in mods)
    uses = Counter(p for m in mods for p in m.params)
    shared = {tree.param_index(s) for n in tree.named_modules() for s in n.shares}
    assert all(uses[p] == (2 if p in shared else 1) for p in range(len(tree.parameters())))
    events = micro_step_events(mods, first_use_modules(mods), checkpointing)
    grads = [e.param for e in events if isinstance(e, Grad)]
    assert sorted(grads) == list(range(len(tree.parameters())))
    last = spec.num_layers - 1
    experts = next(i for i, m in enumerate(mods) if m.name == f"model.layers.{last}.mlp.experts")
    act = next(i for i, m in enumerate(mods) if m.name == f"model.layers.{last}.mlp.experts.act_fn")
    at = next(k for k, e in enumerate(events) if isinstance(e, ComputeCore) and e.module == experts)
    down = tree.param_index(f"model.layers.{last}.mlp.experts.down_proj")
    gate_up = tree.param_index(f"model.layers.{last}.mlp.experts.gate_up_proj")
    assert any(isinstance(e, Release) and not e.forward and e.module == act for e in events[:at])
    assert events[at + 1:at + 4] == [Grad(down), Grad(gate_up), Release(experts, False)]
    assert tree.node(f"model.layers.{last}.mlp.experts").calls == (SELF, "act_fn")


@pytest.mark.parametrize("cfg, field", [
    (dict(CONFIGS["v3"], moe_layer_freq=2), "moe_layer_freq"),
    (dict(CONFIGS["v3"], ep_size=8), "ep_size"),
    (dict(CONFIGS["v3"], scoring_func="softmax"), "scoring_func"),
    (dict(CONFIGS["v2-lite-shaped"], topk_method="noaux_tc"), "topk_method"),
    (dict(CONFIGS["v2-lite-shaped"], topk_method="group_limited_greedy"), "n_group"),
    (dict(CONFIGS["v2-lite-shaped"], num_key_value_heads=2), "num_key_value_heads"),
    (dict(CONFIGS["v2-lite-shaped"], num_experts_per_tok=None), "num_experts_per_tok"),
    (dict(CONFIGS["v3"], n_group=3), "n_group"),
    (dict(CONFIGS["v3"], output_router_logits=True), "output_router_logits"),
])
def test_unmodelled_deepseek_layouts_are_refused_in_one_line(cfg, field):
    with pytest.raises(ZsimInputError, match=field) as err:
        from_hf_config(cfg, name="x")
    assert "\n" not in str(err.value)


def test_published_fields_transformers_ignores_are_ignored():
    """V3's FP8 quantization_config (checkpoint storage), its multi-token-prediction layer
    (transformers 5 builds none) and V2's norm_topk_prob change nothing."""
    base = _spec("v3")
    same = from_hf_config(dict(CONFIGS["v3"], num_nextn_predict_layers=1, aux_loss_alpha=0.001, seq_aux=True,
                               quantization_config={"quant_method": "fp8", "fmt": "e4m3"}), name="v3")
    assert same == base
    assert from_hf_config(dict(CONFIGS["v2-lite-shaped"], norm_topk_prob=True), name="n").norm_topk is False


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_predict_answers_on_a_one_figure_profile(tmp_path: Path, stage, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIGS["v2-lite-shaped"]))
    assert main(["predict", "--model", str(path), "--stage", str(stage), "--topo", "hgx-h200", "--hardware",
                 "h200-sxm-datasheet", "--gpus", "4", "--micro-batch", "1", "--seq", "256", "--no-output"]) == 0
    assert "step time" in capsys.readouterr().out


def test_deepseek_v2_lite_predicts_at_stage_3(capsys):
    assert main(["predict", "--model", "deepseek-ai/DeepSeek-V2-Lite", "--stage", "3", "--topo", "hgx-h200",
                 "--hardware", "h200-sxm-datasheet", "--json", "--no-output"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["num_parameters"] == 15_706_484_224 and out["step_time_s"] > 0 and out["fits"]


def _rows(head_dim, v_head_dim, eff_fwd, eff_bwd, peak=1e15):
    """Attention microbenchmark rows (validation/microbench/attention.py) at two sequences."""
    out = []
    for seq in (1024, 4096):
        f = 2.0 * 4 * 16 * seq * seq * (head_dim + v_head_dim) / 2
        out.append({"head_dim": head_dim, "v_head_dim": v_head_dim, "seq": seq, "fwd_flops": f,
                    "fwd_s": f / (peak * eff_fwd), "fwd_bwd_flops": 3.5 * f,
                    "fwd_bwd_s": f / (peak * eff_fwd) + 2.5 * f / (peak * eff_bwd)})
    return out


def test_a_measured_mla_curve_prices_the_mla_kernel():
    """calibrate keeps the memory-efficient kernel's rows (v_head_dim 128 at q/k 192) apart:
    their own curve, keyed "192x128", out of the flash aggregate; the profile prices MLA with
    exactly that curve and round-trips it."""
    from zsim.calibrate import attention_curves, attention_efficiency
    from zsim.hardware import profile_from_dict
    rows = _rows(128, 128, 0.5, 0.4) + _rows(192, 128, 0.3, 0.2)
    curves = attention_curves(rows, 1e15)
    assert list(curves) == [128, "192x128"]
    assert [p[1:] for p in curves["192x128"]] == [[0.3, 0.2], [0.3, 0.2]]
    assert attention_efficiency(rows, 1e15) == pytest.approx(attention_efficiency(rows[:2], 1e15))
    data = load_profile("h200-sxm").to_dict()
    data["compute"]["attention_curves"] = curves
    prof = profile_from_dict(data)
    assert prof.compute.attention_eff(192, 2048, False, 128) == pytest.approx(0.3)
    assert prof.compute.attention_eff(192, 2048, True, 128) == pytest.approx(0.2)
    assert prof.compute.attention_eff(192, 2048, False) == pytest.approx(0.5)   # equal dims: flash curves only
    with pytest.raises(ZsimInputError, match="'576x512'"):
        prof.compute.attention_eff(576, 2048, False, 512)
    again = profile_from_dict(prof.to_dict())
    assert again.compute.attention_curves == prof.compute.attention_curves
