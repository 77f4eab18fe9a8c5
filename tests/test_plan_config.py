"""`zsim plan` never damages a user's config: every value the search does not decide is
written exactly as the user wrote it ("auto" included, for the Hugging Face Trainer), and
the wording of the changes is true (bf16 is not DeepSpeed's default)."""

import json
from pathlib import Path

import pytest

from zsim.cli import main
from zsim.decide.api import Constraints, plan
from zsim.decide.autoconfig import AXIS_KEYS, config_target, read_user_config

CORPUS = sorted((Path(__file__).resolve().parent / "corpus").glob("*.json"))
PINNED = Constraints(micro_batch=2, activation_checkpointing=False)


def _leaves(node, prefix=""):
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_leaves(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def _decided(user) -> tuple[str, ...]:
    """Dotted keys (and prefixes) the search may write: its axes the user left open."""
    keys = [k for axis, k in AXIS_KEYS.items() if axis not in user.fixed]
    keys += [f"zero_optimization.{a}" for a in ("offload_optimizer", "offload_param") if a not in user.fixed]
    if "prefetch_bucket_size" not in user.fixed:
        keys.append("zero_optimization.prefetch_bucket_size")
    return tuple(keys)


def _is_decided(key: str, decided: tuple[str, ...]) -> bool:
    return any(key == d or key.startswith(d + ".") for d in decided)


def _plan(path, target=None):
    fixed = read_user_config(str(path)).fixed
    batch_fixed = any(a in fixed for a in ("micro_batch", "grad_accum", "train_batch"))
    return plan("tinyllama-1.1b", "dgx-a100", ds_config=str(path), global_batch=None if batch_fixed else 16,
                seq=512, constraints=Constraints(activation_checkpointing=False) if batch_fixed else PINNED,
                top_n=1, refine=1, target=target)


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_every_undecided_value_survives(path):
    raw = json.loads(path.read_text())
    user = read_user_config(str(path))
    result = _plan(path)
    if not result.best:
        pytest.skip("nothing fits")
    before, after = _leaves(raw), _leaves(result.ds_config_auto)
    decided = _decided(user)
    for key, value in before.items():
        if _is_decided(key, decided):
            continue
        assert key in after, f"{path.name}: {key} was dropped"
        assert after[key] == value and type(after[key]) is type(value), f"{path.name}: {key} changed"
    # Nothing the search does not decide is added either.
    assert all(k in before or _is_decided(k, decided) for k in after)
    assert result.target == ("hf-trainer" if "auto" in json.dumps(raw) else "deepspeed")


def test_hf_trainer_keeps_optimizer_and_scheduler_auto():
    path = next(p for p in CORPUS if p.stem == "hf_zero3_auto")
    raw = json.loads(path.read_text())
    cfg = _plan(path).ds_config_auto
    assert cfg["optimizer"] == raw["optimizer"] and cfg["scheduler"] == raw["scheduler"]
    assert cfg["gradient_clipping"] == "auto" and cfg["bf16"] == {"enabled": "auto"}
    assert cfg["zero_optimization"]["sub_group_size"] == 1e9
    assert cfg["train_micro_batch_size_per_gpu"] == 2 and cfg["train_batch_size"] == 16


def test_deepspeed_target_resolves_what_zsim_knows_and_keeps_the_rest():
    path = next(p for p in CORPUS if p.stem == "hf_zero3_auto")
    result = _plan(path, target="deepspeed")
    cfg = result.ds_config_auto
    assert cfg["gradient_clipping"] == 1.0 and isinstance(cfg["bf16"]["enabled"], bool)
    assert cfg["zero_optimization"]["stage3_param_persistence_threshold"] != "auto"
    assert cfg["optimizer"]["params"]["lr"] == "auto"           # never dropped
    assert any("cannot read \"auto\"" in n and "optimizer.params.lr" in n for n in result.notes)


def test_cli_says_who_the_config_is_for(tmp_path, capsys):
    path = next(p for p in CORPUS if p.stem == "hf_zero2_auto")
    args = ["plan", "--model", "tinyllama-1.1b", "--ds-config", str(path), "--global-batch", "16",
            "--seq", "512", "--micro-batch", "2", "--no-activation-checkpointing", "--top", "1",
            "--output", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "written for the Hugging Face Trainer" in out and "per_device_train_batch_size=2" in out
    written = json.loads((tmp_path / "deepspeed_config_auto.json").read_text())
    assert written["optimizer"] == json.loads(path.read_text())["optimizer"]
    assert json.loads((tmp_path / "plan.json").read_text())["target"] == "hf-trainer"
    assert main(args + ["--for", "deepspeed", "--no-output"]) == 0
    assert "written for plain DeepSpeed" in capsys.readouterr().out


def test_target_detection():
    assert config_target(read_user_config(None)) == "deepspeed"
    assert config_target(read_user_config({"train_batch_size": "auto"})) == "hf-trainer"
    assert config_target(read_user_config({"train_batch_size": 8})) == "deepspeed"
    assert config_target(read_user_config({"train_batch_size": 8}), "hf-trainer") == "hf-trainer"


def test_no_config_reasons_are_true():
    result = plan("tinyllama-1.1b", "dgx-a100", global_batch=16, seq=512, constraints=PINNED, top_n=1,
                  refine=1)
    reasons = {c.key: c.reason for c in result.changes}
    assert "DeepSpeed itself leaves bf16 off" in reasons["bf16.enabled"]
    assert not any("DeepSpeed's default for this configuration" in r for r in reasons.values())
