"""Assemble the report's blocks from :class:`~.data.ReportData` and write the files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..defaults import DEFAULT_MODEL, DEFAULT_TOPO
from ..dsconfig import OffloadDevice
from ..job import RunSettings
from ..decide.text import rejection_summary, side_by_side_cells, tie_lines
from ..io import atomic_write_set, dumps_json
from ..output import format_bytes, format_count
from . import figures
from .data import ReportData, collect_settings
from .render import Block, Figure, Heading, Para, Pre, Table, to_html, to_markdown

GIB = 2**30


@dataclass(frozen=True)
class ReportFiles:
    """What was written."""

    html: Path
    markdown: Path
    figures: tuple[Path, ...]
    ds_config: Path
    data: ReportData


def _config_line(c: Any, p: Any) -> str:
    off = []
    if c.offload_optimizer != OffloadDevice.NONE:
        off.append(f"optimizer offloaded to {c.offload_optimizer}")
    if c.offload_param != OffloadDevice.NONE:
        off.append(f"parameters offloaded to {c.offload_param}")
    return (f"ZeRO-{c.stage}" + (" with " + " and ".join(off) if off else ", no offload")
            + f", micro-batch {c.micro_batch} x grad-accum {c.grad_accum} x data-parallel {p.world_size} "
            f"= global batch {p.train_batch}, activation checkpointing {'on' if c.activation_checkpointing else 'off'}"
            + (f", overlap_comm {'on' if c.overlap_comm else 'off'}" if c.stage in (1, 2) else "")
            + (f", reduce bucket {format_count(c.reduce_bucket_size)} elements" if c.stage else "")
            + (f", prefetch bucket {format_count(c.prefetch_bucket_size)} elements" if c.stage == 3 else ""))


def _why(d: ReportData) -> list[str]:
    plan, best = d.plan, d.plan.best
    p = best.prediction
    lines = [f"Why: it has the highest predicted throughput ({p.tokens_per_s:,.0f} tokens/s, "
             f"{p.tflops_per_gpu:.0f} TFLOP/s per GPU, MFU {p.mfu * 100:.1f}%) of the "
             f"{plan.outcome.fitting} stage/offload/batch/checkpointing choices that fit (of "
             f"{plan.outcome.structures}; {plan.space_size} configurations with bucket sizes), at a peak of "
             f"{format_bytes(p.peak_memory_bytes)} of {format_bytes(p.gpu_memory_bytes)} per GPU."]
    other = next((r for r in plan.ranked[1:] if r.candidate.structure != best.candidate.structure), None)
    if other:
        gap = 1 - other.prediction.tokens_per_s / p.tokens_per_s
        lines.append(f"Next best with another structure: {other.candidate.label()} at "
                     f"{other.prediction.tokens_per_s:,.0f} tokens/s ({gap * 100:.1f}% slower).")
    c = best.candidate
    for s, ps in sorted(d.per_stage.items()):
        if s == c.stage:
            continue
        if not ps.fits:
            lines.append(f"ZeRO-{s} at the same batch does not fit: peak {format_bytes(ps.peak_memory_bytes)}.")
        else:
            lines.append(f"ZeRO-{s} at the same batch, no offload, DeepSpeed's default buckets and overlap: "
                         f"{ps.tokens_per_s:,.0f} tokens/s, "
                         f"exposed communication {ps.exposed_comm_s:.3f} s per step.")
    return lines


def _per_stage_table(d: ReportData) -> tuple:
    header = ["stage", "fits", "peak/GPU", "step time", "tokens/s", "exposed comm"]
    rows = [[f"ZeRO-{s}", "yes" if p.fits else "no", format_bytes(p.peak_memory_bytes),
             f"{p.step_time_s:.3f} s", f"{p.tokens_per_s:,.0f}", f"{p.exposed_comm_s:.3f} s"]
            for s, p in sorted(d.per_stage.items())]
    return Table(tuple(header), tuple(rows))


def _ranked_table(d: ReportData) -> tuple:
    header, rows = side_by_side_cells(d.plan.ranked)
    return Table(tuple(header), tuple(rows))


def _memory_table(d: ReportData) -> tuple:
    header = ["GPUs N", "ZeRO-3 states", "baseline states / N", "ZeRO-3 peak", "baseline peak / N"]
    rows = [[m.gpus, format_bytes(m.zero3_states_bytes), format_bytes(m.baseline_states_over_n),
             format_bytes(m.zero3_peak_bytes), format_bytes(m.baseline_peak_over_n)] for m in d.memory_vs_n]
    return Table(tuple(header), tuple(rows))


def _trust(plan: Any) -> list[str]:
    """How far the numbers can be trusted: profile provenance, memory headroom, ties."""
    lines = []
    if plan.provenance:
        lines.append(plan.provenance.describe()[0].upper() + plan.provenance.describe()[1:] + ".")
    if plan.usable_memory_bytes:
        lines.append(f"Memory headroom {plan.memory_headroom_pct:.1f} %: a configuration counts as fitting when "
                     f"its predicted peak is at most {format_bytes(plan.usable_memory_bytes)} per GPU.")
    tie = tie_lines(plan)
    if tie:
        lines.append(" ".join(t.strip() for t in tie) + ".")
    return lines


def blocks(d: ReportData, command: str = "") -> tuple[str, list[Block]]:
    """Title and blocks of the report (``command``: how to reproduce it, shown when given)."""
    plan, best = d.plan, d.plan.best
    p, c = best.prediction, best.candidate
    title = (f"zsim report: {plan.model} on {p.world_size} GPUs ({p.num_nodes} x {p.topology} node"
             f"{'s' if p.num_nodes > 1 else ''})")
    out: list[Block] = [
        Para(f"Predicted by zsim {__version__} with the "
             f"{'calibrated' if d.hardware_calibrated else 'uncalibrated (datasheet and published figures)'} hardware profile "
             f"{p.hardware}; these are simulator predictions, not measurements. Model {plan.model}: "
             f"{plan.num_parameters / 1e9:.2f}B parameters, sequence length {plan.seq_len}, {p.precision}. "
             f"{plan.global_batch_note}."),
        Heading(2, "Recommendation"),
        Para("Use " + _config_line(c, p) + "."),
    ]
    out += [Para(line) for line in _why(d)]
    out += [Para(line) for line in _trust(plan)]
    out += [Para(n) for n in plan.notes[1:]]
    out += [Heading(3, "deepspeed_config_auto.json"),
            Pre(json.dumps(plan.ds_config_auto, indent=2, sort_keys=True))]
    if command:
        out += [Para("Reproduce with:"), Pre(command)]
    out += [Heading(2, "Top configurations"), _ranked_table(d)]
    if plan.rejected:
        out += [Para("Configurations that do not fit (largest memory term, overflow):")]
        out += [Pre("\n".join(line.strip() for line in rejection_summary(plan.rejected)))]
    out += [
        Heading(2, "Memory per stage"),
        Para(f"Per-GPU peak at micro-batch {c.micro_batch}, checkpointing "
             f"{'on' if c.activation_checkpointing else 'off'}, no offload."),
        Figure("memory_by_stage", "Per-GPU memory breakdown per ZeRO stage", figures.memory_by_stage(d.per_stage)),
        _per_stage_table(d),
        Heading(2, "Step time per stage"),
        Figure("time_by_stage", "Step-time breakdown per ZeRO stage (compute, exposed communication per "
               "link type, offload copies, optimizer)", figures.time_by_stage(d.per_stage)),
        Heading(2, "Timeline of one step"),
        Para("The recommended configuration's optimizer step as simulated: one row per stream."),
        Figure("timeline", "Gantt chart of one optimizer step (streams as rows)",
         figures.gantt(d.best.timeline, f"{plan.model} {c.label()}", c.grad_accum)),
        Heading(2, "GPU memory over one step"),
        Para("The recommended configuration's allocated memory per GPU at each moment the memory model "
             "compares (forward, the loss's backward, the first layers backward visits, the end of backward, "
             "the optimizer step), placed on the simulated phases; the peak is marked with what is live."),
        Figure("memory_over_time", "Stacked memory terms per GPU over one optimizer step, peak labelled",
               figures.memory_over_time(d.best)),
        Heading(2, "Scaling with node count"),
        Para(f"Weak scaling: micro-batch {c.micro_batch} and grad-accum {c.grad_accum} per GPU at every node "
             "count, so the global batch grows with the nodes. Dashed black: linear scaling from each stage's "
             "first point; right: the scaling efficiency against it. x on the axis: does not fit."),
        Figure("scaling", "Throughput vs node count per ZeRO stage",
         figures.curves(d.scaling, "nodes", "Scaling with node count", log2x=True, ideal=True, logy=True)),
        Heading(2, "Throughput vs micro-batch"),
        Para(f"Fixed global batch {p.train_batch}: grad-accum = per-GPU batch / micro-batch."),
        Figure("micro_batch", "Throughput vs micro-batch per ZeRO stage",
         figures.curves(d.micro, "micro-batch per GPU", "Throughput vs micro-batch", log2x=True)),
        Heading(2, "Memory_ZeRO3 vs Memory_baseline / N"),
        Para("The guides' Memory_ZeRO3 ~ Memory_baseline / N holds for model states (parameters, gradients, "
             "optimizer states) but not for the peak: activations and communication buffers are not sharded."),
        Figure("memory_vs_n", "ZeRO-3 per-GPU memory against the stage-0 baseline divided by N",
         figures.memory_vs_n(d.memory_vs_n)),
        _memory_table(d),
    ]
    return title, out


def _command(s: RunSettings, global_batch: Any, output: Any) -> str:
    """The `zsim report` command line that writes this report."""
    name = getattr(s.model, "name", s.model) or DEFAULT_MODEL
    parts = ["zsim report", f"--model {name}", f"--topo {s.topo}"]
    for flag, value in (("--gpus", s.gpus), ("--nodes", s.nodes), ("--seq", s.seq), ("--global-batch", global_batch)):
        if value is not None:
            parts.append(f"{flag} {value}")
    return " ".join(parts + [f"--output {output}"])


#: Where `zsim report` writes when --output is not given.
DEFAULT_REPORT_DIR = "reports/report"


def build_report(model: Any = None, topo: str | Path = DEFAULT_TOPO, output: str | Path = DEFAULT_REPORT_DIR, *,
                 gpus: int | None = None, nodes: int | None = None, seq: int | None = None,
                 global_batch: int | None = None, hardware: Any = None, progress: Any = None,
                 scaling_nodes: tuple[int, ...] | None = None) -> ReportFiles:
    """Collect the data, render, and write report.html, report.md, figures/, the config."""
    return write_report(RunSettings(model=model, topo=topo, gpus=gpus, nodes=nodes, seq=seq, hardware=hardware),
                        output, global_batch=global_batch, progress=progress, scaling_nodes=scaling_nodes)


def write_report(settings: RunSettings, output: str | Path = DEFAULT_REPORT_DIR, *, global_batch: int | None = None,
                 progress: Any = None, scaling_nodes: tuple[int, ...] | None = None) -> ReportFiles:
    """:func:`build_report` of run settings."""
    kw = {"scaling_nodes": scaling_nodes} if scaling_nodes else {}
    data = collect_settings(settings, global_batch=global_batch, progress=progress, **kw)
    title, blks = blocks(data, _command(settings, global_batch, output))
    figures = {f"figures/{b.name}.png": b.png for b in blks if isinstance(b, Figure)}
    paths = atomic_write_set(output, {**figures, "report.html": to_html(title, blks),
                                      "report.md": to_markdown(title, blks),
                                      "deepspeed_config_auto.json": dumps_json(data.plan.ds_config_auto)})
    figs, (html_path, md_path, cfg) = tuple(paths[:len(figures)]), paths[len(figures):]
    return ReportFiles(html_path, md_path, figs, cfg, data)
