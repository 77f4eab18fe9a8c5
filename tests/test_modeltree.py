"""Invariants of the one module tree (zsim.modeltree) and of everything read from it.

Each preset and a few odd variants (tied head, q/k/v biases, LayerNorm, learned positions,
head_dim ≠ h/heads) must give a tree whose parameters are the spec's, whose forward order
runs every parameterised module once, whose ZeRO-3 view covers every parameter, and whose
GEMM FLOPs are 2·tokens·(matrix parameters). Where transformers is installed, the tree is
compared with the modules and parameters Hugging Face really builds.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from truth_packages import require_truth_packages
from zsim.model import PRESETS, ModelSpec, from_hf_config
from zsim.modeltree import KINDS, SELF, model_tree
from zsim.schedule.order import forward_modules, hook_order
from zsim.schedule.events import Grad
from zsim.schedule.z3modules import build_tree, first_use_modules, micro_step_events, module_trace
from zsim.workload import Workload

VARIANTS = [
    ModelSpec("tied-gqa", 64, 2, 4, 2, 128, 256, tie_word_embeddings=True),
    ModelSpec("qkv-bias", 64, 3, 4, 4, 96, 300, qkv_bias=True),
    ModelSpec("gpt-tied", 64, 2, 4, 4, 96, 300, mlp="gelu", norm="layernorm", learned_positions=True,
              tie_word_embeddings=True),
    ModelSpec("gpt-rms", 64, 2, 4, 4, 96, 300, mlp="gelu"),
    ModelSpec("wide-heads", 64, 2, 4, 1, 96, 300, norm="layernorm", learned_positions=True, head_dim=32),
]
#: Tiny configs of every family (as HF spells them), compared with transformers below and run
#: through the tree invariants.
FAMILY_CONFIGS = {
    "llama-bias": {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 128, "attention_bias": True,
                   "mlp_bias": True},
    "qwen3": {"model_type": "qwen3", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 128, "head_dim": 32,
              "tie_word_embeddings": True},
    "gemma": {"model_type": "gemma", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 1, "intermediate_size": 96, "vocab_size": 128, "head_dim": 32},
    "gemma2-no-softcap": {"model_type": "gemma2", "hidden_size": 64, "num_hidden_layers": 2,
                          "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 96,
                          "vocab_size": 128, "head_dim": 32, "attn_logit_softcapping": None,
                          "final_logit_softcapping": None},
    "phi3": {"model_type": "phi3", "pad_token_id": 0, "hidden_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 128,
             "resid_pdrop": 0.1},
    "phi": {"model_type": "phi", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 96, "vocab_size": 128, "partial_rotary_factor": 0.5, "resid_pdrop": 0.1},
    "gpt2": {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 128, "n_positions": 32},
    "gpt_neox": {"model_type": "gpt_neox", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "intermediate_size": 96, "vocab_size": 128, "rotary_pct": 0.25},
    "gpt_neox-sequential": {"model_type": "gpt_neox", "hidden_size": 64, "num_hidden_layers": 2,
                            "num_attention_heads": 4, "intermediate_size": 96, "vocab_size": 128,
                            "use_parallel_residual": False, "attention_bias": False, "tie_word_embeddings": True},
    "falcon-mqa": {"model_type": "falcon", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "vocab_size": 128},
    "falcon-new": {"model_type": "falcon", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "num_kv_heads": 2, "new_decoder_architecture": True, "vocab_size": 128},
    "falcon-sequential-bias": {"model_type": "falcon", "hidden_size": 64, "num_hidden_layers": 2,
                               "num_attention_heads": 4, "vocab_size": 128, "parallel_attn": False,
                               "multi_query": False, "bias": True},
    "opt": {"model_type": "opt", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "ffn_dim": 96, "vocab_size": 128, "word_embed_proj_dim": 64, "max_position_embeddings": 32},
    "opt-project-postnorm": {"model_type": "opt", "hidden_size": 64, "num_hidden_layers": 2,
                             "num_attention_heads": 4, "ffn_dim": 96, "vocab_size": 128, "word_embed_proj_dim": 32,
                             "max_position_embeddings": 32, "do_layer_norm_before": False},
    "gemma2-softcap": {"model_type": "gemma2", "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
                       "num_key_value_heads": 2, "head_dim": 32, "intermediate_size": 96, "vocab_size": 128,
                       "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "sliding_window": 16},
    "bloom": {"model_type": "bloom", "hidden_size": 64, "n_layer": 2, "n_head": 4, "vocab_size": 128},
    # BloomConfig's other spellings (n_embed, attribute_map's num_hidden_layers/num_attention_heads)
    "bloom-aliases": {"model_type": "bloom", "n_embed": 64, "num_hidden_layers": 3, "num_attention_heads": 8,
                      "vocab_size": 128, "attention_dropout": 0.1},
}
VARIANTS += [from_hf_config(c, name=n) for n, c in FAMILY_CONFIGS.items()]
# The 70B+ presets repeat the same layer 80-96 times: their trees are checked whole, but
# only the smaller ones run a whole micro-step's events.
SPECS = list(PRESETS.values()) + VARIANTS
IDS = [s.name for s in SPECS]
SMALL = [s for s in SPECS if s.num_layers <= 32]


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_tree_parameters_are_the_specs(spec: ModelSpec) -> None:
    tree = model_tree(spec)
    params = tree.parameters()
    assert list(params) == spec.parameters()
    assert sum(p.numel for p in params) == spec.num_parameters
    assert len({p.name for p in params}) == len(params)
    owner = {p.name: n for n in tree.named_modules() for p in n.params}
    for p in params:
        node = owner[p.name]
        assert p.module == node.name and p.layer == node.layer
        assert p.name.rsplit(".", 1) == [node.name, p.name.rsplit(".", 1)[1]]
        assert p.name.endswith((".weight", ".bias")) and all(d > 0 for d in p.shape)
    # every decoder layer has the same parameters, up to its index
    shapes = [[(p.name[len(tree.layer(i).name):], p.shape) for p in spec.layer_parameters(i)]
              for i in range(spec.num_layers)]
    assert all(s == shapes[0] for s in shapes) and sum(map(len, shapes)) + sum(
        1 for p in params if p.layer in (-1, spec.num_layers)) == len(params)
    assert spec.largest_parameter_numel() == max(p.numel for p in params)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_tree_shape_and_call_order(spec: ModelSpec) -> None:
    tree = model_tree(spec)
    nodes = tree.named_modules()
    assert nodes[0].name == "" and nodes[0].kind == "causal_lm"
    assert len({n.name for n in nodes}) == len(nodes)
    for n in nodes:
        assert n.kind in KINDS, n.kind
        for c in n.children:
            local = c.name[len(n.name) + 1:] if n.name else c.name
            assert c.name == (f"{n.name}.{local}" if n.name else local) and local and "." not in local
        if not n.children:
            assert n.calls == ()
            continue
        # forward() calls every child once (a parameter-less dropout may be called twice, as
        # Phi's resid_dropout is), except modules only eager attention calls; its own op at most once
        called = [x for x in n.calls if x != SELF]
        repeated = [x for x in set(called) if called.count(x) > 1]
        assert all(n.child(x).kind == "dropout" for x in repeated), n.name
        assert sorted(set(called)) == sorted(c.name.rsplit(".", 1)[-1] for c in n.children
                                             if c.kind != "unused"), n.name
        assert n.calls.count(SELF) == (1 if n.op else 0), n.name
    layers = [n for n in nodes if n.kind == "decoder_layer"]
    assert [n.layer for n in layers] == list(range(spec.num_layers))
    assert all(d.layer == n.layer for n in layers for d in n.walk())


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_forward_order_runs_every_parameterised_module_once(spec: ModelSpec) -> None:
    tree = model_tree(spec)
    order = tree.forward()
    assert len({n.op for n in order if n.kind != "dropout"}) == len([n for n in order if n.kind != "dropout"])
    with_params = [n.name for n in tree.named_modules() if n.params or n.shares]
    assert sorted(n.name for n in order if n.params or n.shares) == sorted(with_params)
    assert [n.layer for n in order] == sorted(n.layer for n in order)   # layers run in order
    assert order[0].kind == "embedding" and order[-1].kind == "lm_head"
    # the schedule's forward modules: one gradient hook per parameter, the embedding's last
    modules = forward_modules(spec)
    assert [m.name for m in modules] == [n.op for n in order]
    hooks = hook_order(modules)
    assert sorted(p for p, _ in hooks) == list(range(len(tree.parameters())))
    assert hooks[-1][0] == 0 and [b for _, b in hooks] == sorted(b for _, b in hooks)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_zero3_tree_covers_every_parameter(spec: ModelSpec) -> None:
    tree = model_tree(spec)
    mods = build_tree(spec)
    n_params = len(tree.parameters())
    parents = Counter(c for m in mods for c in m.children)
    assert set(parents) == set(range(1, len(mods))) and set(parents.values()) == {1}
    assert all(c < i for i, m in enumerate(mods) if i for c in m.children)   # children first
    # every module HF calls has hooks (a dropout called twice, twice), the ModuleList and
    # eager-only modules (never called) have none
    assert sorted(set(m.name for m in mods)) == sorted(n.name for n in tree.named_modules()
                                                       if n.kind not in ("module_list", "unused"))
    uses = Counter(p for m in mods for p in m.params)
    shared = {tree.param_index(s) for n in tree.named_modules() for s in n.shares}
    assert set(uses) == set(range(n_params))
    assert all(uses[p] == (2 if p in shared else 1) for p in range(n_params))
    assert all(not m.params for m in mods if m.children)   # containers own no parameters here
    # the leaves' compute ops are the forward order's, containers' ops run inside them
    fetch_fwd = module_trace(spec)[:len(mods)]
    assert sorted(fetch_fwd) == sorted(m.name for m in mods)
    assert all(m.kind != "dropout" or not m.params for m in mods)


@pytest.mark.parametrize("spec", SMALL, ids=[s.name for s in SMALL])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_zero3_events_fire_one_gradient_hook_per_parameter(spec: ModelSpec, checkpointing: bool) -> None:
    mods = build_tree(spec)
    events = micro_step_events(mods, first_use_modules(mods), checkpointing)
    grads = [e.param for e in events if isinstance(e, Grad)]
    assert sorted(grads) == list(range(len(spec.parameters())))


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_gemm_flops_are_two_per_token_per_matrix_parameter(spec: ModelSpec) -> None:
    w = Workload(spec, 2, 64, 2)
    tree = model_tree(spec)
    # every op, the learned position table included, has kernels in each pass
    ops = list(tree.forward())
    assert [n.op for n in ops] == w.all_modules()
    assert all(w.kernels(n.op, "fwd") and w.kernels(n.op, "bwd") for n in ops)
    # eager attention's batched QKᵀ and PV GEMMs multiply activations, not parameters
    # (test_eager_attention_gemms_are_its_two_bmms)
    proj = [n for n in ops if not (n.kind == "attention" and spec.attention_impl != "sdpa")]
    fwd = sum(k.flops for n in proj for k in w.kernels(n.op, "fwd") if k.kind == "gemm")
    bwd = sum(k.flops for n in proj for k in w.kernels(n.op, "bwd") if k.kind == "gemm")
    tables = {"embedding", "position_embedding"}
    owner = {p.name: n for n in tree.named_modules() for p in n.params}
    matrices = sum(p.numel for p in tree.parameters() if len(p.shape) == 2 and owner[p.name].kind not in tables)
    if spec.tie_word_embeddings:   # the head multiplies by the embedding (V, e)
        matrices += math.prod(tree.parameters()[tree.uses(tree.node("lm_head"))[0]].shape)
    assert fwd == 2 * w.tokens * matrices
    assert bwd == 2 * fwd
    for n in ops:
        assert w.kernels(n.op, "recompute") == w.kernels(n.op, "fwd")


@settings(max_examples=60, deadline=None, database=None)
@given(kv=st.integers(1, 4), group=st.integers(1, 4), head_dim=st.sampled_from([8, 16]),
       layers=st.integers(1, 3), inter=st.integers(1, 64), vocab=st.integers(1, 500),
       tied=st.booleans(), bias=st.booleans(), gpt=st.booleans(), layernorm=st.booleans(),
       positions=st.booleans())
def test_random_specs_keep_the_tree_invariants(kv, group, head_dim, layers, inter, vocab, tied, bias,
                                                gpt, layernorm, positions):
    heads = kv * group
    spec = ModelSpec("gen", heads * head_dim, layers, heads, kv, inter, vocab, tie_word_embeddings=tied,
                     qkv_bias=bias, mlp="gelu" if gpt else "swiglu",
                     norm="layernorm" if layernorm else "rmsnorm", learned_positions=positions)
    test_tree_parameters_are_the_specs(spec)
    test_tree_shape_and_call_order(spec)
    test_forward_order_runs_every_parameterised_module_once(spec)
    test_zero3_tree_covers_every_parameter(spec)
    test_zero3_events_fire_one_gradient_hook_per_parameter(spec, True)
    test_gemm_flops_are_two_per_token_per_matrix_parameter(spec)


HF_CONFIGS = {
    "llama-gqa": {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 128},
    "llama-tied": {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
                   "intermediate_size": 96, "vocab_size": 128, "tie_word_embeddings": True},
    "llama-head-dim": {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 32,
                       "intermediate_size": 96, "vocab_size": 128},
    "mistral": {"model_type": "mistral", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 128},
    "qwen2": {"model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 128, "tie_word_embeddings": True},
}


HF_CONFIGS.update(FAMILY_CONFIGS)


@pytest.mark.parametrize("name", sorted(HF_CONFIGS))
def test_tree_is_what_hugging_face_builds(name: str) -> None:
    require_truth_packages("the tree against transformers", "torch", "transformers")
    import torch
    import transformers
    cfg = HF_CONFIGS[name]
    hf_cfg = transformers.AutoConfig.for_model(**cfg)
    with torch.device("meta"):
        hf = transformers.AutoModelForCausalLM.from_config(hf_cfg)
    tree = model_tree(from_hf_config(cfg, name=name))
    hf_names = [n for n, _ in hf.named_modules()]
    registered = set(hf_names)
    # a module registered but never called (kind "unused": an eager-only dropout) may be gone
    # from newer transformers (Falcon's attention_dropout, 5.25); it costs nothing either way
    assert hf_names == [n.name for n in tree.named_modules() if n.kind != "unused" or n.name in registered]
    assert [(n, tuple(p.shape)) for n, p in hf.named_parameters()] == [
        (p.name, p.shape) for p in tree.parameters()]
    # a tied head uses the embedding's tensor; an untied one its own
    head = tree.node("lm_head")
    assert (hf.lm_head.weight is hf.get_input_embeddings().weight) == bool(head.shares)
    assert sum(p.numel() for p in hf.parameters()) == from_hf_config(cfg, name=name).num_parameters


#: MoE families (fused 3-D experts, so not in VARIANTS' Linear-only invariants; tests/test_moe.py
#: checks their own): their trees are compared with transformers' here too.
HF_CONFIGS.update({
    "mixtral": {"model_type": "mixtral", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 128, "num_local_experts": 4,
                "num_experts_per_tok": 2},
    "qwen2_moe": {"model_type": "qwen2_moe", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 128, "num_experts": 4,
                  "num_experts_per_tok": 2, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 48},
    "qwen3_moe": {"model_type": "qwen3_moe", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 128, "num_experts": 4,
                  "num_experts_per_tok": 2, "moe_intermediate_size": 32, "head_dim": 32},
})


@pytest.mark.parametrize("spec", [s for s in SPECS if s.attention_impl != "sdpa"], ids=lambda s: s.name)
def test_eager_attention_gemms_are_its_two_bmms(spec: ModelSpec) -> None:
    """Eager cores (BLOOM's baddbmm/bmm, Gemma-2's two matmuls): [s, d] x [d, s] and
    [s, s] x [s, d] over b·heads batches, the full square each (2·b·H·s²·d FLOPs apiece);
    backward two GEMMs per product; the s² elementwise passes grow 4x when s doubles."""
    b, s = 2, 64
    attn = next(n for n in model_tree(spec).forward() if n.kind == "attention")
    per_bmm = 2 * b * spec.num_heads * s * s * spec.head_dim
    for pass_, count in (("fwd", 2), ("bwd", 4)):
        gemms = [k.flops for k in Workload(spec, b, s, 2).kernels(attn.op, pass_) if k.kind == "gemm"]
        assert gemms == [per_bmm] * count
    def per_token(seq: int) -> float:   # c + a·seq: token-wide copies plus the s² passes
        w = Workload(spec, b, seq, 2)
        return sum(k.nbytes for k in w.kernels(attn.op, "fwd")) / w.tokens
    assert per_token(128) - per_token(64) == pytest.approx(2 * (per_token(64) - per_token(32)), rel=1e-9)
    assert per_token(64) > per_token(32)
