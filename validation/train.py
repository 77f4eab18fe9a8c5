"""Validation training job: a randomly initialised Llama model trained with DeepSpeed.

Launch (one node)::

    torchrun --standalone --nproc_per_node 8 validation/train.py \
        --model tinyllama-1.1b --ds-config cfg.json --seq 2048 --micro-batch 4 \
        --grad-accum 1 --output output/deepspeed_metrics

or ``deepspeed --num_gpus 8 validation/train.py ...``; multi-node: see validation/README.md.

Per optimizer step it records CUDA-synchronised wall time, tokens/s, loss and peak
allocated/reserved memory, appending one CSV row as soon as the step is measured. At the end
(or on an exception, SIGTERM or SIGINT) it writes summary.json with status "ok" or "failed"
and the error. A killed run (SIGKILL) keeps its rows and a summary that says "running"; tools
treat anything but "ok" as failed. After the timed steps an optional separate pass turns the
DeepSpeed comms logger on and records per-collective timings; those steps are never timed.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import hf_config, param_count  # noqa: E402

CSV_FIELDS = ["step", "phase", "step_time_s", "tokens", "tokens_per_s", "loss",
              "fwd_s", "bwd_s", "opt_s", "peak_allocated_bytes", "peak_reserved_bytes",
              "step_peak_allocated_bytes", "allocated_bytes", "wall_utc"]


class Terminated(Exception):
    """Raised from the SIGTERM/SIGINT handler so that the job records a failed summary."""


def _on_signal(signum, _frame):
    raise Terminated(f"received signal {signal.Signals(signum).name}")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def atomic_write(path: Path, text: str) -> None:
    """Write text to path via a temporary file in the same folder and os.replace."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options of the job."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="preset name (validation/models.py) or HF config.json")
    p.add_argument("--ds-config", required=True, help="DeepSpeed JSON config")
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--micro-batch", type=int, default=None, help="overrides the config's value")
    p.add_argument("--grad-accum", type=int, default=None, help="overrides the config's value")
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--moe-config", default=None, metavar="FILE",
                   help="JSON keyword arguments of deepspeed.moe.layer.MoE (ep_size, k, capacity_factor, ...): "
                        "every decoder layer's MoE block becomes a DeepSpeed-MoE layer "
                        "(validation/cpu_truth/expert_parallel.py, the module docs/moe.md describes)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed optimizer steps first (default: 12 for ZeRO-3, whose coordinator "
                        "traces the module order and keeps getting faster for ~10 steps; 3 otherwise)")
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    p.add_argument("--profile", action="store_true",
                   help="after the timed steps, trace one more step with torch.profiler "
                        "(CPU ops, CUDA kernels, memcpys, NCCL; DeepSpeed's functions labelled) "
                        "into trace.json.gz (rank 0)")
    p.add_argument("--pyprofile", type=int, default=0, metavar="N",
                   help="after the timed steps, run N more under cProfile (rank 0) and write "
                        "pyprofile.txt (functions by own time) and pyprofile.pstats")
    p.add_argument("--comms-steps", type=int, default=1,
                   help="steps of the separate comms-logger pass after the timed steps (0: none)")
    p.add_argument("--output", default="output/deepspeed_metrics")
    p.add_argument("--run-id", default=None)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed launcher
    return p.parse_args(argv)


def resolve_ds_config(raw: dict, args, world_size: int) -> dict:
    """Fill batch keys from the command line (replacing "auto") and keep the identity valid."""
    cfg = json.loads(json.dumps(raw))
    mb = args.micro_batch if args.micro_batch is not None else cfg.get("train_micro_batch_size_per_gpu")
    ga = args.grad_accum if args.grad_accum is not None else cfg.get("gradient_accumulation_steps")
    mb = 1 if mb in (None, "auto") else int(mb)
    ga = 1 if ga in (None, "auto") else int(ga)
    cfg["train_micro_batch_size_per_gpu"] = mb
    cfg["gradient_accumulation_steps"] = ga
    cfg["train_batch_size"] = mb * ga * world_size
    cfg.pop("comms_logger", None)  # the logger syncs after every op: never on in timed steps
    return cfg


