"""DeepSpeed-MoE expert parallelism (zsim.parallel.expert, zsim.modeltree.dsmoe).

Truth: real ``deepspeed.moe.layer.MoE`` layers on CPU gloo ranks (validation/cpu_truth/
expert_cases.py) must issue exactly zsim's collectives, in order, on the same groups, and
build exactly zsim's parameters and ZeRO param groups. Invariants and refusals run without
DeepSpeed; the capacity formula is compared with DeepSpeed's own ``_capacity`` when installed.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from truth_packages import require_truth_packages  # noqa: E402
from validation.cpu_truth.expert_cases import (EP_CASES, MIXTRAL_4E, QWEN3_MOE_8E, truth_sequence,  # noqa: E402
                                               zsim_sequence, zsim_spec)
from zsim.dsconfig import Overrides, build_run_config  # noqa: E402
from zsim.errors import ZsimInputError  # noqa: E402
from zsim.model import from_hf_config, load_model  # noqa: E402
from zsim.parallel.expert import (capacity, expert_groups, expert_plan, global_parameter_count,  # noqa: E402
                                  moe_config, with_deepspeed_moe)
from zsim.parallel.expert_zero import moe_layout  # noqa: E402
from zsim.schedule import build_schedule  # noqa: E402


def _spec(model: dict = MIXTRAL_4E, **moe):
    return dataclasses.replace(from_hf_config(model, "tiny"), deepspeed_moe=moe_config(moe, None))


def _run(spec, world: int, stage: int = 2, **over):
    cfg = {"train_micro_batch_size_per_gpu": over.pop("micro_batch", 1),
           "gradient_accumulation_steps": over.pop("grad_accum", 1),
           "zero_optimization": {"stage": stage, **over.pop("zero", {})}, "bf16": {"enabled": True}}
    return build_run_config(cfg, spec, world, Overrides(seq_len=over.pop("seq_len", 16), **over))


def _collectives(spec, run, op: str) -> list:
    return [o for o in build_schedule(spec, run).ops if o.kind == "collective" and o.collective == op]


# ---- truth ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def truth() -> dict:
    """DeepSpeed's runs of every expert-parallel case (once per module)."""
    require_truth_packages("expert-parallel truth", "torch", "deepspeed", "transformers")
    import deepspeed
    assert deepspeed.__version__.startswith("0.19.8"), deepspeed.__version__
    from validation.cpu_truth.runner import run_cases
    return run_cases(EP_CASES, jobs=1)


@pytest.mark.schedule_truth
@pytest.mark.parametrize("case", EP_CASES, ids=[c["id"] for c in EP_CASES])
def test_collectives_groups_and_order_match_deepspeed(case: dict, truth: dict) -> None:
    """Every collective rank 0 issues in a steady-state step: op, comms-logger bytes and the
    ranks of its group, in issue order, equal zsim's schedule."""
    result = truth[case["id"]]
    assert "error" not in result, result.get("error")
    assert [list(x) for x in zsim_sequence(case)] == [list(x) for x in truth_sequence(result)]
    # the counts the comms logger keeps agree with the recorded sequence
    counted: dict = {}
    for op, n, _ in truth_sequence(result):
        counted.setdefault(op, {}).setdefault(str(n), 0)
        counted[op][str(n)] += 1
    assert counted == result["collectives"]


@pytest.mark.schedule_truth
@pytest.mark.parametrize("case", EP_CASES, ids=[c["id"] for c in EP_CASES])
def test_parameters_and_zero_groups_match_deepspeed(case: dict, truth: dict) -> None:
    """Each rank's parameters (names, sizes: its local experts only) and the ZeRO param
    groups DeepSpeed flattens (expert or not, padded size, partition, group ranks)."""
    result = truth[case["id"]]
    assert "error" not in result, result.get("error")
    spec = zsim_spec(case)
    world, ep = case["world_size"], spec.deepspeed_moe.ep_size
    mine = {p.name: p.numel for p in spec.parameters()}
    layout = moe_layout(spec, world, expert_groups(world, ep, None))
    for rank, extras in enumerate(result["extras"]):
        assert extras["parameter_numels"] == mine
        groups = [{"moe": g.moe, "params": len(g.params), "flat_numel": lay.padded_numel,
                   "partition_numel": lay.partition_numel, "group_size": g.world,
                   "group_ranks": (list(range(rank % ep, world, ep)) if g.moe else list(range(world)))}
                  for g, lay in zip(layout.groups, layout.layouts)]
        stage = case["ds_config"]["zero_optimization"]["stage"]
        assert extras["optimizer_groups"] == (groups if stage else [])   # stage 0: no ZeRO groups


