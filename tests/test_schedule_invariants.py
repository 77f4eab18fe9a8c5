"""Invariants of zsim's schedule layer (fast, no torch): conservation, ZeRO volume bounds,
bucket counts, accumulation scaling, op-list well-formedness, build speed."""

from __future__ import annotations

from collections import Counter

import pytest

from zsim.dsconfig import Overrides, build_run_config
from zsim.groups import INTRA_NODE, WORLD
from zsim.model import ModelSpec, load_model
from zsim.ops import STREAMS, collectives_summary
from zsim.schedule import build_schedule, steady_state_collectives
from zsim.schedule.params import stage3_padded_numel

TINY = ModelSpec("tiny", 64, 2, 4, 2, 128, 256)
TINY_TIED = ModelSpec("tiny-tied", 64, 3, 4, 4, 96, 256, tie_word_embeddings=True, qkv_bias=True)
MODELS = [TINY, TINY_TIED, load_model("llama-2-7b")]


def _build(model, stage, world=4, gas=1, precision="bf16", **zero):
    cfg = {"zero_optimization": {"stage": stage, **zero}, "train_micro_batch_size_per_gpu": 1,
           "gradient_accumulation_steps": gas}
    if precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    run = build_run_config(cfg, model, world)
    return run, build_schedule(model, run)


def _coll(schedule, phase=None, micro=None):
    return [op for op in schedule.ops if op.kind == "collective"
            and (phase is None or op.phase == phase) and (micro is None or op.micro_step == micro)]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
@pytest.mark.parametrize("zero", [dict(reduce_bucket_size=5_000), dict(reduce_bucket_size=70_000),
                                  dict(reduce_bucket_size=5_000, reduce_scatter=False),
                                  dict(reduce_bucket_size=9_000, use_multi_rank_bucket_allreduce=False),
                                  dict(contiguous_gradients=False, reduce_bucket_size=3_000), {}])
@pytest.mark.parametrize("stage", [1, 2])
def test_stage12_gradient_bytes_conserved(model, zero, stage):
    """Every gradient element is reduced exactly once per reducing micro-step, and the
    post-step all-gather moves the padded flat buffer."""
    run, s = _build(model, stage, world=3, gas=2, **zero)
    psi = model.num_parameters
    for micro in range(2):
        grads = [op for op in _coll(s, "backward", micro)]
        reduced = sum(op.message_bytes for op in grads)
        expect = psi * run.comm_dtype_bytes if (stage == 2 or micro == 1) else 0
        assert reduced == expect
    gather = [op for op in _coll(s, "step") if op.collective == "all_gather_into_tensor"]
    assert len(gather) == 1
    assert gather[0].message_bytes * 3 == s.facts.padded_numel * run.param_bytes
    assert s.facts.padded_numel % (2 * 3) == 0 and s.facts.padded_numel - psi < 6


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_stage2_one_all_reduce_per_bucket_per_micro_step(model):
    """Stage 2: one all_reduce per bucket per micro-step; stage 1: per step. (A gradient larger
    than the bucket is all-reduced in pieces cut at partition borders: excluded here.)"""
    bucket = max(20_000, model.largest_parameter_numel() + 1)
    for stage, gas in ((2, 1), (2, 3), (1, 3)):
        _, s = _build(model, stage, world=4, gas=gas, reduce_bucket_size=bucket)
        grads = [op for op in _coll(s, "backward") if op.collective == "all_reduce"]
        per_step = s.facts.num_buckets * (gas if stage == 2 else 1)
        assert len(grads) == per_step
        assert s.facts.num_buckets >= 1


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
@pytest.mark.parametrize("zero", [{}, dict(stage3_prefetch_bucket_size=0, stage3_max_reuse_distance=0,
                                           stage3_param_persistence_threshold=0),
                                  dict(stage3_max_reuse_distance=0), dict(stage3_prefetch_bucket_size=0),
                                  dict(stage3_max_reuse_distance=50_000, reduce_bucket_size=30_000)])
