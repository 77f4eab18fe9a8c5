"""Activation checkpointing's own host work (torch.utils.checkpoint, non-reentrant): one
``checkpoint_fwd`` op per checkpointed layer before its forward and one
``checkpoint_recompute`` op before its recompute, in every stage's schedule, priced from the
profile's per-linear-call costs (validation/microbench/checkpoint.py)."""

from __future__ import annotations

import json

import pytest

from zsim.calibrate import calibrate, checkpoint_host_costs, with_values
from zsim.dsconfig import Overrides, build_run_config
from zsim.errors import ZsimInputError
from zsim.hardware import load_profile
from zsim.hostcost import IN_RUN_PER_SNAPSHOT
from zsim.inputs import check_microbench
from zsim.model import load_model
from zsim.predict import predict
from zsim.schedule import build_schedule

MODEL = "tinyllama-1.1b"


def _ops(stage: int, checkpointing: bool, grad_accum: int = 1):
    spec = load_model(MODEL)
    ds = {"zero_optimization": {"stage": stage}, "bf16": {"enabled": True}}
    run = build_run_config(ds, spec, 1, Overrides(micro_batch=1, grad_accum=grad_accum, seq_len=512,
                                                  activation_checkpointing=checkpointing))
    return spec, build_schedule(spec, run).ops


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_one_op_per_layer_and_pass(stage):
    """Each micro-step checkpoints every decoder layer once in forward and once in backward,
    the forward op before the layer's first forward kernel, the recompute op before its first
    recomputed kernel; without checkpointing there are none."""
    spec, ops = _ops(stage, True, grad_accum=2)
    layers = spec.num_layers
    for micro in (0, 1):
        mine = [o for o in ops if o.micro_step == micro]
        names = [o.name for o in mine if o.kind == "overhead" and o.name.startswith("checkpoint_")]
        assert names.count("checkpoint_fwd") == layers
        assert names.count("checkpoint_recompute") == layers
        first = {}
        for k, o in enumerate(mine):
            if o.kind == "compute" and o.modules and ".layers.0." in o.modules[0]:
                first.setdefault(o.pass_, k)
        fwd_ck = [k for k, o in enumerate(mine) if o.name == "checkpoint_fwd"]
        rec_ck = [k for k, o in enumerate(mine) if o.name == "checkpoint_recompute"]
        assert fwd_ck[0] < first["fwd"]
        assert max(k for k in rec_ck if k < first["recompute"]) == max(rec_ck)   # layer 0 is recomputed last
        assert all(o.phase == "forward" for o in mine if o.name == "checkpoint_fwd")
        assert all(o.phase == "backward" for o in mine if o.name == "checkpoint_recompute")
    _, plain = _ops(stage, False)
    assert not [o for o in plain if o.name.startswith("checkpoint_")]


def test_priced_on_the_host_from_the_profile():
    """The costs are the per-linear-call units times the profile's host speed; a host-bound
    step (ZeRO-3, one GPU, tiny micro-batch) grows by about layers x (forward + recompute),
    never by more."""
    base = load_profile("h200-sxm")
    fwd_units, rec_units = 10.0, 30.0
    hw = with_values(base, {"host.checkpoint_forward_per_linear_call": fwd_units,
                            "host.checkpoint_recompute_per_linear_call": rec_units})
    unit = hw.host.small_linear_call_s
    assert hw.overheads.checkpoint_forward_s == pytest.approx(fwd_units * unit)
    assert hw.overheads.checkpoint_recompute_s == pytest.approx(rec_units * unit)
    off = with_values(base, {"host.checkpoint_forward_per_linear_call": 0.0,
                             "host.checkpoint_recompute_per_linear_call": 0.0})
    kw = dict(model=MODEL, topo="hgx-h200", gpus=1, stage=3, micro_batch=1, seq=256,
              activation_checkpointing=True)
    with_cost, without = predict(hardware=hw, **kw), predict(hardware=off, **kw)
    added = load_model(MODEL).num_layers * (fwd_units + rec_units) * unit
    grown = with_cost.step_time_s - without.step_time_s
    assert 0.8 * added < grown <= added * 1.0001


def test_calibrate_reads_the_checkpoint_section(tmp_path):
    """`zsim calibrate` divides each process's seconds by its probed host speed (on the
    snapshot's scale) and takes the median over the processes."""
    ratio = IN_RUN_PER_SNAPSHOT["small_linear_call_s"]
    rows = [{"checkpoint_forward_s": 12e-4, "checkpoint_recompute_s": 40e-4, "probe_small_linear_call_s": 1e-4 * ratio},
            {"checkpoint_forward_s": 28e-4, "checkpoint_recompute_s": 88e-4, "probe_small_linear_call_s": 2e-4 * ratio},
            # no probe: the snapshot before the first round
            {"checkpoint_forward_s": 13e-4, "checkpoint_recompute_s": 41e-4, "host_speed": {"small_linear_call_s": 1e-4}}]
    assert checkpoint_host_costs(rows) == {"host.checkpoint_forward_per_linear_call": 13.0,
                                           "host.checkpoint_recompute_per_linear_call": 41.0}
    f = tmp_path / "microbench_checkpoint.json"
    f.write_text(json.dumps({"meta": {}, "checkpoint": rows}))
    cal = calibrate([f], base="h200-sxm")
    assert cal.profile.host.checkpoint_forward_per_linear_call == 13.0
    assert cal.profile.host.checkpoint_recompute_per_linear_call == 41.0
    assert cal.details["from_microbench"]["host.checkpoint_recompute_per_linear_call"] == 41.0


def test_bad_checkpoint_rows_are_refused():
    with pytest.raises(ZsimInputError, match="checkpoint"):
        check_microbench({"checkpoint": [{"checkpoint_forward_s": "fast"}]}, "x.json")
    with pytest.raises(ZsimInputError, match="probe_small_linear_call_s"):
        checkpoint_host_costs([{"checkpoint_forward_s": 1e-3, "checkpoint_recompute_s": 1e-3}])
