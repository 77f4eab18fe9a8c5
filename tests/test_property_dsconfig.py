"""Property tests of the DeepSpeed-config parser (zsim.dsconfig), the layer most hand-written
input goes through.

Four generators: configs valid by construction (every key in each spelling users write:
``2e8``, ``"2e8"``, ``"auto"``, deprecated aliases, HF/Accelerate extras); valid configs with
exactly one key broken (the error must name that key); arbitrary JSON shaped like a config
(anything may happen except a crash); and raw file bytes (non-UTF-8, NaN/Infinity, 1e400,
deep nesting, duplicate keys). The last test checks how many inputs were tried.
"""

from __future__ import annotations

import json
import math
import os

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from zsim.dsconfig import (MAX_GRAD_ACCUM, ZERO_DEFAULTS, Overrides, RunConfig,
                           build_run_config, load_ds_config)
from zsim.errors import ZsimInputError
from zsim.limits import MAX_DS_INT
from zsim.io import dumps_json
from zsim.model import from_hf_config

#: Examples per test; ZSIM_PROPERTY_SCALE=10 searches ten times longer (CI runs scale 1).
SCALE = float(os.environ.get("ZSIM_PROPERTY_SCALE", "1"))
EXAMPLES = {k: max(1, int(v * SCALE)) for k, v in
            {"valid": 300, "broken": 400, "arbitrary": 300, "bytes": 200, "overrides": 150}.items()}
SETTINGS = dict(deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

MODEL = from_hf_config({"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
                        "num_key_value_heads": 2, "intermediate_size": 512, "vocab_size": 1000,
                        "max_position_embeddings": 512}, name="tiny")

INT_KEYS = sorted(k for k, v in ZERO_DEFAULTS.items() if isinstance(v, int) and not isinstance(v, bool)
                  and k != "stage")
BOOL_KEYS = sorted(k for k, v in ZERO_DEFAULTS.items() if isinstance(v, bool))


def check_error(exc: ZsimInputError, *needles: str) -> None:
    """One short line that names the offending key or value."""
    text = str(exc)
    assert text and "\n" not in text and "\r" not in text, repr(text)
    assert len(text) < 600, text
    assert any(n.lower() in text.lower() for n in needles), (needles, text)


def parse(raw, world=4, overrides=Overrides()):
    """build_run_config, with anything but a result or ZsimInputError failing the test."""
    return build_run_config(raw, MODEL, world, overrides)


# ---- values in the spellings people write --------------------------------------------------

def int_spelling(value: int) -> st.SearchStrategy:
    """``value`` as 123, 123.0, "123", or "1.23e2" when the float is exact."""
    options = [st.just(value), st.just(str(value))]
    if abs(value) < 2**53 and float(value) == value:
        options += [st.just(float(value)), st.just(f"{float(value):e}")]
    return st.one_of(options)


def zero_int(key: str) -> st.SearchStrategy:
    low = 1 if key in ("reduce_bucket_size", "zero_hpz_partition_size") else 0
    if key == "zero_hpz_partition_size":
        return st.integers(1, 8).flatmap(int_spelling)
    # Huge sizes are valid (a bucket larger than the model is one bucket) up to DeepSpeed's
    # sys.maxsize; beyond it they are refused (zsim.limits).
    sizes = st.one_of(st.integers(low, 10**9), st.sampled_from([2 * 10**8, 5 * 10**8, 10**12, MAX_DS_INT]))
    return st.one_of(sizes.flatmap(int_spelling), st.just("auto"), st.just(" Auto "))


def offload(device: str) -> st.SearchStrategy:
    extras = st.fixed_dictionaries({}, optional={
        "pin_memory": st.booleans(), "nvme_path": st.just("/local_nvme"),
        "buffer_count": st.integers(1, 8), "fast_init": st.booleans(),
        "buffer_size": st.just(1e8), "max_in_cpu": st.just(1e9), "ratio": st.just(1.0)})
    return extras.map(lambda d: {"device": device, **d})


@st.composite
def zero_sections(draw, stage: int) -> dict:
    """A valid zero_optimization section for ``stage``."""
    sec: dict = {"stage": draw(st.one_of(int_spelling(stage), st.just("auto") if stage == 0 else st.nothing()))}
    for key in draw(st.lists(st.sampled_from(INT_KEYS), unique=True, max_size=6)):
        sec[key] = draw(zero_int(key))
    for key in draw(st.lists(st.sampled_from(BOOL_KEYS), unique=True, max_size=4)):
        sec[key] = draw(st.one_of(st.booleans(), st.just("auto")))
    if draw(st.booleans()):
        sec["overlap_comm"] = draw(st.one_of(st.booleans(), st.none(), st.just("auto")))
    if stage >= 1 and draw(st.booleans()):
        sec["offload_optimizer"] = draw(st.sampled_from(["cpu", "nvme", "none"]).flatmap(offload))
    if stage == 3 and draw(st.booleans()):
        sec["offload_param"] = draw(st.sampled_from(["cpu", "nvme", "none"]).flatmap(offload))
    if stage == 3 and draw(st.booleans()):  # what Accelerate and the HF docs add
        sec["stage3_gather_16bit_weights_on_model_save"] = draw(st.one_of(st.booleans(), st.just("auto")))
    if draw(st.booleans()):
        alias = draw(st.sampled_from(["prefetch_bucket_size", "param_persistence_threshold",
                                      "max_live_parameters", "max_reuse_distance"]))
        sec[alias] = draw(st.integers(0, 10**9).flatmap(int_spelling))
    return sec


@st.composite
def batch_keys(draw, world: int) -> dict:
    """Any consistent subset of the three batch keys, each maybe "auto"."""
    micro, gas = draw(st.integers(1, 16)), draw(st.integers(1, 64))
    values = {"train_micro_batch_size_per_gpu": micro, "gradient_accumulation_steps": gas,
              "train_batch_size": micro * gas * world}
    out = {}
    for key, value in values.items():
        choice = draw(st.sampled_from(["value", "auto", "absent"]))
        if choice == "value":
            out[key] = draw(int_spelling(value))
        elif choice == "auto":
            out[key] = "auto"
    # With only gradient_accumulation_steps DeepSpeed needs a micro batch: zsim defaults it.
    return out


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
json_any = st.recursive(json_leaf, lambda c: st.one_of(st.lists(c, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), c, max_size=3)),
                        max_leaves=8)

