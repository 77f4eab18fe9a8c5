"""Run many truth cases with a bounded number of cases in flight (ranks run in parallel).

``python -m validation.cpu_truth.runner [--jobs J] [--only REGEX] [--out FILE]`` prints, per
case, DeepSpeed's collectives next to zsim's and whether they match.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

from .cases import CASES, TIMING_DEPENDENT_CASES
from .harness import TruthRunError, launch


def run_cases(cases: list[dict], jobs: int = 3, timeout_s: float = 900) -> dict[str, dict]:
    """``{case id: result or {"error": ...}}`` with at most ``jobs`` cases running at once."""
    # largest worlds first: they take longest, so the small ones fill the gaps at the end
    pending = sorted(cases, key=lambda c: -int(c["world_size"]))
    running: list = []
    results: dict[str, dict] = {}
    while pending or running:
        while pending and len(running) < jobs:
            c = pending.pop(0)
            running.append((c, launch(c)))
        finished = [item for item in running if item[1].done()]
        if not finished:
            if time.monotonic() - min(item[1].started for item in running) > timeout_s:
                finished = running[:1]  # result() kills what is left and reports it
            else:
                time.sleep(0.2)
                continue
        for item in finished:
            running.remove(item)
            c, launched = item
            try:
                results[c["id"]] = launched.result(timeout_s)
            except TruthRunError as exc:
                results[c["id"]] = {"error": str(exc)}
    return results


def zsim_collectives(c: dict) -> dict:
    """zsim's prediction for a case."""
    from zsim.model import from_hf_config
    from zsim.schedule import steady_state_collectives
    spec = from_hf_config(c["model"], name=c["model_name"])
    return steady_state_collectives(spec, c["ds_config"], c["world_size"],
                                     activation_checkpointing=bool(c.get("activation_checkpointing")))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--only", default="", help="regular expression on case ids")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    cases = [c for c in CASES + TIMING_DEPENDENT_CASES if re.search(args.only, c["id"])]
    t0 = time.monotonic()
    results = run_cases(cases, args.jobs)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)
    bad = 0
    for c in cases:
        r = results[c["id"]]
        if "error" in r:
            print(f"ERROR {c['id']}: {r['error'][-1500:]}")
            bad += 1
            continue
        try:
            z = zsim_collectives(c)
        except Exception as exc:  # report and go on: one broken case must not hide the others
            z = {"zsim error": repr(exc)}
        ok = z == r["collectives"]
        bad += not ok
        same = all(p == r["per_rank"][0] for p in r["per_rank"])
        print(f"{'OK  ' if ok else 'DIFF'} {c['id']} ({r['wall_s']:.0f}s, ranks agree: {same})")
        if not ok:
            print("  deepspeed:", json.dumps(r["collectives"]))
            print("  zsim     :", json.dumps(z))
    print(f"{len(cases)} cases, {bad} bad, wall {time.monotonic() - t0:.0f}s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
