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
from ..parallel.cli import group_lines, parallel_lines
from ..parallel.plan3d import Candidate3D, plan_lines
from ..parallel.predict3d import ParallelAsk
from . import figures
from .data import ReportData, collect_settings
from .layout import Comparison, LayoutReportData, collect_layout
from .render import Block, Figure, Heading, Para, Pre, Table, to_html, to_markdown

GIB = 2**30


@dataclass(frozen=True)
class ReportFiles:
    """What was written."""

    html: Path
    markdown: Path
    figures: tuple[Path, ...]
    ds_config: Path
    data: ReportData | LayoutReportData


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
    if d.comparison is not None:
        out += comparison_blocks(d.comparison)
        out += _against_recommendation(d)
    out += [
        Heading(2, "Memory per stage"),
        Para(f"Per-GPU peak at micro-batch {c.micro_batch}, checkpointing "
             f"{'on' if c.activation_checkpointing else 'off'}, no offload."),
        Figure("memory_by_stage", "Per-GPU memory breakdown per ZeRO stage", figures.memory_by_stage(d.per_stage)),
        _per_stage_table(d),
        *[Para(f"ZeRO-{s} is not predicted: {why}") for s, why in sorted(d.refused.items())],
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
    ]
    if 3 in d.refused:
        out.append(Para(f"Not produced: zsim does not predict ZeRO-3 for this run ({d.refused[3]})."))
    else:
        out += [
            Para("The guides' Memory_ZeRO3 ~ Memory_baseline / N holds for model states (parameters, gradients, "
                 "optimizer states) but not for the peak: activations and communication buffers are not sharded."),
            Figure("memory_vs_n", "ZeRO-3 per-GPU memory against the stage-0 baseline divided by N",
                   figures.memory_vs_n(d.memory_vs_n)),
            _memory_table(d)]
    return title, out


def _layout_text(ask: ParallelAsk, dp: int) -> str:
    """``tp 8 x sp 1 x dp 4 x pp 1`` (with ``+ Megatron SP`` when it is on)."""
    return (f"tp {ask.tp}{' + Megatron SP' if ask.sequence_parallel else ''} x sp {ask.sp} x dp {dp} x pp {ask.pp}")


def _verdict(comp: Comparison) -> str:
    """Which configuration the joint search recommends, against the best of the other kind."""
    ranked = comp.rows
    best = ranked[0]
    tps = best.result.prediction.tokens_per_s
    data_parallel = next((f for f in ranked if f.candidate.ask.data_only), None)
    if best.candidate.ask.data_only:
        other = next((f for f in ranked if not f.candidate.ask.data_only), None)
        tail = (f"; the best 3D layout shown, {other.candidate.label()}, is "
                f"{(1 - other.result.prediction.tokens_per_s / tps) * 100:.1f}% slower" if other
                else "; no 3D layout reaches the top configurations")
        return (f"The joint search recommends {best.candidate.label()}, ZeRO data parallelism without model "
                f"parallelism{tail}.")
    if data_parallel is None:
        return (f"The joint search recommends {best.candidate.label()}; no configuration with ZeRO data "
                "parallelism alone fits in GPU memory.")
    gain = tps / data_parallel.result.prediction.tokens_per_s - 1
    return (f"The joint search recommends {best.candidate.label()}, {gain * 100:.1f}% more tokens/s than the best ZeRO "
            f"data-parallel configuration, {data_parallel.candidate.label()}.")


def _against_recommendation(d: ReportData) -> list[Block]:
    """The data-parallel recommendation against the joint search's: the two searches differ
    (bucket sizes and offload of every fitting configuration are searched by the first only),
    so the report says which is faster rather than leave two answers side by side."""
    if d.comparison is None or not d.comparison.rows:
        return []
    best, joint = d.plan.best, d.comparison.rows[0]
    ratio = best.prediction.tokens_per_s / joint.result.prediction.tokens_per_s - 1
    return [Para(f"The recommendation above ({best.candidate.label()}, {best.prediction.tokens_per_s:,.0f} "
                 f"tokens/s) comes from the data-parallel search, which also searches bucket sizes and offload "
                 f"where the joint search keeps DeepSpeed's default buckets and offloads only what does not fit "
                 f"otherwise: it is {abs(ratio) * 100:.1f}% {'faster' if ratio >= 0 else 'slower'} than the joint "
                 f"search's recommendation.")]


