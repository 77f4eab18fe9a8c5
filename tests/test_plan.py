"""`zsim plan`: the search finds a known best, rejects what does not fit naming the overflowing
term, and resolves a user's "auto" config (fixed values kept, batch identity, no "auto" left)."""

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from zsim.cli import main
from zsim.decide.autoconfig import fixed_values_kept, read_user_config
from zsim.dsconfig import Overrides, build_run_config
from zsim.errors import ZsimInputError
from zsim.model import load_model
from zsim.decide.api import Constraints, plan

EXAMPLE = Path(__file__).resolve().parent / "data" / "ds_config_zero2_offload.json"
GIB = 2**30
GPU = 80 * GIB


# ---- a fake predictor whose optimum and memory are placed by hand ---------------------------

@dataclass(frozen=True)
class FakePrediction:
    step_time_s: float
    tokens_per_s: float
    fits: bool
    peak_memory_bytes: int
    gpu_memory_bytes: int
    memory_breakdown: dict
    time_breakdown: dict
    train_batch: int
    micro_batch: int
    grad_accum: int
    ds_config_resolved: dict
    notes: tuple = ()
    tflops_per_gpu: float = 0.0
    mfu: float = 0.0
    exposed_comm_s: float = 0.0
    timeline: object = None
    extra: dict = field(default_factory=dict)

    def to_dict(self):
        return {"step_time_s": self.step_time_s, "tokens_per_s": self.tokens_per_s}


# Per-micro-sample time factors; the optimum is placed at stage 2, no offload, micro 4,
# checkpointing off, reduce bucket 5e8 (not the bucket phase 1 tries first).
STAGE_COST = {0: 1.30, 1: 1.10, 2: 1.00, 3: 1.20}
MICRO_COST = {1: 1.5, 2: 1.2, 4: 1.0, 8: 0.9, 16: 0.85}   # 8 and 16 are faster but do not fit
BUCKET_COST = {50_000_000: 1.04, 200_000_000: 1.02, 500_000_000: 1.00}


def fake_memory(run):
    """Terms in bytes: optimizer states dominate stage 0, activations large micro-batches."""
    z = run.zero
    opt = 0 if z.offload_optimizer != "none" else {0: 90, 1: 12, 2: 12, 3: 12}[z.stage] * GIB
    params = 0 if z.offload_param != "none" else {0: 14, 1: 14, 2: 14, 3: 2}[z.stage] * GIB
    per_sample = 3 if run.activation_checkpointing else 12
    act = run.micro_batch * per_sample * GIB
    buffers = z.reduce_bucket_size * 2 * 2 if z.stage else 0
    return {"params": params, "grads": 2 * GIB, "optimizer_states": opt, "buffers": buffers, "activations": act}


def fake_predictor(calls=None):
    spec = load_model("llama-2-7b")

    def predictor(*, ds_config, seq, activation_checkpointing, micro_batch=None, grad_accum=None, **kw):
        if calls is not None:
            calls.append((micro_batch, grad_accum))
        run = build_run_config(ds_config, spec, 8, Overrides(micro_batch=micro_batch, grad_accum=grad_accum,
                                                            seq_len=seq,
                                                            activation_checkpointing=activation_checkpointing))
        z = run.zero
        mem = fake_memory(run)
        per_sample = (STAGE_COST[z.stage] * MICRO_COST[run.micro_batch] * BUCKET_COST[z.reduce_bucket_size]
                      * (1.33 if run.activation_checkpointing else 1.0)
                      * (1.5 if z.offload_optimizer != "none" else 1.0)
                      * (2.0 if z.offload_param != "none" else 1.0))
        micro_step = 0.1 * run.micro_batch * per_sample
        step = 0.5 + run.grad_accum * micro_step      # linear in grad_accum, like the simulator
        peak = sum(mem.values())
        return FakePrediction(step, run.tokens_per_step / step, peak <= GPU, peak, GPU, mem,
                              {"compute_s": micro_step * 0.9}, run.train_batch, run.micro_batch,
                              run.grad_accum, dict(run.resolved), tuple(run.notes))
    return predictor


