"""`zsim.schedule(...)` returns a frozen, typed result like zsim.predict (issue 17)."""

from __future__ import annotations

import dataclasses
import json

import pytest

import zsim
from zsim.errors import ZsimInputError
from zsim.schedule import ScheduleResult, steady_state_collectives

MODEL = "tinyllama-1.1b"


def test_result_is_frozen_typed_and_json_ready():
    result = zsim.schedule(MODEL, {"zero_optimization": {"stage": 2}}, 4, micro_batch=3, grad_accum=2)
    assert isinstance(result, ScheduleResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.stage = 3
    assert (result.stage, result.world_size, result.micro_batch, result.grad_accum) == (2, 4, 3, 2)
    assert result.train_batch == 3 * 2 * 4
    assert result.model == MODEL and result.num_parameters > 1_000_000_000
    back = json.loads(json.dumps(result.to_dict()))
    assert "ops" not in back and back["collectives"] == result.collectives
    assert back["facts"]["num_params"] == result.num_parameters
    assert result.ops and all(op.kind for op in result.ops)


def test_collectives_are_the_comms_logger_counts():
    args = (MODEL, {"zero_optimization": {"stage": 3}}, 8)
    assert zsim.schedule(*args).collectives == steady_state_collectives(*args)


def test_wire_bytes_follow_the_bus_convention():
    # Stage 0 all-reduces every gradient: one GPU sends 2(n-1)/n of each buffer (nccl-tests).
    n = 4
    result = zsim.schedule(MODEL, None, n, stage=0)
    assert set(result.collectives) == {"all_reduce"}
    assert result.wire_bytes_per_gpu["all_reduce"] == pytest.approx(2 * (n - 1) / n * result.logged_bytes)
    # One rank sends nothing.
    assert sum(zsim.schedule(MODEL, None, 1, stage=0).wire_bytes_per_gpu.values()) == 0


def test_bad_input_is_one_line_error():
    with pytest.raises(ZsimInputError, match="unknown schedule override"):
        zsim.schedule(MODEL, None, 2, stag=1)
    with pytest.raises(ZsimInputError, match="gpus_per_node"):
        zsim.schedule(MODEL, None, 12, gpus_per_node=8)
