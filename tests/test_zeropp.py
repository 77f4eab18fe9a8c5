"""ZeRO++ what-ifs (Wang et al. 2023, "ZeRO++", Sec. 3): qwZ halves the all-gather bytes (int8
vs bf16), hpZ moves backward re-gathers inside a node and costs a secondary partition, qgZ
replaces the gradient reduce-scatter by int4 all-to-alls, only across nodes."""

import pytest

from zsim.dsconfig import build_run_config
from zsim.groups import INTRA_NODE
from zsim.model import load_model
from zsim.predict import predict
from zsim.schedule import build_schedule

SPEC = load_model("tinyllama-1.1b")


def _sched(zero, world, gpus_per_node=None):
    run = build_run_config({"bf16": {"enabled": True}, "zero_optimization": {"stage": 3, **zero}},
                           SPEC, world)
    return build_schedule(SPEC, run, gpus_per_node=gpus_per_node)


def _bytes(s, op):
    return sum(int(b) * n for b, n in s.collectives.get(op, {}).items())


def test_qgz_replaces_reduce_scatter_across_nodes_only():
    base = _sched({}, 16, 8)
    qgz = _sched({"zero_quantized_gradients": True}, 16, 8)
    one_node = _sched({"zero_quantized_gradients": True}, 8, 8)
    assert "reduce_scatter_tensor" not in qgz.collectives
    assert "all_to_all_single" in qgz.collectives
    assert "all_to_all_single" not in one_node.collectives   # DeepSpeed: only when nodes > 1
    rs = _bytes(base, "reduce_scatter_tensor")
    intra = sum(op.message_bytes for op in qgz.ops if op.group == INTRA_NODE
                and op.collective == "all_to_all_single")
    # int4 is a quarter of bf16.
    assert intra == pytest.approx(rs / 4, rel=0.01)


def test_qwz_halves_gather_bytes():
    base = _sched({}, 16, 8)
    qwz = _sched({"zero_quantized_weights": True}, 16, 8)
    assert _bytes(qwz, "all_gather_into_tensor") == pytest.approx(
        _bytes(base, "all_gather_into_tensor") / 2, rel=0.05)


def test_zeropp_cuts_exposed_inter_node_time_and_costs_memory():
    cfg = {"bf16": {"enabled": True}, "zero_optimization": {"stage": 3}}
    pp = {"bf16": {"enabled": True}, "zero_optimization": {
        "stage": 3, "zero_hpz_partition_size": 8, "zero_quantized_weights": True,
        "zero_quantized_gradients": True}}
    kw = dict(model="llama-2-7b", topo="dgx-a100", nodes=16, micro_batch=1, seq=2048)
    a, b = predict(ds_config=cfg, **kw), predict(ds_config=pp, **kw)
    assert b.comm_busy_s.get("comm:ib", 0.0) < a.comm_busy_s.get("comm:ib", 0.0)
    assert b.peak_memory_bytes > a.peak_memory_bytes     # the hpZ secondary partition
