"""Model families from their published config.json, bundled Hub names, and the presets.

- every bundled ``ORG/NAME`` config parses, predicts, and (where transformers is installed)
  has exactly the parameters transformers builds for it on the meta device;
- each family at a real size (its transformers config class's defaults, which are the
  documented checkpoint's shapes) counts what transformers counts;
- an unknown Hub name says how to pass a config.json;
- every preset predicts, and gpt3-175b (which failed at every stage before) also plans.
"""

from __future__ import annotations

import pytest

from zsim.cli import main
from zsim.errors import ZsimInputError
from truth_packages import require_truth_packages
from zsim.model import PRESETS, bundled_model_names, bundled_model_path, from_hf_config, load_model

NAMES = bundled_model_names()

#: Families whose ZeRO-3 prediction zsim cannot run today: the stage-3 schedule asks the
#: workload for the kernels of module '' ("workload: unknown module ''", zsim/workload.py
#: _kernels) for GPT-NeoX and Phi-3 trees, at any size (their config classes' defaults too).
#: Strict, so the mark has to go once zsim is fixed; stages 1 and 2 are checked below.
STAGE3_BROKEN_FAMILIES: set[str] = set()   # none: every bundled family predicts at stage 3


def _model_type(name: str) -> str:
    import json
    return json.loads(bundled_model_path(name).read_text()).get("model_type", "llama")


def _stage3_param(name: str):
    if _model_type(name) in STAGE3_BROKEN_FAMILIES:
        return pytest.param(name, marks=pytest.mark.xfail(
            strict=True, reason="zsim stage 3: workload: unknown module '' (gpt_neox, phi3 trees)"))
    return name


def _hf_count(cfg: dict) -> int:
    require_truth_packages("parameter counts against transformers", "torch", "transformers")
    import torch
    import transformers
    hf_cfg = transformers.AutoConfig.for_model(**cfg)
    with torch.device("meta"):
        hf = transformers.AutoModelForCausalLM.from_config(hf_cfg)
    return sum(p.numel() for p in hf.parameters())