@pytest.mark.schedule_truth
def test_truth_all_to_alls_per_layer(truth: dict) -> None:
    """DeepSpeed issues 4 all-to-alls per MoE layer and micro-batch (6 with checkpointing);
    DeepSeek's first first_k_dense_replace layers have none."""
    for case in EP_CASES:
        result = truth[case["id"]]
        assert "error" not in result, result.get("error")
        per = 6 if case.get("activation_checkpointing") else 4
        gas = case["ds_config"]["gradient_accumulation_steps"]
        calls = sum(result["collectives"].get("all_to_all_single", {}).values())
        moe_layers = case["model"]["num_hidden_layers"] - case["model"].get("first_k_dense_replace", 0)
        assert calls == per * moe_layers * gas


# ---- capacity -----------------------------------------------------------------------------------

CAPACITY_GRID = [(s, e, k, cf, mc) for s in (1, 7, 16, 100, 1000, 4096, 32768) for e in (4, 8, 60, 128)
                 for k in (1, 2, 4) for cf in (0.5, 0.7, 1.0, 1.1, 1.25, 2.0) for mc in (0, 4, 8)]


def test_capacity_matches_deepspeed() -> None:
    """zsim's capacity equals deepspeed.moe.sharded_moe._capacity with the factor each gating
    function passes (capacity_factor · k), over a grid of shapes."""
    require_truth_packages("capacity truth", "torch", "deepspeed")
    import torch
    from deepspeed.moe.sharded_moe import _capacity
    for s, e, k, cf, mc in CAPACITY_GRID:
        gates = torch.empty(s, e)
        factor = cf if k == 1 else cf * k
        ds = int(_capacity(gates, torch.tensor(factor), torch.tensor(mc)))
        assert capacity(s, e, k, cf, mc) == ds, (s, e, k, cf, mc)


def test_capacity_formula_without_deepspeed() -> None:
    """ceil(S/E · cf · k) clamped below by min_capacity, on values exact in binary."""
    assert capacity(16, 4, 2, 1.0, 4) == 8
    assert capacity(16, 4, 2, 1.0, 9) == 9
    assert capacity(100, 8, 1, 1.5, 0) == 19      # ceil(18.75)
    assert capacity(4096, 8, 2, 1.0, 4) == 1024


# ---- invariants --------------------------------------------------------------------------------

def test_no_flag_leaves_the_model_alone() -> None:
    """Without --ep / --moe-config the model's own MoE blocks stay (today's predictions)."""
    spec = load_model("mistralai/Mixtral-8x7B-v0.1")
    assert with_deepspeed_moe(spec, None, None) is spec
    assert spec.deepspeed_moe is None


def test_expert_bytes_per_rank_scale_with_ep() -> None:
    """Each rank holds num_experts/ep experts: its expert parameters are 1/ep of all experts,
    its non-expert parameters unchanged; the global count does not depend on ep."""
    base = load_model("mistralai/Mixtral-8x7B-v0.1")
    counts = {}
    for ep in (1, 2, 4, 8):
        spec = with_deepspeed_moe(base, None, ep)
        expert = sum(p.numel for p in spec.parameters() if ".deepspeed_experts." in p.name)
        dense = spec.num_parameters - expert
        counts[ep] = (expert, dense, global_parameter_count(spec))
    for ep in (2, 4, 8):
        assert counts[ep][0] * ep == counts[1][0]
        assert counts[ep][1] == counts[1][1]
        assert counts[ep][2] == counts[1][2]
    # one expert of the DeepSpeed-MoE layer holds what the fused HF experts hold per expert
    assert counts[1][2] == base.num_parameters


@pytest.mark.parametrize("gas,ckpt", [(1, False), (3, False), (2, True)])
def test_all_to_alls_per_layer_and_micro_batch(gas: int, ckpt: bool) -> None:
    """4 all-to-alls per MoE layer per micro-batch (6 with activation checkpointing), each
    of E·C·h·p bytes on the expert-parallel group; none with ep 1."""
    spec = _spec(ep_size=2, k=2)
    run = _run(spec, 4, grad_accum=gas, activation_checkpointing=ckpt)
    ops = _collectives(spec, run, "all_to_all_single")
    plan = expert_plan(spec, 1, 16, 2)
    assert len(ops) == (6 if ckpt else 4) * spec.num_layers * gas
    assert {o.message_bytes for o in ops} == {spec.num_experts * plan.capacity * spec.hidden_size * 2}
    assert {o.group.label for o in ops} == {"expert_2"}
    one = _spec(ep_size=1, k=2)
    assert _collectives(one, _run(one, 4), "all_to_all_single") == []