def brute_force_best(global_batch=128, dp=8):
    """The fake's optimum by plain enumeration, independent of the search."""
    best = None
    predictor = fake_predictor()
    for stage, oo, op, micro, ckpt, bucket in itertools.product(
            (0, 1, 2, 3), ("none", "cpu"), ("none", "cpu"), (1, 2, 4, 8, 16), (False, True),
            (50_000_000, 200_000_000, 500_000_000)):
        if (op != "none" and stage != 3) or (oo != "none" and stage == 0):
            continue
        ga = global_batch // (dp * micro)
        zero = {"stage": stage, "reduce_bucket_size": bucket}
        if oo != "none":
            zero["offload_optimizer"] = {"device": oo}
        if op != "none":
            zero["offload_param"] = {"device": op}
        p = predictor(ds_config={"bf16": {"enabled": True}, "zero_optimization": zero,
                                 "train_micro_batch_size_per_gpu": micro, "gradient_accumulation_steps": ga},
                      seq=2048, activation_checkpointing=ckpt)
        if p.fits and (best is None or p.tokens_per_s > best[0]):
            best = (p.tokens_per_s, (stage, oo, op, micro, ckpt, bucket))
    return best


def test_search_finds_the_placed_optimum():
    result = plan("llama-2-7b", "dgx-a100", global_batch=128, predictor=fake_predictor(), memory_headroom_pct=0)
    c = result.best.candidate
    found = (c.stage, c.offload_optimizer, c.offload_param, c.micro_batch, c.activation_checkpointing,
             c.reduce_bucket_size)
    assert found == (2, "none", "none", 4, False, 500_000_000)
    assert found == brute_force_best()[1]
    assert c.grad_accum == 128 // (8 * 4)
    tps = [r.prediction.tokens_per_s for r in result.ranked]
    assert tps == sorted(tps, reverse=True) and len(tps) == 5


def test_extrapolated_screening_matches_full_prediction():
    # Finalists are re-predicted at their real grad_accum: the ranking uses exact numbers.
    calls = []
    result = plan("llama-2-7b", "dgx-a100", global_batch=128, predictor=fake_predictor(calls), memory_headroom_pct=0)
    best = result.best
    direct = fake_predictor()(ds_config=best.ds_config, seq=2048,
                              activation_checkpointing=best.candidate.activation_checkpointing)
    assert best.prediction.tokens_per_s == pytest.approx(direct.tokens_per_s, rel=1e-12)
    assert (None, None) in calls        # full-G predictions happened
    assert result.outcome.pruned > 0    # and the lower bound dropped some structures


def test_infeasible_configs_rejected_naming_the_overflowing_term():
    result = plan("llama-2-7b", "dgx-a100", global_batch=128, predictor=fake_predictor(), memory_headroom_pct=0)
    by_label = {r.candidate.label(): r for r in result.rejected}
    # Micro-batch 16 without checkpointing: activations 192 GiB dominate.
    r = by_label["Z2 mb=16 ga=1"]
    assert r.memory.largest_term == ("activations", 192 * GIB)
    assert r.memory.overflow_bytes == r.memory.peak_bytes - GPU > 0
    assert "activations 192.00 GiB is the largest term" in r.reason()
    assert f"by {(r.memory.peak_bytes - GPU) / GIB:.2f} GiB" in r.reason()
    # Stage 0 at micro-batch 1: the 90 GiB of optimizer states alone exceed the GPU.
    r0 = [r for r in result.rejected if r.candidate.stage == 0]
    assert r0 and all(r.memory.largest_term[0] in ("optimizer_states", "activations") for r in r0)
    assert any(r.memory.largest_term[0] == "optimizer_states" for r in r0)
    # Nothing that was ranked is over the GPU, nothing rejected is under it.
    assert all(r.prediction.fits for r in result.ranked)
    assert all(r.memory.peak_bytes > GPU for r in result.rejected)


def test_pinned_axes_are_respected():
    result = plan("llama-2-7b", "dgx-a100", global_batch=128, predictor=fake_predictor(), memory_headroom_pct=0,
                  constraints=Constraints(stage=3, activation_checkpointing=True))
    assert {r.candidate.stage for r in result.ranked} == {3}
    assert all(r.candidate.activation_checkpointing for r in result.ranked)


