"""DeepSpeed AutoTP training in the CPU truth harness (used by worker.py).

A case whose ``ds_config`` has ``tensor_parallel.autotp_size > 1`` is trained as written:
``deepspeed.initialize`` shards the Hugging Face model itself (runtime/engine.py:595-601,
1009-1235). The worker records every collective each rank issues with its group, like
expert_parallel.record_groups, but reads a group's ranks with
``torch.distributed.get_process_group_ranks``: AutoTP's groups come from a DeviceMesh
(utils/groups.py:220-230), on which ``deepspeed.comm.get_all_ranks_from_group``
(comm/comm.py:802-814, which probes ranks until one raises) never stops.
"""

from __future__ import annotations

from . import expert_parallel
from .grouped import compare_cases, truth_sequence  # noqa: F401  (truth_sequence: the tests')


def autotp_size(ds_config: dict) -> int:
    """The case's ``tensor_parallel.autotp_size`` (1 without AutoTP)."""
    return int((ds_config.get("tensor_parallel") or {}).get("autotp_size", 1))


def record_groups(sequence: list) -> None:
    """expert_parallel.record_groups with torch's rank lookup (see the module docstring)."""
    import torch.distributed as tdist
    expert_parallel.record_groups(sequence, ranks_of=tdist.get_process_group_ranks)


# ---- the cases and zsim's side of them --------------------------------------------------------

def autotp_case(cid: str, world: int, tp: int, stage: int, precision: str = "bf16", gas: int = 1,
                micro: int = 1, seq_len: int = 16, **zero) -> dict:
    """One AutoTP case on the tiny GQA Llama (cases.LLAMA_GQA, untied)."""
    import copy

    from .cases import LLAMA_GQA, ds_config
    cfg = ds_config(stage, precision, gas, micro, **zero)
    cfg["tensor_parallel"] = {"autotp_size": tp}
    return {"id": cid, "model_name": cid, "model": copy.deepcopy(LLAMA_GQA), "world_size": world, "steps": 2,
            "ds_config": cfg, "seq_len": seq_len}


#: 2 ranks, autotp_size 2 (one data-parallel rank): ZeRO-1 and ZeRO-2, bf16 and fp32, with
#: gradient accumulation and a micro-batch of 2.
AUTOTP_CASES: list[dict] = [
    autotp_case("autotp2-w2-s1-bf16", 2, 2, 1),
    autotp_case("autotp2-w2-s2-bf16-gas2", 2, 2, 2, gas=2),
    autotp_case("autotp2-w2-s1-fp32-mb2", 2, 2, 1, "fp32", micro=2),
]


def zsim_sequence(case: dict) -> list[tuple[str, int, list[int]]]:
    """zsim's collectives of one steady-state step in issue order, as rank 0 sees them, from
    the schedule ``zsim predict`` simulates (zsim.parallel.stages with AutoTP)."""
    from zsim.job import RunSettings
    from zsim.model import from_hf_config
    from zsim.parallel.predict3d import ParallelAsk, with_autotp
    from zsim.parallel.stages import stage_schedule, stage_setup

    spec = from_hf_config(case["model"], name=case["model_name"])
    world = case["world_size"]
    settings = RunSettings(model=spec, topo="dgx-h100", gpus=world, ds_config=case["ds_config"],
                           seq=case.get("seq_len", 16),
                           activation_checkpointing=bool(case.get("activation_checkpointing")))
    ask = with_autotp(settings, ParallelAsk())
    s = stage_setup(settings, ask)
    tp = ask.tp
    out = []
    for op in stage_schedule(s, s.run, 0, (spec.num_layers,)).ops:
        if op.kind != "collective":
            continue
        ranks = list(range(tp)) if op.group.dim.name == "TENSOR" else list(range(0, world, tp))
        out.append((op.collective, op.message_bytes, ranks))
    return out


def main() -> int:
    """Run every case; print whether zsim's grouped sequence equals DeepSpeed's."""
    return compare_cases(AUTOTP_CASES, zsim_sequence)


if __name__ == "__main__":
    import sys
    sys.exit(main())