def test_capacity_factor_scales_all_to_all_and_expert_flops() -> None:
    """capacity_factor changes the capacity, hence both the all-to-all bytes and the expert
    GEMMs (which run on the padded ep·C rows)."""
    from zsim.workload import Workload
    seq = 512
    small, big = _spec(ep_size=2, k=2, capacity_factor=1.0), _spec(ep_size=2, k=2, capacity_factor=2.0)
    c1, c2 = expert_plan(small, 1, seq, 2).capacity, expert_plan(big, 1, seq, 2).capacity
    assert c2 == 2 * c1
    b1 = _collectives(small, _run(small, 4, seq_len=seq), "all_to_all_single")[0].message_bytes
    b2 = _collectives(big, _run(big, 4, seq_len=seq), "all_to_all_single")[0].message_bytes
    assert b2 == 2 * b1
    op = "model.layers.0.mlp.moe.deepspeed_moe.experts.deepspeed_experts.0.gate_proj"
    assert Workload(big, 1, seq).flops(op, "fwd") == 2 * Workload(small, 1, seq).flops(op, "fwd")


def test_expert_gradients_and_states_use_the_expert_data_group() -> None:
    """Expert gradients are reduced, and expert states partitioned, over world/ep ranks;
    everything else over the world."""
    spec = _spec(ep_size=2, k=2)
    world = 8
    run = _run(spec, world, zero={"reduce_bucket_size": 6000})
    groups = expert_groups(world, 2, 8)
    assert groups.expert_data.size(world, 8) == 4 and groups.expert.size(world, 8) == 2
    layout = moe_layout(spec, world, groups)
    expert_numel = sum(p.numel for p in spec.parameters() if ".deepspeed_experts." in p.name)
    assert layout.layouts[1].padded_numel >= expert_numel and layout.groups[1].world == 4
    reduces = {o.group.label for o in _collectives(spec, run, "all_reduce")}
    assert reduces == {"world", "expert_data_4"}


@pytest.mark.parametrize("limit", [6144, 12288, 20000, 40000])
def test_expert_param_groups_match_deepspeeds_split(limit: int) -> None:
    """The expert parameters are cut into param groups as DeepSpeed's
    split_params_into_different_moe_groups_for_optimizer cuts them at ``max_group_size``
    (run on tensors of the same sizes, marked as DeepSpeed marks expert parameters)."""
    require_truth_packages("MoE param-group truth", "torch", "deepspeed")
    import torch
    from deepspeed.moe.utils import split_params_into_different_moe_groups_for_optimizer
    spec = _spec(ep_size=2, k=2)
    params = []
    for p in spec.parameters():
        t = torch.nn.Parameter(torch.empty(p.numel))
        if ".deepspeed_experts." in p.name:
            t.allreduce, t.group_name = False, "ep_size_2"   # experts.py:24-26
        params.append(t)
    groups = split_params_into_different_moe_groups_for_optimizer({"params": params, "name": "dense"},
                                                                   max_group_size=limit)
    index = {id(t): i for i, t in enumerate(params)}
    theirs = [(bool(g.get("moe")), [index[id(t)] for t in g["params"]]) for g in groups]
    layout = moe_layout(spec, 4, expert_groups(4, 2, None), max_group_numel=limit)
    assert [(g.moe, list(g.params)) for g in layout.groups] == theirs


def test_expert_groups_placement() -> None:
    """The expert-parallel group stays in a node while ep divides the node's GPUs; a larger
    one spans whole nodes; the expert-data-parallel group takes every ep-th rank."""
    g = expert_groups(16, 4, 8)
    assert g.expert.placement(8, 2) == (4, 1, True) and g.expert_data.placement(8, 2) == (2, 2, True)
    g = expert_groups(32, 16, 8)
    assert g.expert.placement(8, 4) == (8, 2, False) and g.expert_data.size(32, 8) == 2
    with pytest.raises(ZsimInputError):
        expert_groups(12, 8, 8)


