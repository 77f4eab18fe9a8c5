"""Pipeline-schedule truth: the instruction order a real DeepSpeed 0.19.8 ``PipelineModule``
runs on each stage (CPU gloo ranks, validation/cpu_truth/pipeline_schedule.py) must equal
zsim.parallel.pipeline.deepspeed_train_schedule exactly: every atomic step, every
instruction, every pipeline buffer; and the layers DeepSpeed put on each stage must be
zsim.parallel.layout.stage_layer_counts.

Without torch/deepspeed the tests skip — unless ZSIM_REQUIRE_TRUTH=1 (CI), where they FAIL.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from truth_packages import require_truth_packages
from zsim.parallel.layout import stage_layer_counts
from zsim.parallel.pipeline import deepspeed_train_schedule, flatten

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytestmark = pytest.mark.schedule_truth

#: (stages, micro-batches per step, data-parallel replicas, layers, ZeRO stage): fewer
#: micro-batches than stages, equal, more; an odd layer count (uneven partition); replicated
#: stages, under ZeRO-1 (what DeepSpeed's pipeline engine runs with data parallelism).
CASES = [(2, 4, 1, 4, 0), (3, 2, 1, 7, 0), (2, 3, 2, 4, 1), (4, 5, 1, 8, 0)]


@pytest.fixture(scope="module")
def truth():
    """The launcher module (skips, or fails under ZSIM_REQUIRE_TRUTH=1, without deepspeed)."""
    require_truth_packages("pipeline schedule truth", "torch", "deepspeed")
    from validation.cpu_truth import pipeline_schedule
    return pipeline_schedule


def _as_lists(steps):
    return [[[c.kind.value, c.buffer] for c in step] for step in steps]


@pytest.mark.parametrize("stages,micro_batches,dp,layers,zero_stage", CASES)
def test_pipeline_engine_runs_zsims_schedule(truth, stages, micro_batches, dp, layers, zero_stage):
    result = truth.run(stages, micro_batches, dp=dp, layers=layers, zero_stage=zero_stage)
    assert result["replicas_agree"], "data-parallel replicas of a stage ran different schedules"
    assert sorted(result["stages"]) == list(range(stages))
    counts = stage_layer_counts(layers, stages)
    for stage, measured in result["stages"].items():
        assert measured["micro_batches"] == micro_batches
        predicted = deepspeed_train_schedule(stage, stages, micro_batches)
        assert measured["steps"] == _as_lists(predicted), f"stage {stage}: steps differ"
        # What the engine executed, in order, is the steps flattened (nothing skipped or added).
        assert measured["executed"] == [[c.kind.value, c.buffer] for c in flatten(predicted)], \
            f"stage {stage}: executed order differs"
        parts = measured["parts"]
        assert tuple(b - a for a, b in zip(parts, parts[1:])) == counts
