"""Human-readable output of `zsim plan` and `zsim capacity`."""

from __future__ import annotations

import textwrap
from collections import defaultdict
from typing import Any, Sequence

from ..output import format_bytes, format_count, format_seconds
from .search import gpu_seconds_per_token


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths)))
    return [fmt(header), fmt(["-" * w for w in widths]), *[fmt(r) for r in rows]]


def _offload(c) -> str:
    return f"{c.offload_optimizer}/{c.offload_param}"


def side_by_side(ranked: Sequence[Any]) -> list[str]:
    """The top configurations as columns, one row per setting and prediction (text lines)."""
    return _table(*side_by_side_cells(ranked))


def side_by_side_cells(ranked: Sequence[Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of :func:`side_by_side`, for other renderers."""
    header = ["setting"] + [f"#{i + 1}" for i in range(len(ranked))]
    def row(name, f):
        return [name] + [f(r) for r in ranked]
    rows = [
        row("ZeRO stage", lambda r: str(r.candidate.stage)),
        row("offload opt/param", lambda r: _offload(r.candidate)),
        row("micro-batch", lambda r: str(r.candidate.micro_batch)),
        row("grad-accum", lambda r: str(r.candidate.grad_accum)),
        row("global batch", lambda r: str(r.prediction.train_batch)),
        row("act. checkpointing", lambda r: "on" if r.candidate.activation_checkpointing else "off"),
        row("overlap_comm", lambda r: ("on" if r.candidate.overlap_comm else "off") if r.candidate.stage else "-"),
        row("reduce bucket", lambda r: format_count(r.candidate.reduce_bucket_size) if r.candidate.stage else "-"),
        row("prefetch bucket", lambda r: format_count(r.candidate.prefetch_bucket_size)
            if r.candidate.stage == 3 else "-"),
        row("step time", lambda r: format_seconds(r.prediction.step_time_s)),
        row("tokens/s", lambda r: f"{r.prediction.tokens_per_s:,.0f}"),
        row("GPU time/token", lambda r: format_seconds(gpu_seconds_per_token(r.prediction))),
        row("TFLOP/s/GPU", lambda r: f"{r.prediction.tflops_per_gpu:.1f}"),
        row("MFU", lambda r: f"{r.prediction.mfu * 100:.1f}%"),
        row("exposed comm", lambda r: format_seconds(r.prediction.exposed_comm_s)),
        row("peak memory/GPU", lambda r: format_bytes(r.prediction.peak_memory_bytes)),
    ]
    return header, rows


def rejection_summary(rejected: Sequence[Any]) -> list[str]:
    """One line per stage/offload group: how many do not fit and the closest miss's reason."""
    groups: dict[tuple, list] = defaultdict(list)
    for r in rejected:
        groups[(r.candidate.stage, _offload(r.candidate))].append(r)
    lines = []
    for (stage, off), items in sorted(groups.items()):
        closest = min(items, key=lambda r: r.memory.overflow_bytes)
        lines.append(f"  ZeRO-{stage} offload {off}: {len(items)} do not fit; closest "
                     f"({closest.candidate.label()}): {closest.reason()}")
    return lines


#: How the ranking is named in the text.
METRIC_TITLES = {"tokens-per-s": "tokens/s (highest first)", "memory": "peak memory per GPU (lowest first)",
                 "cost-per-token": "GPU-seconds per token (fewest first)"}


def tie_lines(result: Any) -> list[str]:
    """The tie warning when runners-up are within the model's measured error of #1."""
    if not result.ties:
        return []
    what = "peak memory" if result.metric == "memory" else "step time"
    measured = (result.provenance is not None and
                (result.provenance.peak_memory_mape_pct if result.metric == "memory"
                 else result.provenance.step_time_mape_pct) is not None)
    source = "the profile's measured MAPE" if measured else "assumed: the profile's error is not measured"
    ranks = ", ".join(f"#{i}" for i in result.ties)
    return [f"tie within the model's error: {ranks} within {result.tie_band_pct:.1f} % of #1's predicted "
            f"{what}", f"  ({source}); measure them before choosing"]


def format_plan(result: Any) -> str:
    """The text `zsim plan` prints."""
    lines = [f"plan: {result.model} ({result.num_parameters / 1e9:.2f}B params) on {result.world_size} GPUs "
             f"({result.topology}), seq {result.seq_len}"]
    if result.user_config:
        lines.append(f"user config: {result.user_config} (fixed values kept; \"auto\"/absent values searched)")
    if result.provenance:
        lines.append(result.provenance.describe())
    lines.append(result.global_batch_note)
    if result.usable_memory_bytes:
        lines.append(f"memory headroom {result.memory_headroom_pct:.1f} %: a configuration fits when its predicted "
                     f"peak is at most {format_bytes(result.usable_memory_bytes)} per GPU (--memory-headroom)")
    o = result.outcome
    lines.append(f"searched {result.space_size} configurations: {o.structures} stage/offload/batch/"
                 f"checkpointing structures, {o.fitting} fit, {len(result.rejected)} rejected for memory, "
                 f"{o.pruned} dropped by a lower bound, {o.simulations} simulations")
    lines.append("")
    if result.ranked:
        lines.append(f"top {len(result.ranked)} by {METRIC_TITLES[result.metric]}:")
        lines += side_by_side(result.ranked)
        lines += tie_lines(result)
    else:
        lines.append("no configuration fits in GPU memory")
    if result.rejected:
        lines += ["", "do not fit (largest memory term and overflow):"] + rejection_summary(result.rejected)
    if result.changes:
        lines += ["", "deepspeed_config_auto.json: changes from your config" if result.user_config
                  else "deepspeed_config_auto.json: values chosen"]
        lines += [f"  {c.describe()}" for c in result.changes]
    lines += [f"note: {n}" for n in result.notes[1:]]
    # Lines longer than the terminal (rejections, notes) wrap; the table is narrower already.
    return "\n".join(part for line in lines
                     for part in (_wrap(line, "      " if line.startswith("note: ") else "    ")
                                  if len(line) > TEXT_COLUMNS else [line]))


#: Width of the text outputs.
TEXT_COLUMNS = 100


def _wrap(line: str, indent: str = "    ") -> list[str]:
    """``line`` wrapped at :data:`TEXT_COLUMNS` (continuations indented)."""
    lead = line[:len(line) - len(line.lstrip())]
    return textwrap.wrap(line, TEXT_COLUMNS, initial_indent="", subsequent_indent=lead + indent,
                         break_on_hyphens=False) or [""]


def format_capacity(res: Any) -> str:
    """The text `zsim capacity` prints (at most :data:`TEXT_COLUMNS` wide)."""
    cols = sorted({r.activation_checkpointing for r in res.rows})
    header = (["stage / offload"] + [f"ckpt {'on' if c else 'off'}" for c in cols]
              + ["host mem/node", "next size up (ckpt off)"])
    by_row: dict[str, dict] = defaultdict(dict)
    for r in res.rows:
        by_row[r.label][r.activation_checkpointing] = r
    rows = []
    for label, cells in by_row.items():
        first = cells[cols[0]]
        last = cells[cols[-1]]
        host = f"{last.host_bytes_per_node / 2**40:.2f} TiB" if last.host_bytes_per_node else "-"
        rows.append([label] + [c.capacity_text(short=True) for c in (cells[k] for k in cols)]
                    + [host, first.limit_short or first.limit])
    lines = [f"capacity: largest Llama-family model per GPU memory {format_bytes(res.gpu_memory_bytes)} on "
             f"{res.world_size} GPUs ({res.topology}), seq {res.seq_len}, micro-batch {res.micro_batch}", ""]
    lines += _table(header, rows)
    if any(r.at_ladder_end for r in res.rows):
        lines.append("\u2265 N: N is the largest model tried and it fits; the real limit is higher")
    lines.append("next size up: by how much the next larger model overflows the GPU, and its largest term")
    lines += ["", "rule of thumb for 8x A100-80G (ZeRO guides) vs zsim on this cluster:"]
    lines += [f"  {line}" for line in res.rule_of_thumb]
    have = res.host_memory_bytes_per_node
    lines += ["", "host mem/node: CPU memory the offloaded states of the largest model in the "
              f"ckpt {'on' if cols[-1] else 'off'} column need "
              "per node (DeepSpeed's CPU buffers, zsim.memory.host_memory); "
              + (f"a node of {res.topology} has {have / 2**40:.2f} TiB (node.host), and a model whose "
                 "states need more does not fit." if have > 0 else
                 "the topology does not give the node's host memory (node.host), so check it against your nodes."),
              f"family: {res.family_note}"]
    table = set(range(2, 2 + len(rows) + 2))     # table lines are sized to fit: never wrapped
    return "\n".join(w for i, line in enumerate(lines) for w in ([line] if i in table else _wrap(line)))
