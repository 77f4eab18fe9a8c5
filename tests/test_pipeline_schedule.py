"""The pipeline schedules of zsim/parallel/pipeline.py: Megatron's 1F1B order, DeepSpeed's
TrainSchedule (against the installed class itself), the bubble, and the timeline."""

from __future__ import annotations

import itertools

import pytest

from truth_packages import require_truth_packages
from zsim.errors import ZsimInputError
from zsim.parallel.pipeline import (Instruction, Kind, Phase, bubble_fraction, deepspeed_buffers,
                                    deepspeed_train_schedule, flatten, one_f_one_b, timeline)

GRID = [(p, m) for p in range(1, 7) for m in range(1, 11)]


def _compute(cmds):
    return [(c.kind, c.micro_batch) for c in cmds if c.kind in (Kind.FORWARD, Kind.BACKWARD)]


@pytest.mark.parametrize("p,m", [(4, 8), (4, 2), (1, 3), (8, 8)])
def test_one_f_one_b_phases(p, m):
    """Megatron schedules.py:2277-2279: min(p - i - 1, m) warm-up forwards, m - warm-up
    steady (forward, backward) pairs, the warm-up's backwards to cool down."""
    for stage in range(p):
        cmds = one_f_one_b(stage, p, m)
        warmup = min(p - stage - 1, m)
        phases = [c.phase for c in cmds]
        assert phases.count(Phase.WARMUP) == warmup
        assert phases.count(Phase.STEADY) == 2 * (m - warmup)
        assert phases.count(Phase.COOLDOWN) == warmup
        steady = [(c.kind, c.micro_batch) for c in cmds if c.phase is Phase.STEADY]
        assert steady == [x for j in range(m - warmup)
                          for x in ((Kind.FORWARD, warmup + j), (Kind.BACKWARD, j))]
        assert [c.kind for c in cmds[-2:]] == [Kind.REDUCE_GRADS, Kind.OPTIMIZER_STEP]


@pytest.mark.parametrize("p,m", GRID)
def test_every_micro_batch_forward_then_backward_once(p, m):
    for stage in range(p):
        for cmds in (one_f_one_b(stage, p, m), flatten(deepspeed_train_schedule(stage, p, m))):
            order = _compute(cmds)
            assert sorted(order) == sorted([(Kind.FORWARD, j) for j in range(m)] + [(Kind.BACKWARD, j) for j in range(m)])
            for j in range(m):
                assert order.index((Kind.FORWARD, j)) < order.index((Kind.BACKWARD, j))
            # backwards in micro-batch order (1F1B is first-in first-out)
            assert [mb for k, mb in order if k is Kind.BACKWARD] == list(range(m))


@pytest.mark.parametrize("p,m", [(2, 1), (2, 4), (4, 4), (4, 16), (8, 3), (6, 10)])
def test_bubble_of_both_schedules(p, m):
    """With equal micro-batch times the makespan is (m + p - 1)(t_f + t_b) and the idle share
    (p - 1)/(m + p - 1), for Megatron's 1F1B and for DeepSpeed's schedule alike."""
    forward_s, backward_s = 1.0, 2.5
    for per_stage in ([one_f_one_b(i, p, m) for i in range(p)],
                      [flatten(deepspeed_train_schedule(i, p, m)) for i in range(p)]):
        tl = timeline(per_stage, forward_s, backward_s)
        assert tl.makespan_s == pytest.approx((m + p - 1) * (forward_s + backward_s))
        assert tl.bubble_fraction == pytest.approx((p - 1) / (m + p - 1))
    assert bubble_fraction(p, m) == pytest.approx((p - 1) / (m + p - 1))


def test_timeline_refuses_a_deadlock():
    """Stage 0 waiting for a backward of micro-batch 1 that stage 1 runs only after
    a forward of micro-batch 0 that stage 0 never sends."""
    f = lambda mb: Instruction(Kind.FORWARD, mb)   # noqa: E731
    b = lambda mb: Instruction(Kind.BACKWARD, mb)  # noqa: E731
    with pytest.raises(ZsimInputError, match="deadlocks"):
        timeline([(b(0), f(0)), (f(0), b(0))], 1.0, 1.0)


@pytest.mark.parametrize("p,m", [(2, 4), (3, 2), (4, 9), (5, 5)])
def test_deepspeed_steps_pair_sends_with_receives(p, m):
    """TrainSchedule's steps are atomic: a barrier between steps cannot deadlock
    (schedule.py:15-19), so each send has its matching receive in the same step."""
    steps = [deepspeed_train_schedule(i, p, m) for i in range(p)]
    total = 2 * (m + p - 1)
    assert all(len(s) == total for s in steps)
    for k, i in itertools.product(range(total), range(p - 1)):
        sends_act = [c.micro_batch for c in steps[i][k] if c.kind is Kind.SEND_ACTIVATION]
        recv_act = [c.micro_batch for c in steps[i + 1][k] if c.kind is Kind.RECV_ACTIVATION]
        sends_grad = [c.micro_batch for c in steps[i + 1][k] if c.kind is Kind.SEND_GRAD]
        recv_grad = [c.micro_batch for c in steps[i][k] if c.kind is Kind.RECV_GRAD]
        assert sends_act == recv_act and sends_grad == recv_grad, (k, i)


def test_matches_the_installed_deepspeed_train_schedule():
    """Every (stages, micro-batches, stage) of the grid: DeepSpeed's own TrainSchedule yields
    the same steps, instructions and buffers, and allocates the same number of buffers."""
    require_truth_packages("DeepSpeed's TrainSchedule", "deepspeed")
    from deepspeed.runtime.pipe import schedule as ds
    for p, m in GRID:
        for stage in range(p):
            theirs = ds.TrainSchedule(micro_batches=m, stages=p, stage_id=stage)
            expected = [[(type(c).__name__, c.kwargs.get("buffer_id")) for c in step] for step in theirs]
            ours = [[(c.kind.value, c.buffer) for c in step] for step in deepspeed_train_schedule(stage, p, m)]
            assert ours == expected, (p, m, stage)
            assert deepspeed_buffers(stage, p, m) == theirs.num_pipe_buffers()


@pytest.mark.parametrize("args", [(0, 0, 4), (2, 2, 4), (0, 2, 0), (0, True, 3)])
def test_bad_input(args):
    with pytest.raises(ZsimInputError):
        one_f_one_b(*args)
    with pytest.raises(ZsimInputError):
        deepspeed_train_schedule(*args)
