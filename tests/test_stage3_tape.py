"""The stage-3 coordinator tape (zsim.schedule.tape): a build that plays back another
build's coordinator decisions emits exactly the ops of one that replays the coordinator."""

from dataclasses import replace

import pytest

from zsim.dsconfig import OffloadDevice, Overrides, build_run_config
from zsim.model import load_model
from zsim.schedule import build_schedule, tape
from zsim.schedule.api import schedule_facts
from zsim.schedule.stage3 import persistent_params


def _fresh(spec, run, gpus_per_node):
    """The schedule and facts of ``run`` with no tape kept (the coordinator replayed)."""
    tape._TAPES.clear()
    return build_schedule(spec, run, gpus_per_node), schedule_facts(spec, run, gpus_per_node)


#: ZeRO fields the coordinator never reads: runs differing in them share a tape.
_SHARING = [{"reduce_bucket_size": 12_345_678}, {"offload_optimizer": OffloadDevice.CPU},
            {"offload_param": OffloadDevice.CPU}, {"zero_hpz_partition_size": 4},
            {"zero_quantized_gradients": True}, {"overlap_comm": False, "contiguous_gradients": False},
            {"reduce_scatter": False}]


@pytest.mark.parametrize("grad_accum,checkpointing", [(1, False), (2, True), (3, False)])
@pytest.mark.parametrize("fields", _SHARING)
@pytest.mark.parametrize("recorded_by_variant", [False, True])
def test_played_back_builds_equal_replayed_ones(grad_accum, checkpointing, fields, recorded_by_variant):
    """Builds and facts (taken from the tape without a replay) of ``run``, played back from
    a tape another run recorded, equal a fresh replay's."""
    spec = load_model("llama-2-7b")
    base = build_run_config(None, spec, 16, Overrides(stage=3, micro_batch=1, grad_accum=grad_accum))
    base = replace(base, activation_checkpointing=checkpointing)
    run = replace(base, zero=replace(base.zero, **fields))
    if recorded_by_variant:
        base, run = run, base
    want = _fresh(spec, run, 8)
    tape._TAPES.clear()
    build_schedule(spec, base, 8)          # records the tape run plays back
    keys = list(tape._TAPES)
    assert len(keys) == 1
    assert (build_schedule(spec, run, 8), schedule_facts(spec, run, 8)) == want
    assert list(tape._TAPES) == keys       # played back, nothing recorded


def test_coordinator_inputs_are_in_the_key():
    spec = load_model("llama-2-7b")
    run = build_run_config(None, spec, 16, Overrides(stage=3, micro_batch=1, grad_accum=2))
    numels = [4096, 11008, 4096]
    key = tape.tape_key(spec, numels, persistent_params(numels, run), run)
    z = run.zero
    for changed in (replace(run, grad_accum=3), replace(run, activation_checkpointing=True),
                    replace(run, zero=replace(z, stage3_prefetch_bucket_size=0)),
                    replace(run, zero=replace(z, stage3_max_live_parameters=1)),
                    replace(run, zero=replace(z, stage3_max_reuse_distance=0))):
        assert tape.tape_key(spec, numels, persistent_params(numels, changed), changed) != key
    assert tape.tape_key(spec, numels, [True, False, True], run) != key


def test_a_call_off_the_tape_raises():
    player = tape.TapePlayer(([(("fetch", 0, True), (), [])], (0, {})), lambda *a: None, lambda p: None)
    with pytest.raises(RuntimeError, match="out of step"):
        player.fetch(1, True)
