"""``training_curves.png`` of a prediction: time per phase, the memory breakdown at the peak,
and GPU memory over the optimizer step as the memory model sees it (:mod:`zsim.memory_curve`),
its peak labelled with what is live.

matplotlib is imported inside :func:`training_curves_png` (it takes ~0.5 s to import and only
this PNG needs it); the Agg backend must be chosen before pyplot is imported.
"""

from __future__ import annotations

import io
from typing import Any, Mapping, Sequence

from .memory_curve import CurvePoint, memory_curve, peak_point
from .output import MEMORY_LABELS, format_seconds

GIB = 2 ** 30

#: One colour per memory term, the same in the bar chart and the curve.
TERM_COLOURS = {
    "params": "#1f77b4", "grads": "#2ca02c", "optimizer_states": "#9467bd", "buffers": "#8c564b",
    "activations": "#ff7f0e", "logits_loss": "#d62728", "allocator_overhead": "#7f7f7f",
}
_PHASE_SHADE = {"forward": "#e8f0fb", "backward": "#fdf0e2", "step": "#eeeeee"}


def _label(key: str) -> str:
    return MEMORY_LABELS.get(key, key.replace("_", " "))


def _phase_totals_ms(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    totals = {"forward": 0.0, "backward": 0.0, "optimizer step": 0.0}
    for r in rows:
        totals["forward"] += r["forward_ms"]
        totals["backward"] += r["backward_ms"]
        totals["optimizer step"] += r["optimizer_step_ms"]
    return totals


def _barh(ax, labels: list[str], values: list[float], colours, unit: str) -> None:
    bars = ax.barh(labels, values, color=colours)
    ax.invert_yaxis()
    top = max(values, default=0.0) or 1.0
    for bar, v in zip(bars, values):
        ax.text(bar.get_width() + top * 0.01, bar.get_y() + bar.get_height() / 2, f"{v:,.1f} {unit}",
                va="center", fontsize=9)
    ax.set_xlim(0, top * 1.3)


def _peak_text(point: CurvePoint) -> str:
    """What is live at the peak, largest first (terms under 1 % of the peak left out)."""
    m = point.moment
    terms = sorted(((v, k) for k, v in m.breakdown.items() if v >= 0.01 * m.total_bytes), reverse=True)
    lines = [f"peak {m.total_bytes / GIB:.1f} GiB: {m.name}, micro-step {point.micro_step}"]
    lines += [f"{_label(k)} {v / GIB:.1f} GiB" for v, k in terms]
    return "\n".join(lines)


def _memory_over_time(ax, pred, windows) -> None:
    """Stacked memory terms over the step, phases shaded, the peak marked and explained."""
    points = memory_curve(pred.memory_moments, windows)
    if not points:
        ax.text(0.5, 0.5, "no memory moments (predict with keep_timeline=True)", ha="center",
                transform=ax.transAxes)
        return
    for w in windows:
        if w.phase in _PHASE_SHADE and w.start_s is not None and w.wall_s > 0:
            ax.axvspan(w.start_s * 1e3, (w.start_s + w.wall_s) * 1e3, color=_PHASE_SHADE[w.phase], lw=0)
    keys = [k for k in TERM_COLOURS if any(p.moment.breakdown.get(k, 0) for p in points)]
    t_ms = [p.time_s * 1e3 for p in points]
    ax.stackplot(t_ms, [[p.moment.breakdown.get(k, 0) / GIB for p in points] for k in keys],
                 labels=[_label(k) for k in keys], colors=[TERM_COLOURS[k] for k in keys], alpha=0.85)
    peak = peak_point(points)
    x, y = peak.time_s * 1e3, peak.moment.total_bytes / GIB
    ax.plot([x], [y], marker="v", color="black", markersize=8)
    ax.annotate(_peak_text(peak), (x, y), xytext=(12, -6), textcoords="offset points", fontsize=9,
                va="top", bbox={"boxstyle": "round", "fc": "white", "ec": "#999999", "alpha": 0.9})
    capacity = pred.gpu_memory_bytes / GIB
    top = max(y, capacity if capacity < 1.5 * y else 0.0)
    if capacity < 1.5 * y:
        ax.axhline(capacity, color="black", ls="--", lw=1)
        ax.text(t_ms[0], capacity, f" GPU memory {capacity:.0f} GiB", va="bottom", fontsize=9)
    ax.set_ylim(0, top * 1.15)
    ax.set_xlim(t_ms[0], t_ms[-1])
    ax.set_xlabel("time in the optimizer step (ms); shaded: forward (blue), backward (orange), "
                  "optimizer step (grey)")
    ax.set_ylabel("GiB allocated per GPU")
    ax.set_title("GPU memory over one optimizer step, as the memory model sees it")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9)


def training_curves_png(pred, rows: Sequence[Mapping[str, Any]], windows) -> bytes:
    """The PNG: time per phase and memory at the peak (top), memory over the step (bottom).

    ``rows`` are :func:`zsim.output.micro_step_rows`, ``windows`` the step's phase windows."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 8))
    grid = fig.add_gridspec(2, 2, height_ratios=(1, 1.25))
    ax1, ax2, ax3 = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, :])
    phases = _phase_totals_ms(rows)
    _barh(ax1, list(phases), list(phases.values()), "tab:blue", "ms")
    ax1.set_xlabel(f"milliseconds per optimizer step ({pred.grad_accum} micro-step"
                   f"{'s' if pred.grad_accum != 1 else ''} summed)")
    ax1.set_title(f"step {format_seconds(pred.step_time_s)}, {pred.tokens_per_s:,.0f} tokens/s (predicted)")
    mem = {k: v / GIB for k, v in pred.memory_breakdown.items() if v > 0}
    _barh(ax2, [_label(k) for k in mem], list(mem.values()), [TERM_COLOURS.get(k, "tab:orange") for k in mem],
          "GiB")
    ax2.set_xlabel(f"GiB per GPU at the peak (during {pred.memory_peak_phase})")
    ax2.set_title(f"peak {pred.peak_memory_bytes / GIB:.1f} of {pred.gpu_memory_bytes / GIB:.1f} GiB "
                  f"({'fits' if pred.fits else 'does not fit'})")
    _memory_over_time(ax3, pred, windows)
    fig.suptitle(f"{pred.model} ZeRO-{pred.stage} on {pred.world_size} GPUs ({pred.topology}), "
                 f"micro-batch {pred.micro_batch} x grad-accum {pred.grad_accum}, seq {pred.seq_len}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def memory_over_time_png(pred, windows, dpi: int = 100) -> bytes:
    """Only the memory-over-time panel, as its own PNG (the report's figure)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.5))
    _memory_over_time(ax, pred, windows)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
