"""A search runs the cyclic garbage collector rarely (zsim/gcpolicy.py): building and
simulating a schedule must leave no reference cycle behind, or each build's ops would stay
in memory until a collection finds them."""

import gc
from contextlib import contextmanager
from dataclasses import replace

import pytest

from zsim.dsconfig import OffloadDevice, Overrides, build_run_config
from zsim.model import load_model
from zsim.predict import predict
from zsim.schedule import build_schedule, tape
from zsim.schedule.api import schedule_facts


@contextmanager
def _no_collector():
    """The block with the cyclic collector off, its garbage found after: a list of objects."""
    gc.collect()
    found: list = []
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
        gc.collect()
        found.extend(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_a_build_leaves_no_cycle(stage):
    """Recorded and played-back stage-3 builds, their facts and the other stages' builds."""
    spec = load_model("llama-2-7b")
    run = build_run_config(None, spec, 16, Overrides(stage=stage, micro_batch=1, grad_accum=2))
    offloaded = replace(run, zero=replace(run.zero, offload_optimizer=OffloadDevice.CPU))
    tape._TAPES.clear()
    with _no_collector() as garbage:
        for r in (run, offloaded):
            build_schedule(spec, r, 8)
            schedule_facts(spec, r, 8)
    assert [type(o).__name__ for o in garbage] == []


def test_a_prediction_leaves_no_cycle():
    """A ZeRO-3 prediction (a second one: the first loads what is kept for the process)."""
    args = dict(nodes=2, stage=3, micro_batch=1, grad_accum=2)
    predict("llama-2-7b", "dgx-a100", **args)
    with _no_collector() as garbage:
        predict("llama-2-7b", "dgx-a100", **args)
    assert [type(o).__name__ for o in garbage] == []
