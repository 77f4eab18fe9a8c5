"""OpCoster's cache is keyed per kind by the fields its price reads
(zsim.system.costs._KIND_PRICE_KEYS): cached prices equal uncached ones on real schedules,
and an op's price does not move with the fields its kind's key leaves out."""

from dataclasses import fields, replace

import pytest

from zsim.collective_pricing import collective_timer
from zsim.groups import INTER_NODE, INTRA_NODE
from zsim.job import RunSettings, resolve
from zsim.ops import Op
from zsim.predict import host_share, schedule_stage, workload_of
from zsim.system.costs import _KIND_PRICE_KEYS, OpCoster
from zsim.system.host import split_host

_CASES = [dict(stage=0), dict(stage=1, offload_optimizer="cpu"), dict(stage=2, grad_accum=2),
          dict(stage=3, grad_accum=2, activation_checkpointing=True),
          dict(stage=3, offload_optimizer="cpu", offload_param="cpu"),
          dict(stage=3, offload_optimizer="nvme", micro_batch=2)]


def _coster(job):
    hw = job.hardware
    return OpCoster(workload_of(job), job.run.precision, hw, collective_timer(job.cluster, hw),
                    host_share(job.cluster, job.cpu_threads))


def _job(**run):
    return resolve(RunSettings(model="llama-2-7b", topo="dgx-a100", nodes=2, **{"micro_batch": 1, **run}))


@pytest.mark.parametrize("run", _CASES)
def test_cached_prices_equal_uncached_ones(run):
    job = _job(**run)
    ops = split_host(schedule_stage(job).ops)
    coster, fresh = _coster(job), _coster(job)
    assert [coster(op) for op in ops] == [fresh._price(op) for op in ops]
    assert _coster(job).prices(ops) == [fresh._price(op) for op in ops]   # the list at once, cold
    assert coster.prices(ops) == [coster(op) for op in ops]               # and warm


def _variants(op: Op):
    """``op`` with each field its kind's key leaves out changed (ids and deps aside)."""
    keyed = set(_KIND_PRICE_KEYS[op.kind].__reduce__()[1])
    other = {"stream": "cpu", "name": "renamed", "micro_step": 3, "phase": "step", "modules": ("lm_head",),
             "pass_": "recompute", "collective": "all_reduce", "message_bytes": 7, "buffer_bytes": 123_456,
             "group": INTER_NODE if op.group is not INTER_NODE else INTRA_NODE, "nbytes": 999, "params": 77,
             "overhead": "zero3_module_hook_s", "count": 5, "syncs": 2, "pageable": not op.pageable,
             "cpu_pass": "cast"}
    for f in fields(Op):
        if f.name in other and f.name not in keyed:
            yield replace(op, **{f.name: other[f.name]})


def test_fields_left_out_of_a_kinds_key_do_not_change_its_price():
    seen = set()
    for run in (_CASES[1], _CASES[4], _CASES[5]):
        job = _job(**run)
        coster = _coster(job)
        for op in split_host(schedule_stage(job).ops):
            key = (run["stage"], _KIND_PRICE_KEYS[op.kind](op))
            if key in seen:
                continue
            seen.add(key)
            for variant in _variants(op):
                assert _coster(job)._price(variant) == coster._price(op), (op, variant)
    kinds = {key[0] for _, key in seen}
    assert kinds >= {"compute", "dispatch", "collective", "copy", "host_loop", "overhead", "cpu_adam"}