def comparison_blocks(comp: Comparison) -> list[Block]:
    """The section "ZeRO data parallelism against 3D layouts": the joint search's top
    configurations (the best data-parallel one added when none is among them) and which one
    it recommends, or the one sentence saying why there is no comparison."""
    out: list[Block] = [Heading(2, "ZeRO data parallelism against 3D layouts")]
    if comp.plan is None:
        return out + [Para(f"No comparison: {comp.reason}.")]
    plan = comp.plan
    out.append(Para(
        f"The joint search of `zsim plan --search-3d` on the same {plan.world_size} GPUs: {plan.layouts} "
        f"tensor x pipeline x Ulysses layouts with ZeRO stage, optimizer offload, micro-batch and "
        f"checkpointing at global batch {plan.global_batch} sequences of {plan.seq_len} tokens, DeepSpeed's "
        f"default buckets; {plan.fitting} of {plan.candidates} configurations fit, {plan.simulated} simulated. "
        "ZeRO partitions over the data-parallel group (with Ulysses, sequence x data)."))
    header = ("#", "layout", "configuration", "step time", "peak/GPU", "tokens/s", "MFU", "")
    rows = []
    for k, f in enumerate(comp.rows, 1):
        p = f.result.prediction
        mark = "recommended" if k == 1 else ("best data-parallel" if f is comp.data_parallel else "")
        rows.append((k if k <= len(plan.ranked) else "-", _layout_text(f.candidate.ask, f.result.layout.dp),
                     f.candidate.label(), f"{p.step_time_s:.3f} s", format_bytes(p.peak_memory_bytes),
                     f"{p.tokens_per_s:,.0f}", f"{p.mfu * 100:.1f}%", mark))
    return out + [Table(header, tuple(rows)), Para(_verdict(comp))]


def _layout_config_line(c: Candidate3D, dp: int, zero_group: int) -> str:
    """The layout winner in words (what `Use ...` names)."""
    a = c.ask
    return (f"ZeRO-{c.stage} over {zero_group} rank(s)"
            + (f" with the optimizer offloaded to {c.offload_optimizer}" if c.offload_optimizer != "none" else
               ", no offload")
            + f", tensor parallel {a.tp}" + (" with Megatron sequence parallelism" if a.sequence_parallel else "")
            + f", pipeline {a.pp} stage(s), Ulysses {a.sp}, micro-batch {c.micro_batch} x grad-accum "
            f"{c.grad_accum} x data-parallel {dp}, activation checkpointing {'on' if c.checkpointing else 'off'}")


def _layout_header(d: LayoutReportData) -> str:
    """The layout and where its groups sit, stated once at the top."""
    r, lay = d.best, d.best.layout
    groups = "; ".join(" ".join(line.split()) for line in group_lines(d.placement))
    return (f"Layout {_layout_text(d.ask, lay.dp)} = {lay.world_size} ranks (Megatron's rank order: tensor "
            f"fastest, then sequence, data, pipeline); ZeRO partitions over {r.zero_group_size} rank(s), the "
            f"{'sequence x data' if lay.sp > 1 else 'data'}-parallel group. Placement on "
            f"{d.placement.num_nodes} node(s) of {d.placement.gpus_per_node} GPUs: {groups}.")


def _layout_stage_table(d: LayoutReportData) -> Table:
    """One row per ZeRO stage: predicted, or not run (the reason follows the table)."""
    rows = []
    for row in d.per_stage:
        if row.result is None:
            rows.append((f"ZeRO-{row.stage}", "not run", "", "", "", ""))
            continue
        p = row.result.prediction
        rows.append((f"ZeRO-{row.stage}", "yes" if p.fits else "no", format_bytes(p.peak_memory_bytes),
                     f"{p.step_time_s:.3f} s", f"{p.tokens_per_s:,.0f}", f"{p.exposed_comm_s:.3f} s"))
    return Table(("stage", "fits", "peak/GPU", "step time", "tokens/s", "exposed comm"), tuple(rows))


def _not_for_layout(what: str) -> Para:
    """The one sentence of a section the data-parallel path has and a layout does not."""
    return Para(f"Not produced for this layout: {what}.")