def host_speed(device) -> dict:
    """How fast this process's host thread issues work: recorded with every run.

    - ``empty_kernel_launch_s``: one tiny in-place ``add_`` in a tight Python loop (the cost
      of DeepSpeed's flat per-tensor loops: one aten op and one kernel launch each);
    - ``small_linear_call_s``: one call of a small ``nn.Linear`` module (module-call overhead
      of HF model code: module __call__, hooks machinery, a GEMM launch);
    - ``python_loop_s``: 1e6 iterations of a trivial pure-Python loop (CPU speed alone).
    Medians of 5 repeats after a warm-up; the GPU is synchronised around each repeat.
    """
    import torch
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    x = torch.zeros(16, device=device)
    lin = torch.nn.Linear(64, 64, device=device)
    inp = torch.zeros(8, 64, device=device)

    def per_call(fn, n: int) -> float:
        out = []
        for _ in range(6):
            sync()
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            sync()
            out.append((time.perf_counter() - t0) / n)
        return statistics.median(out[1:])

    def loop():
        acc = 0
        for i in range(1_000_000):
            acc += i
        return acc

    with torch.no_grad():
        res = {"empty_kernel_launch_s": per_call(lambda: x.add_(1.0), 2000),
               "small_linear_call_s": per_call(lambda: lin(inp), 1000),
               "python_loop_s": per_call(loop, 1)}
    res["torch_num_threads"] = torch.get_num_threads()
    res["measured"] = "before_deepspeed"   # DeepSpeed's ZeRO-3 hooks would slow module calls
    return res


#: Elements of the CPU-pass probe: 128 MiB per fp32 tensor, past the host's caches like a
#: real partition; about 0.4 s on one thread.
CPU_PASS_PROBE_NUMEL = 1 << 25


def cpu_pass_speed() -> dict:
    """How fast this process runs optimizer offload's three CPU passes on its own threads
    (the launcher's ``OMP_NUM_THREADS``): recorded with every offload run, because one
    thread's speed differs between machines of one type by tens of percent. The passes of
    microbench/cpu_passes.py on :data:`CPU_PASS_PROBE_NUMEL` elements, median of 3."""
    from microbench.cpu_passes import measure
    rows = measure(CPU_PASS_PROBE_NUMEL, reps=3)
    out = {f"{r['pass']}_params_per_s": r["params_per_s"] for r in rows}
    out.update(threads=rows[0]["threads"], numel=CPU_PASS_PROBE_NUMEL, measured="before_deepspeed")
    return out


def _python_loop(n: int = 100_000) -> int:
    """A trivial pure-Python loop (CPU speed alone); x10 is ``host_speed``'s 1e6 loop."""
    acc = 0
    for i in range(n):
        acc += i
    return acc


class _RawLinear:
    """``nn.Linear``'s call path without ``torch.nn.functional.linear``: ZeRO-3 replaces that
    function process-wide with its Python autograd function (deepspeed 0.19.8
    runtime/zero/partition_parameters.py:412-419, "This will persist unless manually reset"),
    which would make a probe after ``deepspeed.initialize`` time DeepSpeed, not the host."""

    def __new__(cls, lin):
        import torch

        class Raw(torch.nn.Linear):
            def forward(self, x):
                return torch._C._nn.linear(x, self.weight, self.bias)

        raw = Raw(lin.in_features, lin.out_features, device=lin.weight.device)
        raw.load_state_dict(lin.state_dict())
        return raw


