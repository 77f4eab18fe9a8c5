"""`zsim predict` under tensor, Ulysses and pipeline parallelism (zsim.parallel.predict3d):
the invariants of issue #16 — degree 1 is today's prediction, TP halves per-rank weights,
four TP all-reduces per layer and micro-batch, the pipeline bubble, ZeRO over the
data-parallel group only, refusals in one line."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from zsim.cli import main
from zsim.errors import ZsimInputError
from zsim.groups import Dim
from zsim.job import RunSettings
from zsim.model import load_model
from zsim.parallel.activation import LayerShape, layer_activation_bytes
from zsim.parallel.layout import stage_layer_counts
from zsim.parallel.pipeline import bubble_fraction, deepspeed_train_schedule, flatten, one_f_one_b, timeline
from zsim.parallel.predict3d import ParallelAsk, predict_any, predict_parallel
from zsim.parallel.stages import stage_schedule, stage_setup
from zsim.parallel.tensor import shard_model
from zsim.predict import predict_settings
from zsim.workload import Workload

BASE = RunSettings(model="llama-2-7b", topo="dgx-h100", nodes=2, stage=1, micro_batch=1, grad_accum=2, seq=2048)


def _split_ops(ask: ParallelAsk, settings: RunSettings = BASE, stage: int = 0):
    s = stage_setup(settings, ask)
    counts = stage_layer_counts(s.shard.num_layers, ask.pp)
    return s, stage_schedule(s, s.run, stage, counts).ops


def test_data_parallel_only_is_todays_prediction():
    """No degree above 1: the very prediction of zsim.predict (every field)."""
    assert predict_any(BASE, ParallelAsk()).to_dict() == predict_settings(BASE).to_dict()


def test_the_3d_path_at_degree_one_reproduces_the_data_parallel_figures():
    """The 3D machinery itself (ZeRO group placement, schedule rebuild, insertion) at degree 1
    prices the same step and memory as the data-parallel path, bit for bit."""
    got = predict_parallel(BASE, ParallelAsk()).prediction
    want = predict_settings(BASE)
    assert got.step_time_s == want.step_time_s
    assert got.peak_memory_bytes == want.peak_memory_bytes
    assert dict(got.memory_breakdown) == dict(want.memory_breakdown)
    assert got.mfu == pytest.approx(want.mfu, rel=1e-12)


def test_tp_halves_every_sharded_weight_and_keeps_the_norms():
    spec = load_model("llama-2-7b")
    half = shard_model(spec, 2)
    full_params = {p.name: p.numel for p in spec.parameters()}
    for p in half.parameters():
        if "norm" in p.name:
            assert p.numel == full_params[p.name]
        else:
            assert 2 * p.numel == full_params[p.name], p.name
    assert half.head_dim == spec.head_dim


def test_tp_halves_the_per_rank_parameter_memory():
    """ZeRO-1 keeps the full 16-bit parameters on every rank of its group: under tp 2 each
    rank holds its TP shard, half of every weight but the norms."""
    spec = load_model("llama-2-7b")
    norms = sum(p.numel for p in spec.parameters() if "norm" in p.name)
    one = predict_settings(BASE).memory_breakdown["params"]
    two = predict_parallel(BASE, ParallelAsk(tp=2)).prediction.memory_breakdown["params"]
    assert two == 2 * ((spec.num_parameters - norms) // 2 + norms)
    assert one == 2 * spec.num_parameters


def _count(ops, name_filter, collective):
    return sum(1 for op in ops if op.kind == "collective" and op.collective == collective
               and name_filter(op.name))


def test_four_tp_all_reduces_per_layer_and_micro_batch():
    s, ops = _split_ops(ParallelAsk(tp=2))
    layers, m = s.shard.num_layers, s.run.grad_accum
    in_layers = _count(ops, lambda n: n.startswith("tp_") and "embedding" not in n and "lm_head" not in n
                       and "cross_entropy" not in n, "all_reduce")
    assert in_layers == 4 * layers * m
    act = s.run.micro_batch * s.run.seq_len * s.shard.hidden_size * s.run.param_bytes
    sizes = {op.buffer_bytes for op in ops if op.name in ("tp_o_proj", "tp_down_proj", "tp_q_proj_grad")}
    assert sizes == {act}
    # they block the compute stream and run on the tensor-parallel group of 2 ranks in a node
    tp_ops = [op for op in ops if op.name.startswith("tp_")]
    assert {op.stream for op in tp_ops} == {"compute"}
    assert {(op.group.ranks_per_node, op.group.nodes) for op in tp_ops} == {(2, 1)}


def test_sequence_parallel_swaps_all_reduces_for_reduce_scatter_and_all_gather():
    s, ops = _split_ops(ParallelAsk(tp=2, sequence_parallel=True))
    layers, m = s.shard.num_layers, s.run.grad_accum
    in_layer = lambda n: n.startswith(("tp_o_proj", "tp_down_proj", "tp_q_proj", "tp_gate_proj"))  # noqa: E731
    assert _count(ops, in_layer, "all_reduce") == 0
    assert _count(ops, in_layer, "reduce_scatter_tensor") == 4 * layers * m
    # 2 forward, 2 backward (the reduce-scatters' gradients), 2 re-gathers for the weight gradients
    assert _count(ops, in_layer, "all_gather_into_tensor") == 6 * layers * m


def test_recomputation_repeats_the_forward_all_reduces():
    s, ops = _split_ops(ParallelAsk(tp=2), replace(BASE, activation_checkpointing=True))
    n = _count(ops, lambda name: name in ("tp_o_proj", "tp_down_proj"), "all_reduce")
    assert n == 2 * 2 * s.shard.num_layers * s.run.grad_accum


def test_ulysses_four_all_to_alls_each_way_per_layer():
    s, ops = _split_ops(ParallelAsk(sp=4))
    layers, m = s.shard.num_layers, s.run.grad_accum
    assert _count(ops, lambda n: n.startswith("ulysses_"), "all_to_all_single") == 8 * layers * m
    spec = load_model("llama-2-7b")
    q = {op.message_bytes for op in ops if op.name == "ulysses_q"}
    assert q == {s.run.micro_batch * (s.run.seq_len // 4) * spec.q_dim * s.run.param_bytes}


def test_ulysses_attention_is_the_whole_sequence_on_a_quarter_of_the_heads():
    spec = load_model("llama-2-7b")
    whole = Workload(spec, 1, 4096)
    local = Workload(spec, 1, 1024, ulysses=4)
    attn = "model.layers.0.self_attn"
    assert local.kernels(attn, "fwd")[0].flops == pytest.approx(whole.kernels(attn, "fwd")[0].flops / 4)
    assert local.kernels(attn, "fwd")[0].seq == 4096
    # the linear layers see the rank's quarter of the tokens
    q = "model.layers.0.self_attn.q_proj"
    assert local.flops(q, "fwd") == pytest.approx(whole.flops(q, "fwd") / 4)


def test_zero_partitions_over_the_data_parallel_group_only():
    """tp 2 x pp 2 on 16 GPUs: ZeRO's group is dp = 4 ranks; its collectives' group has 4."""
    result = predict_parallel(BASE, ParallelAsk(tp=2, pp=2))
    assert result.zero_group_size == result.layout.dp == 4
    s, ops = _split_ops(ParallelAsk(tp=2, pp=2))
    zero_ops = [op for op in ops if op.kind == "collective" and not op.name.startswith("tp_")
                and not op.name.endswith("_model_parallel")]
    assert zero_ops and {op.group.size(16, 8) for op in zero_ops} == {4}
    assert s.run.world_size == 4


def _step_collectives(ask: ParallelAsk, settings: RunSettings = BASE):
    """(name, comms-logger op, bytes, group) of the step's collectives, in issue order."""
    _, ops = _split_ops(ask, settings)
    return [(op.name, op.collective, op.message_bytes, op.group) for op in ops
            if op.kind == "collective" and op.phase == "step"]


