"""Collective sequences recorded with their groups (expert_parallel.record_groups), set beside
zsim's: shared by the expert-parallel and the AutoTP truth cases."""

from __future__ import annotations

import json
from typing import Callable


def truth_sequence(result: dict) -> list[tuple[str, int, list[int]]]:
    """DeepSpeed's recorded sequence of rank 0 (a group of None is the world)."""
    world = len(result["per_rank"])
    return [(op, n, ranks if ranks is not None else list(range(world)))
            for op, n, ranks in result["extras"][0]["group_sequence"]]


def compare_cases(cases: list[dict], zsim_sequence: Callable[[dict], list]) -> int:
    """Run every case; print whether zsim's grouped sequence equals DeepSpeed's (1 if any
    case differs or fails)."""
    from .runner import run_cases
    results = run_cases(cases, jobs=1)
    bad = 0
    for c in cases:
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
