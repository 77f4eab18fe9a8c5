"""Report figures (matplotlib, Agg backend), each returned as PNG bytes."""

from __future__ import annotations

import io
from typing import Any, Mapping

from ..curves import TERM_COLOURS, memory_over_time_png
from ..output import MEMORY_LABELS, time_label

GIB = 2**30
#: 100 dpi: a 8.5-inch figure is 850 px wide, text at 9-10 pt reads at 100 % zoom.
_DPI = 100


def _plt():
    # Not at the top: matplotlib takes ~0.5 s to import and only figures need it; the Agg
    # backend must be chosen before pyplot is imported.
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    _plt().close(fig)
    return buf.getvalue()


def _stacked(ax, per_stage: Mapping[int, Any], attr: str, scale: float, label=str,
             colours: Mapping[str, str] | None = None) -> None:
    """Stacked bars per stage of the ``attr`` mapping's terms, named by ``label(key)``."""
    terms: list[str] = []
    for p in per_stage.values():
        for k, v in getattr(p, attr).items():
            if v > 0 and k not in terms:
                terms.append(k)
    stages = sorted(per_stage)
    bottom = [0.0] * len(stages)
    cmap = _plt().get_cmap("tab10")
    for i, term in enumerate(terms):
        vals = [getattr(per_stage[s], attr).get(term, 0) / scale for s in stages]
        ax.bar([f"ZeRO-{s}" for s in stages], vals, bottom=bottom, label=label(term),
               color=(colours or {}).get(term, cmap(i % 10)))
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def memory_by_stage(per_stage: Mapping[int, Any]) -> bytes:
    """Stacked per-GPU memory terms per stage, with the GPU's memory as a line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.5, 4))
    _stacked(ax, per_stage, "memory_breakdown", GIB, label=lambda k: MEMORY_LABELS.get(k, k), colours=TERM_COLOURS)
    gpu = next(iter(per_stage.values())).gpu_memory_bytes / GIB
    ax.axhline(gpu, color="black", linestyle="--", linewidth=1.2, label=f"GPU memory {gpu:.0f} GiB")
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_ylabel("GiB per GPU (peak)")
    ax.set_title("Memory breakdown per ZeRO stage")
    return _png(fig)


def time_by_stage(per_stage: Mapping[int, Any]) -> bytes:
    """Stacked step-time categories per stage (compute, exposed comm per link, offload, optimizer)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.5, 4))
    _stacked(ax, per_stage, "time_breakdown", 1.0, label=time_label)
    ax.set_ylabel("seconds per optimizer step")
    ax.set_title("Step-time breakdown per ZeRO stage")
    return _png(fig)