def test_default_k_is_the_models() -> None:
    """Without k the layer routes the model's num_experts_per_tok experts per token."""
    spec = with_deepspeed_moe(load_model("mistralai/Mixtral-8x7B-v0.1"), None, 2)
    assert expert_plan(spec, 1, 4096, 2).k == 2


# ---- refusals -----------------------------------------------------------------------------------

@pytest.mark.parametrize("moe,stage,zero,msg", [
    (dict(ep_size=2), 3, {}, "engine.py:2214"),
    (dict(ep_size=2), 2, {"offload_optimizer": {"device": "cpu"}}, "Offload"),
    (dict(ep_size=2), 2, {"round_robin_gradients": True}, "round_robin_gradients"),
    (dict(ep_size=2), 2, {"reduce_scatter": False}, "reduce_scatter"),
])
def test_run_refusals(moe: dict, stage: int, zero: dict, msg: str) -> None:
    """What DeepSpeed refuses with MoE layers, or zsim does not model, is one error."""
    spec = _spec(**moe)
    with pytest.raises(ZsimInputError, match=msg):
        build_schedule(spec, _run(spec, 4, stage, zero=zero))


@pytest.mark.parametrize("given,msg", [
    (dict(ep_size=3), "layer.py:59"),
    (dict(drop_tokens=False), "drop_tokens"),
    (dict(use_tutel=True), "use_tutel"),
    (dict(noisy_gate_policy="Jitter"), "noisy_gate_policy"),
    (dict(noisy_gate_policy="bad"), "layer.py:69"),
    (dict(capacity_factor=0), "capacity_factor"),
    (dict(bogus=1), "unknown key"),
    (dict(num_experts=4), "from the model"),
    (dict(k=5), "exceeds"),
])
def test_config_refusals(given: dict, msg: str) -> None:
    """Bad or unmodelled MoE arguments are one ZsimInputError naming the key."""
    with pytest.raises(ZsimInputError, match=msg):
        _spec(**given)


def test_stage0_reduces_expert_gradients_over_their_group() -> None:
    """Stage 0: the engine all-reduces non-expert gradients over all ranks, then the expert
    ones over the expert-data-parallel group; bf16's overflow flag goes over the
    expert-parallel group."""
    spec = _spec(ep_size=2, k=2)
    ops = _collectives(spec, _run(spec, 4, 0), "all_reduce")
    expert = sum(p.numel for p in spec.parameters() if ".deepspeed_experts." in p.name)
    assert [(o.message_bytes, o.group.label) for o in ops] == [
        ((spec.num_parameters - expert) * 2, "world"), (expert * 2, "expert_data_2"), (1, "expert_2")]


def test_data_before_expert_layout_refused() -> None:
    """DeepSpeed's D + E group layout (use_data_before_expert_parallelism) is refused."""
    spec = _spec(ep_size=2)
    cfg = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 2}, "bf16": {"enabled": True},
           "use_data_before_expert_parallelism": True}
    with pytest.raises(ZsimInputError, match="use_data_before_expert_parallelism"):
        build_schedule(spec, build_run_config(cfg, spec, 4, Overrides(seq_len=16)))


def test_top1_needs_min_capacity_tokens() -> None:
    """Top-1 gating asserts tokens >= min_capacity (sharded_moe.py:278)."""
    spec = _spec(ep_size=2, k=1, min_capacity=32)
    with pytest.raises(ZsimInputError, match="sharded_moe.py:278"):
        build_schedule(spec, _run(spec, 4, seq_len=16))


@pytest.mark.parametrize("name", ["Qwen/Qwen1.5-MoE-A2.7B-Chat", "Qwen/Qwen2-57B-A14B"])
def test_shared_expert_stays_dense(name: str) -> None:
    """Qwen2-MoE with DeepSpeed-MoE layers: the shared expert and its gate stay in every
    rank's module, in the non-expert param group over all ranks; the whole model's count is
    still what transformers builds for the published config (the bundled count)."""
    base = load_model(name)
    spec = with_deepspeed_moe(base, None, 4)
    names = [p.name for p in spec.parameters()]
    shared = [n for n in names if ".mlp.shared_expert" in n]
    assert len(shared) == 4 * spec.num_layers and not any(".deepspeed_experts." in n for n in shared)
    assert global_parameter_count(spec) == base.num_parameters
    layout = moe_layout(spec, 8, expert_groups(8, 4, 8))
    dense = {names[i] for g in layout.groups if not g.moe for i in g.params}
    assert set(shared) <= dense