def test_every_bundled_config_has_one_source_row():
    """SOURCES.md names where each bundled config.json came from: one row per file, none stale."""
    from zsim.model import MODELS_DIR
    rows = [line.split("|")[1].strip() for line in (MODELS_DIR / "SOURCES.md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith(("| File", "| ---"))]
    assert sorted(rows) == sorted(p.stem for p in MODELS_DIR.glob("*--*.json"))


def test_bundled_names_cover_the_guide_example():
    assert "Qwen/Qwen2.5-7B" in NAMES and len(NAMES) == len(set(n.lower() for n in NAMES))
    assert load_model("qwen/qwen2.5-7b").num_parameters == load_model("Qwen/Qwen2.5-7B").num_parameters


#: Families whose attention kernel is MLA (q/k head dim 192, v head dim 128): priced by the
#: shipped profiles' measured '192x128' curve, and by a profile of one attention figure.
MLA_FAMILIES = {"deepseek_v2", "deepseek_v3"}


@pytest.mark.parametrize("name", [_stage3_param(n) for n in NAMES])
def test_bundled_name_predicts(name, capsys):
    assert main(["predict", "--model", name, "--stage", "3", "--nodes", "2", "--micro-batch", "1",
                 "--seq", "1024", "--no-output"]) == 0
    assert name in capsys.readouterr().out
    if _model_type(name) in MLA_FAMILIES:
        assert main(["predict", "--model", name, "--stage", "3", "--nodes", "2", "--micro-batch", "1",
                     "--seq", "1024", "--no-output", "--topo", "hgx-h200", "--hardware", "h200-sxm-datasheet"]) == 0


@pytest.mark.parametrize("name", [n for n in NAMES if _model_type(n) in STAGE3_BROKEN_FAMILIES])
def test_bundled_name_of_a_stage3_broken_family_predicts_stage2(name, capsys):
    assert main(["predict", "--model", name, "--stage", "2", "--nodes", "2", "--micro-batch", "1",
                 "--seq", "1024", "--no-output"]) == 0
    assert name in capsys.readouterr().out


@pytest.mark.parametrize("name", NAMES)
def test_bundled_name_counts_what_transformers_builds(name):
    import json
    cfg = json.loads(bundled_model_path(name).read_text())
    assert load_model(name).num_parameters == _hf_count(cfg)


#: transformers config classes whose defaults are a real published size, per family.
REAL_SIZES = ["LlamaConfig", "MistralConfig", "Qwen2Config", "Qwen3Config", "GemmaConfig", "Phi3Config",
              "PhiConfig", "GPT2Config", "GPTNeoXConfig", "FalconConfig", "OPTConfig", "DeepseekV3Config",
              "BloomConfig", "Gemma2Config"]   # BloomConfig's defaults are a 2-layer toy of bigscience/bloom's layout


@pytest.mark.parametrize("cls", REAL_SIZES)
def test_real_size_counts_what_transformers_builds(cls):
    require_truth_packages("parameter counts against transformers", "transformers")
    import transformers
    cfg = {k: v for k, v in getattr(transformers, cls)().to_dict().items() if not k.startswith("_")}
    assert from_hf_config(cfg, name=cls).num_parameters == _hf_count(cfg)


def test_gemma2_published_defaults_are_priced_eagerly():
    """Gemma-2 as published (Gemma2Config's defaults are gemma-2-2b's shapes) softcaps its
    attention logits: transformers runs it eagerly, so zsim keeps the s x s tensors."""
    require_truth_packages("Gemma-2's published defaults", "transformers")
    import transformers
    from zsim.workload import Workload
    cfg = transformers.Gemma2Config().to_dict()
    spec = from_hf_config(cfg, name="gemma-2")
    assert spec.attention_impl == "eager" and spec.attn_softcap == 50.0 and spec.final_softcap == 30.0
    short, long = (Workload(spec, 1, s, 2).layer_activation_bytes() for s in (1024, 2048))
    assert long > 2 * short   # the s² tensors: more than linear in the sequence


def test_unknown_hub_name_says_how_to_pass_a_config(capsys):
    assert main(["predict", "--model", "nobody/no-such-model", "--no-output"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config.json" in err[0] and "--model path/to/config.json" in err[0]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_predicts(name):
    assert main(["predict", "--model", name, "--stage", "3", "--nodes", "16", "--micro-batch", "1",
                 "--no-output"]) == 0


def test_gpt3_preset_plans():
    assert main(["plan", "--model", "gpt3-175b", "--nodes", "16", "--no-output", "-q", "--top", "1"]) == 0


def test_sliding_window_beyond_its_window_is_refused(capsys):
    import json
    import tempfile
    from pathlib import Path
    cfg = {"model_type": "mistral", "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "intermediate_size": 512, "vocab_size": 1000, "sliding_window": 512}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "config.json"
        path.write_text(json.dumps(cfg))
        assert main(["predict", "--model", str(path), "--seq", "512", "--gpus", "1", "--no-output"]) == 0
        assert main(["predict", "--model", str(path), "--seq", "1024", "--gpus", "1", "--no-output"]) == 2
    assert "sliding_window" in capsys.readouterr().err


#: Parameter counts the BigScience model cards publish (huggingface.co/bigscience/<name>, as quoted
#: in zsim/data/models/SOURCES.md): an independent check of the bundled BLOOM shapes.
BLOOM_CARD_COUNTS = {"bigscience/bloom-560m": 559_214_592, "bigscience/bloom-7b1": 7_069_016_064}


@pytest.mark.parametrize("name", sorted(BLOOM_CARD_COUNTS))
def test_bundled_bloom_counts_what_its_model_card_publishes(name):
    assert load_model(name).num_parameters == BLOOM_CARD_COUNTS[name]


def test_bloom_7b1_predicts_at_stage_3(capsys):
    assert main(["predict", "--model", "bigscience/bloom-7b1", "--stage", "3", "--no-output"]) == 0
    assert "bigscience/bloom-7b1" in capsys.readouterr().out


def test_bloom_with_ulysses_is_refused():
    """Eager ALiBi attention under DeepSpeed-Ulysses is not priced: refused, never a flash kernel."""
    from zsim.workload import Workload
    spec = load_model("bigscience/bloom-560m")
    with pytest.raises(ZsimInputError, match="Ulysses"):
        Workload(spec, 1, 512, 2, ulysses=2).kernels("transformer.h.0.self_attention", "fwd")
