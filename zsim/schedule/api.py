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
from .order import Module, forward_modules, hook_order
from .params import flat_layout
from .stage12 import stage12_buckets
from .stage3 import emit_stage3, stage3_facts, stage3_inputs


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
    modules, numels = _held(model, run, keep)
    z = run.zero
    if model.deepspeed_moe is not None:
        em, facts = _emit_expert_parallel(model, run, numels, gpus_per_node)
    elif z.stage == 3:
        em, facts = emit_stage3(model, run, numels, gpus_per_node)
    else:
        layout = flat_layout(numels, run.world_size, round_robin=z.round_robin_gradients)
        em, nb = emit_dense(model, run, modules, layout)
        facts = _dense_facts(run, numels, layout, nb)
    ops = tuple(em.ops.ops)
    return Schedule(ops=ops, collectives=collectives_summary(ops), facts=facts)


def schedule_key(model: ModelSpec, run: RunConfig, gpus_per_node: int | None = None) -> tuple | None:
    """A hashable key of what ``build_schedule(model, run, gpus_per_node)`` reads: equal keys,
    equal schedules. Worked out for ZeRO-3 without DeepSpeed-MoE layers
    (:func:`~zsim.schedule.stage3.stage3_inputs`), where a search builds the same schedule for
    several batch shapes; None elsewhere (no key: build it)."""
    if model.deepspeed_moe is not None or run.zero.stage != 3:
        return None
    return (model, gpus_per_node or run.world_size, stage3_inputs(run))


def schedule_facts(model: ModelSpec, run: RunConfig, gpus_per_node: int | None = None,
                   keep: Callable[[Module], bool] | None = None) -> ScheduleFacts:
    """``build_schedule(model, run, gpus_per_node, keep).facts``. Stages 0-2 without
    DeepSpeed-MoE layers need no ops for them (the flat layout and the number of gradient
    buckets :func:`emit_dense` cuts), so none are built (a search checks the memory of many
    pipeline stages); stage 3 replays the coordinator without building ops
    (:func:`stage3_facts`); with DeepSpeed-MoE layers the schedule is built.
    ``tests/test_engine_in_order.py`` checks that they agree."""
    if model.deepspeed_moe is not None:
        return build_schedule(model, run, gpus_per_node, keep).facts
    modules, numels = _held(model, run, keep)
    if run.zero.stage == 3:
        return stage3_facts(model, run, numels, gpus_per_node)
    layout = flat_layout(numels, run.world_size, round_robin=run.zero.round_robin_gradients)
    if run.zero.stage == 0:
        nb = 0
    else:       # emit_dense's buckets (without DeepSpeed-MoE: flat items in parameter order)
        hook_items = [(p, numels[p]) for p, _ in hook_order(modules)]
        nb = len(stage12_buckets(run, hook_items, [(p, numels[p]) for p in range(len(numels))])[0])
    return _dense_facts(run, numels, layout, nb)


def _held(model: ModelSpec, run: RunConfig, keep: Callable[[Module], bool] | None) -> tuple[list[Module], list[int]]:
    """(modules in forward order, parameter numels) of the modules ``keep`` selects (all
    when None), their parameters renumbered in the model's order."""
    numels = [p.numel for p in model.parameters()]
    modules = forward_modules(model)
    if keep is not None:
        if run.zero.stage == 3:
            raise ValueError("build_schedule: a module subset needs ZeRO stage 0-2")
        modules = [m for m in modules if keep(m)]
        held = sorted({p for m in modules for p in m.params})
        index = {p: i for i, p in enumerate(held)}
        modules = [replace(m, params=tuple(index[p] for p in m.params)) for m in modules]
        numels = [numels[p] for p in held]
    return modules, numels


def _dense_facts(run: RunConfig, numels: list[int], layout, num_buckets: int) -> ScheduleFacts:
    """The size facts of a stage 0-2 step (no DeepSpeed-MoE layers)."""
    z = run.zero
    contiguous = z.stage > 0 and z.contiguous_gradients
    return ScheduleFacts(
        partition_numel=layout.partition_numel if z.stage else sum(numels),
        padded_numel=layout.padded_numel if z.stage else sum(numels),
        ipg_buffer_elems=z.reduce_bucket_size if contiguous else 0,
        ipg_buffer_count=(2 if z.overlap_comm else 1) if contiguous else 0,
        num_buckets=num_buckets, max_gathered_numel=0, persistent_numel=0,
        largest_param_numel=max(numels), num_params=sum(numels))


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
    group_numels = tuple(sum(numels[p] for p in g.params) for g in layout.groups)
    facts = ScheduleFacts(
        partition_numel=layout.partition_numel if zero else sum(numels),
        padded_numel=layout.padded_numel if zero else sum(numels),
        ipg_buffer_elems=z.reduce_bucket_size if zero and z.contiguous_gradients else 0,
        ipg_buffer_count=(2 if z.overlap_comm else 1) if zero and z.contiguous_gradients else 0,
        num_buckets=nb, max_gathered_numel=0, persistent_numel=0,
        largest_param_numel=max(numels), num_params=sum(numels),
        # Each param group is stepped on its own (S12:3074-3142, fused_optimizer.py:282-314);
        # stage 0 does not partition them.
        group_numels=group_numels,
        group_partition_numels=tuple(layout.partition_numels()) if zero else group_numels)
    return em, facts


def steady_state_collectives(model: str | Path | ModelSpec, ds_config: str | Path | Mapping[str, Any] | None,
                             world_size: int, **overrides: Any) -> dict[str, dict[str, int]]:
    """``{logger op: {str(message bytes): count}}`` of one steady-state optimizer step, as
    DeepSpeed's comms logger on rank 0 counts them. ``overrides`` are
    :class:`zsim.dsconfig.Overrides` fields (micro_batch, grad_accum, stage, ...)."""
    spec = load_model(model)
    run = build_run_config(ds_config, spec, world_size, Overrides(**overrides))
    return build_schedule(spec, run).collectives