def gantt(timeline: Any, title: str, grad_accum: int = 1) -> bytes:
    """One step as a Gantt chart: one row per stream, one colour per category. With gradient
    accumulation a second panel zooms on the last micro-step and the optimizer step."""
    plt = _plt()
    order = ("compute", "comm", "h2d", "d2h", "cpu")
    streams = sorted({s.stream for s in timeline.spans}, key=lambda s: order.index(s) if s in order else 9)
    groups: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for s in timeline.spans:
        groups.setdefault((s.stream, s.category), []).append((s.start_s, max(s.end_s - s.start_s, 0.0)))
    cats = sorted({c for _, c in groups})
    cmap = plt.get_cmap("tab10")
    end = max((s.end_s for s in timeline.spans), default=0.0)
    panels = [(0.0, end, "whole step")]
    if grad_accum > 1 and end > 0:
        panels.append((max(0.0, end - 1.3 * end / grad_accum), end, "last micro-step and optimizer step"))
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, (0.5 * len(streams) + 1.3) * len(panels)),
                             squeeze=False)
    for ax, (lo, hi, what) in zip(axes[:, 0], panels):
        for (stream, cat), bars in groups.items():
            ax.broken_barh(bars, (streams.index(stream) - 0.4, 0.8), facecolors=cmap(cats.index(cat) % 10))
        ax.set_yticks(range(len(streams)), streams)
        ax.set_ylim(len(streams) - 0.5, -0.5)
        ax.set_xlim(lo, hi if hi > lo else 1.0)
        ax.set_xlabel("seconds")
        ax.set_title(f"{title}: {what}", fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i % 10)) for i in range(len(cats))]
    axes[0, 0].legend(handles, cats, fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def _efficiency(ax, series: Mapping[int, list], cmap) -> None:
    """tokens/s against linear scaling from each stage's first fitting point, in %."""
    for i, (stage, points) in enumerate(sorted(series.items())):
        fit = [(p.x, p.tokens_per_s) for p in points if p.tokens_per_s is not None]
        if len(fit) > 1:
            x0, y0 = fit[0]
            ax.plot([x for x, _ in fit], [100 * y / (y0 * x / x0) for x, y in fit], marker="o",
                    color=cmap(i), label=f"ZeRO-{stage}")
    ax.axhline(100, color="black", linestyle="--", linewidth=1.2)
    ax.set_xscale("log", base=2)
    ax.set_ylabel("% of linear scaling")
    ax.set_title("Scaling efficiency")
    low, high = ax.get_ylim()
    ax.set_ylim(min(low, 90), max(high, 102))


def curves(series: Mapping[int, list], xlabel: str, title: str, log2x: bool, ideal: bool = False,
           logy: bool = False) -> bytes:
    """tokens/s per stage against x; points that do not fit are marked × along the bottom.

    ``ideal``: a dashed black line of linear scaling from each stage's first fitting point,
    and a second panel with the efficiency against it."""
    plt = _plt()
    if ideal:
        fig, (ax, eff) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": (1.5, 1)})
    else:
        fig, ax = plt.subplots(figsize=(8.5, 4))
    cmap = plt.get_cmap("tab10")
    reference_labelled = False
    for i, (stage, points) in enumerate(sorted(series.items())):
        fit = [(p.x, p.tokens_per_s) for p in points if p.tokens_per_s is not None]
        miss = [p.x for p in points if p.tokens_per_s is None]
        if fit:
            ax.plot(*zip(*fit), marker="o", color=cmap(i), label=f"ZeRO-{stage}")
            if ideal:
                x0, y0 = fit[0]
                xs = [p.x for p in points if p.x >= x0]
                ax.plot(xs, [y0 * x / x0 for x in xs], linestyle="--", color="black", linewidth=1.2,
                        zorder=0, label=None if reference_labelled else "linear scaling")
                reference_labelled = True
        if miss:
            # x in data coordinates, y in axes coordinates: the bottom edge whatever the scale.
            ax.plot(miss, [0.03 + 0.03 * i] * len(miss), marker="x", linestyle="none", color=cmap(i),
                    transform=ax.get_xaxis_transform(), label=f"ZeRO-{stage}: does not fit")
    if log2x:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("tokens/s (whole job)")
    ax.set_title(title)
    if ideal:
        _efficiency(eff, series, cmap)
        eff.set_xlabel(xlabel)
        ax.legend(fontsize=9, loc="upper left")
    else:
        ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def memory_over_time(pred: Any) -> bytes:
    """GPU memory over the optimizer step of ``pred`` (kept with its timeline), peak labelled
    (:func:`zsim.curves.memory_over_time_png`)."""
    # Not at the top: zsim.diagnose imports numpy, which only this figure needs.
    from ..diagnose.predicted import predicted_side

    return memory_over_time_png(pred, predicted_side(pred).windows, dpi=_DPI)


def memory_vs_n(points: list) -> bytes:
    """ZeRO-3 per-GPU memory against Memory_baseline / N (model states and peak)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    n = [p.gpus for p in points]
    ax.plot(n, [p.zero3_states_bytes / GIB for p in points], "o-", label="ZeRO-3 model states")
    ax.plot(n, [p.baseline_states_over_n / GIB for p in points], "--", label="baseline model states / N")
    ax.plot(n, [p.zero3_peak_bytes / GIB for p in points], "s-", label="ZeRO-3 peak")
    ax.plot(n, [p.baseline_peak_over_n / GIB for p in points], ":", label="baseline peak / N")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("GPUs (N)")
    ax.set_ylabel("GiB per GPU")
    ax.set_title("Memory_ZeRO3 vs Memory_baseline / N")
    ax.legend(fontsize=8)
    return _png(fig)
