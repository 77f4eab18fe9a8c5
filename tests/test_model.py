"""Model specs: exact parameter counts against the published models, HF config loading."""

import json

import pytest

from zsim.errors import ZsimInputError
from zsim.model import PRESETS, from_hf_config, load_model


@pytest.mark.parametrize("name, count", [
    # Counts of the released checkpoints (sum of numel over named_parameters()).
    ("llama-2-7b", 6_738_415_616),
    ("llama-3-8b", 8_030_261_248),
    ("tinyllama-1.1b", 1_100_048_384),
    ("qwen2.5-7b", 7_615_616_512),
    ("llama-2-13b", 13_015_864_320),
    ("llama-2-70b", 68_976_648_192),
    ("mistral-7b", 7_241_732_096),
])
def test_exact_parameter_counts(name, count):
    spec = PRESETS[name]
    assert spec.num_parameters == count
    assert sum(p.numel for p in spec.parameters()) == count


def test_gpt3_is_about_175b():
    # Brown et al. 2020, Table 2.1: 175.0B parameters (their count rounds).
    assert abs(PRESETS["gpt3-175b"].num_parameters / 175e9 - 1) < 0.01


def test_parameter_order_is_hf_named_parameters():
    names = [p.name for p in load_model("tinyllama-1.1b").parameters()]
    assert names[0] == "model.embed_tokens.weight"
    assert names[1:10] == [f"model.layers.0.{n}.weight" for n in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm")]
    assert names[-2:] == ["model.norm.weight", "lm_head.weight"]


def test_hf_config_file_tied_gqa(tmp_path):
    cfg = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 256,
           "tie_word_embeddings": True, "max_position_embeddings": 128}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    spec = load_model(str(path))
    # embed 256*64 + 2 layers * (q 64*64 + k,v 2*32*64 + o 64*64 + mlp 3*64*128 + norms 2*64) + norm 64
    per_layer = 64 * 64 + 2 * 32 * 64 + 64 * 64 + 3 * 64 * 128 + 2 * 64
    assert spec.num_parameters == 256 * 64 + 2 * per_layer + 64
    assert spec.kv_dim == 32 and spec.head_dim == 16


@pytest.mark.parametrize("bad, key", [
    ({"hidden_size": 64}, "missing"),
    ({"hidden_size": -1, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 8,
      "vocab_size": 8}, "hidden_size"),
    ({"hidden_size": 64, "num_hidden_layers": "two", "num_attention_heads": 4,
      "intermediate_size": 8, "vocab_size": 8}, "num_hidden_layers"),
    ({"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 3,
      "intermediate_size": 8, "vocab_size": 8}, "num_key_value_heads"),
])
def test_bad_hf_configs_name_the_problem(bad, key):
    with pytest.raises(ZsimInputError, match=key):
        from_hf_config(bad)


def test_unknown_model_and_malformed_file(tmp_path):
    with pytest.raises(ZsimInputError, match="unknown model"):
        load_model("llama-9-1t")
    path = tmp_path / "config.json"
    path.write_bytes(b"{not json")
    with pytest.raises(ZsimInputError, match="malformed JSON"):
        load_model(str(path))


_BASE_HF = {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 4, "vocab_size": 1000, "max_position_embeddings": 512}


@pytest.mark.parametrize("extra, needle", [
    # Mixtral and DeepSeek-V2/V3 are modelled now (tests/test_moe.py, tests/test_deepseek.py);
    # what transformers builds differently from a DeepSeek checkpoint is not
    ({"model_type": "deepseek_v3", "n_routed_experts": 8, "moe_layer_freq": 2}, "moe_layer_freq"),
    # BLOOM is modelled (eager ALiBi attention); its variants that build other ops are not
    ({"model_type": "bloom", "apply_residual_connection_post_layernorm": True},
     "apply_residual_connection_post_layernorm"),
    ({"model_type": "bloom", "slow_but_exact": True, "pretraining_tp": 4}, "slow_but_exact"),
    ({"model_type": "bloom", "hidden_dropout": 0.1}, "hidden_dropout"),
    # Gemma-2's softcapping is modelled (eager attention); elsewhere it is not
    ({"model_type": "llama", "attn_logit_softcapping": 50.0}, "softcapping"),
    ({"model_type": "gemma2", "head_dim": 64, "attn_logit_softcapping": -1.0}, "attn_logit_softcapping"),
    ({"model_type": "falcon", "alibi": True}, "ALiBi"),
    ({"model_type": "gpt2", "n_embd": 64, "n_layer": 1, "n_head": 4, "reorder_and_upcast_attn": True},
     "reorder_and_upcast_attn"),
    ({"model_type": "opt", "layer_norm_elementwise_affine": False}, "layer_norm_elementwise_affine"),
    ({"model_type": "t5", "is_encoder_decoder": True}, "t5"),
    ({"model_type": "llama", "is_encoder_decoder": True}, "encoder-decoder"),
    ({"model_type": "llama", "num_local_experts": 8}, "mixture of experts"),
    ({"model_type": "qwen2", "num_experts": 60, "moe_intermediate_size": 1408}, "mixture of experts"),
    ({"model_type": "llama", "vision_config": {"hidden_size": 1024}}, "vision"),
    ({"model_type": "llama", "kv_lora_rank": 512}, "MLA"),
    ({"model_type": "llama", "hidden_act": "gelu_fast"}, "hidden_act"),
    ({"model_type": "gpt_neox", "hidden_act": "relu2"}, "hidden_act"),
    ({"model_type": "qwen2", "use_sliding_window": True}, "sliding-window"),
])
def test_unmodelled_architectures_are_refused(extra, needle, tmp_path):
    """Never a silent Llama: a config zsim does not model is one error naming the reason."""
    with pytest.raises(ZsimInputError, match=needle):
        from_hf_config({**_BASE_HF, **extra}, name="cfg")


def test_refusal_is_one_line_exit_2(tmp_path, capsys):
    from zsim.cli import main
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**_BASE_HF, "model_type": "bloom", "hidden_dropout": 0.1}))
    assert main(["predict", "--model", str(path), "--no-output"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hidden_dropout" in err[0]


def test_gpt3_preset_predicts():
    """The learned-position GPT preset runs (it failed on its position table before)."""
    from zsim.predict import predict
    p = predict("gpt3-175b", "dgx-a100", nodes=16, stage=3)
    assert p.num_parameters == load_model("gpt3-175b").num_parameters and p.step_time_s > 0
