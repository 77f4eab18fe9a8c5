"""The run plan for one GPU of an H200 node: model sizes × ZeRO stages × offload × batch shapes.

    python validation/plan.py --list            # print the plan
    python validation/plan.py --write DIR       # write DIR/<run_id>/ds_config.json for every run

Fit/evaluation split is by model size (see FIT_MODELS); `zsim calibrate` fits overheads on the
fit sizes only and `zsim validate` reports the error on the others.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

#: sizes the residual overheads are fitted on; the other sizes are evaluation only
FIT_MODELS = ("llama-0.13b", "llama-3b")
EVAL_MODELS = ("llama-0.55b", "tinyllama-1.1b", "llama-2-7b")


@dataclass(frozen=True)
class Run:
    """One training run of the plan."""

    model: str
    stage: int
    mb: int
    ga: int
    seq: int
    ac: bool = False
    offload: str = "none"  # none | opt (optimizer to CPU) | all (optimizer and params to CPU, stage 3)
    gpus: int = 1

    @property
    def run_id(self) -> str:
        """Folder name of the run: model, stage, offload, batch shape, AC, GPUs."""
        off = {"none": "", "opt": "-offopt", "all": "-offall"}[self.offload]
        return (f"{self.model}-z{self.stage}{off}-mb{self.mb}-ga{self.ga}-s{self.seq}"
                f"{'-ac' if self.ac else ''}{f'-g{self.gpus}' if self.gpus > 1 else ''}")

    def timeout_s(self) -> int:
        """Wall-clock limit of the run on an H200 (start-up, JIT builds and offload included)."""
        base = {"llama-0.13b": 90, "llama-0.55b": 100, "tinyllama-1.1b": 120, "llama-3b": 170,
                "llama-2-7b": 240}[self.model]
        return (base + (90 if self.offload != "none" else 0) + (30 if self.ga > 1 else 0)
                + (20 if self.gpus > 1 else 0))


def ds_config(r: Run) -> dict:
    """The DeepSpeed config of a run, as a user would write it."""
    zero: dict = {"stage": r.stage}
    if r.offload in ("opt", "all"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if r.offload == "all":
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_micro_batch_size_per_gpu": r.mb,
        "gradient_accumulation_steps": r.ga,
        "bf16": {"enabled": True},
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "betas": [0.9, 0.95], "eps": 1e-8,
                                                  "weight_decay": 0.1}},
        "gradient_clipping": 1.0,
        "zero_optimization": zero,
        "steps_per_print": 1000000,
        "wall_clock_breakdown": False,
    }


S, M, L, XL, XXL = "llama-0.13b", "llama-0.55b", "tinyllama-1.1b", "llama-3b", "llama-2-7b"

#: in priority order: the first two are the smoke test (FusedAdam build, CPU Adam build);
#: fit and eval sizes alternate so that a partial batch still has both halves.
PLAN: tuple[Run, ...] = (
    Run(S, 0, 4, 1, 1024),
    Run(S, 3, 2, 1, 2048, offload="all"),
    Run(S, 1, 4, 1, 1024),
    Run(M, 0, 2, 1, 2048),
    Run(S, 2, 4, 1, 1024),
    Run(L, 0, 4, 1, 2048),
    Run(S, 3, 4, 1, 1024),
    Run(M, 2, 8, 1, 1024, ac=True),
    Run(XL, 0, 2, 1, 2048, ac=True),
    Run(L, 1, 2, 1, 2048),
    Run(S, 2, 8, 4, 512),
    Run(M, 3, 4, 1, 2048),
    Run(XL, 1, 4, 1, 1024),
    Run(L, 2, 4, 1, 2048, ac=True),
    Run(S, 3, 1, 1, 4096, ac=True),
    Run(M, 1, 4, 4, 1024),
    Run(XL, 3, 8, 1, 512),
    Run(L, 3, 4, 1, 2048),
    Run(S, 2, 4, 1, 1024, offload="opt"),
    Run(M, 2, 4, 1, 1024, offload="opt"),
    Run(XL, 2, 4, 4, 2048, ac=True),
    Run(L, 2, 8, 4, 512),
    Run(M, 3, 1, 4, 4096, ac=True),
    Run(L, 3, 8, 1, 1024, ac=True),
    Run(XL, 3, 2, 1, 4096, ac=True),
    Run(L, 1, 1, 1, 4096),
    Run(M, 3, 2, 1, 1024, ac=True, offload="all"),
    Run(L, 2, 4, 1, 1024, offload="opt"),
    Run(XL, 2, 4, 1, 1024, ac=True, offload="opt"),
    Run(L, 3, 4, 1, 1024, ac=True, offload="all"),
    Run(S, 0, 8, 1, 512),
    Run(M, 0, 8, 1, 512, ac=True),
    Run(XL, 3, 2, 1, 2048, ac=True, offload="all"),
    Run(XXL, 3, 1, 1, 1024, ac=True),
    Run(XXL, 3, 4, 1, 2048, ac=True),
    Run(L, 0, 1, 1, 4096, ac=True),
)

#: runs on two GPUs of one node (NVLink), for collective timing under real overlap
PLAN_2GPU: tuple[Run, ...] = (
    Run(L, 2, 4, 1, 2048, gpus=2),
    Run(L, 3, 4, 1, 2048, gpus=2),
    Run(S, 2, 4, 1, 1024, gpus=2),
    Run(XL, 3, 2, 1, 2048, ac=True, gpus=2),
    Run(L, 1, 4, 1, 2048, gpus=2),
    Run(M, 3, 8, 1, 1024, ac=True, gpus=2),
    Run(S, 3, 4, 1, 1024, gpus=2),
    Run(XL, 2, 4, 1, 1024, ac=True, gpus=2),
)

PLANS = {"h200-1gpu": PLAN, "h200-2gpu": PLAN_2GPU}


def split_of(model: str) -> str:
    """'fit' or 'eval' for a model preset name."""
    return "fit" if model in FIT_MODELS else "eval"


def main(argv=None) -> int:
    """List or write the plan."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--list", action="store_true")
    p.add_argument("--write", default=None)
    p.add_argument("--json", action="store_true", help="print the plan as JSON lines")
    args = p.parse_args(argv)
    ids = [r.run_id for plan in PLANS.values() for r in plan]
    if len(set(ids)) != len(ids):
        raise SystemExit("duplicate run ids in PLAN")
    for r in (r for plan in PLANS.values() for r in plan):
        if args.json:
            print(json.dumps({"run_id": r.run_id, **asdict(r), "timeout_s": r.timeout_s()}))
        elif args.list:
            print(f"{r.run_id:55s} {split_of(r.model):4s} timeout {r.timeout_s()}s")
        if args.write:
            d = Path(args.write) / r.run_id
            d.mkdir(parents=True, exist_ok=True)
            (d / "ds_config.json").write_text(json.dumps(ds_config(r), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
