"""z3modules.hook_events keeps one module tree and micro-step event list per model and
checkpointing: equal to a fresh build's, for several model families."""

import pytest

from zsim.model import load_model
from zsim.schedule.z3modules import build_tree, first_use_modules, hook_events, micro_step_events


@pytest.mark.parametrize("name", ["tinyllama-1.1b", "llama-2-7b", "qwen2.5-7b", "gpt3-175b",
                                  "bigscience/bloom-560m", "Qwen/Qwen1.5-MoE-A2.7B-Chat"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_kept_events_equal_fresh_ones(name, checkpointing):
    spec = load_model(name)
    mods = build_tree(spec)
    want = (tuple(mods), tuple(micro_step_events(mods, first_use_modules(mods), checkpointing)))
    assert hook_events(spec, checkpointing) == want
    assert hook_events(spec, checkpointing) is hook_events(spec, checkpointing)