#: Top-level keys DeepSpeed or the HF Trainer accept that zsim does not model.
OTHER_TOP = st.fixed_dictionaries({}, optional={
    "optimizer": st.just({"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto",
                                                      "weight_decay": "auto"}}),
    "scheduler": st.just({"type": "WarmupLR", "params": {"warmup_min_lr": "auto",
                                                         "warmup_max_lr": "auto", "warmup_num_steps": "auto"}}),
    "steps_per_print": st.integers(1, 10**4), "wall_clock_breakdown": st.booleans(),
    "zero_allow_untested_optimizer": st.booleans(), "communication_data_type":
        st.sampled_from([None, "auto", "fp32", "fp16", "bf16", "BF16", "float32"]),
    "comms_logger": st.just({"enabled": True, "verbose": False, "prof_all": True}),
    "custom_key": json_any,
})


@st.composite
def valid_configs(draw) -> tuple[dict, int, int]:
    stage = draw(st.integers(0, 3))
    world = draw(st.sampled_from([1, 2, 4, 8, 16]))
    raw: dict = {}
    if stage or draw(st.booleans()):
        raw["zero_optimization"] = draw(zero_sections(stage))
    raw.update(draw(batch_keys(world)))
    precision = draw(st.sampled_from(["bf16", "fp16", "fp32", "auto"]))
    if precision in ("bf16", "fp16"):
        raw[precision] = {"enabled": True}
        if precision == "fp16":  # loss-scaling keys as the DeepSpeed docs write them
            raw["fp16"].update(draw(st.fixed_dictionaries({}, optional={
                "loss_scale": st.just(0), "loss_scale_window": st.just(1000),
                "initial_scale_power": st.integers(8, 32), "hysteresis": st.just(2),
                "min_loss_scale": st.just(1), "auto_cast": st.booleans()})))
        other = "fp16" if precision == "bf16" else "bf16"
        if draw(st.booleans()):
            raw[other] = {"enabled": draw(st.sampled_from([False, "auto"]))}
    elif precision == "auto":
        raw["fp16"] = {"enabled": "auto"}
        raw["bf16"] = {"enabled": "auto"}
    if draw(st.booleans()):
        raw["gradient_clipping"] = draw(st.one_of(st.just("auto"), st.floats(0, 100), st.integers(0, 10)))
    raw.update(draw(OTHER_TOP))
    return raw, world, stage


def _walk(node):
    yield node
    if isinstance(node, dict):
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


