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

from .expert_parallel import RECORDED


def autotp_size(ds_config: dict) -> int:
    """The case's ``tensor_parallel.autotp_size`` (1 without AutoTP)."""
    return int((ds_config.get("tensor_parallel") or {}).get("autotp_size", 1))


def record_groups(sequence: list) -> None:
    """Append ``(op, bytes, sorted global ranks of the group, or None for the world)`` to
    ``sequence`` for every collective issued through deepspeed.comm."""
    import deepspeed.comm as dist
    import torch.distributed as tdist

    for name, (tensor_at, group_at) in RECORDED.items():
        original = getattr(dist, name)

        def wrapped(*args, __original=original, __name=name, __at=(tensor_at, group_at), **kwargs):
            tensor = args[__at[0]] if len(args) > __at[0] else kwargs.get("tensor")
            group = args[__at[1]] if len(args) > __at[1] else kwargs.get("group")
            ranks = sorted(tdist.get_process_group_ranks(group)) if group is not None else None
            sequence.append((__name, int(tensor.numel() * tensor.element_size()), ranks))
            return __original(*args, **kwargs)
        setattr(dist, name, wrapped)


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


def truth_sequence(result: dict) -> list[tuple[str, int, list[int]]]:
    """DeepSpeed's recorded sequence of rank 0 (a group of None is the world)."""
    world = len(result["per_rank"])
    return [(op, n, ranks if ranks is not None else list(range(world)))
            for op, n, ranks in result["extras"][0]["group_sequence"]]


def main() -> int:
    """Run every case; print whether zsim's grouped sequence equals DeepSpeed's."""
    import json

    from .runner import run_cases
    results = run_cases(AUTOTP_CASES, jobs=1)
    bad = 0
    for c in AUTOTP_CASES:
        r = results[c["id"]]
        if "error" in r:
            print("ERROR", c["id"], r["error"][-2000:])
            bad += 1
            continue
        z, t = zsim_sequence(c), truth_sequence(r)
        ok = [tuple(x) for x in z] == [tuple(x) for x in t]
        bad += not ok
        print(("OK  " if ok else "DIFF"), c["id"], f"{len(t)} collectives", f"{r['wall_s']:.0f}s")
        if not ok:
            print("  deepspeed:", json.dumps(t))
            print("  zsim     :", json.dumps(z))
    return 1 if bad else 0


if __name__ == "__main__":
    import sys
    sys.exit(main())