def test_stage3_volume_between_2psi_and_3psi(model, zero):
    """Per micro-step a stage-3 rank moves between 2Ψ (gather once + reduce-scatter) and 3Ψ
    (gather in forward and backward + reduce-scatter), counted over the per-parameter
    padded sizes; persistent parameters are re-gathered after the step instead. A tied
    embedding is used by two modules, so it may come in twice per pass."""
    world = 4
    run, s = _build(model, 3, world=world, gas=2, **zero)
    params = model.parameters()
    numels = [p.numel for p in params]
    padded = sum(stage3_padded_numel(n, world) for n in numels)
    persistent = s.facts.persistent_numel
    non_persistent = sum(stage3_padded_numel(n, world) for n in numels
                         if n > run.zero.stage3_param_persistence_threshold)
    pb = run.param_bytes
    for micro in range(2):
        ops = [op for op in s.ops if op.kind == "collective" and op.micro_step == micro and op.phase != "step"]
        gathered = sum(op.buffer_bytes for op in ops if op.collective == "all_gather_into_tensor")
        reduced = sum(op.buffer_bytes for op in ops if op.collective != "all_gather_into_tensor")
        assert reduced >= sum(numels) * run.comm_dtype_bytes
        assert reduced <= padded * run.comm_dtype_bytes
        if micro == 0:  # after a step nothing is gathered: every non-persistent param comes in
            assert gathered >= non_persistent * pb
        tied = stage3_padded_numel(numels[0], world) if model.tie_word_embeddings else 0
        assert gathered <= 2 * (non_persistent + tied) * pb
    regather = [op for op in _coll(s, "step") if op.collective == "all_gather_into_tensor"]
    assert sum(op.buffer_bytes for op in regather) >= persistent * pb


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_counts_scale_with_grad_accum_as_deepspeed(stage):
    """Stage 2/3 reduce every micro-step, stage 0/1 once per step; step collectives are fixed."""
    one = steady_state_collectives(TINY, {"zero_optimization": {"stage": stage, "reduce_bucket_size": 8_000},
                                          "bf16": {"enabled": True}}, 4, grad_accum=1, micro_batch=1)
    four = steady_state_collectives(TINY, {"zero_optimization": {"stage": stage, "reduce_bucket_size": 8_000},
                                           "bf16": {"enabled": True}}, 4, grad_accum=4, micro_batch=1)
    red = "reduce_scatter_tensor" if stage == 3 else "all_reduce"
    n1 = sum(c for size, c in one[red].items() if int(size) > 8)
    n4 = sum(c for size, c in four[red].items() if int(size) > 8)
    assert n4 == (4 * n1 if stage in (2, 3) else n1)
    if stage in (1, 2):
        assert one["all_gather_into_tensor"] == four["all_gather_into_tensor"]


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
@pytest.mark.parametrize("extra", [{}, {"overlap_comm": True}, {"offload_optimizer": {"device": "cpu"}}])
@pytest.mark.parametrize("ckpt", [False, True])
def test_ops_well_formed(stage, extra, ckpt):
    """Deps precede (so the op list runs in id order without deadlock), streams and kinds are
    valid, compute ops cover forward/backward(/recompute) of every module, and the summary
    equals the ops."""
    if stage == 0 and extra:
        pytest.skip("stage 0 has no ZeRO options")
    cfg = {"zero_optimization": {"stage": stage, "reduce_bucket_size": 6_000, **extra}, "bf16": {"enabled": True},
           "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 2}
    run = build_run_config(cfg, TINY_TIED, 3, Overrides(activation_checkpointing=ckpt))
    s = build_schedule(TINY_TIED, run)
    assert [op.id for op in s.ops] == list(range(len(s.ops)))
    for op in s.ops:
        assert all(d < op.id for d in op.deps)
        assert op.stream in STREAMS
    assert s.collectives == collectives_summary(s.ops)
    passes = Counter((op.modules[0], op.pass_) for op in s.ops if op.kind == "compute")
    for name in ("model.embed_tokens", "model.layers.0.self_attn.q_proj", "model.layers.2.mlp", "lm_head",
                 "model.layers.1.self_attn"):
        assert passes[(name, "fwd")] == 2 and passes[(name, "bwd")] == 2
        if ckpt and name.startswith("model.layers"):
            assert passes[(name, "recompute")] == 2
    if stage == 3:
        assert any(op.kind == "overhead" and op.overhead == "zero3_module_hook_s" for op in s.ops)
    kinds = Counter(op.kind for op in s.ops)
    if "offload_optimizer" in extra:
        assert kinds["cpu_adam"] >= 1 and kinds["optimizer"] == 0
    else:
        assert kinds["optimizer"] >= 1


def test_overlap_comm_moves_reductions_off_the_compute_stream():
    """Without overlap_comm the compute stream carries the bucket all_reduces; with it the
    reductions go on the comm stream and depend on the backward op that filled the bucket."""
    _, plain = _build(TINY, 2, reduce_bucket_size=5_000)
    _, over = _build(TINY, 2, reduce_bucket_size=5_000, overlap_comm=True)
    grads = lambda s: [op for op in _coll(s, "backward")]
    assert {op.stream for op in grads(plain)} == {"compute"}
    assert {op.stream for op in grads(over)} == {"comm"}
    assert all(op.deps for op in grads(over))


def test_stage3_offload_param_copies_each_gathered_shard_first():
    """offload_param=cpu: every fwd/bwd gather depends on a host-to-device copy of its shards."""
    _, s = _build(TINY, 3, world=4, offload_param={"device": "cpu"}, offload_optimizer={"device": "cpu"},
                  stage3_max_reuse_distance=0, stage3_param_persistence_threshold=0)
    by_id = {op.id: op for op in s.ops}
    gathers = [op for op in s.ops if op.collective == "all_gather_into_tensor" and op.phase != "step"]
    assert gathers
    for g in gathers:
        copies = [by_id[d] for d in g.deps if by_id[d].kind == "copy" and by_id[d].stream == "h2d"]
        assert len(copies) == 1 and copies[0].nbytes == g.message_bytes


def test_hpz_regathers_inside_the_group():
    """ZeRO++ hpZ: after a release, re-gathers use the secondary shard in the hpZ group."""
    _, s = _build(TINY, 3, world=8, zero_hpz_partition_size=4, stage3_max_reuse_distance=0,
                  stage3_param_persistence_threshold=0, stage3_prefetch_bucket_size=0)
    gathers = [op for op in s.ops if op.collective == "all_gather_into_tensor" and op.phase != "step"]
    fwd = [op for op in gathers if op.phase == "forward" and op.micro_step == 0]
    bwd = [op for op in gathers if op.phase == "backward"]
    assert {op.group for op in fwd} == {WORLD}
    assert {op.group for op in bwd} == {INTRA_NODE}
    assert all(op.buffer_bytes == 4 * op.message_bytes for op in bwd)
