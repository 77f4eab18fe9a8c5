"""The schedule layer's public API: :func:`build_schedule` and :func:`steady_state_collectives`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from ..dsconfig import Overrides, RunConfig, build_run_config
from ..model import ModelSpec, load_model
from ..ops import Op, collectives_summary
from .dense import emit_dense
from .facts import ScheduleFacts
from .order import Module, forward_modules
from .params import flat_layout
from .stage3 import emit_stage3


@dataclass(frozen=True)
class Schedule:
    """Everything rank 0 issues in one steady-state optimizer step (see zsim.ops)."""

    ops: tuple[Op, ...]
    collectives: dict
    facts: ScheduleFacts


def build_schedule(model: ModelSpec, run: RunConfig, gpus_per_node: int | None = None,
                   keep: Callable[[Module], bool] | None = None) -> Schedule:
    """The ops of one steady-state optimizer step of ``model`` under ``run``.

    ``gpus_per_node`` matters only for ZeRO++ qgZ, which DeepSpeed enables only across
    nodes (stage3.py:1924-1931); None means one node.

    Stage 3 describes a step after the first (trace-recording) one, so prefetch is active.
    Rank 0 is modelled; every rank issues the same collectives with the same comms-logger
    sizes (bucket slices differ per rank only in what each keeps, not in what is sent).

    ``keep`` selects the modules a pipeline stage runs (zsim.parallel; stages 0-2 only): the
    stage holds the parameters those modules use, in the model's order.
    """
    params = model.parameters()
    numels = [p.numel for p in params]
    modules = forward_modules(model)
    z = run.zero
    if keep is not None:
        if z.stage == 3:
            raise ValueError("build_schedule: a module subset needs ZeRO stage 0-2")
        modules = [m for m in modules if keep(m)]
        held = sorted({p for m in modules for p in m.params})
        index = {p: i for i, p in enumerate(held)}
        modules = [replace(m, params=tuple(index[p] for p in m.params)) for m in modules]
        numels = [numels[p] for p in held]
    if model.deepspeed_moe is not None:
        em, facts = _emit_expert_parallel(model, run, numels, gpus_per_node)
    elif z.stage == 3:
        em, facts = emit_stage3(model, run, numels, gpus_per_node)
    else:
        layout = flat_layout(numels, run.world_size, round_robin=z.round_robin_gradients)
        em, nb = emit_dense(model, run, modules, layout)
        contiguous = z.stage > 0 and z.contiguous_gradients
        facts = ScheduleFacts(
            partition_numel=layout.partition_numel if z.stage else sum(numels),
            padded_numel=layout.padded_numel if z.stage else sum(numels),
            ipg_buffer_elems=z.reduce_bucket_size if contiguous else 0,
            ipg_buffer_count=(2 if z.overlap_comm else 1) if contiguous else 0,
            num_buckets=nb, max_gathered_numel=0, persistent_numel=0,
            largest_param_numel=max(numels), num_params=sum(numels))
    ops = tuple(em.ops.ops)
    return Schedule(ops=ops, collectives=collectives_summary(ops), facts=facts)


def _emit_expert_parallel(model: ModelSpec, run: RunConfig, numels: list[int], gpus_per_node: int | None):
    """Stages 0-2 with DeepSpeed-MoE layers (zsim.parallel.expert): the MoE param groups'
    layout, the all-to-alls and the per-group step."""
    from ..parallel.expert import check_run, expert_groups, expert_plan
    from ..parallel.expert_zero import moe_layout
    moe = model.deepspeed_moe
    check_run(model, run)
    groups = expert_groups(run.world_size, moe.ep_size, gpus_per_node)
    layout = moe_layout(model, run.world_size, groups)
    plan = expert_plan(model, run.micro_batch, run.seq_len, run.param_bytes)
    em, nb = emit_dense(model, run, forward_modules(model), layout, expert=(plan, groups))
    z = run.zero
    zero = z.stage > 0   # stage 0: no partitions, no buckets (the engine all-reduces)
    facts = ScheduleFacts(
        partition_numel=layout.partition_numel if zero else sum(numels),
        padded_numel=layout.padded_numel if zero else sum(numels),
        ipg_buffer_elems=z.reduce_bucket_size if zero and z.contiguous_gradients else 0,
        ipg_buffer_count=(2 if z.overlap_comm else 1) if zero and z.contiguous_gradients else 0,
        num_buckets=nb, max_gathered_numel=0, persistent_numel=0,
        largest_param_numel=max(numels), num_params=sum(numels))
    return em, facts


def steady_state_collectives(model: str | Path | ModelSpec, ds_config: str | Path | Mapping[str, Any] | None,
                             world_size: int, **overrides: Any) -> dict[str, dict[str, int]]:
    """``{logger op: {str(message bytes): count}}`` of one steady-state optimizer step, as
    DeepSpeed's comms logger on rank 0 counts them. ``overrides`` are
    :class:`zsim.dsconfig.Overrides` fields (micro_batch, grad_accum, stage, ...)."""
    spec = load_model(model)
    run = build_run_config(ds_config, spec, world_size, Overrides(**overrides))
    return build_schedule(spec, run).collectives
