"""Pipeline schedules as typed instruction lists per stage.

Two schedules of one optimizer step over ``m`` micro-batches and ``p`` stages:

- :func:`one_f_one_b`: Megatron's non-interleaved 1F1B (PipeDream-Flush), compute only.
  Stage i runs ``w = min(p - i - 1, m)`` warm-up forwards, then ``m - w`` steady pairs
  (forward of micro-batch ``w + j``, backward of ``j``), then ``w`` cool-down backwards
  (Megatron-LM ``megatron/core/pipeline_parallel/schedules.py``, commit d98e8a64, lines
  2277-2279 and the loops after them).
- :func:`deepspeed_train_schedule`: DeepSpeed 0.19.8's pipeline engine
  (``deepspeed/runtime/pipe/schedule.py`` ``TrainSchedule``, lines 189-298, which
  ``PipelineEngine._train_schedule`` uses: ``engine.py:500-501``), its ``2(m + p - 1)``
  atomic steps, each with its communication, load and compute instructions and their
  pipeline buffer. A step is a forward step when its index and the stage have the same parity
  (``schedule.py:258-276``); the micro-batch of a forward step k is ``k//2 - i//2`` and of a
  backward step ``k//2 - p + 1 + i//2`` (the four cases of ``schedule.py:280-298`` reduce to
  these two), valid when in ``[0, m)``. Buffers: ``max(2, min(p - i, m))``, micro-batch
  ``mb`` in buffer ``mb % buffers`` (``schedule.py:111-123, 247-256``). Instruction order
  inside a step: ``schedule.py:213-241``. The engine executes a step's instructions in order
  (``engine.py:1373-1387``); validation/cpu_truth/pipeline_schedule.py records a real
  ``PipelineModule``'s order and tests/test_pipeline_truth.py compares it with this one.

:func:`timeline` runs any of these per-stage lists against each other with fixed forward and
backward times (a stage waits for the activation or gradient it needs), which gives the
step's makespan and bubble; with equal micro-batch times both schedules have the bubble
``(p - 1) / (m + p - 1)`` of :func:`bubble_fraction`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..errors import ZsimInputError


class Kind(enum.StrEnum):
    """What an instruction does (DeepSpeed's instruction classes, by name)."""

    LOAD = "LoadMicroBatch"
    FORWARD = "ForwardPass"
    BACKWARD = "BackwardPass"
    SEND_ACTIVATION = "SendActivation"
    RECV_ACTIVATION = "RecvActivation"
    SEND_GRAD = "SendGrad"
    RECV_GRAD = "RecvGrad"
    REDUCE_TIED_GRADS = "ReduceTiedGrads"
    REDUCE_GRADS = "ReduceGrads"
    OPTIMIZER_STEP = "OptimizerStep"


class Phase(enum.StrEnum):
    """Where in 1F1B an instruction sits."""

    WARMUP = "warmup"
    STEADY = "steady"
    COOLDOWN = "cooldown"
    STEP = "step"          # the end of the batch: gradient reduction, optimizer


@dataclass(frozen=True)
class Instruction:
    """One instruction of one stage: its kind, the micro-batch it works on (None for the
    batch-level ones) and, in DeepSpeed's schedule, the pipeline buffer it uses."""

    kind: Kind
    micro_batch: int | None = None
    buffer: int | None = None
    phase: Phase | None = None


def _check(pp: int, micro_batches: int, stage: int | None = None) -> None:
    for name, value in (("pp", pp), ("micro-batches", micro_batches)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ZsimInputError(f"{name} must be a positive integer, got {value!r}")
    if stage is not None and not 0 <= stage < pp:
        raise ZsimInputError(f"stage {stage} is outside the {pp} pipeline stages")


def bubble_fraction(pp: int, micro_batches: int) -> float:
    """Idle share of a 1F1B step with equal micro-batch times: ``(p - 1) / (m + p - 1)``."""
    _check(pp, micro_batches)
    return (pp - 1) / (micro_batches + pp - 1)


def one_f_one_b(stage: int, pp: int, micro_batches: int) -> tuple[Instruction, ...]:
    """Megatron's 1F1B compute order on ``stage`` (see the module docstring), ending with the
    batch's gradient reduction and optimizer step."""
    _check(pp, micro_batches, stage)
    warmup = min(pp - stage - 1, micro_batches)
    out = [Instruction(Kind.FORWARD, mb, phase=Phase.WARMUP) for mb in range(warmup)]
    for j in range(micro_batches - warmup):
        out.append(Instruction(Kind.FORWARD, warmup + j, phase=Phase.STEADY))
        out.append(Instruction(Kind.BACKWARD, j, phase=Phase.STEADY))
    out += [Instruction(Kind.BACKWARD, mb, phase=Phase.COOLDOWN)
            for mb in range(micro_batches - warmup, micro_batches)]
    out += [Instruction(Kind.REDUCE_GRADS, phase=Phase.STEP), Instruction(Kind.OPTIMIZER_STEP, phase=Phase.STEP)]
    return tuple(out)


def deepspeed_buffers(stage: int, pp: int, micro_batches: int) -> int:
    """Pipeline buffers DeepSpeed's TrainSchedule allocates on ``stage``."""
    _check(pp, micro_batches, stage)
    return max(2, min(pp - stage, micro_batches))


def _ds_micro_batch(step: int, stage: int, pp: int) -> tuple[int, bool]:
    """(micro-batch, is forward) of DeepSpeed's schedule step ``step`` on ``stage``."""
    if step % 2 == stage % 2:
        return step // 2 - stage // 2, True
    return step // 2 - pp + 1 + stage // 2, False


def deepspeed_train_schedule(stage: int, pp: int, micro_batches: int) -> tuple[tuple[Instruction, ...], ...]:
    """DeepSpeed's TrainSchedule on ``stage``: its atomic steps, each a tuple of
    instructions (see the module docstring for the source lines of every rule)."""
    _check(pp, micro_batches, stage)
    buffers = deepspeed_buffers(stage, pp, micro_batches)
    first, last = stage == 0, stage == pp - 1
    total = 2 * (micro_batches + pp - 1)
    valid = range(micro_batches).__contains__
    steps, prev = [], -1
    for step in range(total):
        mb, forward = _ds_micro_batch(step, stage, pp)
        cmds: list[Instruction] = []
        if forward and not first:      # gradient of the last backward out, activation in
            if valid(prev):
                cmds.append(Instruction(Kind.SEND_GRAD, prev, prev % buffers))
            if valid(mb):
                cmds.append(Instruction(Kind.RECV_ACTIVATION, mb, mb % buffers))
        elif not forward and not last:  # gradient in, activation of the last forward out
            if valid(mb):
                cmds.append(Instruction(Kind.RECV_GRAD, mb, mb % buffers))
            if valid(prev):
                cmds.append(Instruction(Kind.SEND_ACTIVATION, prev, prev % buffers))
        if forward and (first or last) and valid(mb):
            cmds.append(Instruction(Kind.LOAD, mb, mb % buffers))
        if valid(mb):
            cmds.append(Instruction(Kind.FORWARD if forward else Kind.BACKWARD, mb, mb % buffers))
        if step == total - 1:
            cmds += [Instruction(Kind.REDUCE_TIED_GRADS), Instruction(Kind.REDUCE_GRADS),
                     Instruction(Kind.OPTIMIZER_STEP)]
        prev = mb
        steps.append(tuple(cmds))
    return tuple(steps)


def flatten(steps: tuple[tuple[Instruction, ...], ...]) -> tuple[Instruction, ...]:
    """The instructions of a stepped schedule in execution order."""
    return tuple(cmd for step in steps for cmd in step)


def peak_in_flight(instructions: tuple[Instruction, ...]) -> int:
    """Most micro-batches forwarded but not yet backwarded at once (activations held)."""
    live = peak = 0
    for cmd in instructions:
        if cmd.kind is Kind.FORWARD:
            live += 1
            peak = max(peak, live)
        elif cmd.kind is Kind.BACKWARD:
            live -= 1
    return peak


@dataclass(frozen=True)
class Timeline:
    """When each stage's compute ran: ``(kind, micro-batch, start_s, end_s)`` per stage."""

    stages: tuple[tuple[tuple[Kind, int, float, float], ...], ...]

    @property
    def makespan_s(self) -> float:
        """From the first forward to the last backward."""
        return max(end for stage in self.stages for *_, end in stage)

    def busy_s(self, stage: int) -> float:
        """Seconds ``stage`` computed."""
        return sum(end - start for _, _, start, end in self.stages[stage])

    @property
    def bubble_fraction(self) -> float:
        """Idle share of the stages over the makespan."""
        total = self.makespan_s * len(self.stages)
        return 1 - sum(self.busy_s(i) for i in range(len(self.stages))) / total


def timeline(per_stage: list[tuple[Instruction, ...]], forward_s: float | tuple[float, ...],
             backward_s: float | tuple[float, ...], transfer_s: float = 0.0) -> Timeline:
    """Run the stages' compute in their listed order: forward of micro-batch j on stage i
    after stage i-1's forward of j, backward after stage i+1's backward of j. ``forward_s``
    and ``backward_s`` are one time for every stage or one per stage; ``transfer_s`` is the
    time an activation or gradient takes from one stage to the next (0: communication free).
    Refuses an order that deadlocks."""
    pp = len(per_stage)
    fwd, bwd = _per_stage(forward_s, pp, "forward_s"), _per_stage(backward_s, pp, "backward_s")
    queues = [[c for c in cmds if c.kind in (Kind.FORWARD, Kind.BACKWARD)] for cmds in per_stage]
    done: dict[tuple[Kind, int, int], float] = {}
    clock, pos = [0.0] * pp, [0] * pp
    out: list[list[tuple[Kind, int, float, float]]] = [[] for _ in range(pp)]
    while any(pos[i] < len(queues[i]) for i in range(pp)):
        moved = False
        for i in range(pp):
            while pos[i] < len(queues[i]):
                cmd = queues[i][pos[i]]
                forward = cmd.kind is Kind.FORWARD
                dep = (Kind.FORWARD, i - 1, cmd.micro_batch) if forward else (Kind.BACKWARD, i + 1, cmd.micro_batch)
                own = (Kind.FORWARD, i, cmd.micro_batch)
                needs = [] if (forward and i == 0) else ([dep] if forward or i < pp - 1 else [])
                if not forward:
                    needs.append(own)
                if any(n not in done for n in needs):
                    break
                start = max([clock[i]] + [done[n] + (transfer_s if n[1] != i else 0.0) for n in needs])
                end = start + (fwd[i] if forward else bwd[i])
                done[(cmd.kind, i, cmd.micro_batch)] = clock[i] = end
                out[i].append((cmd.kind, cmd.micro_batch, start, end))
                pos[i] += 1
                moved = True
        if not moved:
            raise ZsimInputError("the pipeline schedule deadlocks: a stage waits for work "
                                 "that a stage behind it never reaches")
    return Timeline(tuple(tuple(s) for s in out))


def _per_stage(value: float | tuple[float, ...], pp: int, name: str) -> tuple[float, ...]:
    """One time per stage from one time or a sequence of ``pp``."""
    if isinstance(value, (int, float)):
        return (float(value),) * pp
    times = tuple(float(v) for v in value)
    if len(times) != pp:
        raise ZsimInputError(f"{name}: {len(times)} stage times for {pp} stages")
    return times


__all__ = ["Kind", "Phase", "Instruction", "bubble_fraction", "one_f_one_b", "deepspeed_buffers",
           "deepspeed_train_schedule", "flatten", "peak_in_flight", "Timeline", "timeline"]
