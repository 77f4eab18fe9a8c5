"""zsim's defaults for the DeepSpeed config keys it models equal DeepSpeed 0.19.8's own.

Reads DeepSpeed's pydantic config classes; needs deepspeed (skips without it unless
ZSIM_REQUIRE_TRUTH=1, where it fails).
"""

from __future__ import annotations

import os

import pytest

from zsim.dsconfig import ZERO_DEFAULTS, build_run_config
from zsim.model import load_model

pytestmark = pytest.mark.schedule_truth


def _deepspeed_zero_config():
    try:
        from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    except Exception as exc:
        if os.environ.get("ZSIM_REQUIRE_TRUTH") == "1":
            pytest.fail(f"deepspeed is required: {exc!r}")
        pytest.skip(f"deepspeed not installed: {exc!r}")
    return DeepSpeedZeroConfig


def _field_name(cls, key: str) -> str:
    """The pydantic field for a JSON key (the stage3_* keys are aliases)."""
    if key in cls.model_fields:
        return key
    for name, info in cls.model_fields.items():
        if info.alias == key:
            return name
    raise AssertionError(f"DeepSpeedZeroConfig has no field or alias {key!r}")


@pytest.mark.parametrize("key", sorted(k for k in ZERO_DEFAULTS if k != "overlap_comm"))
def test_zero_default_matches_deepspeed(key: str) -> None:
    """Each modelled zero_optimization key defaults as in DeepSpeedZeroConfig."""
    cls = _deepspeed_zero_config()
    expected = getattr(cls(), _field_name(cls, key))
    assert ZERO_DEFAULTS[key] == expected


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_overlap_comm_default_per_stage(stage: int) -> None:
    """overlap_comm: DeepSpeed resolves None to True for stage 3 only (config.py:384-387)."""
    cls = _deepspeed_zero_config()
    run = build_run_config({"zero_optimization": {"stage": stage}}, load_model("llama-2-7b"), 8)
    assert run.zero.overlap_comm == bool(cls(stage=stage).overlap_comm)


def test_gradient_clipping_default_matches_deepspeed() -> None:
    """DeepSpeed clips at 1.0 unless told otherwise (runtime/constants.py:203): in fp32 stage 0
    that adds a 4-byte all_reduce per step (engine.py:3506-3511)."""
    _deepspeed_zero_config()
    from deepspeed.runtime.constants import GRADIENT_CLIPPING_DEFAULT
    run = build_run_config({}, load_model("llama-2-7b"), 8)
    assert run.gradient_clipping == GRADIENT_CLIPPING_DEFAULT
