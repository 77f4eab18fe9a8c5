"""Pipeline-schedule truth: the instruction order DeepSpeed 0.19.8's pipeline engine runs on
each stage of a real ``PipelineModule``, on CPU gloo ranks.

Every rank wraps the methods of ``PipelineEngine._INSTRUCTION_MAP`` (what
``_exec_schedule`` calls for each instruction, ``runtime/pipe/engine.py:1360-1387``) to
record ``(instruction, buffer_id)`` in execution order, and ``TrainSchedule.steps`` to
record the atomic steps the schedule yields. Two ``train_batch`` calls run; the last one is
kept. The model is a stack of small ``nn.Linear`` layers (``LayerSpec``), partitioned
``uniform``; ``parts`` (the stage boundaries DeepSpeed chose) is recorded too.

    python -m validation.cpu_truth.pipeline_schedule --stages 2 --micro-batches 4 [--dp 2 --zero-stage 1]

prints one JSON object: ``{"stages": {stage: {"executed": [...], "steps": [[...]], ...}}}``
(data-parallel replicas of a stage must agree; the result says whether they do).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):          # run as a file by the launcher below
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from validation.cpu_truth.harness import TruthRunError, _env, free_port  # noqa: E402

#: Width of every linear layer (tiny: the schedule, not the arithmetic, is measured).
WIDTH = 8


def _record(engine_cls, schedule_mod, executed: list, steps: list) -> None:
    """Wrap the engine's instruction methods and the train schedule's step generator."""
    def wrap(name, method):
        def run(self, **kwargs):
            executed.append([name, kwargs.get("buffer_id")])
            return method(self, **kwargs)
        return run
    engine_cls._INSTRUCTION_MAP = {cls: wrap(cls.__name__, fn) for cls, fn in engine_cls._INSTRUCTION_MAP.items()}
    original = schedule_mod.TrainSchedule.steps

    def recorded_steps(self):
        for cmds in original(self):
            steps.append([[type(c).__name__, c.kwargs.get("buffer_id")] for c in cmds])
            yield cmds
    schedule_mod.TrainSchedule.steps = recorded_steps


def worker(case: dict, out: Path) -> None:
    """One rank: build the pipeline, train two batches, write what it recorded."""
    import torch
    import deepspeed
    from deepspeed.pipe import LayerSpec, PipelineModule
    from deepspeed.runtime.pipe import schedule as schedule_mod
    from deepspeed.runtime.pipe.engine import PipelineEngine
    from deepspeed.utils import RepeatingLoader

    executed: list = []
    steps: list = []
    _record(PipelineEngine, schedule_mod, executed, steps)
    deepspeed.init_distributed(dist_backend="gloo")
    torch.manual_seed(0)
    layers = [LayerSpec(torch.nn.Linear, WIDTH, WIDTH) for _ in range(case["layers"])]
    net = PipelineModule(layers=layers, num_stages=case["stages"], loss_fn=torch.nn.MSELoss(),
                         partition_method="uniform")
    config = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": case["micro_batches"],
              "steps_per_print": 10**9, "zero_optimization": {"stage": case.get("zero_stage", 0)},
              "zero_allow_untested_optimizer": True}
    # A client optimizer: DeepSpeed's own would compile an op (ZeRO then needs the flag above).
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)
    engine, *_ = deepspeed.initialize(model=net, optimizer=optimizer, config=config)
    data = [(torch.randn(1, WIDTH), torch.randn(1, WIDTH)) for _ in range(case["micro_batches"])]
    loader = iter(RepeatingLoader(data))
    for _ in range(2):
        executed.clear()
        steps.clear()
        engine.train_batch(data_iter=loader)
    rank = int(os.environ["RANK"])
    path = out.with_name(f"{out.name}.rank{rank}")
    path.with_name(path.name + ".tmp").write_text(json.dumps({
        "rank": rank, "stage": engine.stage_id, "stages": engine.num_stages,
        "micro_batches": engine.micro_batches, "parts": list(net.parts),
        "executed": executed, "steps": steps}))
    path.with_name(path.name + ".tmp").replace(path)
    deepspeed.comm.barrier()


def run(stages: int, micro_batches: int, dp: int = 1, layers: int | None = None,
        zero_stage: int = 0, timeout_s: float = 600) -> dict:
    """Launch ``stages * dp`` ranks and return every stage's recorded schedule."""
    case = {"stages": stages, "micro_batches": micro_batches, "layers": layers or 2 * stages,
            "zero_stage": zero_stage}
    world = stages * dp
    workdir = Path(tempfile.mkdtemp(prefix="zsim-pipe-truth-"))
    (workdir / "case.json").write_text(json.dumps(case))
    out, log_path = workdir / "result.json", workdir / "log.txt"
    port = free_port()
    with open(log_path, "wb") as log:
        procs = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker",
                                   str(workdir / "case.json"), str(out)],
                                  env=_env(r, world, port), stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
                 for r in range(world)]
    started, codes = time.monotonic(), []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1.0, started + timeout_s - time.monotonic())))
        except subprocess.TimeoutExpired:
            for q in procs:
                if q.poll() is None:
                    q.kill()
            codes.append(-9)
    if any(codes):
        tail = log_path.read_text(errors="replace")[-4000:]
        raise TruthRunError(f"pipeline truth run failed (exit codes {codes}, kept {workdir}):\n{tail}")
    ranks = [json.loads(Path(f"{out}.rank{r}").read_text()) for r in range(world)]
    shutil.rmtree(workdir, ignore_errors=True)
    by_stage: dict[int, dict] = {}
    agree = True
    for r in ranks:
        seen = by_stage.setdefault(r["stage"], r)
        agree &= seen["executed"] == r["executed"] and seen["steps"] == r["steps"]
    return {"case": case, "world_size": world, "replicas_agree": agree, "wall_s": time.monotonic() - started,
            "stages": {s: {k: v for k, v in r.items() if k != "rank"} for s, r in sorted(by_stage.items())}}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", nargs=2, metavar=("CASE", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--stages", type=int, default=2)
    ap.add_argument("--micro-batches", type=int, default=4)
    ap.add_argument("--dp", type=int, default=1)
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--zero-stage", type=int, default=0, choices=(0, 1))
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(Path(args.worker[0]).read_text()), Path(args.worker[1]))
        sys.stdout.flush()
        sys.stderr.flush()
        # Skip the interpreter's teardown, as worker.py does: the result is on disk and every
        # rank has passed the barrier; gloo's threads at exit sometimes abort the process
        # ("terminate called without an active exception").
        os._exit(0)
    print(json.dumps(run(args.stages, args.micro_batches, args.dp, args.layers, args.zero_stage), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
