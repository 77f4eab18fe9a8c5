"""The output folder of a prediction: ``training_metrics.csv`` (the simulated step per
micro-step: forward, backward and optimizer-step wall times), ``training_curves.png`` (time
per phase, the memory breakdown at the peak and memory over the step, :mod:`zsim.curves`),
``summary.json`` and ``deepspeed_config_auto.json``.

Measured runs (validation/train.py) write the same file names with one row per measured
step; a prediction has one simulated step, so its CSV is that step split per micro-step.
"""

from __future__ import annotations

import csv
import io
import textwrap
from pathlib import Path
from typing import Any, Mapping, Sequence

from .collectives.base import bus_factor
from .io import atomic_write_set, dumps_json
from .ops import LOGGER_TO_COLLECTIVE
from .provenance import Provenance

#: Columns of a predicted ``training_metrics.csv`` (one row per micro-step; times in ms from
#: the start of the optimizer step, phases timed as train.py's CUDA events time them).
CSV_FIELDS = ["micro_step", "start_ms", "forward_ms", "backward_ms", "optimizer_step_ms", "wall_ms",
              "tokens", "peak_memory_bytes"]

DEFAULT_OUTPUT_DIR = "output/deepspeed_metrics"

#: The files a prediction writes, in the order predict's text names them.
OUTPUT_FILES = ("training_metrics.csv", "training_curves.png", "summary.json", "deepspeed_config_auto.json")

#: Readable names of the memory-breakdown keys (the JSON keeps the keys).
MEMORY_LABELS = {
    "params": "parameters", "grads": "gradients", "optimizer_states": "optimizer states",
    "buffers": "ZeRO buffers", "activations": "activations", "logits_loss": "logits and loss",
    "allocator_overhead": "allocator overhead",
}

_PHASE_COLUMNS = {"forward": "forward_ms", "backward": "backward_ms", "step": "optimizer_step_ms"}