def layout_blocks(d: LayoutReportData, command: str = "", predict_command: str = "") -> tuple[str, list[Block]]:
    """Title and blocks of the report for one tensor/pipeline/sequence layout (the same
    sections as the data-parallel report; those that exist for data parallelism only say so)."""
    winner, r = d.winner, d.best
    p, c, lay = r.prediction, d.winner.candidate, r.layout
    plan = d.plan
    title = (f"zsim report: {p.model} on {p.world_size} GPUs ({p.num_nodes} x {p.topology} node"
             f"{'s' if p.num_nodes > 1 else ''}), {_layout_text(d.ask, lay.dp)}")
    stages = {row.stage: row.result.prediction for row in d.per_stage if row.result is not None}
    out: list[Block] = [
        Para(f"Predicted by zsim {__version__} with the "
             f"{'calibrated' if d.hardware_calibrated else 'uncalibrated (datasheet and published figures)'} "
             f"hardware profile {p.hardware}; these are simulator predictions, not measurements. Model {p.model}: "
             f"{p.num_parameters / 1e9:.2f}B parameters, sequence length {plan.seq_len}, {p.precision}. "
             f"Global batch {plan.global_batch} sequences."),
        Para(_layout_header(d)),
        Heading(2, "Recommendation"),
        Para("Use " + _layout_config_line(c, lay.dp, r.zero_group_size) + "."),
        Para(f"Why: it has the highest predicted throughput ({p.tokens_per_s:,.0f} tokens/s, "
             f"{p.tflops_per_gpu:.0f} TFLOP/s per GPU, MFU {p.mfu * 100:.1f}%) of the {plan.fitting} ZeRO stage/"
             f"offload/batch/checkpointing choices of this layout that fit (of {plan.candidates}), at a peak of "
             f"{format_bytes(p.peak_memory_bytes)} of {format_bytes(p.gpu_memory_bytes)} per GPU (the worst "
             f"pipeline stage's)."),
    ]
    if d.provenance:
        text = d.provenance.describe()
        out.append(Para(text[0].upper() + text[1:] + "."))
    out += [Para(n) for n in p.notes]
    out += [Heading(3, "deepspeed_config_auto.json"),
            Para("The ZeRO part of the run, as `zsim predict` writes it for this layout; tensor and pipeline "
                 "degrees are set where the model is built (Megatron, PipelineModule), not in this file."),
            Pre(json.dumps(dict(p.ds_config_resolved), indent=2, sort_keys=True))]
    if predict_command:
        out += [Para("The same prediction from `zsim predict`:"), Pre(predict_command)]
    if command:
        out += [Para("Reproduce with:"), Pre(command)]
    out += [Heading(2, "Top configurations"), Pre("\n".join(plan_lines(plan))),
            *comparison_blocks(d.comparison),
            Heading(2, "Pipeline stages and the split's communication"),
            Pre("\n".join(parallel_lines(r)).strip("\n")),
            Heading(2, "Memory per stage"),
            Para(f"Per-GPU peak of the worst pipeline stage at micro-batch {c.micro_batch}, grad-accum "
                 f"{c.grad_accum}, checkpointing {'on' if c.checkpointing else 'off'}, no offload, under this "
                 "layout (each row is `zsim predict` with these flags and --stage)."),
            Figure("memory_by_stage", "Per-GPU memory breakdown per ZeRO stage", figures.memory_by_stage(stages)),
            _layout_stage_table(d)]
    out += [Para(f"ZeRO-{row.stage} is not predicted: {row.refusal}") for row in d.per_stage if row.refusal]
    out += [Heading(2, "Step time per stage"),
            Figure("time_by_stage", "Step-time breakdown per ZeRO stage (compute, exposed communication, "
                   "pipeline bubble, reduction and optimizer step)", figures.time_by_stage(stages)),
            Heading(2, "Timeline of one step")]
    if lay.pp == 1:
        out += [Para("The recommended configuration's optimizer step on the representative rank (tensor, "
                     "sequence and data coordinate 0): one row per stream; the split's collectives run on the "
                     "compute stream."),
                Figure("timeline", "Gantt chart of one optimizer step (streams as rows)",
                       figures.gantt(p.timeline, f"{p.model} {c.label()}", c.grad_accum)),
                Heading(2, "GPU memory over one step"),
                Para("The recommended configuration's allocated memory per GPU over one step, as the memory "
                     "model sees it on the rank's shard; the peak is marked with what is live."),
                Figure("memory_over_time", "Stacked memory terms per GPU over one optimizer step, peak labelled",
                       figures.memory_over_time(p))]
    else:
        out += [_not_for_layout("a pipeline's step is composed from each stage's simulated micro-batch by "
                                "DeepSpeed's TrainSchedule, so there is no one simulated timeline of it (the "
                                "stage table above gives each stage's times)"),
                Heading(2, "GPU memory over one step"),
                _not_for_layout("under a pipeline the memory over time would be one stage's micro-batch, not "
                                "the step; the stage table above gives each stage's peak")]
    out += [Heading(2, "Scaling with node count"),
            _not_for_layout(f"the node-count sweep exists for the data-parallel path only; `zsim sweep --model "
                            f"{p.model} --topo {p.topology} --seq {plan.seq_len} --tp {d.ask.tp} --pp {d.ask.pp} "
                            f"--sp {d.ask.sp} --nodes 1,2,4` predicts this layout at other node counts"),
            Heading(2, "Throughput vs micro-batch"),
            _not_for_layout("the micro-batch sweep exists for the data-parallel path only; the top configurations "
                            "above rank this layout's micro-batches"),
            Heading(2, "Memory_ZeRO3 vs Memory_baseline / N"),
            _not_for_layout("it compares ZeRO-3 with the baseline over N data-parallel GPUs, without tensor "
                            "or pipeline parallelism")]
    return title, out


