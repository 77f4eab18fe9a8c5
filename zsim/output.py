"""The output folder a run writes, predicted or measured, in one shared format.

``training_metrics.csv`` (one row per step, the columns of validation/train.py),
``training_curves.png``, ``summary.json`` and ``deepspeed_config_auto.json``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Mapping

from .io import atomic_write_set, dumps_json

#: Columns shared with validation/train.py's measured runs.
CSV_FIELDS = ["step", "phase", "step_time_s", "tokens", "tokens_per_s", "loss", "fwd_s", "bwd_s",
              "opt_s", "peak_allocated_bytes", "peak_reserved_bytes", "step_peak_allocated_bytes",
              "allocated_bytes", "wall_utc"]

DEFAULT_OUTPUT_DIR = "output/deepspeed_metrics"


def _metrics_csv(pred, steps: int) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    tokens = pred.micro_batch * pred.grad_accum * pred.seq_len * pred.world_size
    for step in range(1, steps + 1):
        writer.writerow({"step": step, "phase": "predicted", "step_time_s": f"{pred.step_time_s:.6g}",
                         "tokens": tokens, "tokens_per_s": f"{pred.tokens_per_s:.6g}", "loss": "",
                         "peak_allocated_bytes": pred.peak_memory_bytes,
                         "step_peak_allocated_bytes": pred.peak_memory_bytes})
    return buf.getvalue()


def _curves_png(pred) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    tb = {k: v for k, v in pred.time_breakdown.items() if v > 0}
    ax1.barh(list(tb), list(tb.values()), color="tab:blue")
    ax1.set_xlabel("seconds per optimizer step")
    ax1.set_title(f"step {pred.step_time_s:.3f} s (predicted)")
    mb = {k: v / 2**30 for k, v in pred.memory_breakdown.items() if v > 0}
    ax2.barh(list(mb), list(mb.values()), color="tab:orange")
    ax2.axvline(pred.gpu_memory_bytes / 2**30, color="red", linestyle="--", label="GPU memory")
    ax2.set_xlabel("GiB per GPU")
    ax2.set_title(f"peak {pred.peak_memory_bytes / 2**30:.1f} GiB ({'fits' if pred.fits else 'does not fit'})")
    ax2.legend(loc="lower right")
    fig.suptitle(f"{pred.model} ZeRO-{pred.stage} on {pred.world_size}x {pred.topology}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def write_prediction_outputs(pred, out_dir: str | Path, steps: int = 10) -> list[Path]:
    """Write the four files of a predicted run into ``out_dir`` as one set (atomically)."""
    summary: dict[str, Any] = {"status": "ok", "kind": "predicted", **pred.to_dict()}
    return atomic_write_set(out_dir, {
        "training_metrics.csv": _metrics_csv(pred, steps),
        "training_curves.png": _curves_png(pred),
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
}


def _time_label(key: str) -> str:
    """Human label of a time-breakdown key: exposed_comm_ib_s -> 'exposed comm, IB'."""
    if key in _TIME_LABELS:
        return _TIME_LABELS[key]
    for prefix, what in (("exposed_comm_", "exposed comm"), ("exposed_offload_", "exposed offload copy")):
        if key.startswith(prefix):
            return f"{what}, {key[len(prefix):-2].upper()}"
    return key.removesuffix("_s").replace("_", " ")


def provenance_lines(provenance: Mapping[str, Any] | None, indent: str = "profile      ") -> list[str]:
    """Two lines: the hardware profile (calibrated or datasheet) and its measured error."""
    from .provenance import Provenance

    if not provenance:
        return []
    p = Provenance(**provenance)
    pad = " " * len(indent)
    return [f"{indent}{p.profile}: {p.kind()}",
            f"{pad}measured error: {p.error_text()}"]


def format_prediction(pred, resolved: Mapping[str, Any] | None = None) -> str:
    """The human-readable text `zsim predict` prints."""
    lines = [
        f"model        {pred.model} ({pred.num_parameters / 1e9:.2f}B params)",
        f"cluster      {pred.world_size} GPUs = {pred.num_nodes} node(s) x {pred.gpus_per_node} "
        f"({pred.topology}, hardware {pred.hardware})",
        f"config       ZeRO-{pred.stage}, {pred.precision}, micro-batch {pred.micro_batch}, "
        f"grad-accum {pred.grad_accum}, seq {pred.seq_len}, global batch {pred.train_batch}"
        f" (= {pred.micro_batch} x {pred.grad_accum} x {pred.world_size})",
        f"             offload optimizer {pred.offload_optimizer}, offload param {pred.offload_param}, "
        f"activation checkpointing {'on' if pred.activation_checkpointing else 'off'}",
        *provenance_lines(getattr(pred, "provenance", None)),
        "",
        f"memory/GPU   peak {format_bytes(pred.peak_memory_bytes)} of {format_bytes(pred.gpu_memory_bytes)}"
        f" -> {'FITS' if pred.fits else 'DOES NOT FIT'} (peak during {pred.memory_peak_phase})",
    ]
    for k, v in pred.memory_breakdown.items():
        lines.append(f"  {k:<22}{format_bytes(v):>14}")
    lines += [
        "",
        f"step time    {pred.step_time_s * 1e3:.1f} ms   tokens/s (all GPUs) {pred.tokens_per_s:,.0f}   "
        f"TFLOP/s/GPU {pred.tflops_per_gpu:.1f}   MFU {pred.mfu * 100:.1f}%",
        "             (TFLOP/s and MFU count model FLOPs, recomputation excluded, against the "
        f"{pred.precision} peak)",
    ]
    for k, v in pred.time_breakdown.items():
        lines.append(f"  {_time_label(k):<36}{v * 1e3:>10.2f} ms")
    lines.append("  (exposed = time the GPU's compute stream waited for it; the rows sum to the step)")
    lines.append("")
    lines.append("collectives per optimizer step, per GPU (sizes as DeepSpeed's comms logger counts them)")
    for op, sizes in pred.collectives.items():
        total = sum(int(b) * c for b, c in sizes.items())
        calls = sum(sizes.values())
        lines.append(f"  {op:<26}{calls:>6} call{'s' if calls != 1 else ' '}  {format_bytes(total):>12}")
    for note in pred.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)