def test_shared_expert_forward_order() -> None:
    """The wrapper runs shared_expert, then the DeepSpeed-MoE layer, then shared_expert_gate
    (Qwen2MoeSparseMoeBlock.forward's order)."""
    from validation.cpu_truth.expert_cases import QWEN2_MOE_8E
    from zsim.modeltree import model_tree
    spec = _spec(QWEN2_MOE_8E, ep_size=2, k=2)
    tree = model_tree(spec)
    ops = [n.op for n in tree.forward(tree.node("model.layers.0.mlp"))]
    first = lambda part: next(i for i, op in enumerate(ops) if part in op)   # noqa: E731
    assert first(".shared_expert.") < first(".deepspeed_moe") < first(".shared_expert_gate")


@pytest.mark.parametrize("name", ["deepseek-ai/DeepSeek-V2-Lite", "deepseek-ai/DeepSeek-V3"])
def test_deepseek_moe_layers_only_after_the_dense_ones(name: str) -> None:
    """DeepSeek with DeepSpeed-MoE layers: the first first_k_dense_replace layers keep their
    dense MLP, the others hold the layer next to the dense shared experts; the whole model's
    count is still what transformers builds for the published config (the bundled count)."""
    base = load_model(name)
    spec = with_deepspeed_moe(base, None, 8)
    names = [p.name for p in spec.parameters()]
    first = base.dense_layers
    assert f"model.layers.{first - 1}.mlp.gate_proj.weight" in names
    assert not any(n.startswith(f"model.layers.{first - 1}.mlp.moe.") for n in names)
    assert f"model.layers.{first}.mlp.moe.deepspeed_moe.gate.wg.weight" in names
    assert f"model.layers.{first}.mlp.shared_experts.down_proj.weight" in names
    assert global_parameter_count(spec) == base.num_parameters


def test_deepseek_all_to_alls_skip_the_dense_layers() -> None:
    """4 all-to-alls per MoE layer and micro-batch: none in DeepSeek's dense first layer."""
    from validation.cpu_truth.expert_cases import DEEPSEEK_V2_8E
    spec = _spec(DEEPSEEK_V2_8E, ep_size=2, k=2)
    ops = _collectives(spec, _run(spec, 4), "all_to_all_single")
    assert len(ops) == 4 * (spec.num_layers - spec.dense_layers)


def test_dense_model_refused() -> None:
    """--ep on a dense model is one error."""
    with pytest.raises(ZsimInputError, match="mixture-of-experts"):
        with_deepspeed_moe(_dense(), None, 2)


def _dense():
    cfg = {k: v for k, v in MIXTRAL_4E.items() if k not in ("num_local_experts", "num_experts_per_tok")}
    return from_hf_config(dict(cfg, model_type="llama"), "dense")


# ---- command line ------------------------------------------------------------------------------

