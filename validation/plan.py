"""The run plan for one GPU of an H200 or H100 node: model sizes × ZeRO stages × offload × batch shapes.

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
EVAL_MODELS = ("llama-0.55b", "tinyllama-1.1b", "llama-2-7b", "llama-1.2b-hd128", "llama-0.7b-v128k",
               "llama-1.5b-gqa", "llama-4b-gqa", "mixtral-0.7b-8e")


@dataclass(frozen=True)
class Run:
    """One training run of the plan."""

    model: str
    stage: int
    mb: int
    ga: int
    seq: int
    ac: bool = False
    offload: str = "none"  # none | opt (optimizer to CPU) | all (both, stage 3) | param (params only, stage 3)
    gpus: int = 1
    precision: str = "bf16"   # bf16 | fp16 | fp32
    zero: tuple = ()          # extra zero_optimization keys as (key, value) pairs
    tag: str = ""             # names a variant (zero keys, launcher threads, a user's config)
    rep: int = 0              # process index of a repeated configuration (0: not repeated)
    profile: bool = False     # trace one settled step with torch.profiler
    omp_threads: int = 0      # OMP_NUM_THREADS for the job (0: the launcher's default)
    base: str = ""            # a DeepSpeed config file the run starts from (repo-relative)
    pyprofile: int = 0        # settled steps to run under cProfile after the timed ones
    moe: tuple = ()           # DeepSpeed-MoE layer kwargs as (key, value) pairs (train.py --moe-config)

    @property
    def run_id(self) -> str:
        """Folder name of the run: model, stage, offload, batch shape, AC, GPUs."""
        off = {"none": "", "opt": "-offopt", "all": "-offall", "param": "-offparam"}[self.offload]
        prec = "" if self.precision == "bf16" else f"-{self.precision}"
        return (f"{self.model}-z{self.stage}{off}{prec}-mb{self.mb}-ga{self.ga}-s{self.seq}"
                f"{'-ac' if self.ac else ''}{f'-g{self.gpus}' if self.gpus > 1 else ''}"
                f"{f'-{self.tag}' if self.tag else ''}{f'-r{self.rep}' if self.rep else ''}")

    @property
    def config_id(self) -> str:
        """The run id without the process index: repeated processes share it."""
        return self.run_id[: -len(f"-r{self.rep}")] if self.rep else self.run_id

    def timeout_s(self) -> int:
        """Wall-clock limit of the run on one H200 or H100 (start-up, JIT builds and offload included)."""
        base = {"llama-0.13b": 90, "llama-0.55b": 100, "tinyllama-1.1b": 120, "llama-3b": 170,
                "llama-2-7b": 240, "llama-1.2b-hd128": 120, "llama-0.7b-v128k": 110,
                "llama-1.5b-gqa": 120, "llama-4b-gqa": 200, "mixtral-0.7b-8e": 120}[self.model]
        return (base + (90 if self.offload != "none" else 0) + (30 if self.ga > 1 else 0)
                + (20 if self.gpus > 1 else 0))


_ADAMW = {"type": "AdamW", "params": {"lr": 1e-4, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1}}


def ds_config(r: Run) -> dict:
    """The DeepSpeed config of a run, as a user would write it (or the user's own file)."""
    if r.base:
        cfg = json.loads((Path(__file__).resolve().parent.parent / r.base).read_text())
        cfg["train_micro_batch_size_per_gpu"], cfg["gradient_accumulation_steps"] = r.mb, r.ga
        cfg["train_batch_size"] = r.mb * r.ga * r.gpus
        # The guide's file names no optimizer (the HF Trainer adds one): use the plan's AdamW,
        # which DeepSpeed builds as DeepSpeedCPUAdam under offload_optimizer.
        cfg.setdefault("optimizer", _ADAMW)
        cfg.setdefault("steps_per_print", 1000000)
        return cfg
    zero: dict = {"stage": r.stage}
    if r.offload in ("opt", "all"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if r.offload in ("all", "param"):
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    zero.update(dict(r.zero))
    precision = {"bf16": {"bf16": {"enabled": True}},
                 "fp16": {"fp16": {"enabled": True, "loss_scale": 0, "initial_scale_power": 12}},
                 "fp32": {}}[r.precision]
    return {
        "train_micro_batch_size_per_gpu": r.mb,
        "gradient_accumulation_steps": r.ga,
        **precision,
        "optimizer": _ADAMW,
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

def _repeated(runs: tuple[Run, ...], reps: int = 2) -> tuple[Run, ...]:
    """Each configuration in ``reps`` separate processes, adjacent; only the first is traced."""
    from dataclasses import replace
    return tuple(replace(r, rep=i + 1, profile=r.profile and i == 0) for r in runs for i in range(reps))


S2, M2 = "llama-1.2b-hd128", "llama-0.7b-v128k"
#: the user's config from the ZeRO guides: stage 2, optimizer on the CPU, buckets 2e8, GA 8
GUIDE = "tests/data/ds_config_zero2_offload.json"
Z3_EAGER = (("stage3_prefetch_bucket_size", 0), ("stage3_max_reuse_distance", 0),
            ("stage3_param_persistence_threshold", 0))
Z3_TIGHT = (("stage3_max_live_parameters", 10_000_000), ("stage3_prefetch_bucket_size", 5_000_000))

#: session 2026-12-01, call A: the fit sizes, chosen to break the time model (step-phase
#: loops, per-micro-step copies, hooks, parameter offload alone, launcher threads, fp16).
PLAN_1201_FIT: tuple[Run, ...] = _repeated((
    Run(S, 0, 4, 1, 1024, profile=True),
    Run(S, 1, 4, 1, 1024, profile=True),
    Run(S, 2, 8, 4, 512, profile=True),
    Run(S, 3, 4, 1, 1024, profile=True),
    Run(S, 3, 4, 1, 1024, offload="param", profile=True),
    Run(S, 2, 2, 8, 1024, offload="opt", base=GUIDE, tag="guide", profile=True),
    Run(S, 2, 4, 1, 1024, offload="opt", omp_threads=1, tag="omp1"),
    Run(S, 3, 4, 1, 1024, zero=Z3_EAGER, tag="eager"),
    Run(S, 1, 4, 1, 1024, precision="fp16"),
    Run(XL, 0, 2, 1, 2048, ac=True, profile=True),
    Run(XL, 2, 4, 1, 1024, ac=True),
    Run(XL, 3, 2, 1, 2048, ac=True, profile=True),
))

#: calls B and C: evaluation sizes and shapes the fit never saw (head_dim 128, a 128k
#: vocabulary, the largest model one GPU holds, 8k tokens, fp32, stage-3 knobs, offload).
PLAN_1201_EVAL: tuple[Run, ...] = _repeated((
    Run(L, 0, 4, 1, 2048, profile=True),
    Run(L, 2, 4, 1, 2048, profile=True),
    Run(L, 3, 4, 1, 2048, profile=True),
    Run(L, 2, 2, 8, 1024, offload="opt", base=GUIDE, tag="guide", profile=True),
    Run(S2, 2, 2, 1, 4096, profile=True),
    Run(M2, 1, 4, 1, 2048, profile=True),
    Run(M, 1, 4, 4, 1024),
    Run(M, 3, 8, 1, 1024, ac=True, zero=Z3_TIGHT, tag="tight"),
    Run(L, 0, 1, 1, 8192, ac=True),
    Run(M, 0, 2, 1, 1024, precision="fp32"),
    Run(L, 2, 4, 1, 1024, offload="opt", omp_threads=1, tag="omp1"),
    Run(XXL, 2, 1, 1, 2048, ac=True, profile=True),
    Run(L, 3, 2, 1, 2048, offload="param", profile=True),
))

S3, M3 = "llama-1.5b-gqa", "llama-4b-gqa"
#: session m5 (2026-12-01, third session): two sizes no fit or evaluation has seen (head_dim
#: 128 with 5:1 and 7:1 GQA), every stage and optimizer offload, two processes each; and two
#: traced fit-size runs for the step phase of stages 1/2 (the largest systematic gap).
PLAN_1201_M5: tuple[Run, ...] = (
    Run(XL, 1, 4, 1, 1024, profile=True, tag="m5"),
    Run(XL, 2, 4, 1, 1024, ac=True, profile=True, tag="m5"),
    Run(XXL, 3, 1, 1, 1024, ac=True, profile=True, tag="m5"),
) + _repeated((
    Run(S3, 1, 4, 1, 2048),
    Run(S3, 3, 4, 1, 2048),
    Run(S3, 2, 8, 2, 1024),
    Run(M3, 3, 2, 1, 2048, ac=True),
    Run(M3, 2, 2, 1, 2048, ac=True),
    Run(M3, 1, 4, 1, 1024, ac=True),
    Run(S3, 2, 4, 1, 1024, offload="opt"),
))

#: session m5, call 3: ZeRO-3's host hooks under cProfile, on configurations zsim prices
#: well (llama-0.13b, llama-3b mb8 s512) and badly (llama-3b with checkpointing, llama-1.5b-gqa).
PLAN_1201_M5_PY: tuple[Run, ...] = (
    Run(S, 3, 4, 1, 1024, pyprofile=3, tag="py"),
    Run(XL, 3, 8, 1, 512, pyprofile=3, tag="py"),
    Run(XL, 3, 2, 1, 2048, ac=True, pyprofile=3, tag="py"),
    Run(S3, 3, 4, 1, 2048, pyprofile=3, tag="py"),
)

#: session m7: the same ZeRO-3 configurations on another machine, to measure how much
#: host-bound ZeRO-3 steps differ between lent machines (m6 ran them 20-30 % slower).
PLAN_1201_M7: tuple[Run, ...] = (
    Run(S, 3, 4, 1, 1024, tag="m7"),
    Run(XL, 3, 8, 1, 512, tag="m7"),
    Run(L, 3, 4, 1, 2048, tag="m7"),
    Run(S3, 3, 4, 1, 2048, tag="m7"),
    Run(S, 1, 4, 1, 1024, tag="m7"),
)


def _probe_session(tag: str, extra: tuple[Run, ...]) -> tuple[Run, ...]:
    """One machine session of the in-run host probe (train.py ``HostProbe``): the ZeRO-3
    configurations of sessions m5-m7 and a stage-1 control, two processes each, then
    ``extra`` unseen configurations."""
    from dataclasses import replace
    base = (Run(S, 3, 4, 1, 1024), Run(XL, 3, 8, 1, 512), Run(L, 3, 4, 1, 2048),
            Run(S3, 3, 4, 1, 2048), Run(S, 1, 4, 1, 1024))
    return _repeated(tuple(replace(r, tag=tag) for r in base)) + tuple(
        replace(r, tag=f"{r.tag}-{tag}" if r.tag else tag) for r in extra)


#: sessions m8a-m8c (2026-12-01, fourth session): does the host speed measured *during* a
#: run (between its steps) explain the 20-37 % spread of host-bound ZeRO-3 steps between
#: machines and processes, where the one snapshot before DeepSpeed did not? Three machines,
#: each with one unseen configuration at the end (fp16 stage 2; stage-3 knobs; 4k tokens, AC).
PLAN_1201_M8 = (_probe_session("m8a", (Run(M, 2, 4, 1, 2048, precision="fp16"),))
                + _probe_session("m8b", (Run(L, 3, 4, 1, 2048, zero=Z3_TIGHT, tag="tight"),))
                + _probe_session("m8c", (Run(S2, 3, 2, 1, 4096, ac=True),)))

#: session m8d: traces of the largest miss left at the in-run host speed (llama-3b mb8 s512
#: ZeRO-3, -15 to -27 % on all three m8 machines) and of a configuration zsim prices well.
PLAN_1201_M8D = (Run(XL, 3, 8, 1, 512, profile=True, tag="m8d"),
                 Run(L, 3, 4, 1, 2048, profile=True, tag="m8d"))

#: sessions m9a/m9b (2026-12-01, fifth session): ZeRO-3's step starts with a host loop over
#: every parameter (``_partition_all_parameters``, stage3.py:2877-2878) that re-partitions the
#: persistent ones and issues no kernel; its cost per persistent and per other parameter is
#: read from traces of the fit sizes with stage3_param_persistence_threshold varied (m9a),
#: and checked on evaluation sizes of a machine the fit never saw (m9b).
def _z3_persist(numel: int) -> tuple:
    """ZeRO-3 keys that keep every parameter of at most ``numel`` elements gathered."""
    return (("stage3_param_persistence_threshold", numel),)


PLAN_1201_M9A = (
    Run(S, 3, 4, 1, 1024, profile=True, tag="m9a"),
    Run(S, 3, 4, 1, 1024, zero=_z3_persist(1_000_000), profile=True, tag="p1e6-m9a"),
    Run(XL, 3, 8, 1, 512, profile=True, tag="m9a"),
    Run(XL, 3, 8, 1, 512, zero=_z3_persist(20_000_000), profile=True, tag="p2e7-m9a"),
    Run(S, 3, 4, 1, 1024, zero=_z3_persist(0), tag="p0-m9a"),
    Run(XL, 3, 8, 1, 512, zero=_z3_persist(0), tag="p0-m9a"),
    Run(S, 1, 4, 1, 1024, tag="m9a"),
)
PLAN_1201_M9B = _repeated((
    Run(L, 3, 4, 1, 2048, zero=_z3_persist(10_000_000), tag="p1e7-m9b"),
    Run(S3, 3, 4, 1, 2048, zero=_z3_persist(0), tag="p0-m9b"),
    Run(M3, 3, 2, 1, 2048, ac=True, tag="m9b"),
    Run(L, 3, 4, 1, 2048, tag="m9b"),
    Run(M, 3, 4, 1, 2048, tag="m9b"),
)) + (Run(XXL, 3, 1, 1, 1024, ac=True, profile=True, tag="m9b"),)
#: session m9c: what m9b did not reach, and ZeRO-3 evaluation sizes again, on another machine.
PLAN_1201_M9C = (Run(XXL, 3, 1, 1, 1024, ac=True, tag="m9c"),) + _repeated((
    Run(M, 3, 4, 1, 2048, tag="m9c"),
    Run(S3, 3, 4, 1, 2048, tag="m9c"),
    Run(L, 3, 4, 1, 2048, tag="m9c"),
))

#: session m9d: ZeRO-3 with activation checkpointing, the configurations zsim still prices
#: worst (4B-7B and 0.55B with checkpointing, -13 to -26 %), traced at the fit sizes with the
#: in-run probe, and the same llama-3b shape without checkpointing.
PLAN_1201_M9D = (
    Run(XL, 3, 2, 1, 2048, ac=True, profile=True, tag="m9d"),
    Run(XL, 3, 2, 1, 2048, profile=True, tag="m9d"),
    Run(S, 3, 4, 1, 1024, ac=True, profile=True, tag="m9d"),
)

#: session m11 (2026-12-02, seventh session): ZeRO-3 with activation checkpointing, the
#: evaluation configurations zsim priced worst (-13 to -26 %), on a machine no fit has seen,
#: with the in-run host probe, two processes each; plus one unseen shape (tinyllama, 4k tokens
#: per micro-batch at 2k sequence). Run after the checkpointing microbenchmark
#: (validation/microbench/checkpoint.py) of the same machine.
PLAN_1202_M11 = _repeated((
    Run(M, 3, 8, 1, 1024, ac=True, zero=Z3_TIGHT, tag="tight-m11"),
    Run(M3, 3, 2, 1, 2048, ac=True, tag="m11"),
    Run(L, 3, 2, 1, 2048, ac=True, tag="m11"),
    Run(XXL, 3, 1, 1, 1024, ac=True, tag="m11"),
))

MX = "mixtral-0.7b-8e"
TOP2 = (("ep_size", 1), ("k", 2))
#: session m12 (2026-12-02): the first GPU measurement of DeepSpeed-MoE (one GPU, so ep_size 1:
#: every expert local, the all-to-alls over a group of one). A Mixtral-shaped model whose MoE
#: blocks are deepspeed.moe.layer.MoE layers, top-2; stages 0-2 (DeepSpeed refuses MoE under
#: ZeRO-3), a larger capacity factor and top-1; two processes each, one traced.
PLAN_1202_M12 = (Run(MX, 2, 4, 1, 1024, moe=TOP2, profile=True, tag="moe-m12"),) + _repeated((
    Run(MX, 2, 4, 1, 1024, moe=TOP2, tag="moe-m12"),
    Run(MX, 1, 8, 1, 512, moe=TOP2 + (("capacity_factor", 1.25),), tag="moe-cf125-m12"),
    Run(MX, 0, 4, 1, 1024, moe=TOP2, tag="moe-m12"),
    Run(MX, 2, 4, 1, 1024, moe=(("ep_size", 1), ("k", 1)), tag="moe-top1-m12"),
))

#: session m13 (2026-12-03): CPU optimizer offload on the launcher's threads, on one machine
#: that also ran the CPU-pass microbenchmark (validation/microbench/cpu_passes.py) just
#: before: the evaluation configurations zsim priced worst among the offload runs (tinyllama,
#: OMP_NUM_THREADS=1, -18 %; the guide's config, -11 %) again, and a thread count no run has
#: had (4), two processes each; and the fit size's OMP_NUM_THREADS=1 run (134M parameters) on
#: the same machine, which tells the partition size's effect from the machine's.
PLAN_1203_M13 = _repeated((
    Run(L, 2, 4, 1, 1024, offload="opt", omp_threads=1, tag="omp1-m13"),
    Run(S, 2, 4, 1, 1024, offload="opt", omp_threads=1, tag="omp1-m13"),
    Run(L, 2, 4, 1, 1024, offload="opt", omp_threads=4, tag="omp4-m13"),
    Run(L, 2, 2, 8, 1024, offload="opt", base=GUIDE, tag="guide-m13"),
))

#: session m14 (2026-12-03): the same 1-thread offload configurations on another machine,
#: now with the run's own CPU-pass speed recorded before DeepSpeed starts (train.py
#: ``cpu_pass_speed``), which zsim uses in place of the profile's rates.
PLAN_1203_M14 = _repeated((
    Run(S, 2, 4, 1, 1024, offload="opt", omp_threads=1, tag="omp1-m14"),
    Run(L, 2, 4, 1, 1024, offload="opt", omp_threads=1, tag="omp1-m14"),
))

#: session m15 (2026-12-03): a held-out check of the profile refit on the protocol's runs with
#: ``host.speed_exponent`` fitted, on a machine no fit has seen: the evaluation kinds it
#: priced worst or most often (ZeRO-3 on tinyllama and the 1.5B GQA model, DeepSpeed-MoE at
#: stages 0 and 2) and two shapes no run has had (tinyllama stage 1 at micro-batch 8 x 1k,
#: the 0.55B model at stage 2 with GA 4), two processes each.
PLAN_1203_M15 = _repeated((
    Run(L, 3, 4, 1, 2048, tag="m15"),
    Run(S3, 3, 4, 1, 2048, tag="m15"),
    Run(MX, 0, 4, 1, 1024, moe=TOP2, tag="moe-m15"),
    Run(MX, 2, 4, 1, 1024, moe=TOP2, tag="moe-m15"),
    Run(L, 1, 8, 1, 1024, tag="m15"),
    Run(M, 2, 4, 4, 1024, tag="m15"),
))

#: session m17 (2026-12-03): a held-out check of backward's host costs measured apart
#: (validation/microbench/backward_host.py, run on the same machine just before): DeepSpeed-MoE
#: at stages 0, 1 and 2 (stage 1 at this shape is new), and the dense evaluation sizes at
#: stages 0 and 2 (bf16 stage 0 on the 0.55B model is new), two processes each.
PLAN_1203_M17 = _repeated((
    Run(MX, 0, 4, 1, 1024, moe=TOP2, tag="moe-m17"),
    Run(MX, 1, 4, 1, 1024, moe=TOP2, tag="moe-m17"),
    Run(MX, 2, 4, 1, 1024, moe=TOP2, tag="moe-m17"),
    Run(M, 0, 4, 1, 1024, tag="m17"),
    Run(L, 2, 4, 1, 2048, tag="m17"),
))

#: session m19 (2026-12-03): why DeepSpeed-MoE's stage-2 step runs ~1.6x longer per op than
#: the dense runs' (validation/README.md, "Backward's host costs measured apart"): a traced
#: MoE stage-2 run and a traced dense one on the same machine, back to back; and the 0.55B
#: model's bf16 stage 0, m17's worst run, again on another machine (two processes).
PLAN_1203_M19 = (Run(MX, 2, 4, 1, 1024, moe=TOP2, profile=True, tag="moe-m19"),
                 Run(L, 2, 4, 1, 2048, profile=True, tag="m19")) + _repeated((
    Run(M, 0, 4, 1, 1024, tag="m19"),
))

#: sessions m21/m22 (2026-12-04): the fit sizes on two more machines. The host speed exponent
#: (how a run's time follows its in-run probe) was set by the seven runs of one machine (m9a);
#: these give the fit several machines' worth of probe readings, without touching any
#: evaluation size's machine session. Two processes each, host-bound configurations first.
def _fit_session(tag: str) -> tuple[Run, ...]:
    """One machine session of fit-size runs (llama-0.13b and llama-3b, stages 0-3)."""
    return _repeated((
        Run(S, 3, 4, 1, 1024, tag=tag),
        Run(XL, 3, 8, 1, 512, tag=tag),
        Run(S, 1, 4, 1, 1024, tag=tag),
        Run(S, 0, 4, 1, 1024, tag=tag),
        Run(S, 2, 8, 4, 512, tag=tag),
        Run(XL, 2, 4, 1, 1024, ac=True, tag=tag),
        Run(XL, 1, 4, 1, 1024, tag=tag),
    ))


PLAN_1204_M21 = _fit_session("m21")
PLAN_1204_M22 = _fit_session("m22")

#: session m24 (2026-12-06): the first runs on an H100 (nvidia-h100-x1), the fit sizes at
#: stages 0-3 as m21/m22 ran them on H200s, so the H100 profile (never calibrated on an H100)
#: can be fitted on this machine's runs apart from the evaluation sizes of session m25.
PLAN_1206_M24 = _fit_session("m24")

#: session m25 (2026-12-06): evaluation sizes on a second H100, which the H100 profile is
#: scored on: tinyllama at stages 3, 2 and 0, DeepSpeed-MoE at stage 2, the 0.55B model with
#: GA 4, the 1.5B GQA model at stage 3, the guide's offload config and the 4B GQA model at
#: stage 3 with checkpointing; two processes each, most important first (the deadline drops
#: the tail).
PLAN_1206_M25 = _repeated((
    Run(L, 3, 4, 1, 2048, tag="m25"),
    Run(L, 2, 4, 1, 2048, tag="m25"),
    Run(MX, 2, 4, 1, 1024, moe=TOP2, tag="moe-m25"),
    Run(M, 1, 4, 4, 1024, tag="m25"),
    Run(L, 0, 4, 1, 2048, tag="m25"),
    Run(S3, 3, 4, 1, 2048, tag="m25"),
    Run(L, 2, 2, 8, 1024, offload="opt", base=GUIDE, tag="guide-m25"),
    Run(M3, 3, 2, 1, 2048, ac=True, tag="m25"),
))

PLANS = {"h200-1gpu": PLAN, "h200-2gpu": PLAN_2GPU, "h200-1201-fit": PLAN_1201_FIT,
         "h200-1201-eval": PLAN_1201_EVAL, "h200-1201-m5": PLAN_1201_M5,
         "h200-1201-m5-py": PLAN_1201_M5_PY, "h200-1201-m7": PLAN_1201_M7, "h200-1201-m8": PLAN_1201_M8,
         "h200-1201-m8d": PLAN_1201_M8D, "h200-1201-m9a": PLAN_1201_M9A,
         "h200-1201-m9b": PLAN_1201_M9B, "h200-1201-m9c": PLAN_1201_M9C,
         "h200-1201-m9d": PLAN_1201_M9D, "h200-1202-m11": PLAN_1202_M11,
         "h200-1202-m12": PLAN_1202_M12, "h200-1203-m13": PLAN_1203_M13,
         "h200-1203-m14": PLAN_1203_M14, "h200-1203-m15": PLAN_1203_M15,
         "h200-1203-m17": PLAN_1203_M17,
         "h200-1203-m19": PLAN_1203_M19, "h200-1204-m21": PLAN_1204_M21,
         "h200-1204-m22": PLAN_1204_M22, "h100-1206-m24": PLAN_1206_M24,
         "h100-1206-m25": PLAN_1206_M25}


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