class HostProbe:
    """The host speed again between timed steps, outside the timed region.

    ``host_speed`` is one snapshot of about a second before DeepSpeed starts; the host
    thread's speed also drifts during a run (noisy neighbours, frequency), so each step is
    followed by a short probe of the same two kinds (empty launches, small ``nn.Linear``
    calls on a module DeepSpeed does not hook, see :class:`_RawLinear`) and the summary keeps
    their medians over the timed steps (``host_speed_in_run``). About 5 ms per step.
    """

    def __init__(self, device):
        import torch
        self.torch = torch
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.x = torch.zeros(16, device=device)
        self.lin = _RawLinear(torch.nn.Linear(64, 64, device=device))
        self.inp = torch.zeros(8, 64, device=device)

    def _per_call(self, fn, n: int) -> float:
        self.sync()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        self.sync()
        return (time.perf_counter() - t0) / n

    def __call__(self) -> dict:
        """One probe: seconds per empty launch and per small Linear call."""
        with self.torch.no_grad():
            return {"probe_empty_kernel_launch_s": self._per_call(lambda: self.x.add_(1.0), 300),
                    "probe_small_linear_call_s": self._per_call(lambda: self.lin(self.inp), 100),
                    "probe_python_loop_s": self._per_call(_python_loop, 1) * 10}


