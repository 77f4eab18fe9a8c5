"""Activation-memory truth: zsim's activation terms against what HF's LlamaForCausalLM keeps
for backward, measured on CPU by validation/cpu_truth/activation_memory.py (a dispatch mode
counting every live storage except the parameters).

Without torch/transformers the tests skip — unless ZSIM_REQUIRE_TRUTH=1 (CI), where they FAIL.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from truth_packages import require_truth_packages
from zsim.model import load_model
from zsim.workload import Workload

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="module")
def truth():
    """The measuring module (skips, or fails under ZSIM_REQUIRE_TRUTH=1, without transformers)."""
    require_truth_packages("activation truth", "torch", "transformers")
    from validation.cpu_truth import activation_memory
    return activation_memory


def _workload(shape, tmp_path: Path) -> Workload:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(shape.hf_config(2)))
    return Workload(load_model(path), shape.micro_batch, shape.seq_len, 2)


@pytest.mark.parametrize("name", ["mha-hd128", "gqa-4to1-hd64", "mha-hd64", "gqa-8to1-tinyllama"])
def test_layer_activations_match_autograd(truth, name, tmp_path):
    """One decoder layer's saved bytes within 1 % of HF's graph (MHA and GQA, head_dim 64/128)."""
    shape = truth.SHAPES[name]
    measured = truth.per_layer_bytes(shape)
    predicted = _workload(shape, tmp_path).layer_activation_bytes()
    assert predicted == pytest.approx(measured, rel=0.01), (name, predicted, measured)


def test_checkpointed_layer_keeps_its_input(truth, tmp_path):
    """With non-reentrant checkpointing a layer keeps its p-byte input hidden states only."""
    shape = truth.SHAPES["mha-hd128"]
    measured = truth.per_layer_bytes(shape, checkpointing=True)
    predicted = _workload(shape, tmp_path).checkpoint_bytes()
    assert predicted == pytest.approx(measured, rel=0.01)


def test_logits_and_loss_bytes_per_element(truth, tmp_path):
    """Per token·vocab element: kept after forward and added at the backward peak, from the
    difference of two vocabularies (everything else equal)."""
    small = truth.SHAPES["gqa-4to1-hd64"]
    large = truth.Shape(**{**small.__dict__, "vocab_size": small.vocab_size + 32000})
    a, b = truth.measure(small, 2), truth.measure(large, 2)
    tv = large.micro_batch * large.seq_len * 32000
    kept_per_elem = (b.kept_after_forward_bytes - a.kept_after_forward_bytes) / tv
    peak_per_elem = (b.backward_peak_bytes - a.backward_peak_bytes) / tv
    kept, transient = _workload(large, tmp_path).logits_bytes()
    total = large.micro_batch * large.seq_len * large.vocab_size
    assert kept / total == pytest.approx(kept_per_elem, rel=0.02)
    # The peak is log_softmax's backward (its saved fp32 output, the fp32 gradient in and
    # out), before lm_head's weight gradient exists.
    assert (kept + transient) / total == pytest.approx(peak_per_elem, rel=0.02)


def _zero_marks(stage: int, port: int) -> dict:
    import subprocess
    out = subprocess.run([sys.executable, str(ROOT / "validation" / "cpu_truth" / "zero_memory.py"),
                          str(stage), str(port)], capture_output=True, text=True, timeout=300)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("{")), None)
    assert line, out.stderr[-2000:]
    return json.loads(line)


def test_stage2_gradient_partition_absent_at_the_loss(truth):
    """Real DeepSpeed: stage 2 allocates its gradient partition at the first reduction of a
    backward and hands it to the step, so at the loss it holds what stage 1 holds, and 2 B
    per parameter (bf16, one rank) more after backward than before it — zsim/memory.py."""
    require_truth_packages("ZeRO memory truth", "deepspeed")
    one, two = _zero_marks(1, 29541), _zero_marks(2, 29542)
    assert two["loss_moment"] == pytest.approx(one["loss_moment"], abs=0.01)
    assert two["after_backward"] - two["start_of_step"] == pytest.approx(2.0, abs=0.01)
    # zsim's side of the same facts: stage 2's gradient partition is not a static term (it
    # is absent at the loss moment) and holds p bytes per partition element from the first
    # reduction on.
    from zsim.dsconfig import build_run_config
    from zsim.memory import _model_states
    spec = load_model("tinyllama-1.1b")
    run = build_run_config({"bf16": {"enabled": True}, "zero_optimization": {"stage": 2}}, spec, 1)
    states = _model_states(run, spec.num_parameters, spec.num_parameters)
    assert states.grads_static == 0 and states.grads_partition == 2 * spec.num_parameters


def test_stage3_on_one_rank_gathers_nothing(truth):
    """Real DeepSpeed, one rank, stage 3 with every parameter gathered (persistence 0): the
    forward leaves exactly stage 1's bytes on top of the step's start (no gathered copies),
    and zsim's stage-3 memory model has no gathered-parameter term at world size 1."""
    require_truth_packages("ZeRO memory truth", "deepspeed")
    import subprocess
    one = _zero_marks(1, 29543)
    out = subprocess.run([sys.executable, str(ROOT / "validation" / "cpu_truth" / "zero_memory.py"), "3", "29544",
                          json.dumps({"stage3_param_persistence_threshold": 0})],
                         capture_output=True, text=True, timeout=300)
    three = json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith("{")))
    assert three["loss_moment"] - three["start_of_step"] == pytest.approx(
        one["loss_moment"] - one["start_of_step"], abs=0.01)
    from zsim.dsconfig import build_run_config
    from zsim.memory import MemoryFacts, _buffers
    spec = load_model("tinyllama-1.1b")
    cfg = {"bf16": {"enabled": True}, "zero_optimization": {"stage": 3}}
    facts = MemoryFacts(partition_numel=spec.num_parameters, ipg_buffer_elems=0, ipg_buffer_count=1,
                        max_gathered_numel=10**8, persistent_numel=0)
    assert _buffers(build_run_config(cfg, spec, 1), facts, spec.num_parameters).live == 0
    assert _buffers(build_run_config(cfg, spec, 2), facts, spec.num_parameters).live == 2 * 10**8


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_moe_step_walks_param_groups_one_at_a_time(truth, stage, tmp_path):
    """Real DeepSpeed, one rank, a tiny DeepSpeed-MoE Mixtral whose experts sit in 8 param
    groups of their own: the step's transient over the gradients left by backward is one
    group's flatten + fp32 cast (stages 1/2; stage 0 also keeps the earlier groups' fp32
    flats), not the whole model's — what zsim/memory.py's _peak_group_step computes from the
    same groups (zsim.parallel.expert_zero.moe_layout)."""
    require_truth_packages("ZeRO memory truth", "deepspeed")
    import subprocess
    from validation.cpu_truth.zero_memory import MOE_CONFIG, MOE_LAYER
    max_group = 100_000
    out = subprocess.run([sys.executable, str(ROOT / "validation" / "cpu_truth" / "zero_memory.py"), "--moe",
                          str(stage), str(29570 + stage), str(max_group)],
                         capture_output=True, text=True, timeout=300)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("{")), None)
    assert line, out.stderr[-2000:]
    real = json.loads(line)
    psi = real["num_parameters"]
    measured = (real["step_peak"] - real["after_backward"]) * psi

    from zsim.dsconfig import build_run_config
    from zsim.memory import MemoryFacts, _buffers
    from zsim.parallel.expert import expert_groups, with_deepspeed_moe
    from zsim.parallel.expert_zero import moe_layout
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "mixtral", "architectures": ["MixtralForCausalLM"],
                                "hidden_act": "silu", "rms_norm_eps": 1e-5,
                                **{k: v for k, v in MOE_CONFIG.items() if k != "use_cache"}}))
    spec = with_deepspeed_moe(load_model(path), dict(MOE_LAYER), None)
    assert spec.num_parameters == psi
    layout = moe_layout(spec, 1, expert_groups(1, 1, None), max_group_numel=max_group)
    numels = [sum(layout.numels[p] for p in g.params) for g in layout.groups]
    assert numels == real["group_numels"]
    cfg = {"bf16": {"enabled": True}, "zero_optimization": {"stage": stage}}
    run = build_run_config(cfg, spec, 1)
    facts = MemoryFacts(partition_numel=layout.partition_numel, ipg_buffer_elems=0, ipg_buffer_count=1,
                        max_gathered_numel=0, persistent_numel=0, group_numels=tuple(numels),
                        group_partition_numels=tuple(layout.partition_numels() if stage else numels))
    b = _buffers(run, facts, psi)
    assert b.step - b.step_grads_freed == pytest.approx(measured, rel=0.005)
    # The whole-model transient (one group) would be 3-4x what DeepSpeed allocates here.
    whole = _buffers(run, MemoryFacts(layout.partition_numel, 0, 1, 0, 0), psi)
    assert whole.step > 2.5 * measured