def micro_step_rows(pred, windows: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per micro-step: its start and its forward/backward/step wall times in ms."""
    rows: dict[int, dict[str, Any]] = {}
    tokens = pred.micro_batch * pred.seq_len * pred.world_size
    for w in windows:
        if w.phase not in _PHASE_COLUMNS or w.micro_step is None:
            continue
        row = rows.setdefault(w.micro_step, {"micro_step": w.micro_step, "start_ms": None, "forward_ms": 0.0,
                                             "backward_ms": 0.0, "optimizer_step_ms": 0.0,
                                             "tokens": tokens, "peak_memory_bytes": pred.peak_memory_bytes})
        row[_PHASE_COLUMNS[w.phase]] += w.wall_s * 1e3
        if w.start_s is not None:
            start = w.start_s * 1e3
            row["start_ms"] = start if row["start_ms"] is None else min(row["start_ms"], start)
    out = []
    for m in sorted(rows):
        r = rows[m]
        r["wall_ms"] = r["forward_ms"] + r["backward_ms"] + r["optimizer_step_ms"]
        out.append(r)
    return out


def _metrics_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else ("" if v is None else v))
                         for k, v in r.items()})
    return buf.getvalue()


def wire_bytes_per_gpu(ops: Sequence[Any], world_size: int, gpus_per_node: int) -> dict[str, float]:
    """Bytes one GPU sends per comms-logger op in one step (nccl-tests' bus convention:
    2(n-1)/n of the buffer for all_reduce, (n-1)/n for all_gather/reduce_scatter), n being
    the ranks of the op's group (:meth:`zsim.groups.Group.size`)."""
    out: dict[str, float] = {}
    for op in ops:
        if op.kind == "collective":
            n = op.group.size(world_size, gpus_per_node)
            sent = bus_factor(LOGGER_TO_COLLECTIVE[op.collective], n) * op.buffer_bytes if n > 1 else 0.0
            out[op.collective] = out.get(op.collective, 0.0) + sent
    return out


def wire_bytes_per_message(ops: Sequence[Any], world_size: int,
                           gpus_per_node: int) -> dict[tuple[str, int], float]:
    """:func:`wire_bytes_per_gpu` split by comms-logger row: ``{(op, message_bytes): bytes}``,
    what one GPU sends in the step for all calls of that op and logged size."""
    out: dict[tuple[str, int], float] = {}
    for op in ops:
        if op.kind == "collective":
            n = op.group.size(world_size, gpus_per_node)
            sent = bus_factor(LOGGER_TO_COLLECTIVE[op.collective], n) * op.buffer_bytes if n > 1 else 0.0
            key = (op.collective, op.message_bytes)
            out[key] = out.get(key, 0.0) + sent
    return out


def write_prediction_outputs(pred, out_dir: str | Path) -> list[Path]:
    """Write the four files of a prediction into ``out_dir`` as one set (atomically).

    ``pred`` must keep its timeline and ops (``predict(..., keep_timeline=True)``)."""
    # Not at the top: zsim.diagnose imports zsim.calibrate (numpy), and zsim.output is imported
    # by every command (plan and capacity format bytes with it).
    from .diagnose.predicted import predicted_side

    from .curves import training_curves_png

    windows = predicted_side(pred).windows
    rows = micro_step_rows(pred, windows)
    summary: dict[str, Any] = {"status": "ok", "kind": "predicted", **pred.to_dict()}
    return atomic_write_set(out_dir, {
        "training_metrics.csv": _metrics_csv(rows),
        "training_curves.png": training_curves_png(pred, rows, windows),
        "summary.json": dumps_json(summary),
        "deepspeed_config_auto.json": dumps_json(dict(pred.ds_config_resolved)),
    })


def format_bytes(n: float) -> str:
    """Human-readable GiB/MiB (KiB or B below a MiB, so tiny messages do not read as 0.0 MiB)."""
    if abs(n) >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    if abs(n) >= 2**20 or n == 0:
        return f"{n / 2**20:.1f} MiB"
    if abs(n) >= 2**10:
        return f"{n / 2**10:.1f} KiB"
    return f"{int(n)} B"


def format_seconds(seconds: float) -> str:
    """Human-readable time: ``1.30 s``, ``5.43 ms``, ``216 µs``, ``12.0 ns``."""
    a = abs(seconds)
    if a >= 100:
        return f"{seconds:,.0f} s"
    if a >= 1 or seconds == 0:
        return f"{seconds:.2f} s"
    for scale, unit in ((1e3, "ms"), (1e6, "µs"), (1e9, "ns")):
        if a * scale >= 1 or unit == "ns":
            v = seconds * scale
            return f"{v:.0f} {unit}" if abs(v) >= 100 else f"{v:.2f} {unit}"
    return f"{seconds:.3g} s"


def format_count(n: float) -> str:
    """Element counts as people write them: ``5e7 -> 50M``, ``2e8 -> 200M``, ``1.5e9 -> 1.5G``."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:g}"


#: How the text output names the time-breakdown keys of the JSON (which keep their units).
_TIME_LABELS = {
    "compute_s": "compute (GPU kernels)",
    "optimizer_s": "optimizer step (GPU)",
    "cpu_optimizer_s": "CPU optimizer, exposed",
    "host_s": "host-bound (Python dispatch, hooks)",
    "framework_s": "engine bookkeeping",
    "idle_s": "idle",
    "exposed_comm_split_s": "exposed comm, TP/Ulysses collectives",
    "pipeline_pass_other_s": "pipeline passes: host and waits",
    "pipeline_bubble_s": "pipeline bubble (stage idle)",
    "reduce_and_step_s": "gradient reduction + optimizer step",
}


#: How the text output spells the link types and copy directions inside those keys.
_PART_LABELS = {"nvlink": "NVLink", "nvswitch": "NVSwitch", "ib": "InfiniBand", "pcie": "PCIe",
                "roce": "RoCE", "h2d": "host to device", "d2h": "device to host",
                "d2h_pageable": "device to pageable host memory"}


def time_label(key: str) -> str:
    """Human label of a time-breakdown key: exposed_comm_ib_s -> 'exposed comm, InfiniBand'."""
    if key in _TIME_LABELS:
        return _TIME_LABELS[key]
    for prefix, what in (("exposed_comm_", "exposed comm"), ("exposed_offload_", "exposed offload copy")):
        if key.startswith(prefix):
            part = key[len(prefix):-2]
            return f"{what}, {_PART_LABELS.get(part, part.upper())}"
    return key.removesuffix("_s").replace("_", " ")


def provenance_lines(provenance: Mapping[str, Any] | None, indent: str = "profile      ") -> list[str]:
    """Two lines: the hardware profile (calibrated or datasheet) and its measured error."""

    if not provenance:
        return []
    p = Provenance(**provenance)
    pad = " " * len(indent)
    return [f"{indent}{p.profile}: {p.kind()}",
            f"{pad}measured error: {p.error_text()}"]


def format_prediction(pred, resolved: Mapping[str, Any] | None = None,
                      wire_bytes: Mapping[str, float] | None = None, data_parallel: int | None = None) -> str:
    """The human-readable text `zsim predict` prints (``wire_bytes``: :func:`wire_bytes_per_gpu`;
    ``data_parallel``: the data-parallel ranks the batch is split over when not all GPUs)."""
    lines = [
        f"model        {pred.model} ({pred.num_parameters / 1e9:.2f}B params)",
        f"cluster      {pred.world_size} GPUs = {pred.num_nodes} node(s) x {pred.gpus_per_node} "
        f"({pred.topology}, hardware {pred.hardware})",
        f"config       ZeRO-{pred.stage}, {pred.precision}, micro-batch {pred.micro_batch}, "
        f"grad-accum {pred.grad_accum}, seq {pred.seq_len}, global batch {pred.train_batch}"
        f" (= {pred.micro_batch} x {pred.grad_accum} x {pred.world_size if data_parallel is None else data_parallel})",
        f"             offload optimizer {pred.offload_optimizer}, offload param {pred.offload_param}, "
        f"activation checkpointing {'on' if pred.activation_checkpointing else 'off'}",
        *provenance_lines(getattr(pred, "provenance", None)),
        "",
        f"memory/GPU   peak {format_bytes(pred.peak_memory_bytes)} of {format_bytes(pred.gpu_memory_bytes)}"
        f" -> {'FITS' if pred.fits else 'DOES NOT FIT'} (peak during {pred.memory_peak_phase})",
    ]
    for k, v in pred.memory_breakdown.items():
        lines.append(f"  {MEMORY_LABELS.get(k, k.replace('_', ' ')):<22}{format_bytes(v):>14}")
    lines.append("  (ZeRO buffers: gradient buckets, gathered ZeRO-3 parameters and flat copies;")
    lines.append("   allocator overhead: the profile's fraction of the peak for what the terms above miss)")
    lines += [
        "",
        f"step time    {format_seconds(pred.step_time_s)}   tokens/s (all GPUs) {pred.tokens_per_s:,.0f}   "
        f"TFLOP/s/GPU {pred.tflops_per_gpu:.1f}   MFU {pred.mfu * 100:.1f}%",
        "             (TFLOP/s and MFU count model FLOPs, recomputation excluded, against the "
        f"{pred.precision} peak)",
    ]
    for k, v in pred.time_breakdown.items():
        lines.append(f"  {time_label(k):<36}{format_seconds(v):>12}")
    lines.append("  (exposed = time the GPU's compute stream waited for it; the rows sum to the step;")
    lines.append("   engine bookkeeping = per-step engine time outside the simulated ops: the profile's"
                 " step_fixed_s)")
    lines.append("")
    lines.append("collectives per optimizer step, per GPU (logged: sizes as DeepSpeed's comms logger counts them"
                 + (";" if wire_bytes is not None else ")"))
    if wire_bytes is not None:
        lines.append("  on the wire: bytes one GPU sends, nccl-tests' bus convention)")
    for op, sizes in pred.collectives.items():
        total = sum(int(b) * c for b, c in sizes.items())
        calls = sum(sizes.values())
        wire = f"  {format_bytes(wire_bytes.get(op, 0.0)):>12} on the wire" if wire_bytes is not None else ""
        lines.append(f"  {op:<26}{calls:>6} call{'s' if calls != 1 else ' '}  {format_bytes(total):>12} logged"
                     + wire)
    for note in pred.notes:
        lines += textwrap.wrap(note, 100, initial_indent="note: ", subsequent_indent="      ")
    return "\n".join(lines)