def launcher_env() -> dict:
    """The launcher's settings that change host speed: OMP threads, ranks per node, launcher."""
    env = os.environ
    launcher = ("torchrun" if "TORCHELASTIC_RUN_ID" in env else
                "deepspeed" if "DS_ACCELERATOR" in env or "PDSH_RCMD_TYPE" in env else "direct")
    return {"OMP_NUM_THREADS": env.get("OMP_NUM_THREADS"), "LOCAL_WORLD_SIZE": env.get("LOCAL_WORLD_SIZE"),
            "launcher": launcher, "cpu_count": os.cpu_count(),
            "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}


def versions() -> dict:
    """Python, torch, CUDA, DeepSpeed, transformers, NCCL, driver and GPU of this process."""
    import torch
    out = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "hostname": platform.node()}
    for mod in ("deepspeed", "transformers"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception as exc:  # recorded, not fatal: the summary must still be written
            out[mod] = f"unavailable: {exc.__class__.__name__}"
    if torch.cuda.is_available():  # noqa: SIM102
        out["gpu_name"] = torch.cuda.get_device_name(0)
        out["gpu_total_memory_bytes"] = torch.cuda.get_device_properties(0).total_memory
        try:
            out["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception:
            out["nccl"] = None
        try:
            out["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        except Exception:
            out["driver"] = None
    return out


class Recorder:
    """Owns the output folder: CSV rows as measured, summary and raw JSON at the end."""

    def __init__(self, out: Path, rank: int):
        self.out, self.rank = out, rank
        self.rows: list[dict] = []
        self.summary: dict = {"status": "running", "error": None, "started_utc": _now()}
        self._csv = None
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            self._csv = open(out / "training_metrics.csv", "w", newline="")
            self._writer = csv.DictWriter(self._csv, fieldnames=CSV_FIELDS)
            self._writer.writeheader()
            self._csv.flush()

    def row(self, r: dict) -> None:
        """Keep one step's metrics and append them to the CSV at once (flush + fsync)."""
        self.rows.append(r)
        if self._csv is not None:
            self._writer.writerow({k: r.get(k) for k in CSV_FIELDS})
            self._csv.flush()
            os.fsync(self._csv.fileno())

    def write_summary(self) -> None:
        """Rewrite summary.json atomically (rank 0)."""
        if self.rank == 0:
            atomic_write(self.out / "summary.json", json.dumps(self.summary, indent=2, default=str) + "\n")

    def finish(self, extra_raw: dict) -> None:
        """Close the CSV; write raw_metrics.json, summary.json and the curves (rank 0)."""
        if self.rank != 0:
            return
        if self._csv is not None:
            self._csv.close()
        raw = {"rows": self.rows, **extra_raw}
        atomic_write(self.out / "raw_metrics.json", json.dumps(raw, indent=1, default=str) + "\n")
        self.write_summary()
        try:
            plot_curves(self.rows, self.out / "training_curves.png")
        except Exception as exc:  # a missing plot must not turn an ok run into a failed one
            self.summary.setdefault("warnings", []).append(f"plot failed: {exc!r}")
            self.write_summary()


def plot_curves(rows: list[dict], path: Path) -> None:
    """Step time, loss and peak memory per step as a small PNG (written atomically)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in rows if r.get("step_time_s") is not None]
    if not rows:
        return
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(1, 3, figsize=(10, 2.8), dpi=72)
    ax[0].plot(steps, [r["step_time_s"] for r in rows], "o-")
    ax[0].set_title("step time (s)")
    ax[1].plot(steps, [r["loss"] for r in rows], "o-")
    ax[1].set_title("loss")
    ax[2].plot(steps, [r["peak_allocated_bytes"] / 2**30 for r in rows], "o-", label="allocated")
    ax[2].plot(steps, [r["peak_reserved_bytes"] / 2**30 for r in rows], "s-", label="reserved")
    ax[2].set_title("peak memory (GiB)")
    ax[2].legend(fontsize=7)
    for a in ax:
        a.set_xlabel("step")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def build_model(cfg: dict, ds_config: dict, ac: bool, device, moe: dict | None = None):
    """Random-init causal LM in bf16, partitioned at construction for ZeRO-3: LlamaForCausalLM,
    or the HF class of the config's ``model_type`` (Mixtral for the MoE presets); with
    ``moe`` every decoder layer's MoE block becomes a DeepSpeed-MoE layer of those kwargs."""
    import torch
    import deepspeed
    fields = {k: v for k, v in cfg.items() if not k.startswith("_") and k != "architectures"}
    if fields.get("model_type", "llama") == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM
        config = LlamaConfig(**fields)
        make = LlamaForCausalLM
    else:
        from transformers import AutoConfig, AutoModelForCausalLM
        config = AutoConfig.for_model(**fields)
        make = AutoModelForCausalLM.from_config
    config.use_cache = False
    stage = ds_config.get("zero_optimization", {}).get("stage", 0)
    dtype = torch.bfloat16 if ds_config.get("bf16", {}).get("enabled") else torch.float32
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in the training dtype: no fp32 copy in the peak
    try:
        if stage == 3:
            with deepspeed.zero.Init(config_dict_or_path=ds_config, dtype=dtype):
                model = make(config)
        else:
            with torch.device(device):
                model = make(config)
                if moe is not None:   # built where the model lives, in its dtype
                    from cpu_truth.expert_parallel import replace_moe_blocks
                    replace_moe_blocks(model, moe)
    finally:
        torch.set_default_dtype(old)
    if ac:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, config


class Clock:
    """CUDA events and memory counters, or wall clock and zeros on CPU (test mode)."""

    def __init__(self, device):
        import torch
        self.torch, self.cuda = torch, device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def mark(self):
        if not self.cuda:
            return time.perf_counter()
        ev = self.torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev

    def between(self, a, b) -> float:
        return a.elapsed_time(b) / 1e3 if self.cuda else b - a

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()

    def peaks(self) -> tuple[int, int]:
        if not self.cuda:
            return 0, 0
        return self.torch.cuda.max_memory_allocated(), self.torch.cuda.max_memory_reserved()

    def allocated(self) -> int:
        return self.torch.cuda.memory_allocated() if self.cuda else 0


def comms_snapshot(comms_dict: dict) -> dict:
    """DeepSpeed's comms_dict as JSON: op -> message bytes -> count, latencies, bandwidths."""
    out = {}
    for op, sizes in comms_dict.items():
        out[op] = {}
        for size, (count, lat, algbw, busbw) in sizes.items():
            out[op][str(size)] = {"count": count, "latency_ms": list(lat),
                                  "algbw_Gbps": list(algbw), "busbw_Gbps": list(busbw)}
    return out


def run(args, rec: Recorder) -> None:
    """Build the model and engine, run warm-up, timed and comms-logger steps, record each."""
    import torch
    import deepspeed
    import deepspeed.comm as dist

    deepspeed.init_distributed()
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:  # CPU (gloo) mode: only for testing the job's bookkeeping
        device = torch.device("cpu")
    cfg = hf_config(args.model)
    ds_config = resolve_ds_config(json.loads(Path(args.ds_config).read_text()), args, world)
    moe = json.loads(Path(args.moe_config).read_text()) if args.moe_config else None
    zero = ds_config.get("zero_optimization", {})
    if args.warmup is None:
        args.warmup = 12 if zero.get("stage", 0) == 3 else 3
    mb, ga, seq = ds_config["train_micro_batch_size_per_gpu"], ds_config["gradient_accumulation_steps"], args.seq
    s = rec.summary
    s.update({
        "run_id": args.run_id or rec.out.name, "model_name": cfg.get("_name", args.model),
        "model_config": {k: v for k, v in cfg.items() if not k.startswith("_")},
        "params": param_count(cfg), "ds_config": ds_config, "world_size": world,
        "nodes": int(os.environ.get("SLURM_NNODES", os.environ.get("NNODES", 1))),
        "seq": seq, "micro_batch": mb, "grad_accum": ga,
        "activation_checkpointing": bool(args.activation_checkpointing),
        "moe_config": moe,
        "zero_stage": zero.get("stage", 0),
        "offload_optimizer": zero.get("offload_optimizer", {}).get("device", "none"),
        "offload_param": zero.get("offload_param", {}).get("device", "none"),
        "precision": "bf16" if ds_config.get("bf16", {}).get("enabled") else
                     ("fp16" if ds_config.get("fp16", {}).get("enabled") else "fp32"),
        "steps_warmup": args.warmup, "steps_timed": args.steps, "versions": versions(),
        "launcher_env": launcher_env(),
        "command": " ".join([sys.executable] + sys.argv),
    })
    if rank == 0:
        atomic_write(rec.out / "config.json", json.dumps(s["model_config"], indent=2) + "\n")
        atomic_write(rec.out / "ds_config.json", json.dumps(ds_config, indent=2) + "\n")
        if moe is not None:
            atomic_write(rec.out / "moe_config.json", json.dumps(moe, indent=2) + "\n")
    rec.write_summary()

    # Before DeepSpeed exists: ZeRO-3 hooks would slow every module call of the benchmark.
    s["host_speed"] = host_speed(device)
    if s["offload_optimizer"] != "none":
        s["cpu_pass_speed"] = cpu_pass_speed()
    probe = HostProbe(device)  # built before DeepSpeed too: its modules stay plain
    torch.manual_seed(args.seed)
    t_init = time.perf_counter()
    model, config = build_model(cfg, ds_config, args.activation_checkpointing, device, moe)
    s["attn_implementation"] = getattr(config, "_attn_implementation", None)
    if moe is not None:   # one rank's parameters: its local experts (the Llama formula does not apply)
        s["params"] = sum(int(p.numel()) for p in model.parameters())
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                           config=ds_config)
    clock = Clock(device)
    clock.sync()
    s["init_s"] = time.perf_counter() - t_init
    s["init_peak_allocated_bytes"] = clock.peaks()[0]
    if rank == 0:
        resolved = json.loads(json.dumps(engine.config, default=str)) if isinstance(engine.config, dict) else ds_config
        atomic_write(rec.out / "deepspeed_config_auto.json", json.dumps(resolved, indent=2) + "\n")
    rec.write_summary()
    clock.reset_peak()  # init transients excluded; live state stays in the baseline

    gen = torch.Generator(device="cpu").manual_seed(args.seed + rank)
    batches = [torch.randint(0, cfg["vocab_size"], (mb, seq), generator=gen).to(device) for _ in range(4)]
    peak_alloc = peak_res = 0
    total = args.warmup + args.steps
    comms = {}
    clock = Clock(device)
    tokens = mb * seq * ga * world

    def one_step(step: int, phase: str) -> dict:
        """One optimizer step (ga micro-steps), timed per micro-step and phase."""
        from torch.profiler import record_function
        nonlocal peak_alloc, peak_res
        clock.sync()
        clock.reset_peak()
        t0 = time.perf_counter()
        losses, marks = [], []
        with record_function("zsim.step"):
            for m in range(ga):
                x = batches[(step * ga + m) % len(batches)]
                marks.append(clock.mark())
                with record_function(f"zsim.forward.{m}"):
                    loss = engine(input_ids=x, labels=x).loss
                marks.append(clock.mark())
                with record_function(f"zsim.backward.{m}"):
                    engine.backward(loss)
                marks.append(clock.mark())
                with record_function(f"zsim.engine_step.{m}"):
                    engine.step()  # DeepSpeed applies the optimizer only at the accumulation boundary
                losses.append(loss.detach())
            marks.append(clock.mark())
            clock.sync()
        dt = time.perf_counter() - t0
        fwd = [clock.between(marks[3 * m], marks[3 * m + 1]) for m in range(ga)]
        bwd = [clock.between(marks[3 * m + 1], marks[3 * m + 2]) for m in range(ga)]
        opt = [clock.between(marks[3 * m + 2], marks[3 * m + 3]) for m in range(ga)]
        step_peak, res = clock.peaks()
        if phase in ("warmup", "timed"):
            peak_alloc, peak_res = max(peak_alloc, step_peak), max(peak_res, res)
        return {"step": step, "phase": phase, "step_time_s": dt, "tokens": tokens,
                "tokens_per_s": tokens / dt, "loss": float(torch.stack(losses).float().mean()),
                "fwd_s": sum(fwd), "bwd_s": sum(bwd), "opt_s": sum(opt),
                "fwd_s_micro": fwd, "bwd_s_micro": bwd, "opt_s_micro": opt,
                "peak_allocated_bytes": peak_alloc, "peak_reserved_bytes": peak_res,
                "step_peak_allocated_bytes": step_peak, "allocated_bytes": clock.allocated(),
                "wall_utc": _now()}

    for step in range(total):
        row = one_step(step, "warmup" if step < args.warmup else "timed")
        row.update(probe())  # after the step's own sync: never inside its timing
        rec.row(row)
        if step >= args.warmup:
            s["peak_memory_allocated_bytes"], s["peak_memory_reserved_bytes"] = peak_alloc, peak_res
    if args.profile:
        s["profile"] = profile_steps(rec, rank, total, one_step, device)
        total += 2
    if args.pyprofile:
        try:  # a diagnostic: its failure must not fail the timed run
            s["pyprofile"] = pyprofile_steps(rec, rank, total, args.pyprofile, one_step)
        except Exception as e:  # noqa: BLE001
            s["pyprofile"] = {"error": f"{type(e).__name__}: {e}"}
        total += args.pyprofile
    if args.comms_steps:
        dist.configure(enabled=True, prof_all=True, verbose=False)
        for step in range(total, total + args.comms_steps):
            rec.row(one_step(step, "comms"))
        comms = comms_snapshot(dist.comms_logger.comms_dict)
        dist.configure(enabled=False)
    s["comms"] = comms
    rank_file = {"rank": rank, "peak_allocated_bytes": peak_alloc, "peak_reserved_bytes": peak_res}
    atomic_write(rec.out / f"rank{rank}.json", json.dumps(rank_file) + "\n") if rec.out.exists() else None


def profile_steps(rec: Recorder, rank: int, first: int, one_step, device) -> dict:
    """Trace one settled step (after one profiler warm-up step) into trace.json.gz (rank 0).

    Both steps are recorded as rows with phase ``profile`` and never enter the statistics.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule
    import trace_labels
    from compact_trace import compact_file

    labels = trace_labels.install()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    raw = rec.out / f".trace_rank{rank}.json"
    def ready(p) -> None:  # the schedule clears events after its cycle: export here
        if rank == 0:
            p.export_chrome_trace(str(raw))

    with profile(activities=acts, schedule=schedule(wait=0, warmup=1, active=1),
                 on_trace_ready=ready, record_shapes=False, with_stack=False) as prof:
        for step in range(first, first + 2):
            rec.row(one_step(step, "profile"))
            prof.step()
    out = {"steps": [first + 1], "labels": labels, "torch": torch.__version__}
    if rank == 0 and raw.exists():
        compact_file(raw, rec.out / "trace.json.gz")  # flow arrows and launch configs dropped
        raw.unlink(missing_ok=True)
        out["file"] = "trace.json.gz"
    return out


def pyprofile_steps(rec: Recorder, rank: int, first: int, n: int, one_step) -> dict:
    """Run ``n`` settled steps under cProfile (the host's Python, function by function: what
    torch.profiler's op view cannot split, e.g. inside ZeRO-3's fetch and release hooks).

    The rows have phase ``pyprofile`` and never enter the statistics; cProfile slows Python
    code, so only the relative split between DeepSpeed's functions is meaningful."""
    import cProfile
    import io
    import pstats
    prof = cProfile.Profile()
    prof.enable()
    for step in range(first, first + n):
        rec.row(one_step(step, "pyprofile"))
    prof.disable()
    if rank != 0:
        return {"steps": n}
    prof.dump_stats(str(rec.out / "pyprofile.pstats"))
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    st.sort_stats("tottime").print_stats(80)
    st.sort_stats("cumulative").print_stats(80)
    atomic_write(rec.out / "pyprofile.txt", buf.getvalue())
    return {"steps": n, "file": "pyprofile.txt"}


def finalize(rec: Recorder) -> None:
    """Steady-state statistics from the timed rows (also for failed runs, over what exists)."""
    s = rec.summary
    timed = [r["step_time_s"] for r in rec.rows if r["phase"] == "timed"]
    if timed:
        s["step_time_s_median"] = statistics.median(timed)
        s["step_time_s_mean"] = statistics.fmean(timed)
        s["step_time_s_min"], s["step_time_s_max"] = min(timed), max(timed)
        s["step_time_s_stdev"] = statistics.stdev(timed) if len(timed) > 1 else 0.0
        s["tokens_per_s_median"] = rec.rows[-1]["tokens"] / s["step_time_s_median"]
        for k in ("fwd_s", "bwd_s", "opt_s"):
            s[f"{k[:-2]}_time_s_median"] = statistics.median(
                r[k] for r in rec.rows if r["phase"] == "timed")
        probes = [r for r in rec.rows if r["phase"] == "timed" and "probe_small_linear_call_s" in r]
        if probes:
            s["host_speed_in_run"] = {
                k: statistics.median(r["probe_" + k] for r in probes)
                for k in ("empty_kernel_launch_s", "small_linear_call_s", "python_loop_s")}
            s["host_speed_in_run"]["steps"] = len(probes)
    measured = [r for r in rec.rows if r["phase"] in ("warmup", "timed")]
    if measured:
        s.setdefault("peak_memory_allocated_bytes", max(r["peak_allocated_bytes"] for r in measured))
        s.setdefault("peak_memory_reserved_bytes", max(r["peak_reserved_bytes"] for r in measured))
    losses = [r["loss"] for r in rec.rows]
    if losses and not all(math.isfinite(v) for v in losses):
        s.setdefault("warnings", []).append("non-finite loss")
    s["steps_recorded"] = len(rec.rows)


def main(argv=None) -> int:
    """Run the job; 0 when it finished, 1 when it failed (the summary says why)."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    rank = int(os.environ.get("RANK", 0))
    rec = Recorder(Path(args.output), rank)
    rec.write_summary()
    t0 = time.perf_counter()
    rc = 0
    try:
        run(args, rec)
        rec.summary["status"] = "ok"
    except BaseException as exc:  # every failure, including SIGTERM, ends in a "failed" summary
        rc = 1
        rec.summary["status"] = "failed"
        rec.summary["error"] = f"{exc.__class__.__name__}: {exc}"[:2000]
        rec.summary["traceback"] = traceback.format_exc()[-4000:]
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        rec.summary["finished_utc"] = _now()
        rec.summary["wall_s"] = time.perf_counter() - t0
        finalize(rec)
        rec.finish({"summary": rec.summary})
    return rc


if __name__ == "__main__":
    sys.exit(main())