def _place_flags(s: RunSettings) -> list[str]:
    """--model, --topo, --gpus/--nodes, --hardware (a named or file profile) of ``s``."""
    parts = [f"--model {getattr(s.model, 'name', s.model) or DEFAULT_MODEL}", f"--topo {s.topo}"]
    for flag, value in (("--gpus", s.gpus), ("--nodes", s.nodes)):
        if value is not None:
            parts.append(f"{flag} {value}")
    if isinstance(s.hardware, (str, Path)):
        parts.append(f"--hardware {s.hardware}")
    return parts


def _ask_flags(ask: ParallelAsk | None, s: RunSettings) -> list[str]:
    """--tp/--pp/--sp/--sequence-parallel and --ep as given."""
    parts = [ask.flags()] if ask is not None and not ask.data_only else []
    return parts + ([f"--ep {s.ep}"] if s.ep is not None else [])


def _predict_command(s: RunSettings, seq: int, c: Candidate3D) -> str:
    """The `zsim predict` command line of a layout's configuration (the report's winner)."""
    parts = ["zsim predict", *_place_flags(s), f"--seq {seq}", c.ask.flags(), f"--stage {c.stage}",
             f"--micro-batch {c.micro_batch}", f"--grad-accum {c.grad_accum}"]
    if c.checkpointing:
        parts.append("--activation-checkpointing")
    if c.offload_optimizer != "none":
        parts.append(f"--offload-optimizer {c.offload_optimizer}")
    return " ".join(p for p in parts if p)


def _command(s: RunSettings, global_batch: Any, output: Any, ask: ParallelAsk | None = None) -> str:
    """The `zsim report` command line that writes this report."""
    parts = ["zsim report", *_place_flags(s)]
    for flag, value in (("--seq", s.seq), ("--global-batch", global_batch)):
        if value is not None:
            parts.append(f"{flag} {value}")
    return " ".join(parts + _ask_flags(ask, s) + [f"--output {output}"])


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
                 progress: Any = None, scaling_nodes: tuple[int, ...] | None = None,
                 ask: ParallelAsk | None = None, compare: bool = True) -> ReportFiles:
    """:func:`build_report` of run settings; ``ask``: a tensor/pipeline/sequence layout (None or
    all degrees 1: ZeRO data parallelism); ``compare``: include the joint search's section."""
    command = _command(settings, global_batch, output, ask)
    data: ReportData | LayoutReportData
    if ask is not None and not ask.data_only:
        data = collect_layout(settings, ask, global_batch=global_batch)
        title, blks = layout_blocks(data, command, _predict_command(settings, data.plan.seq_len,
                                                                    data.winner.candidate))
        ds_config = dict(data.best.prediction.ds_config_resolved)
    else:
        kw = {"scaling_nodes": scaling_nodes} if scaling_nodes else {}
        data = collect_settings(settings, global_batch=global_batch, progress=progress, compare=compare, **kw)
        title, blks = blocks(data, command)
        ds_config = data.plan.ds_config_auto
    figures = {f"figures/{b.name}.png": b.png for b in blks if isinstance(b, Figure)}
    paths = atomic_write_set(output, {**figures, "report.html": to_html(title, blks),
                                      "report.md": to_markdown(title, blks),
                                      "deepspeed_config_auto.json": dumps_json(ds_config)})
    figs, (html_path, md_path, cfg) = tuple(paths[:len(figures)]), paths[len(figures):]
    return ReportFiles(html_path, md_path, figs, cfg, data)