@pytest.mark.parametrize("stage", [1, 2])
def test_one_data_parallel_rank_issues_no_parameter_all_gather_after_the_step(stage):
    """tp 2 on 2 GPUs: the ZeRO group is one rank, and DeepSpeed's all_gather_dp_groups
    skips it (runtime/utils.py:1011-1015); with two data-parallel ranks it is issued."""
    one = replace(BASE, nodes=None, gpus=2, stage=stage)
    assert "allgather_params" not in [name for name, *_ in _step_collectives(ParallelAsk(tp=2), one)]
    two = replace(one, gpus=4)
    assert [name for name, *_ in _step_collectives(ParallelAsk(tp=2), two)].count("allgather_params") == 1


@pytest.mark.parametrize("stage", [1, 3])
def test_overflow_and_norm_are_repeated_over_the_tensor_parallel_group(stage):
    """With Megatron's mpu, ZeRO all-reduces the overflow flag and the gradient norm over the
    data-parallel group and then again over the model-parallel group (stage_1_and_2.py:3246,
    2695; stage3.py:3040, 2472): under tp 2 without a pipeline, the tensor group."""
    settings = replace(BASE, stage=stage, ds_config={"fp16": {"enabled": True}})   # ZeRO-3 checks overflow in fp16
    got = _step_collectives(ParallelAsk(tp=2), settings)
    repeats = [i for i, (name, *_) in enumerate(got) if name.endswith("_model_parallel")]
    assert [got[i][0] for i in repeats] == ["overflow_check_model_parallel", "grad_norm_model_parallel"]
    tensor = stage_setup(settings, ParallelAsk(tp=2)).model_parallel
    assert (tensor.dim, tensor.ranks_per_node, tensor.nodes) == (Dim.TENSOR, 2, 1)
    for i in repeats:
        name, collective, nbytes, group = got[i]
        # right after its data-parallel all-reduce, with the same bytes, on the tensor group
        assert got[i - 1][0] + "_model_parallel" == name and got[i - 1][1:3] == (collective, nbytes)
        assert group == tensor and got[i - 1][3].dim is Dim.DATA


