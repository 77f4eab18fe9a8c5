"""predict.op_coster keeps the op pricers of recent simulations: simulations priced by a kept
coster (warmed by other jobs first) equal those priced by a fresh one, over varied jobs."""

import pytest

import importlib

from zsim.job import RunSettings, resolve

#: The module (``zsim.predict`` the attribute is the function of the same name).
predict_module = importlib.import_module("zsim.predict")

_JOBS = [dict(nodes=2, stage=3, micro_batch=1, grad_accum=2), dict(nodes=2, stage=3, micro_batch=2),
         dict(nodes=1, stage=2, micro_batch=1, offload_optimizer="cpu"), dict(nodes=2, stage=0, micro_batch=4),
         dict(nodes=2, stage=3, micro_batch=1, activation_checkpointing=True, seq=1024),
         dict(gpus=4, stage=1, micro_batch=2)]


def _simulated(job):
    sim = predict_module.simulate_stage(job, predict_module.schedule_stage(job))
    t = sim.timeline
    return sim.step_time_s, t.step_time_s, t.busy_s, t.exposed_s, t.spans


@pytest.mark.parametrize("order", [1, -1])
def test_kept_costers_price_as_fresh_ones(order):
    jobs = [resolve(RunSettings(model="llama-2-7b", topo="dgx-a100", **j)) for j in _JOBS[::order]]
    fresh = []
    for job in jobs:
        predict_module._COSTERS.clear()
        fresh.append(_simulated(job))
    predict_module._COSTERS.clear()
    kept = [_simulated(job) for job in jobs + jobs]   # the second round: every coster warm
    assert kept == fresh + fresh
    assert len(predict_module._COSTERS) <= predict_module.COSTERS_KEPT


def test_a_job_on_another_profile_gets_its_own_coster():
    a = resolve(RunSettings(model="llama-2-7b", topo="dgx-a100", nodes=2, stage=3, micro_batch=1))
    b = resolve(RunSettings(model="llama-2-7b", topo="dgx-h100", nodes=2, stage=3, micro_batch=1))
    assert predict_module.op_coster(a) is predict_module.op_coster(a)
    assert predict_module.op_coster(a) is not predict_module.op_coster(b)