def test_bad_global_batch_is_an_input_error():
    with pytest.raises(ZsimInputError, match="not a multiple of the data-parallel size 8"):
        plan("llama-2-7b", "dgx-a100", global_batch=12, predictor=fake_predictor(), memory_headroom_pct=0)


# ---- the real predictor ---------------------------------------------------------------------

def test_user_auto_config_resolved_with_fixed_values_kept(tmp_path):
    result = plan("llama-2-7b", "dgx-a100", ds_config=str(EXAMPLE), global_batch=256)
    cfg = result.ds_config_auto
    assert "auto" not in json.dumps(cfg)
    user = read_user_config(str(EXAMPLE))
    assert fixed_values_kept(user, cfg) == []
    assert cfg["gradient_accumulation_steps"] == 8                      # fixed by the user
    assert cfg["zero_optimization"]["stage"] == 2
    assert cfg["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert cfg["train_batch_size"] == cfg["train_micro_batch_size_per_gpu"] * 8 * 8 == 256
    changed = {c.key for c in result.changes}
    assert {"train_batch_size", "train_micro_batch_size_per_gpu"} <= changed
    assert all(c.reason for c in result.changes)
    # The written config is one DeepSpeed (and zsim) accepts as is.
    run = build_run_config(cfg, load_model("llama-2-7b"), 8)
    assert run.train_batch == run.micro_batch * run.grad_accum * 8


def test_cli_plan_writes_the_winner_config(tmp_path, capsys):
    rc = main(["plan", "--model", "llama-2-7b", "--topo", "dgx-a100", "--ds-config", str(EXAMPLE),
               "--global-batch", "128", "--output", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    written = json.loads((tmp_path / "deepspeed_config_auto.json").read_text())
    assert "auto" not in json.dumps(written)
    assert written["train_batch_size"] == 128
    assert "changes from your config" in out and "train_micro_batch_size_per_gpu: 'auto' ->" in out
    assert json.loads((tmp_path / "plan.json").read_text())["ranked"]


def test_real_search_matches_exhaustive_enumeration():
    # Small real grid: stage 2 pinned, 8 GPUs, global batch 32 -> micro 1, 2, 4, checkpointing
    # on/off, overlap_comm on/off, 3 reduce buckets, offload none/cpu. The pruned,
    # extrapolating search must find the same best as predicting every configuration at its
    # real grad_accum.
    from zsim.predict import predict
    result = plan("tinyllama-1.1b", "dgx-a100", global_batch=32, seq=1024, constraints=Constraints(stage=2))
    seen = []
    for micro, ckpt, bucket, oo, overlap in itertools.product(
            (1, 2, 4), (False, True), (50_000_000, 200_000_000, 500_000_000), ("none", "cpu"), (False, True)):
        zero = {"stage": 2, "reduce_bucket_size": bucket, "overlap_comm": overlap}
        if oo == "cpu":
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        p = predict("tinyllama-1.1b", "dgx-a100", ds_config={"bf16": {"enabled": True}, "gradient_clipping": 1.0,
                                                              "zero_optimization": zero},
                    micro_batch=micro, grad_accum=32 // (8 * micro), seq=1024, activation_checkpointing=ckpt)
        if p.fits:
            seen.append((p.tokens_per_s, (micro, ckpt, bucket, oo, overlap)))
    best = max(t for t, _ in seen)
    # Configurations that tie exactly (e.g. bucket sizes that do not change a host-bound step)
    # are all "the best"; the plan may break the tie its own way.
    tied = {cfg for t, cfg in seen if t == best}
    c = result.best.candidate
    assert (c.micro_batch, c.activation_checkpointing, c.reduce_bucket_size, c.offload_optimizer,
            c.overlap_comm) in tied
    assert result.best.prediction.tokens_per_s == pytest.approx(best, rel=1e-9)


def test_nothing_fits_names_the_term(capsys):
    rc = main(["plan", "--model", "llama-2-70b", "--topo", "dgx-a100", "--stage", "1",
               "--global-batch", "64", "--no-output"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "no configuration fits" in err and "is the largest term" in err and "exceeds" in err


def test_zero3_auto_buckets_are_searched_and_resolved():
    # The HF Trainer's ZeRO-3 template: stage fixed, bucket sizes and thresholds "auto".
    raw = {"bf16": {"enabled": "auto"}, "gradient_clipping": "auto",
           "zero_optimization": {"stage": 3, "overlap_comm": True, "reduce_bucket_size": "auto",
                                 "stage3_prefetch_bucket_size": "auto",
                                 "stage3_param_persistence_threshold": "auto"},
           "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
           "gradient_accumulation_steps": "auto"}
    result = plan("tinyllama-1.1b", "dgx-a100", ds_config=raw, global_batch=32, seq=512,
                  constraints=Constraints(activation_checkpointing=False), target="deepspeed")
    cfg = result.ds_config_auto
    assert "auto" not in json.dumps(cfg)        # --for deepspeed: every "auto" zsim resolves
    z = cfg["zero_optimization"]
    assert z["stage"] == 3 and z["overlap_comm"] is True                        # fixed: kept
    assert z["reduce_bucket_size"] in (50_000_000, 200_000_000, 500_000_000)    # searched
    assert z["stage3_prefetch_bucket_size"] in (50_000_000, 200_000_000)
    assert z["stage3_param_persistence_threshold"] == 10 * 2048                 # HF rule: 10 h
    assert cfg["train_batch_size"] == 32 == cfg["train_micro_batch_size_per_gpu"] * \
        cfg["gradient_accumulation_steps"] * 8
    reasons = {c.key: c.reason for c in result.changes}
    assert "chosen by the search" in reasons["zero_optimization.reduce_bucket_size"]
    assert "GlobalBatch 32" in reasons["gradient_accumulation_steps"]
    assert all(r.candidate.stage == 3 for r in result.ranked)


def test_progress_bar_only_when_asked_or_on_a_terminal(capsys):
    args = ["plan", "--model", "tinyllama-1.1b", "--topo", "dgx-a100", "--stage", "2", "--micro-batch", "2",
            "--global-batch", "32", "--seq", "512", "--no-output"]
    assert main(args) == 0
    assert "[" not in capsys.readouterr().err              # stderr is not a terminal here
    assert main(args + ["--progress"]) == 0
    err = capsys.readouterr().err
    assert "[##############################]" in err and "finalists" in err and err.endswith("\n")


def test_json_output_is_one_object(capsys):
    assert main(["plan", "--model", "tinyllama-1.1b", "--topo", "dgx-a100", "--stage", "1", "--micro-batch", "4",
                 "--global-batch", "32", "--seq", "512", "--no-output", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    best = data["ranked"][0]
    assert best["stage"] == 1 and best["micro_batch"] == 4 and best["grad_accum"] == 1
    assert data["deepspeed_config_auto"]["train_batch_size"] == 32
    assert best["prediction"]["fits"] is True


@pytest.mark.parametrize("stage, oo, op", [(0, "none", "none"), (1, "cpu", "none"), (2, "none", "none"),
                                           (3, "none", "none"), (3, "cpu", "cpu")])
def test_memory_precheck_equals_predict(stage, oo, op):
    # The search rejects configurations on a memory estimate made without simulating; it must
    # be exactly what zsim.predict reports, or the search would reject what predict accepts.
    from zsim.decide.autoconfig import read_user_config
    from zsim.decide.evaluate import Evaluator, make_setting
    from zsim.decide.space import Candidate
    from zsim.predict import predict
    spec = load_model("tinyllama-1.1b")
    ev = Evaluator(make_setting(spec, "dgx-a100", None, None, None, 1024, read_user_config(None)))
    for micro, ckpt, overlap in ((1, False, False), (4, True, True)):
        cand = Candidate(stage, oo, op, micro, 2, ckpt, 200_000_000, 50_000_000, overlap)
        verdict = ev.memory(cand)
        p = predict(spec, "dgx-a100", ds_config=ev.ds_config(cand), seq=1024, activation_checkpointing=ckpt)
        assert verdict.peak_bytes == p.peak_memory_bytes
        assert dict(verdict.breakdown) == dict(p.memory_breakdown)
