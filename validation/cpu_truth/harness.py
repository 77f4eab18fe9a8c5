"""Launch real DeepSpeed on CPU gloo ranks and record one steady-state step's collectives.

A case is a JSON-able dict: ``model`` (HF config fields, plus ``model_type`` "llama"/"qwen2"),
``ds_config`` (a complete DeepSpeed config incl. train_micro_batch_size_per_gpu and
gradient_accumulation_steps), ``world_size``, optional ``steps`` (default 3), ``seq_len``,
``activation_checkpointing``. :func:`run_case` starts one process per rank (RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK; a free port per case), waits, and returns
the collectives of the LAST optimizer step as rank 0's comms logger counts them: the
difference of cumulative counts between the last two steps, so that init broadcasts and the
first step's trace recording (stage 3) are excluded.

Run one case by hand: ``python -m validation.cpu_truth.harness case.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKER = Path(__file__).with_name("worker.py")

#: Modules the fork server imports once; every rank is forked from it (ZSIM_TRUTH_FORK=0:
#: plain subprocesses that import everything themselves, ~10 s of CPU per rank).
PRELOAD = ["torch", "deepspeed", "deepspeed.comm", "transformers",
           "transformers.models.llama.modeling_llama", "transformers.models.qwen2.modeling_qwen2",
           "validation.cpu_truth.worker"]
#: Environment every rank needs and that must hold before torch/deepspeed are imported.
BASE_ENV = dict(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                TOKENIZERS_PARALLELISM="false", TRANSFORMERS_OFFLINE="1", HF_HUB_OFFLINE="1",
                PYTHONWARNINGS="ignore")
_CONTEXT = None


def _fork_context():
    """The multiprocessing forkserver context with the heavy imports preloaded (lazily)."""
    global _CONTEXT
    if _CONTEXT is None:
        import multiprocessing
        for key, value in BASE_ENV.items():  # the fork server inherits this environment
            os.environ.setdefault(key, value)
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(PRELOAD)
    return _CONTEXT


def _use_fork() -> bool:
    return os.environ.get("ZSIM_TRUTH_FORK", "1") != "0" and __package__ == "validation.cpu_truth"


class TruthRunError(RuntimeError):
    """A DeepSpeed truth run failed; the message carries the tail of its log."""


def free_port() -> int:
    """A TCP port that is free now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step_difference(steps: list[dict], index: int = -1) -> dict[str, dict[str, int]]:
    """Collectives issued during optimizer step ``index`` (cumulative counts differenced)."""
    after = steps[index]
    before = steps[index - 1] if len(steps) + index > 0 else {}
    out: dict[str, dict[str, int]] = {}
    for op, sizes in after.items():
        for size, count in sizes.items():
            n = count - before.get(op, {}).get(size, 0)
            if n:
                out.setdefault(op, {})[size] = n
    return {op: dict(sorted(s.items(), key=lambda kv: int(kv[0]))) for op, s in sorted(out.items())}


def _env(rank: int, world: int, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(BASE_ENV)
    env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    return env


class _Forked:
    """A forked rank with the small part of the Popen interface that Launched uses."""

    def __init__(self, process):
        self.process = process
        # The rank needs nothing from the launching program's __main__ (pytest, a runner,
        # stdin); hide it so that multiprocessing does not re-import it in every rank.
        main = sys.modules["__main__"]
        saved = {k: main.__dict__.pop(k) for k in ("__file__",) if k in main.__dict__}
        saved_spec = getattr(main, "__spec__", None)
        main.__spec__ = None
        try:
            process.start()
        finally:
            main.__dict__.update(saved)
            main.__spec__ = saved_spec

    def poll(self):
        return self.process.exitcode

    def wait(self, timeout=None):
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired("rank", timeout)
        return self.process.exitcode

    def kill(self):
        self.process.kill()


class Launched:
    """A case whose rank processes are running; :meth:`result` waits and reads the output."""

    def __init__(self, case: dict, workdir: Path):
        self.case, self.workdir = case, workdir
        world = int(case["world_size"])
        case_path = workdir / "case.json"
        case_path.write_text(json.dumps(case))
        self.out_path = workdir / "counts.json"
        self.log_path = workdir / "log.txt"
        port = free_port()
        if _use_fork():
            from .worker import forked_entry
            ctx = _fork_context()
            self.log_path.touch()
            self.procs = [_Forked(ctx.Process(target=forked_entry, daemon=False, args=(
                str(case_path), str(self.out_path), _env(r, world, port), str(self.log_path))))
                for r in range(world)]
        else:
            log = open(self.log_path, "wb")
            self.procs = [subprocess.Popen([sys.executable, str(WORKER), str(case_path), str(self.out_path)],
                                           env=_env(r, world, port), stdout=log, stderr=subprocess.STDOUT,
                                           cwd=workdir)
                          for r in range(world)]
            log.close()
        self.started = time.monotonic()

    def done(self) -> bool:
        """Whether every rank process has exited."""
        return all(p.poll() is not None for p in self.procs)

    def result(self, timeout_s: float = 900) -> dict:
        """``{"collectives", "per_rank", "sequence", "wall_s"}`` once every rank exits.

        ``sequence`` is rank 0's ordered ``[(op, bytes), ...]`` of the last step."""
        deadline = self.started + timeout_s
        codes = []
        for p in self.procs:
            try:
                codes.append(p.wait(timeout=max(1.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                for q in self.procs:
                    if q.poll() is None:
                        q.kill()
                codes.append(-9)
        wall = time.monotonic() - self.started
        if any(codes) or not self.out_path.exists():
            tail = self.log_path.read_text(errors="replace")[-4000:]
            raise TruthRunError(f"DeepSpeed truth run failed (exit codes {codes}, kept {self.workdir}):\n{tail}")
        per_rank, sequence, extras = [], [], []
        for r in range(int(self.case["world_size"])):
            data = json.loads(Path(f"{self.out_path}.rank{r}").read_text())
            per_rank.append(step_difference(data["steps"]))
            # what a case records besides the counts (expert_parallel.py: grouped sequence,
            # optimizer groups, parameters), per rank
            extras.append({k: v for k, v in data.items() if k not in ("rank", "steps", "sequence", "module_trace")})
            if r == 0:
                sequence = data.get("sequence", [])
                trace = data.get("module_trace")
        if os.environ.get("ZSIM_TRUTH_KEEP") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)  # nothing is kept between runs
        return {"collectives": per_rank[0], "per_rank": per_rank, "sequence": sequence,
                "module_trace": trace, "extras": extras, "wall_s": wall}


def launch(case: dict) -> Launched:
    """Start a case's ranks in a fresh temporary directory (nothing cached across runs)."""
    return Launched(case, Path(tempfile.mkdtemp(prefix="zsim-truth-")))


def run_case(case: dict, timeout_s: float = 900) -> dict:
    """Run one case to completion (see the module docstring)."""
    return launch(case).result(timeout_s)


if __name__ == "__main__":
    result = run_case(json.loads(Path(sys.argv[1]).read_text()))
    print(json.dumps(result, indent=1))
