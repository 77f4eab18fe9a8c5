"""zsim's activation bytes per layer of the dense non-Llama families against what HF's autograd
keeps on CPU (validation/cpu_truth/family_activation_memory.py, micro-batch 2 x 512 tokens).

Measured 2026-12-01: GPT-2, Gemma and Qwen3 equal within 0.1 %; GPT-NeoX -5.5 %, OPT -7.0 %,
Phi-2 -3.7 %, Phi-3 -4.4 %: zsim misses one p-byte hidden-sized tensor per layer in those four,
not yet traced to its op. Falcon is measured but not held to zsim: its materialised causal mask
sends CPU's SDPA down the math path, which keeps the score matrix CUDA's kernels do not.
DeepSeek-V2/V3 (MLA, DeepSeek-MoE, a dense first layer) equal to the byte but for the grouped
GEMMs' int32 offsets (4·E per layer), less the one o_proj-input copy CPU makes and CUDA does not
(family_activation_memory.cpu_only_bytes). BLOOM (eager ALiBi attention, the s x s fp32 and bf16
probabilities kept), without and with attention dropout: equal to the byte, less what CPU keeps in
other dtypes than CUDA (bf16 LayerNorm statistics; the dropout's bf16 noise for CUDA's bool mask).
Gemma-2 (transformers' eager_attention_forward, grouped or not, with and without softcapping, a
sliding window shorter than the sequence): equal to the byte per layer, and the final-logit
softcap's kept tanh output equal to the byte on the whole model."""

from __future__ import annotations

import pytest

from truth_packages import require_truth_packages

EXACT = ("gpt2", "gemma", "qwen3")
KNOWN_SHORT = ("gpt_neox", "opt", "phi", "phi3")
DEEPSEEK = ("deepseek_v2-lite", "deepseek_v2-lite-dense", "deepseek_v2-group", "deepseek_v3")
EAGER = ("bloom", "bloom-attn-dropout", "gemma2", "gemma2-mha-nocap-window")


@pytest.fixture(scope="module")
def truth():
    require_truth_packages("the families' activation truth", "torch", "transformers")
    from validation.cpu_truth import family_activation_memory as fam
    return fam


@pytest.mark.parametrize("name", EXACT)
def test_saved_bytes_equal_what_hf_keeps(truth, name):
    assert truth.zsim_per_layer_bytes(name) == pytest.approx(truth.per_layer_bytes(name), rel=0.005)


@pytest.mark.parametrize("name", KNOWN_SHORT)
def test_saved_bytes_within_their_measured_error(truth, name):
    """zsim is short by at most 8 % (one p-byte hidden tensor per layer at this shape)."""
    measured, predicted = truth.per_layer_bytes(name), truth.zsim_per_layer_bytes(name)
    assert 0.92 * measured <= predicted <= measured


@pytest.mark.parametrize("name", DEEPSEEK)
def test_deepseek_saved_bytes_equal_what_hf_keeps(truth, name):
    measured = truth.per_layer_bytes(name) - truth.cpu_only_bytes(name)
    assert truth.zsim_per_layer_bytes(name) == pytest.approx(measured, rel=1e-4)


@pytest.mark.parametrize("name", EAGER)
def test_eager_attention_saved_bytes_equal_what_hf_keeps(truth, name):
    measured = truth.per_layer_bytes(name) - truth.cpu_only_bytes(name)
    assert truth.zsim_per_layer_bytes(name) == measured


def test_gemma2_final_softcap_bytes_equal_what_hf_keeps(truth):
    assert truth.zsim_final_softcap_bytes() == truth.final_softcap_bytes()