@settings(max_examples=EXAMPLES["valid"], **SETTINGS)
@given(valid_configs())
def test_valid_configs_parse_and_resolve(case):
    raw, world, stage = case
    run = parse(raw, world)
    assert isinstance(run, RunConfig)
    assert run.zero.stage == stage
    assert run.train_batch == run.micro_batch * run.grad_accum * world
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
        if isinstance(raw.get(key), int):
            assert getattr(run, {"train_batch_size": "train_batch",
                                 "train_micro_batch_size_per_gpu": "micro_batch",
                                 "gradient_accumulation_steps": "grad_accum"}[key]) == raw[key]
    assert not any(isinstance(v, str) and v.strip().lower() == "auto" for v in _walk(run.resolved))
    text = dumps_json(run.resolved)  # deepspeed_config_auto.json can always be written
    # The resolved config is a fixed point: feeding it back gives the same run.
    again = parse(json.loads(text), world)
    assert (again.zero, again.micro_batch, again.grad_accum, again.train_batch, again.precision,
            again.gradient_clipping, again.comm_dtype_bytes) == (
        run.zero, run.micro_batch, run.grad_accum, run.train_batch, run.precision,
        run.gradient_clipping, run.comm_dtype_bytes)
    assert raw == case[0]  # the caller's dict is never modified


# ---- one key broken ------------------------------------------------------------------------

BAD_INT = st.one_of(st.integers(max_value=-1), st.integers(min_value=MAX_DS_INT + 1),
                    st.sampled_from([0.5, 2.5e-3, "two", "", "0x10", True, False, [], {}, [1], "1e400",
                                     "nan", 1e308, 10**400, "1e300"]),
                    st.floats(allow_nan=True, allow_infinity=True).filter(
                        lambda f: not (math.isfinite(f) and f.is_integer())))
BAD_BOOL = st.sampled_from([1, 0, "true", "false", "yes", None, [], {}, 1.0, "on"])


