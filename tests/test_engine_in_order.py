"""The engine's one-pass run equals its SimPy run bit for bit; the search's other shortcuts
(the span and op copies, the facts without ops) equal what they replace."""

from dataclasses import replace
from operator import attrgetter

import pytest
from hypothesis import given, settings, strategies as st

from zsim.dsconfig import OffloadDevice, Overrides, build_run_config
from zsim.model import load_model
from zsim.ops import OpList
from zsim.schedule import build_schedule
from zsim.schedule.api import schedule_facts
from zsim.system import engine
from zsim.system.engine import OpCost, Span
from zsim.system.host import split_host

from test_engine import _cost, op_graphs


def _both(ops, costs):
    return engine._run_in_order(ops, costs, "compute"), engine._run_simpy(ops, costs, "compute")


@settings(max_examples=300, deadline=None)
@given(op_graphs())
def test_in_order_equals_simpy_on_random_graphs(graph):
    ops, durations = graph
    costs = [_cost(durations)(op) for op in ops]
    fast, slow = _both(ops, costs)
    assert fast == slow
    # the same types too (SimPy's clock starts at int 0): traces print what they get
    assert [type(x) for x in fast[0] + fast[1]] == [type(x) for x in slow[0] + slow[1]]


def test_zero_durations_and_ties():
    ops = OpList()
    a = ops.add(stream="compute", kind="compute", name="a", modules=("m",), pass_="fwd")
    b = ops.add(stream="comm", kind="collective", name="b", deps=(a,), collective="all_reduce")
    ops.add(stream="compute", kind="compute", name="c", deps=(b,), modules=("m",), pass_="fwd")
    ops.add(stream="comm", kind="collective", name="d", collective="all_reduce")
    for durations in ([0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 2.0, 0.5], [0.0, 1.5, 0.0, 0.0], [-1.0, 1.0, 0.0, 0.0]):
        costs = [OpCost(d, "compute" if op.stream == "compute" else "comm:nvlink") for op, d in zip(ops.ops, durations)]
        fast, slow = _both(ops.ops, costs)
        assert fast == slow
        assert [type(x) for x in fast[0] + fast[1]] == [type(x) for x in slow[0] + slow[1]]


@pytest.mark.parametrize("stage,extra", [(0, {}), (1, {}), (2, {"offload_optimizer": "cpu"}), (3, {}),
                                         (3, {"activation_checkpointing": True, "grad_accum": 2})])
def test_in_order_equals_simpy_on_real_schedules(stage, extra):
    from zsim.predict import predict_settings  # noqa: F401  (the public path runs the same engine)
    spec = load_model("llama-2-7b")
    run = build_run_config(None, spec, 8, Overrides(stage=stage, micro_batch=1, **extra))
    ops = tuple(split_host(build_schedule(spec, run).ops))
    # any prices: the two runs only add and compare them
    costs = [OpCost(1e-6 * (1 + (op.id * 7919) % 13) if op.id % 5 else 0.0, "compute" if op.stream == "compute"
                    else "comm:nvlink") for op in ops]
    fast, slow = _both(ops, costs)
    assert fast == slow
    assert engine._timeline(ops, costs, *fast, "compute") == engine._timeline(ops, costs, *slow, "compute")


def test_simulate_falls_back_to_simpy_when_not_numbered_in_order():
    ops = OpList()
    a = ops.add(stream="compute", kind="compute", name="a", modules=("m",), pass_="fwd")
    ops.add(stream="comm", kind="collective", name="b", deps=(a,), collective="all_reduce")
    shuffled = [ops.ops[1], ops.ops[0]]          # list order differs from the ids
    t = engine.simulate(shuffled, lambda op: OpCost(1.0, "compute" if op.stream == "compute" else "comm:nvlink"))
    assert t.step_time_s == 2.0


def test_span_helper_builds_a_span():
    fast = engine._span(3, "compute", "fwd:x", "compute", 0.5, 1.25)
    slow = Span(3, "compute", "fwd:x", "compute", 0.5, 1.25)
    assert fast == slow and vars(fast) == vars(slow) and list(vars(fast)) == list(vars(slow))


def test_split_host_copies_are_the_ops_replace_builds():
    spec = load_model("llama-2-7b")
    run = build_run_config(None, spec, 8, Overrides(stage=3, micro_batch=1, grad_accum=2))
    ops = build_schedule(spec, run).ops
    for op in split_host(ops)[:400]:
        again = replace(op)              # reruns the op's checks: the copy passes them unchanged
        assert again == op and list(vars(again)) == list(vars(op))


