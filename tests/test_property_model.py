"""Property tests of the model-config loader (zsim.model.from_hf_config / load_model).

Generated Llama/Mistral/Qwen2 ``config.json`` contents: valid by construction (with the extra
keys real files carry), valid with one field broken (the error must name that field), and
raw file bytes (non-UTF-8, NaN, deep nesting, huge numbers). A valid spec's parameter count
must equal the sum over its parameter list (two independent computations).
"""

from __future__ import annotations

import json
import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zsim.errors import ZsimInputError
from zsim.limits import MODEL_FIELD_MAX
from zsim.model import MAX_HF_LAYERS, ModelSpec, from_hf_config, load_model

SCALE = float(os.environ.get("ZSIM_PROPERTY_SCALE", "1"))
EXAMPLES = {k: max(1, int(v * SCALE)) for k, v in {"valid": 250, "broken": 250, "bytes": 150}.items()}
SETTINGS = dict(deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

REQUIRED = ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"]


def check_error(exc: ZsimInputError, *needles: str) -> None:
    """One short line that names the offending key or value."""
    text = str(exc)
    assert text and "\n" not in text and len(text) < 600, repr(text)
    assert any(n.lower() in text.lower() for n in needles), (needles, text)


def spelled(value: int) -> st.SearchStrategy:
    """An integer as JSON writers emit it: 4096 or 4096.0."""
    return st.sampled_from([value, float(value)]) if value < 2**53 else st.just(value)


@st.composite
def hf_configs(draw) -> dict:
    kv = draw(st.integers(1, 8))
    heads = kv * draw(st.integers(1, 8))
    head_dim = draw(st.sampled_from([8, 16, 64, 128]))
    cfg = {
        "hidden_size": draw(spelled(heads * head_dim)),
        "num_hidden_layers": draw(st.integers(1, 4).flatmap(spelled)),
        "num_attention_heads": draw(spelled(heads)),
        "intermediate_size": draw(st.integers(1, 4096).flatmap(spelled)),
        "vocab_size": draw(st.one_of(st.integers(1, 200_000), st.just(MODEL_FIELD_MAX["vocab_size"])).flatmap(spelled)),
    }
    cfg.update(draw(st.fixed_dictionaries({}, optional={
        "num_key_value_heads": st.one_of(spelled(kv), st.none()),
        "max_position_embeddings": st.one_of(st.integers(1, 131072), st.none()),
        "tie_word_embeddings": st.booleans(),
        "model_type": st.sampled_from(["llama", "mistral", "qwen2"]),
        "attention_bias": st.booleans(),
        "head_dim": st.one_of(st.none(), st.just(head_dim)),
        # keys real config.json files carry that zsim ignores
        "architectures": st.just(["LlamaForCausalLM"]), "torch_dtype": st.sampled_from(["bfloat16", "float16"]),
        "rope_theta": st.floats(1, 1e6), "rms_norm_eps": st.just(1e-5), "hidden_act": st.just("silu"),
        "rope_scaling": st.one_of(st.none(), st.just({"type": "linear", "factor": 2.0})),
        "transformers_version": st.just("4.44.0"), "use_cache": st.booleans(),
    })))
    return cfg


@settings(max_examples=EXAMPLES["valid"], **SETTINGS)
@given(hf_configs())
def test_valid_configs_give_a_spec(cfg):
    spec = from_hf_config(cfg, name="gen")
    assert isinstance(spec, ModelSpec)
    assert spec.hidden_size == cfg["hidden_size"] and spec.num_layers == cfg["num_hidden_layers"]
    assert spec.num_kv_heads == (cfg.get("num_key_value_heads") or cfg["num_attention_heads"])
    assert spec.num_parameters == sum(p.numel for p in spec.parameters())
    assert spec.num_parameters > 0


BAD_VALUES = st.one_of(st.integers(max_value=0), st.sampled_from(
    [1.5, "4096", "auto", None, True, [], {}, float("nan"), float("inf"), -1.0]))


@st.composite
def broken_configs(draw) -> tuple[dict, tuple[str, ...]]:
    cfg = draw(hf_configs())
    kind = draw(st.sampled_from(["missing", "bad_value", "kv", "heads", "tie", "bias", "layers", "huge",
                                 "top"]))
    if kind == "missing":
        key = draw(st.sampled_from(REQUIRED))
        del cfg[key]
        return cfg, (key,)
    if kind == "bad_value":
        key = draw(st.sampled_from(REQUIRED + ["num_key_value_heads", "max_position_embeddings", "head_dim"]))
        bad = draw(BAD_VALUES)
        if bad is None and key not in REQUIRED:
            bad = 0  # None means "absent" for the optional keys
        cfg[key] = bad
        return cfg, (key,)
    if kind == "kv":
        cfg["num_key_value_heads"] = int(cfg["num_attention_heads"]) + draw(st.integers(1, 5))
        cfg.pop("head_dim", None)
        return cfg, ("num_key_value_heads",)
    if kind == "heads":
        cfg.pop("head_dim", None)
        cfg.pop("num_key_value_heads", None)
        cfg["num_attention_heads"] = draw(st.integers(2, 64).filter(lambda h: int(cfg["hidden_size"]) % h))
        return cfg, ("num_attention_heads", "hidden_size")
    if kind == "tie":
        cfg["tie_word_embeddings"] = draw(st.sampled_from([1, "true", None, []]))
        return cfg, ("tie_word_embeddings",)
    if kind == "bias":
        cfg["attention_bias"] = draw(st.sampled_from([1, "false", None, {}]))
        return cfg, ("attention_bias",)
    if kind == "huge":  # 1e300 hidden_size etc.: refused, never an inf/NaN result
        key = draw(st.sampled_from(sorted(MODEL_FIELD_MAX)))
        cfg[key] = draw(st.one_of(st.integers(MODEL_FIELD_MAX[key] + 1, 10**400),
                                  st.sampled_from([1e300, 1e308, float(MODEL_FIELD_MAX[key] * 2)])))
        return cfg, (key,)
    if kind == "layers":
        cfg["num_hidden_layers"] = draw(st.integers(MAX_HF_LAYERS + 1, 10**30))
        return cfg, ("num_hidden_layers",)
    return draw(st.sampled_from([[], [cfg], "config", 3, None])), ("JSON object",)


@settings(max_examples=EXAMPLES["broken"], **SETTINGS)
@given(broken_configs())
def test_one_broken_field_is_named(case):
    cfg, needles = case
    with pytest.raises(ZsimInputError) as info:
        from_hf_config(cfg, name="gen")
    check_error(info.value, *needles)


@st.composite
def file_bytes(draw) -> tuple[bytes, bool]:
    text = json.dumps(draw(hf_configs()))
    kind = draw(st.sampled_from(["valid", "random", "latin1", "truncate", "nan", "deep", "huge", "empty"]))
    if kind == "valid":
        return text.encode(), True
    if kind == "random":
        return draw(st.binary(max_size=200)), False
    if kind == "latin1":
        return text.encode().replace(b'"', b'"\xff', 1), False
    if kind == "truncate":
        return text.encode()[: draw(st.integers(0, len(text) - 1))], False
    if kind == "nan":
        return text.replace('"hidden_size": ', '"hidden_size": NaN, "x": ', 1).encode(), False
    if kind == "deep":
        n = draw(st.sampled_from([100, 5000, 100_000]))
        return b"[" * n + b"]" * n, False
    if kind == "huge":
        return text.replace('"vocab_size": ', '"vocab_size": ' + "9" * 5000 + ', "x": ', 1).encode(), False
    return b"", False


@settings(max_examples=EXAMPLES["bytes"], **SETTINGS)
@given(file_bytes(), st.booleans())
def test_config_files_load_or_fail_cleanly(tmp_path_factory, case, as_dir):
    content, valid = case
    folder = tmp_path_factory.mktemp("model")
    (folder / "config.json").write_bytes(content)
    try:
        spec = load_model(folder if as_dir else folder / "config.json")
    except ZsimInputError as exc:
        assert not valid, exc
        check_error(exc, "config", "hidden_size")
        return
    assert valid and spec.name == folder.name
    assert math.isfinite(spec.num_parameters)


@pytest.mark.parametrize("name", ["", "a" * 5000, "a\x00b", "llama-9-1t", "/no/such/dir"])
def test_unknown_names_fail_cleanly(name):
    with pytest.raises(ZsimInputError) as info:
        load_model(name)
    check_error(info.value, "unknown model")

