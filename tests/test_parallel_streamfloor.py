"""The stream floor of `zsim plan --search-3d` (zsim.parallel.streamfloor): ZeRO's ops do not
depend on the micro-batch, their priced busy time per stream is what the engine simulates,
and the floor never exceeds a simulated step (the full one, nor the screen's extrapolation)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from zsim.job import RunSettings, place
from zsim.model import load_model
from zsim.parallel.layout import stage_layer_counts
from zsim.parallel.plan3d import Candidate3D, _screen
from zsim.parallel.predict3d import ParallelAsk, predict_parallel, stage_memory_model
from zsim.parallel.stages import class_schedules, schedule_fields, stage_job, stage_setup
from zsim.parallel.streamfloor import StreamFloors, zero_busy
from zsim.predict import simulate_stage
from zsim.schedule import build_schedule

# two DGX H100 nodes: ZeRO's gathers and reductions cross InfiniBand
TWO_NODES = RunSettings(model="tinyllama-1.1b", topo="dgx-h100", nodes=2, seq=1024)
ASKS = [ParallelAsk(), ParallelAsk(sp=2), ParallelAsk(tp=2, sequence_parallel=True)]
ZERO = [(0, "none"), (1, "none"), (2, "none"), (3, "none"), (2, "cpu"), (3, "cpu")]


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
@pytest.mark.parametrize("ckpt", [False, True])
def test_zero_ops_do_not_depend_on_the_micro_batch(stage, ckpt):
    site = place(TWO_NODES)
    runs = [stage_setup(replace(TWO_NODES, seq=seq).with_run(stage=stage, micro_batch=mb, grad_accum=2,
                                                             activation_checkpointing=ckpt), ParallelAsk(), site)
            for mb, seq in ((1, 1024), (4, 1024), (2, 2048))]
    shard = runs[0].shard
    first = build_schedule(shard, runs[0].run, gpus_per_node=8).ops
    for s in runs[1:]:
        assert schedule_fields(s.run) == schedule_fields(runs[0].run)
        assert build_schedule(shard, s.run, gpus_per_node=8).ops == first
    # the fields do matter: another gradient accumulation is another schedule
    other = replace(runs[0].run, grad_accum=3)
    assert schedule_fields(other) != schedule_fields(runs[0].run)
    assert build_schedule(shard, other, gpus_per_node=8).ops != first


def _simulate(settings, ask, site):
    s = stage_setup(settings, ask, site)
    counts = stage_layer_counts(s.shard.num_layers, 1)
    ((_, schedule),) = class_schedules(s, s.run, counts).values()
    return simulate_stage(stage_job(s, s.run), schedule, s.workload)


def _busy(sim, stream: str) -> float:
    return sum(sp.end_s - sp.start_s for sp in sim.timeline.spans if sp.stream == stream)


@pytest.mark.parametrize("stage,offload", ZERO)
@pytest.mark.parametrize("ckpt", [False, True])
def test_priced_streams_are_the_simulated_ones(stage, offload, ckpt):
    """Streams without kernels (comm, copies, CPU optimizer) are busy exactly as priced at one
    micro-step and, under ZeRO-3, at every gradient accumulation; at least that under
    ZeRO-0/1/2; the host and compute streams at least ZeRO's part."""
    site = place(TWO_NODES)
    ask = ParallelAsk(sp=2)
    one = TWO_NODES.with_run(stage=stage, offload_optimizer=offload, micro_batch=2, grad_accum=1,
                             activation_checkpointing=ckpt)
    zb = zero_busy(stage_setup(one, ask, site))
    assert zb.repeats == (stage == 3)
    for ga in (1, 2, 3):
        sim = _simulate(replace(one, grad_accum=ga), ask, site)
        for stream in set(zb.step_s) | set(zb.micro_s):
            priced, simulated = zb.stream_s(stream, ga), _busy(sim, stream)
            if stream in ("host", "compute"):
                assert priced <= simulated * (1 + 1e-12)
            elif stage == 3 or ga == 1:
                assert priced == pytest.approx(simulated, rel=1e-9, abs=1e-12)
            else:
                assert priced <= simulated * (1 + 1e-12)


def test_floor_never_exceeds_a_simulated_step():
    """Over a grid of layouts, ZeRO settings, checkpointing and batch splits on 70B-shaped
    layers over 16 nodes (the benchmark's shape, 8 layers to keep it short): the floor is at
    most the full step at its gradient accumulation and the screen's value (extrapolated from
    1 and 2 micro-steps), above the compute floor where ZeRO's work outlasts the kernels, and
    close under the step where one stream binds."""
    settings = RunSettings(model=replace(load_model("llama-2-70b"), num_layers=8), topo="dgx-h100", nodes=16,
                           seq=2048)
    site = place(settings)
    floors = StreamFloors(settings, site)
    ratios = []
    for ask in ASKS:
        for stage, offload in ZERO:
            if (stage, offload) == (1, "none"):
                continue          # as stage 0 and 2 without a pipeline; the streams test has it
            for ckpt in (False, True):
                model = stage_memory_model(settings.with_run(stage=stage, offload_optimizer=offload, micro_batch=1,
                                                             grad_accum=1), ask, site)
                for mb, ga in ((1, 4), (4, 1)):
                    cand = Candidate3D(ask, stage, offload, mb, ga, ckpt)
                    compute = model.floor_s(mb, ga, ckpt)
                    floor = floors.floor_s(ask, cand.run_fields(), compute)
                    screened, exact, _ = _screen(settings, site, cand)
                    full = exact or predict_parallel(settings.with_run(**cand.run_fields()), ask, site=site)
                    assert compute <= floor <= full.prediction.step_time_s, cand.label()
                    assert floor <= screened, cand.label()
                    ratios.append((floor / screened, compute / screened))
    assert sum(f > 1.5 * c for f, c in ratios) >= 10      # ZeRO's streams outlast the kernels
    assert sum(f > 0.99 for f, _ in ratios) >= 10         # and bound the step closely
