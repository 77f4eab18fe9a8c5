"""DeepSpeed AutoTP training (``tensor_parallel.autotp_size``, zsim.parallel.autotp).

Truth: real DeepSpeed 0.19.8 on 2 CPU gloo ranks with autotp_size 2 (validation/cpu_truth/
autotp.py) must issue exactly zsim's collectives, in order, with their bytes and groups, and
hold exactly zsim's shard of every parameter. Without torch/deepspeed the truth tests skip —
unless ZSIM_REQUIRE_TRUTH=1 (CI), where they FAIL. The refusals need no DeepSpeed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from truth_packages import require_truth_packages  # noqa: E402
from validation.cpu_truth.autotp import AUTOTP_CASES, truth_sequence, zsim_sequence  # noqa: E402
from zsim.dsconfig import Overrides, autotp_size, build_run_config  # noqa: E402
from zsim.errors import ZsimInputError  # noqa: E402
from zsim.job import RunSettings  # noqa: E402
from zsim.model import from_hf_config, load_model  # noqa: E402
from zsim.parallel.autotp import shard_model_autotp  # noqa: E402
from zsim.parallel.predict3d import ParallelAsk, predict_any, with_autotp  # noqa: E402


@pytest.fixture(scope="module")
def truth() -> dict:
    """DeepSpeed's runs of every AutoTP case (once per module)."""
    require_truth_packages("AutoTP truth", "torch", "deepspeed", "transformers")
    import deepspeed
    assert deepspeed.__version__.startswith("0.19.8"), deepspeed.__version__
    from validation.cpu_truth.runner import run_cases
    return run_cases(AUTOTP_CASES, jobs=1)


@pytest.mark.schedule_truth
@pytest.mark.parametrize("case", AUTOTP_CASES, ids=[c["id"] for c in AUTOTP_CASES])
def test_collectives_groups_and_order_match_deepspeed(case: dict, truth: dict) -> None:
    """Every collective rank 0 issues in a steady-state step (op, bytes, group ranks, in
    issue order) equals zsim's schedule; every rank issues the same ops."""
    result = truth[case["id"]]
    assert "error" not in result, result.get("error")
    assert [list(x) for x in zsim_sequence(case)] == [list(x) for x in truth_sequence(result)]
    assert all(p == result["per_rank"][0] for p in result["per_rank"])


@pytest.mark.schedule_truth
@pytest.mark.parametrize("case", AUTOTP_CASES, ids=[c["id"] for c in AUTOTP_CASES])
def test_shard_and_zero_group_match_deepspeed(case: dict, truth: dict) -> None:
    """Each rank's parameters are zsim's AutoTP shard (q/k/v, gate/up and lm_head split by
    rows, o/down by columns, the embedding and norms whole), and ZeRO flattens them over the
    world/autotp_size data-parallel group."""
    result = truth[case["id"]]
    assert "error" not in result, result.get("error")
    spec = from_hf_config(case["model"], name=case["model_name"])
    tp = autotp_size(case["ds_config"])
    shard = shard_model_autotp(spec, tp)
    mine = {p.name: p.numel for p in shard.parameters()}
    world = case["world_size"]
    for rank, extras in enumerate(result["extras"]):
        assert extras["parameter_numels"] == mine
        (group,) = extras["optimizer_groups"]
        assert group["group_ranks"] == list(range(rank % tp, world, tp))
        assert group["params"] == len(mine)


# ---- what is refused, in one line -----------------------------------------------------------

TINY = AUTOTP_CASES[0]


def _settings(cfg: dict, model=None, **over) -> RunSettings:
    spec = model or from_hf_config(TINY["model"], name="tiny")
    return RunSettings(**{"model": spec, "topo": "dgx-h100", "gpus": 2, "ds_config": cfg, "seq": 16, **over})


def _cfg(**tp) -> dict:
    return dict(TINY["ds_config"], tensor_parallel={"autotp_size": 2, **tp})


def test_tp_flag_must_agree_with_autotp_size() -> None:
    with pytest.raises(ZsimInputError, match="--tp 4 and the ds_config's tensor_parallel.autotp_size 2"):
        with_autotp(_settings(_cfg()), ParallelAsk(tp=4))
    assert with_autotp(_settings(_cfg()), ParallelAsk(tp=2)) == ParallelAsk(tp=2, autotp=True)


def test_commands_that_do_not_model_autotp_refuse_it() -> None:
    """build_run_config without autotp (plan, calibrate, the data-parallel path) refuses the
    config instead of simulating it without the split."""
    spec = from_hf_config(TINY["model"], name="tiny")
    with pytest.raises(ZsimInputError, match="autotp_size 2 .* modelled by `zsim predict` only"):
        build_run_config(_cfg(), spec, 2, Overrides(seq_len=16))
    assert build_run_config(dict(TINY["ds_config"], tensor_parallel={"autotp_size": 1}), spec, 2).world_size == 2


@pytest.mark.parametrize("section,match", [
    ({"tp_overlap_comm": True}, "tp_overlap_comm"),
    ({"vocab_parallel_lm_head": True}, "vocab_parallel_lm_head"),
    ({"partition_config": {"layer_specs": []}}, "partition_config"),
    ({"tp": {"tp_size": 4}}, r"tp.tp_size \(4\) does not match"),
])
def test_unmodelled_tensor_parallel_options_are_refused(section: dict, match: str) -> None:
    with pytest.raises(ZsimInputError, match=match):
        autotp_size({"tensor_parallel": {"autotp_size": 2, **section}})


def test_zero3_pipeline_and_unmodelled_models_are_refused() -> None:
    stage3 = dict(_cfg(), zero_optimization={"stage": 3})
    with pytest.raises(ZsimInputError, match="ZeRO-3 is not modelled"):
        predict_any(_settings(stage3), ParallelAsk())
    with pytest.raises(ZsimInputError, match="pipeline, Ulysses or Megatron sequence"):
        predict_any(_settings(_cfg(), gpus=None, nodes=1), ParallelAsk(pp=2))
    tied = from_hf_config(dict(TINY["model"], tie_word_embeddings=True), name="tied")
    with pytest.raises(ZsimInputError, match="tied lm_head"):
        predict_any(_settings(_cfg(), model=tied), ParallelAsk())


def test_predict_with_autotp_prices_the_split() -> None:
    """A 7B model on one DGX node with autotp_size 2: a TP-split prediction whose per-rank
    parameters are AutoTP's shard (the embedding whole, lm_head split)."""
    cfg = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
           "zero_optimization": {"stage": 1}, "bf16": {"enabled": True}, "tensor_parallel": {"autotp_size": 2}}
    result = predict_any(RunSettings(model="llama-2-7b", topo="dgx-h100", nodes=1, ds_config=cfg, seq=2048),
                         ParallelAsk())
    assert result.layout.tp == 2 and result.layout.dp == 4 and result.tp_comm_s > 0
    spec = load_model("llama-2-7b")
    shard = shard_model_autotp(spec, 2)
    embed = spec.vocab_size * spec.hidden_size
    assert shard.num_parameters == pytest.approx((spec.num_parameters - 2 * embed) / 2 + embed + embed / 2,
                                                 rel=1e-3)
