"""DeepSpeed config parsing: users' configs as written, auto values, DeepSpeed's refusals."""

import json
from pathlib import Path

import pytest

from zsim.dsconfig import Overrides, build_run_config, resolve_batch
from zsim.errors import ZsimInputError
from zsim.model import load_model

EXAMPLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "ds_config_zero2_offload.json"
SPEC = load_model("llama-2-7b")


def test_example_config_resolves_every_auto():
    run = build_run_config(str(EXAMPLE), SPEC, 8)
    assert run.zero.stage == 2 and run.zero.offload_optimizer == "cpu"
    assert run.zero.reduce_bucket_size == 200_000_000          # written as 2e8
    assert run.grad_accum == 8                                   # the user's value kept
    assert run.train_batch == run.micro_batch * run.grad_accum * 8
    text = json.dumps(run.resolved)
    assert "auto" not in text
    assert run.resolved["gradient_accumulation_steps"] == 8
    assert run.resolved["zero_optimization"]["allgather_bucket_size"] == 2e8


def test_hf_trainer_auto_rules_for_zero3():
    raw = {"zero_optimization": {"stage": 3, "reduce_bucket_size": "auto",
                                 "stage3_prefetch_bucket_size": "auto",
                                 "stage3_param_persistence_threshold": "auto"},
           "train_micro_batch_size_per_gpu": "auto"}
    run = build_run_config(raw, SPEC, 8)
    h = SPEC.hidden_size
    assert run.zero.reduce_bucket_size == h * h
    assert run.zero.stage3_prefetch_bucket_size == int(0.9 * h * h)
    assert run.zero.stage3_param_persistence_threshold == 10 * h
    assert run.zero.overlap_comm is True                         # stage-3 default


def test_flags_override_the_file():
    run = build_run_config(str(EXAMPLE), SPEC, 8, Overrides(stage=3, micro_batch=4, grad_accum=2))
    assert (run.zero.stage, run.micro_batch, run.grad_accum, run.train_batch) == (3, 4, 2, 64)


@pytest.mark.parametrize("tb, mb, ga, world, expect", [
    (32, 4, None, 8, (32, 4, 1)),
    (64, None, 2, 8, (64, 4, 2)),
    (None, 2, 4, 8, (64, 2, 4)),
    (16, None, None, 8, (16, 2, 1)),
])
def test_batch_rules_as_deepspeed(tb, mb, ga, world, expect):
    assert resolve_batch(tb, mb, ga, world) == expect


def test_broken_batch_identity_is_rejected():
    raw = {"train_batch_size": 30, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1}
    with pytest.raises(ZsimInputError, match="batch identity"):
        build_run_config(raw, SPEC, 8)


@pytest.mark.parametrize("raw, needle", [
    ({"zero_optimization": {"stage": 5}}, "stage"),
    ({"zero_optimization": {"stage": 2, "offload_param": {"device": "cpu"}}}, "offload_param"),
    ({"zero_optimization": {"stage": 2, "reduce_bucket_sise": 5}}, "reduce_bucket_sise"),
    ({"zero_optimization": {"stage": 2, "reduce_bucket_size": -5}}, "reduce_bucket_size"),
    ({"zero_optimization": {"stage": 2, "reduce_bucket_size": 1.5}}, "reduce_bucket_size"),
    ({"zero_optimization": {"stage": 2, "overlap_comm": "yes"}}, "overlap_comm"),
    ({"zero_optimization": "two"}, "zero_optimization"),
    ({"bf16": {"enabled": True}, "fp16": {"enabled": True}}, "bf16 and fp16"),
    ({"train_micro_batch_size_per_gpu": 0}, "train_micro_batch_size_per_gpu"),
    ({"gradient_clipping": float("nan")}, "gradient_clipping"),
])
def test_invalid_configs_name_the_key(raw, needle):
    with pytest.raises(ZsimInputError, match=needle):
        build_run_config(raw, SPEC, 8)


def test_malformed_and_missing_files(tmp_path):
    bad = tmp_path / "ds.json"
    bad.write_text('{"zero_optimization": {"stage": 2,}')
    with pytest.raises(ZsimInputError, match="malformed JSON"):
        build_run_config(str(bad), SPEC, 8)
    with pytest.raises(ZsimInputError, match="not found"):
        build_run_config(str(tmp_path / "nope.json"), SPEC, 8)
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ZsimInputError, match="UTF-8"):
        build_run_config(str(bad), SPEC, 8)


def test_precision_and_comm_dtype():
    run = build_run_config({"fp16": {"enabled": True}, "communication_data_type": "fp32"}, SPEC, 2)
    assert run.precision == "fp16" and run.comm_dtype_bytes == 4 and run.param_bytes == 2
    run = build_run_config({}, SPEC, 2)
    assert run.precision == "fp32" and run.param_bytes == 4


@pytest.mark.parametrize("zero", [{"stage": 3, "stage3_module_granularity_threshold": 1000},
                                  {"stage": 3, "leaf_module": {"classes": ["torch.nn.Linear"]}}])
def test_hook_tree_keys_other_than_the_default_are_refused(zero):
    """They change which modules get ZeRO-3 hooks; zsim models DeepSpeed's defaults only."""
    from zsim.dsconfig import Overrides, build_run_config
    from zsim.errors import ZsimInputError
    from zsim.model import load_model
    with pytest.raises(ZsimInputError, match="not modelled"):
        build_run_config({"zero_optimization": zero}, load_model("tinyllama-1.1b"), 8, Overrides())