@pytest.mark.parametrize("stage", [0, 1, 2])
@pytest.mark.parametrize("fields", [{}, {"overlap_comm": True}, {"contiguous_gradients": False},
                                    {"round_robin_gradients": True}, {"reduce_bucket_size": 12_345_678}])
def test_schedule_facts_equal_the_built_schedules(stage, fields):
    spec = load_model("llama-2-7b")
    run = build_run_config(None, spec, 16, Overrides(stage=stage, micro_batch=2, grad_accum=2))
    run = replace(run, zero=replace(run.zero, **fields))
    assert schedule_facts(spec, run) == build_schedule(spec, run).facts
    # a pipeline stage's modules (zsim.parallel.stages.stage_keep)
    from zsim.parallel.stages import stage_keep
    for first, layers, head, tail in ((0, 8, True, False), (8, 16, False, False), (24, 8, False, True)):
        keep = stage_keep(first, layers, head, tail, spec.num_layers)
        assert schedule_facts(spec, run, keep=keep) == build_schedule(spec, run, keep=keep).facts


_STAGE3_VARIANTS = [
    ({}, {}), ({}, {"grad_accum": 3}), ({}, {"activation_checkpointing": True, "grad_accum": 2}),
    ({"stage3_prefetch_bucket_size": 0}, {}), ({"stage3_max_reuse_distance": 0}, {"grad_accum": 2}),
    ({"stage3_param_persistence_threshold": 10_000_000}, {}), ({"reduce_bucket_size": 12_345_678}, {}),
    ({"overlap_comm": False, "contiguous_gradients": False}, {}), ({"reduce_scatter": False}, {}),
    ({"offload_optimizer": OffloadDevice.CPU}, {"grad_accum": 2}),
    ({"offload_param": OffloadDevice.CPU, "offload_optimizer": OffloadDevice.CPU}, {}),
    ({"zero_hpz_partition_size": 4}, {"grad_accum": 2}), ({"zero_quantized_gradients": True}, {}),
]


@pytest.mark.parametrize("zero_fields,run_fields", _STAGE3_VARIANTS)
def test_schedule_facts_equal_the_built_schedules_stage_3(zero_fields, run_fields):
    """Stage 3's facts come from the coordinator replay without ops (CountingEmitter)."""
    spec = load_model("llama-2-7b")
    run = build_run_config(None, spec, 16, Overrides(stage=3, micro_batch=1))
    run = replace(run, zero=replace(run.zero, **zero_fields), **run_fields)
    for gpus_per_node in (None, 8):
        assert schedule_facts(spec, run, gpus_per_node) == build_schedule(spec, run, gpus_per_node).facts


def test_zero3_schedules_with_equal_keys_are_equal():
    """The search's ScheduleMemo reuses a ZeRO-3 schedule across batch shapes: runs whose
    schedule_key is equal (micro-batch, sequence length and train batch differ) build equal
    ops; grad-accum, checkpointing and the node size are in the key."""
    from zsim.schedule.api import schedule_key
    spec = load_model("llama-2-7b")
    base = build_run_config(None, spec, 16, Overrides(stage=3, micro_batch=1, grad_accum=2))
    other = build_run_config(None, spec, 16, Overrides(stage=3, micro_batch=4, grad_accum=2, seq_len=512))
    shape = attrgetter("micro_batch", "seq_len", "train_batch")
    assert all(a != b for a, b in zip(shape(other), shape(base)))
    assert schedule_key(spec, base, 8) == schedule_key(spec, other, 8)
    assert build_schedule(spec, base, 8) == build_schedule(spec, other, 8)
    changes = ((replace(base, grad_accum=1), 8), (replace(base, activation_checkpointing=True), 8), (base, 16))
    for changed, gpus_per_node in changes:
        assert schedule_key(spec, changed, gpus_per_node) != schedule_key(spec, base, 8)
    assert schedule_key(spec, build_run_config(None, spec, 16, Overrides(stage=2)), 8) is None


def test_predictions_through_the_schedule_memo_are_the_same():
    """A prediction whose schedule and host split come from the memo equals a fresh one."""
    from zsim.job import RunSettings, resolve
    from zsim.predict import ScheduleMemo, predict_job
    memo = ScheduleMemo(size=1)
    for micro_batch in (4, 1, 4):   # the second reuses the first's schedule, the third the second's
        job = resolve(RunSettings(model="llama-2-7b", topo="dgx-h100", stage=3, micro_batch=micro_batch,
                                  grad_accum=1))
        assert predict_job(job, memo=memo) == predict_job(job)
