"""What a search's simulations skip gives the same numbers: a timeline without spans has the
totals of one with them, and link utilisation looked up per collective shape equals the sum
over every collective op."""

import pytest

from zsim.collective_pricing import link_utilisation
from zsim.collectives import collective_cost, link_table
from zsim.job import RunSettings, resolve
from zsim.ops import LOGGER_TO_COLLECTIVE
from zsim.predict import schedule_stage, simulate_stage

_CASES = [dict(stage=0), dict(stage=2, offload_optimizer="cpu", grad_accum=2),
          dict(stage=3, grad_accum=3, activation_checkpointing=True),
          dict(stage=3, offload_param="cpu", micro_batch=2)]


def _job(**run):
    return resolve(RunSettings(model="llama-2-7b", topo="dgx-a100", nodes=2, **{"micro_batch": 1, **run}))


@pytest.mark.parametrize("run", _CASES)
def test_a_timeline_without_spans_has_the_same_totals(run):
    job = _job(**run)
    schedule = schedule_stage(job)
    full, short = simulate_stage(job, schedule), simulate_stage(job, schedule, spans=False)
    assert short.timeline.spans == [] and len(full.timeline.spans) == len(full.ops)
    for name in ("step_time_s", "busy_s", "exposed_s"):
        assert getattr(short.timeline, name) == getattr(full.timeline, name)
    assert (short.step_time_s, short.framework_s, short.ops) == (full.step_time_s, full.framework_s, full.ops)


def _link_utilisation_op_by_op(ops, cluster, hw, step_s):
    table, busy = link_table(hw), {}
    for op in ops:
        if op.kind == "collective":
            cost = collective_cost(cluster, table, LOGGER_TO_COLLECTIVE[op.collective], int(op.buffer_bytes),
                                   group=op.group)
            for link, sec in (cost.link_busy_s or {}).items():
                busy[link] = busy.get(link, 0.0) + sec
    return {k: min(v / step_s, 1.0) for k, v in sorted(busy.items())}


@pytest.mark.parametrize("run", _CASES)
def test_link_utilisation_per_shape_equals_op_by_op(run):
    job = _job(**run)
    ops = schedule_stage(job).ops
    for step_s in (0.5, 3.0):
        got = link_utilisation(ops, job.cluster, job.hardware, step_s)
        assert got == _link_utilisation_op_by_op(ops, job.cluster, job.hardware, step_s)
        assert got