def _set(raw: dict, path: tuple, value) -> dict:
    node = raw
    for key in path[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise AssertionError("mutation path crosses a non-object")
    node[path[-1]] = value
    return raw


@st.composite
def broken_configs(draw):
    """(raw, world, overrides, needles): a valid config with one thing broken."""
    raw, world, stage = draw(valid_configs())
    kind = draw(st.sampled_from(["zero_int", "zero_bool", "stage", "unknown_zero", "offload", "device",
                                 "pin", "offload_param_stage", "offload_opt_stage0", "precision",
                                 "both_precisions", "batch_value", "identity", "clip", "comm_dtype",
                                 "section", "grad_accum_cap"]))
    zero = raw.setdefault("zero_optimization", {"stage": stage})
    if kind == "zero_int":
        key = draw(st.sampled_from(INT_KEYS))
        bad = draw(BAD_INT)
        if key in ("reduce_bucket_size", "zero_hpz_partition_size"):
            bad = draw(st.one_of(st.just(0), st.just(bad)))
        zero.pop({"stage3_prefetch_bucket_size": "prefetch_bucket_size",
                  "stage3_param_persistence_threshold": "param_persistence_threshold",
                  "stage3_max_live_parameters": "max_live_parameters",
                  "stage3_max_reuse_distance": "max_reuse_distance"}.get(key, ""), None)
        zero[key] = bad
        return raw, world, Overrides(), (f"zero_optimization.{key}",)
    if kind == "zero_bool":
        key = draw(st.sampled_from(BOOL_KEYS + ["overlap_comm"]))
        bad = draw(BAD_BOOL)
        assume(not (key == "overlap_comm" and bad is None))
        zero[key] = bad
        return raw, world, Overrides(), (f"zero_optimization.{key}",)
    if kind == "stage":
        zero["stage"] = draw(st.one_of(BAD_INT, st.integers(4, 10**30), st.none()))
        return raw, world, Overrides(), ("zero_optimization.stage",)
    if kind == "unknown_zero":
        key = draw(st.text(min_size=1, max_size=20).filter(
            lambda k: k not in ZERO_DEFAULTS and not k.startswith(("stage3_", "offload", "cpu_"))
            and k not in ("prefetch_bucket_size", "param_persistence_threshold", "max_live_parameters",
                          "max_reuse_distance", "model_persistence_threshold")))
        from zsim.dsconfig import _ZERO_OTHER_KEYS  # the accepted extras
        assume(key not in _ZERO_OTHER_KEYS)
        zero[key] = draw(json_any)
        return raw, world, Overrides(), (repr(key), "unknown key")
    if kind == "offload":
        assume(stage >= 1)
        zero["offload_optimizer"] = draw(st.sampled_from(["cpu", 1, [], True, "auto"]))
        return raw, world, Overrides(), ("zero_optimization.offload_optimizer",)
    if kind == "device":
        assume(stage >= 1)
        zero["offload_optimizer"] = {"device": draw(st.sampled_from(["gpu", "CUDA", "", 0, [], True, "auto"]))}
        return raw, world, Overrides(), ("zero_optimization.offload_optimizer.device",)
    if kind == "pin":
        assume(stage >= 1)
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": draw(BAD_BOOL)}
        return raw, world, Overrides(), ("zero_optimization.offload_optimizer.pin_memory",)
    if kind == "offload_param_stage":
        assume(stage < 3)
        zero["offload_param"] = {"device": draw(st.sampled_from(["cpu", "nvme"]))}
        return raw, world, Overrides(), ("offload_param",)
    if kind == "offload_opt_stage0":
        zero["stage"] = 0
        zero.pop("offload_param", None)
        zero["offload_optimizer"] = {"device": draw(st.sampled_from(["cpu", "nvme"]))}
        return raw, world, Overrides(), ("offload_optimizer",)
    if kind == "precision":
        key = draw(st.sampled_from(["bf16", "fp16"]))
        raw[key] = {"enabled": draw(BAD_BOOL)}
        return raw, world, Overrides(), (f"{key}.enabled",)
    if kind == "both_precisions":
        raw["bf16"], raw["fp16"] = {"enabled": True}, {"enabled": True}
        return raw, world, Overrides(), ("bf16 and fp16",)
    if kind == "batch_value":
        key = draw(st.sampled_from(["train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                                    "train_batch_size"]))
        raw[key] = draw(st.one_of(BAD_INT, st.just(0)))
        return raw, world, Overrides(), (key,)
    if kind == "identity":
        micro, gas = draw(st.integers(1, 8)), draw(st.integers(1, 8))
        raw.update(train_micro_batch_size_per_gpu=micro, gradient_accumulation_steps=gas,
                   train_batch_size=micro * gas * world + draw(st.integers(1, 100)))
        return raw, world, Overrides(), ("train_batch_size",)
    if kind == "clip":
        raw["gradient_clipping"] = draw(st.one_of(st.floats(max_value=-1e-9), st.sampled_from(
            ["1.0", [], {}, True, None, 10**400]), st.integers(max_value=-1)))
        return raw, world, Overrides(), ("gradient_clipping",)
    if kind == "comm_dtype":
        raw["communication_data_type"] = draw(st.sampled_from(["fp8", "int8", "", 16, [], True]))
        return raw, world, Overrides(), ("communication_data_type",)
    if kind == "section":
        key = draw(st.sampled_from(["zero_optimization", "bf16", "fp16"]))
        raw[key] = draw(st.sampled_from([[], [1], "auto", 3, True, "{}"]))
        return raw, world, Overrides(), (key,)
    # grad_accum_cap: a typo like 1e9 micro-steps is refused instead of simulated for hours
    raw.pop("train_batch_size", None)
    raw["gradient_accumulation_steps"] = draw(st.integers(MAX_GRAD_ACCUM + 1, 10**400).flatmap(int_spelling))
    return raw, world, Overrides(), ("gradient_accumulation_steps",)


@settings(max_examples=EXAMPLES["broken"], **SETTINGS)
@given(broken_configs())
def test_one_broken_key_is_named(case):
    raw, world, overrides, needles = case
    with pytest.raises(ZsimInputError) as info:
        parse(raw, world, overrides)
    check_error(info.value, *needles)


# ---- anything shaped like a config -----------------------------------------------------------

ZERO_KEYS = sorted(ZERO_DEFAULTS) + ["offload_optimizer", "offload_param", "cpu_offload", "bogus"]
TOP_KEYS = ["zero_optimization", "bf16", "fp16", "train_batch_size", "train_micro_batch_size_per_gpu",
            "gradient_accumulation_steps", "gradient_clipping", "communication_data_type", "optimizer"]
weird_value = st.one_of(json_any, st.sampled_from(["auto", "AUTO", "2e8", "-1", "nan", "inf", "1e400", "0"]),
                        st.integers(-10**30, 10**30), st.floats(), st.just(10**400),
                        st.dictionaries(st.sampled_from(["device", "enabled", "pin_memory", "stage"]),
                                        json_leaf, max_size=3))


@settings(max_examples=EXAMPLES["arbitrary"], **SETTINGS)
@given(st.dictionaries(st.sampled_from(TOP_KEYS), weird_value, max_size=6),
       st.dictionaries(st.sampled_from(ZERO_KEYS), weird_value, max_size=6),
       st.booleans(), st.sampled_from([1, 3, 8, 1024]))
def test_arbitrary_configs_never_crash(top, zero, with_zero, world):
    raw = dict(top)
    if with_zero:
        raw["zero_optimization"] = zero
    try:
        run = parse(raw, world)
    except ZsimInputError as exc:
        check_error(exc, "ds_config", "batch identity", "offload", "gradient_accumulation_steps",
                    "train_", "bf16")
        return
    assert run.train_batch == run.micro_batch * run.grad_accum * world
    assert 0 <= run.zero.stage <= 3 and run.micro_batch >= 1 and run.grad_accum >= 1
    dumps_json(run.resolved)


# ---- file bytes -------------------------------------------------------------------------------

def _config_text(raw: dict, indent) -> str:
    return json.dumps(raw, indent=indent)


@st.composite
def file_bytes(draw) -> tuple[bytes, bool]:
    """(content, world size, known_valid)."""
    raw, world, _ = draw(valid_configs())
    text = _config_text(raw, draw(st.sampled_from([None, 2, 4])))
    kind = draw(st.sampled_from(["valid", "random", "latin1", "truncate", "constant", "deep",
                                 "duplicate", "bom", "top_level", "huge_int", "empty"]))
    if kind == "valid":
        return text.encode(), world, True
    if kind == "random":
        return draw(st.binary(max_size=200)), world, False
    if kind == "latin1":
        at = draw(st.integers(0, len(text)))
        return text[:at].encode() + draw(st.sampled_from([b"\xff", b"\xe9", b"\xc3\x28", b"\x80"])) + \
            text[at:].encode(), world, False
    if kind == "truncate":
        return text.encode()[: draw(st.integers(0, max(0, len(text) - 1)))], world, False
    if kind == "constant":
        return text[:-1].encode() + b', "gradient_clipping": ' + draw(
            st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"])) + b"}", world, False
    if kind == "deep":
        n = draw(st.sampled_from([65, 200, 900, 2000, 100_000]))
        return b'{"x": ' + b"[" * n + b"]" * n + b"}", world, False
    if kind == "duplicate":
        return text[:-1].encode() + b', "zero_optimization": {"stage": 1}}', world, "zero_optimization" not in raw
    if kind == "bom":
        return b"\xef\xbb\xbf" + text.encode(), world, False
    if kind == "top_level":
        return draw(st.sampled_from([b"[]", b"3", b'"auto"', b"null", b"[{}]"])), world, False
    if kind == "huge_int":
        return b'{"train_batch_size": ' + b"9" * 5000 + b"}", world, False
    return b"", world, False


@settings(max_examples=EXAMPLES["bytes"], **SETTINGS)
@given(file_bytes())
def test_config_files_parse_or_fail_cleanly(tmp_path_factory, case):
    content, world, valid = case
    path = tmp_path_factory.mktemp("ds") / "ds_config.json"
    path.write_bytes(content)
    try:
        raw = load_ds_config(path)
        run = parse(path, world)
    except ZsimInputError as exc:
        assert not valid, exc
        check_error(exc, str(path), "ds_config", "batch identity", "duplicate")
        return
    assert isinstance(raw, dict) and isinstance(run, RunConfig)


# ---- command-line overrides -------------------------------------------------------------------

@settings(max_examples=EXAMPLES["overrides"], **SETTINGS)
@given(valid_configs(), st.one_of(st.none(), st.integers(0, 3)), st.one_of(st.none(), st.integers(1, 8)),
       st.one_of(st.none(), st.integers(1, 8)), st.one_of(st.none(), st.integers(1, 4096)))
def test_flags_override_the_file(case, stage, micro, gas, seq):
    raw, world, file_stage = case
    ov = Overrides(stage=stage, micro_batch=micro, grad_accum=gas, seq_len=seq)
    final_stage = file_stage if stage is None else stage
    zero = raw.get("zero_optimization") or {}
    devices = {k: (zero.get(k) or {}).get("device", "none") for k in ("offload_optimizer", "offload_param")}
    try:
        run = parse(raw, world, ov)
    except ZsimInputError as exc:
        # Only a stage flag that contradicts the file's offload may fail, and it must say so.
        assert (devices["offload_param"] != "none" and final_stage != 3) or \
            (devices["offload_optimizer"] != "none" and final_stage == 0), exc
        check_error(exc, "offload")
        return
    assert run.zero.stage == final_stage
    if micro is not None:
        assert run.micro_batch == micro
    if gas is not None:
        assert run.grad_accum == gas
    if seq is not None:
        assert run.seq_len == seq
    assert run.train_batch == run.micro_batch * run.grad_accum * world
