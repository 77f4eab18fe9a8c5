"""Every real-world DeepSpeed config in tests/corpus/ parses and predicts (fits may be false)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from zsim.io import dumps_json
from zsim.predict import predict

CORPUS = Path(__file__).resolve().parent / "corpus"
CONFIGS = sorted(CORPUS.glob("*.json"))


def _autos(node) -> int:
    if isinstance(node, dict):
        return sum(_autos(v) for v in node.values())
    if isinstance(node, list):
        return sum(_autos(v) for v in node)
    return int(isinstance(node, str) and node.strip().lower() == "auto")


def test_corpus_is_there():
    assert len(CONFIGS) >= 12


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_parses_and_predicts(path):
    raw = json.loads(path.read_text())
    pred = predict(ds_config=path, topo="dgx-a100", model="llama-2-7b")
    zero = raw.get("zero_optimization", {})
    assert pred.stage == int(zero.get("stage", 0))
    assert pred.world_size == 8
    assert pred.train_batch == pred.micro_batch * pred.grad_accum * pred.world_size
    for key, field in (("train_micro_batch_size_per_gpu", "micro_batch"),
                       ("gradient_accumulation_steps", "grad_accum"), ("train_batch_size", "train_batch")):
        if key in raw and raw[key] != "auto":
            assert getattr(pred, field) == int(raw[key]), key
    legacy = {"offload_optimizer": "cpu"} if zero.get("cpu_offload") is True else {}  # deprecated alias
    for key in ("offload_optimizer", "offload_param"):
        device = (zero.get(key) or {}).get("device", legacy.get(key, "none"))
        assert getattr(pred, key) == device
    expected = "bf16" if (raw.get("bf16") or {}).get("enabled") in (True, "auto") else \
        "fp16" if (raw.get("fp16") or {}).get("enabled") is True else "fp32"
    assert pred.precision == expected
    assert math.isfinite(pred.step_time_s) and pred.step_time_s > 0
    assert pred.peak_memory_bytes > 0 and isinstance(pred.fits, bool)
    resolved = pred.ds_config_resolved
    assert _autos(resolved) == 0
    dumps_json(resolved)
    # deepspeed_config_auto.json means the same run when fed back in.
    again = predict(ds_config=dict(resolved), topo="dgx-a100", model="llama-2-7b").to_dict()
    first = pred.to_dict()
    again.pop("notes"), first.pop("notes")
    assert again == first