def test_under_a_pipeline_the_model_parallel_group_spans_the_stages():
    """A PipelineModule's grid is ZeRO's mpu (deepspeed/__init__.py:582-583): its model group is
    the pipeline and tensor ranks of one data-parallel index (runtime/pipe/topology.py:300-313):
    tp 2 x pp 2 on 2 nodes, ranks {0, 1, 8, 9}, 2 ranks on each of 2 nodes; pp 2 alone on one
    node, ranks {0, 4}."""
    for ask, settings, shape in ((ParallelAsk(tp=2, pp=2), BASE, (2, 2)),
                                 (ParallelAsk(pp=2), replace(BASE, nodes=None, gpus=8), (2, 1))):
        s = stage_setup(settings, ask)
        mp = s.model_parallel
        assert (mp.ranks_per_node, mp.nodes) == shape and mp.size(s.layout.world_size, 8) == ask.tp * ask.pp
        names = [(name, group) for name, _, _, group in _step_collectives(ask, settings)]
        assert ("grad_norm_model_parallel", mp) in names and ("overflow_check_model_parallel", mp) in names


def test_ulysses_alone_has_no_model_parallel_repeat():
    """Megatron-DeepSpeed's model-parallel groups hold one rank each under Ulysses alone
    (tp = pp = 1): nothing is repeated, and the step all-gather runs over sp x dp ranks."""
    got = _step_collectives(ParallelAsk(sp=4))
    assert not [name for name, *_ in got if name.endswith("_model_parallel")]
    assert [name for name, *_ in got].count("allgather_params") == 1
    assert stage_setup(BASE, ParallelAsk(sp=4)).model_parallel is None


def test_ulysses_zero_group_is_sequence_times_data():
    """DeepSpeed builds ZeRO on seq_data_parallel_group (engine.py:2683): sp x dp ranks, while
    the batch counts dp ranks only."""
    result = predict_parallel(BASE, ParallelAsk(sp=4))
    assert result.layout.dp == 4 and result.zero_group_size == 16
    assert result.prediction.train_batch == BASE.micro_batch * BASE.grad_accum * 4


def test_pipeline_bubble_with_equal_stage_times_is_the_textbook_one():
    for p, m in ((2, 4), (4, 8), (3, 3)):
        for schedule in ([one_f_one_b(i, p, m) for i in range(p)],
                         [flatten(deepspeed_train_schedule(i, p, m)) for i in range(p)]):
            tl = timeline(schedule, (1.0,) * p, (2.0,) * p)
            assert tl.bubble_fraction == pytest.approx(bubble_fraction(p, m))


def test_pipeline_transfers_lengthen_one_micro_batch_by_two_hops_per_boundary():
    p = 4
    schedule = [flatten(deepspeed_train_schedule(i, p, 1)) for i in range(p)]
    tl = timeline(schedule, 1.0, 2.0, transfer_s=0.25)
    assert tl.makespan_s == pytest.approx(p * 3.0 + 2 * (p - 1) * 0.25)


