"""The memory-over-time curve is the memory model's own: its highest moment is the peak
:func:`zsim.memory.estimate_memory` reports, with the same breakdown, for every stage and
offload choice; its points lie inside the simulated step, in time order."""

from __future__ import annotations

import pytest

import zsim
from zsim.diagnose.predicted import predicted_side
from zsim.memory_curve import memory_curve, peak_point

CASES = [
    dict(stage=0), dict(stage=1, grad_accum=2), dict(stage=2, grad_accum=3),
    dict(stage=2, offload_optimizer="cpu"), dict(stage=3), dict(stage=3, grad_accum=2),
    dict(stage=3, offload_optimizer="cpu", offload_param="cpu"),
    dict(stage=3, activation_checkpointing=True), dict(stage=1, seq=8192, micro_batch=1),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_curve_peaks_where_the_estimate_does(case):
    pred = zsim.predict("tinyllama-1.1b", "dgx-a100", keep_timeline=True, **case)
    points = memory_curve(pred.memory_moments, predicted_side(pred).windows)
    peak = peak_point(points)
    assert peak.moment.total_bytes == pred.peak_memory_bytes
    assert dict(peak.moment.breakdown) == dict(pred.memory_breakdown)
    phase = "step" if peak.moment.phase == "step" else "backward"
    assert phase == pred.memory_peak_phase
    times = [p.time_s for p in points]
    assert times == sorted(times) and times[0] == 0.0 and times[-1] <= pred.step_time_s
    # Every micro-step's forward starts from the same level and its backward rises above it.
    starts = [p.moment.total_bytes for p in points if p.moment.name == "forward starts"]
    assert len(starts) == pred.grad_accum + 1 and len(set(starts)) == 1


def test_moments_are_only_kept_with_the_timeline():
    assert zsim.predict("tinyllama-1.1b", "dgx-a100").memory_moments == ()
    assert "memory_moments" not in zsim.predict("tinyllama-1.1b", "dgx-a100", keep_timeline=True).to_dict()
