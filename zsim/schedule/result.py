"""`zsim.schedule(...)`: the API call behind `zsim schedule`, returning a typed, frozen result."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from ..dsconfig import Overrides, build_run_config
from ..errors import ZsimInputError
from ..model import ModelSpec, load_model
from ..ops import Op
from ..output import wire_bytes_per_gpu
from .api import build_schedule
from .facts import ScheduleFacts

#: The keyword overrides :func:`schedule` accepts (the fields of :class:`zsim.dsconfig.Overrides`).
OVERRIDE_NAMES = tuple(f.name for f in fields(Overrides))


@dataclass(frozen=True)
class ScheduleResult:
    """What one rank issues in one steady-state optimizer step (what `zsim schedule --json`
    prints under ``collectives``, with the run it describes).

    ``collectives`` is ``{comms-logger op: {str(message bytes): count}}``, exactly as
    DeepSpeed's comms logger on rank 0 counts them (what
    :func:`zsim.schedule.steady_state_collectives` returns). ``wire_bytes_per_gpu`` is, per
    op, the bytes one GPU sends in the step (nccl-tests' bus convention over the op's group).
    """

    model: str
    num_parameters: int
    world_size: int
    gpus_per_node: int
    stage: int
    micro_batch: int
    grad_accum: int
    train_batch: int
    seq_len: int
    precision: str
    collectives: Mapping[str, Mapping[str, int]]
    wire_bytes_per_gpu: Mapping[str, float]
    facts: ScheduleFacts
    notes: tuple[str, ...] = ()
    #: The ops of the step (zsim.ops.Op), in issue order; left out of ``to_dict``.
    ops: tuple[Op, ...] = field(default=(), repr=False, compare=False)

    @property
    def num_collectives(self) -> int:
        """Collective calls in the step (the sum of every count in :attr:`collectives`)."""
        return sum(sum(sizes.values()) for sizes in self.collectives.values())

    @property
    def logged_bytes(self) -> int:
        """Sum of message bytes × count over the step, in the comms logger's units."""
        return sum(int(size) * n for sizes in self.collectives.values() for size, n in sizes.items())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (no ops)."""
        out = asdict(self)
        out.pop("ops")
        out["notes"] = list(self.notes)
        return out


def _overrides(values: Mapping[str, Any]) -> Overrides:
    unknown = sorted(set(values) - set(OVERRIDE_NAMES))
    if unknown:
        raise ZsimInputError(f"unknown schedule override(s) {', '.join(unknown)} "
                             f"(known: {', '.join(OVERRIDE_NAMES)})")
    return Overrides(**values)


def schedule(model: str | Path | ModelSpec, ds_config: str | Path | Mapping[str, Any] | None = None,
             world_size: int = 1, *, gpus_per_node: int | None = None,
             **overrides: Any) -> ScheduleResult:
    """The collectives DeepSpeed issues in one steady-state optimizer step of ``model``.

    ``model`` is a preset name, a HF ``config.json`` path or a :class:`~zsim.model.ModelSpec`;
    ``ds_config`` a DeepSpeed JSON path or dict (``"auto"`` values allowed; None: DeepSpeed's
    defaults); ``world_size`` the data-parallel ranks. ``gpus_per_node`` (default: all ranks
    on one node) sizes the intra-/inter-node groups (ZeRO++ qgZ, wire bytes). ``overrides``
    are :class:`zsim.dsconfig.Overrides` fields (``stage``, ``micro_batch``, ``grad_accum``,
    ``seq_len``, ...) and win over the config, as the command line does. Bad input raises
    :class:`~zsim.errors.ZsimInputError`.
    """
    spec = load_model(model)
    run = build_run_config(ds_config, spec, world_size, _overrides(overrides))
    per_node = world_size if gpus_per_node is None else gpus_per_node
    if isinstance(per_node, bool) or not isinstance(per_node, int) or per_node < 1 or world_size % per_node:
        raise ZsimInputError(f"gpus_per_node must be a positive integer dividing the world size "
                             f"{world_size}, got {per_node!r}")
    built = build_schedule(spec, run, gpus_per_node=per_node)
    return ScheduleResult(
        model=spec.name, num_parameters=spec.num_parameters, world_size=run.world_size,
        gpus_per_node=per_node, stage=run.zero.stage, micro_batch=run.micro_batch,
        grad_accum=run.grad_accum, train_batch=run.train_batch, seq_len=run.seq_len,
        precision=run.precision, collectives=built.collectives,
        wire_bytes_per_gpu=wire_bytes_per_gpu(built.ops, run.world_size, per_node),
        facts=built.facts, notes=run.notes, ops=built.ops)