def test_cli_ep_flag_and_refusals(tmp_path: Path, capsys) -> None:
    """predict --ep runs; --moe-config reads a JSON file; refusals exit 2 with one line."""
    from zsim.cli import main
    base = ["predict", "--model", "mistralai/Mixtral-8x7B-v0.1", "--gpus", "8", "--micro-batch", "1",
            "--seq", "1024", "--no-output", "--json"]
    assert main(base + ["--stage", "2", "--ep", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert any("DeepSpeed-MoE layers, ep_size 4" in n for n in out["notes"])
    # the model's size is the whole model's, not one rank's share of the experts
    assert main(base + ["--stage", "2"]) == 0
    assert out["num_parameters"] == json.loads(capsys.readouterr().out)["num_parameters"] > 46e9
    cfg = tmp_path / "moe.json"
    cfg.write_text(json.dumps({"ep_size": 2, "k": 1, "capacity_factor": 1.25}))
    assert main(base + ["--stage", "1", "--moe-config", str(cfg)]) == 0
    capsys.readouterr()
    for extra in (["--stage", "3", "--ep", "2"], ["--stage", "2", "--ep", "3"],
                  ["--stage", "2", "--ep", "4", "--moe-config", str(cfg)]):
        try:
            code = main(base + extra)
        except SystemExit as exc:   # argparse usage errors
            code = exc.code
        assert code == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("zsim: error:"), err


# ---- activation memory ----------------------------------------------------------------------------

def _activation_shapes() -> list[str]:
    from validation.cpu_truth.expert_activation_memory import DELTA_SHAPES, SHAPES
    return [s for s in SHAPES if s not in DELTA_SHAPES]


def _delta_shapes() -> list[str]:
    from validation.cpu_truth.expert_activation_memory import DELTA_SHAPES
    return list(DELTA_SHAPES)


@pytest.mark.parametrize("shape", _activation_shapes())
def test_layer_activation_bytes_match_deepspeed_moe(shape: str) -> None:
    """A decoder layer with a DeepSpeed-MoE MLP keeps what zsim says (CPU dispatch-mode count
    of the real layer, validation/cpu_truth/expert_activation_memory.py), within 0.5 %."""
    require_truth_packages("DeepSpeed-MoE activation truth", "torch", "deepspeed", "transformers")
    from validation.cpu_truth.expert_activation_memory import per_layer_bytes, zsim_per_layer_bytes
    assert zsim_per_layer_bytes(shape) == pytest.approx(per_layer_bytes(shape), rel=0.005)


@pytest.mark.parametrize("shape", _delta_shapes())
def test_deepseek_layer_activation_change_matches_deepspeed_moe(shape: str) -> None:
    """DeepSeek: replacing a layer's DeepSeek-MoE block by the DeepSpeed-MoE wrapper changes
    what the layer keeps by what zsim says (the same CPU count with and without the
    replacement; MLA's own bytes are checked by tests/test_family_activation_truth.py), within
    0.5 % of the change."""
    require_truth_packages("DeepSpeed-MoE activation truth", "torch", "deepspeed", "transformers")
    from validation.cpu_truth.expert_activation_memory import per_layer_delta_bytes
    real, zsim = per_layer_delta_bytes(shape)
    assert zsim == pytest.approx(real, rel=0.005)


def test_layer_activation_bytes_do_not_depend_on_ep() -> None:
    """The all-to-all saves nothing and the local experts' rows total E·C for every ep."""
    from validation.cpu_truth.expert_activation_memory import zsim_per_layer_bytes
    assert zsim_per_layer_bytes("mixtral-4e-top2", 1) == zsim_per_layer_bytes("mixtral-4e-top2", 2) \
        == zsim_per_layer_bytes("mixtral-4e-top2", 4)


def test_plan_searches_only_modelled_stages(capsys) -> None:
    """plan --ep searches stages 0-2 without offload; pinning stage 3 is one error."""
    from zsim.cli import main
    base = ["plan", "--model", "mistralai/Mixtral-8x7B-v0.1", "--nodes", "2", "--ep", "8", "--seq", "1024",
            "--micro-batch", "1", "--no-output", "--json", "-q"]
    assert main(base) == 0
    out = json.loads(capsys.readouterr().out)
    assert {c["stage"] for c in out["ranked"] + out["rejected"]} <= {0, 1, 2}
    assert main(base + ["--stage", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "stages 0, 1 and 2" in err


@pytest.mark.parametrize("k,experts,tokens", [(1, 8, 512), (2, 8, 512), (3, 8, 512), (2, 16, 256), (1, 4, 128)])
def test_layer_launches_match_the_ops_deepspeed_moe_dispatches(k: int, experts: int, tokens: int) -> None:
    """The kernels zsim prices for one DeepSpeed-MoE layer launch as many ops as the real
    layer dispatches, forward and backward (CPU dispatch-mode count, expert_op_counts.py).
    The non-expert counts were read at 8 experts and 512 tokens; the other shapes check that
    the experts' part follows zsim's expert kernels and nothing depends on the tokens."""
    require_truth_packages("DeepSpeed-MoE op counts", "torch", "deepspeed", "transformers")
    from validation.cpu_truth.expert_op_counts import op_counts
    from zsim.modeltree import model_tree
    from zsim.workload import Workload
    measured = op_counts(k, experts, tokens)
    cfg = dict(MIXTRAL_4E, hidden_size=256, intermediate_size=384, num_local_experts=experts)
    spec = dataclasses.replace(from_hf_config(cfg, "ops"), deepspeed_moe=moe_config({"k": k, "ep_size": 1}, None))
    w = Workload(spec, 1, tokens)
    layer = model_tree(spec).node("model.layers.0.mlp")
    ops = [n.op for n in model_tree(spec).forward(layer)]
    fwd = sum(kern.launches for op in ops for kern in w.kernels(op, "fwd"))
    bwd = sum(kern.launches for op in ops for kern in w.kernels(op, "bwd"))
    # the experts' torch.cat (experts.py:38) is one op more than the kernels the experts price
    assert fwd + 1 == measured["gate"] + measured["encode"] + measured["experts"] + measured["decode"]
    assert bwd == measured["backward"]