def test_pipeline_stages_split_the_model_and_the_first_holds_the_most_activations():
    result = predict_parallel(BASE, ParallelAsk(pp=4))
    spec = load_model("llama-2-7b")
    assert sum(st.parameters for st in result.stages) == spec.num_parameters   # untied: no copies
    assert [st.layers for st in result.stages] == [8, 8, 8, 8]
    assert [st.in_flight for st in result.stages] == [2, 2, 2, 1]   # min(p - i, m), m = 2
    acts = [st.memory_breakdown["activations"] for st in result.stages]
    assert acts[0] > acts[-1]
    assert result.bubble_fraction > 0
    # the step is the slowest stage's path: never shorter than its own compute
    assert result.prediction.step_time_s > max(
        BASE.grad_accum * (st.forward_s + st.backward_s) for st in result.stages)


def test_tp_activation_split_agrees_with_korthikanti_on_which_terms_split():
    """Both activation models have the form U + S/t without sequence parallelism (norm
    inputs and dropout masks unsplit) and S_total/t with it; checked on zsim's HF-measured
    model of a Llama layer and on Table 2's formulas."""
    spec = load_model("llama-2-7b")
    layer = {t: Workload(shard_model(spec, t), 1, 2048).layer_activation_bytes() for t in (1, 2, 4)}
    assert layer[2] - layer[4] == (layer[1] - layer[2]) // 2
    sp = {t: Workload(shard_model(spec, t), 1, 2048, sequence_shards=t).layer_activation_bytes() for t in (2, 4)}
    assert sp[2] == layer[1] // 2 and sp[4] == layer[1] // 4
    shape = LayerShape(2048, 1, spec.hidden_size, spec.num_heads, spec.intermediate_size)
    k = {t: layer_activation_bytes(shape, t) for t in (1, 2, 4)}
    assert k[2] - k[4] == pytest.approx((k[1] - k[2]) / 2)
    assert layer_activation_bytes(shape, 4, sequence_parallel=True) == pytest.approx(k[1] / 4)


def test_predict_cli_prints_the_stage_table_and_json(capsys):
    args = ["predict", "--no-output", "--model", "llama-2-7b", "--topo", "dgx-h100", "--nodes", "2",
            "--stage", "1", "--tp", "2", "--pp", "2", "--micro-batch", "1", "--grad-accum", "4", "--seq", "2048"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "tp 2 x sp 1 x dp 4 x pp 2 = 16 ranks" in out and "<- worst" in out
    assert "(= 1 x 4 x 4)" in out
    assert main(args + ["--json"]) == 0
    par = json.loads(capsys.readouterr().out)["parallel"]
    assert par["dp"] == 4 and par["zero_group_size"] == 4 and len(par["stages"]) == 2


@pytest.mark.parametrize("flags,match", [
    (["--pp", "2", "--stage", "2"], "runtime/pipe/engine.py:76-77"),
    (["--pp", "2", "--stage", "3"], "incompatible with pipeline parallelism"),
    (["--sequence-parallel"], "needs --tp > 1"),
    (["--sp", "2", "--seq", "1023"], "not divisible"),
    (["--tp", "2", "--model", "facebook/opt-125m"], "not modelled"),
])
def test_refusals_are_one_line_exit_2(flags, match, capsys):
    assert main(["predict", "--no-output", "--model", "llama-2-7b", "--topo", "dgx-h100", "--nodes", "2",
                 *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err


def test_moe_models_are_refused_under_tensor_parallelism():
    with pytest.raises(ZsimInputError, match="MoE"):
        shard_model(load_model("mistralai/Mixtral-8x7B-v0.1"), 2)


def test_the_memory_curve_peaks_at_the_worst_stage_estimate():
    """With the timeline kept (predict's outputs), the memory moments drawn are the worst
    stage's: their largest equals its peak (in-flight micro-batches, its own parameters)."""
    result = predict_parallel(BASE, ParallelAsk(tp=2, pp=4), keep_timeline=True)
    peak = max(m.total_bytes for m in result.prediction.memory_moments)
    assert peak == result.prediction.peak_memory_bytes == result.stages[result.worst_stage].peak_memory_bytes


def test_pipeline_breakdown_sums_to_the_step():
    pred = predict_parallel(BASE, ParallelAsk(tp=2, pp=2)).prediction
    assert sum(pred.time_breakdown.values()) == pytest.approx(pred.step_time_s, rel=1e-9)
    assert pred.time_breakdown["pipeline_bubble_s"] > 0
    assert pred.exposed_comm_s == pred.time_breakdown["exposed_comm_split_s"] > 0
