"""Token scans: ``torch.cumsum`` along the token axis of a [tokens, experts] mask.

DeepSpeed-MoE's gate numbers the tokens routed to each expert with a cumulative sum over the
token axis of its int64 one-hot mask (deepspeed 0.19.8 moe/sharded_moe.py: top1gating once,
:299; top2gating for both choices, :349-350; topkgating once, :457-476). A scan along
dim 0 with only E columns keeps few GPU threads busy, so it costs time per token, not per
byte: on the H200 about 0.154 us per token at 8-16 experts (4,096 tokens: 0.63 ms, longer
than all the GEMMs of a 0.7B Mixtral-shaped layer), up to 0.37 us per token at 64-128
experts and 65,536 tokens (validation/microbench/moe_gate.py,
validation/results/h200/2026-12-02-m12/_microbench/microbench_moe_gate.json).

The hardware profile keeps the measurement as ``compute.token_scan_curves``: per expert
count, points ``[log2(tokens), seconds per token]``. :meth:`ScanCurves.seconds` is linear
in log2(tokens) between points and in log2(experts) between curves, flat beyond both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .errors import ZsimInputError
from .inputs import finite_number


@dataclass(frozen=True)
class ScanCurve:
    """Seconds per token of one scan over ``experts`` columns, against log2(tokens)."""

    experts: int
    points: tuple[tuple[float, float], ...]

    def s_per_token(self, tokens: int) -> float:
        """Seconds per token at ``tokens``, linear in log2(tokens), flat beyond the points."""
        return _interpolate(self.points, math.log2(max(tokens, 1)))


@dataclass(frozen=True)
class ScanCurves:
    """The token-scan curves of one GPU, sorted by expert count."""

    curves: tuple[ScanCurve, ...]

    def seconds(self, tokens: int, experts: int) -> float:
        """GPU seconds of one scan over ``tokens`` rows of ``experts`` columns."""
        x = math.log2(max(experts, 1))
        per = _interpolate(tuple((math.log2(c.experts), c.s_per_token(tokens)) for c in self.curves), x)
        return tokens * per

    def to_dict(self) -> dict[int, list[list[float]]]:
        """The YAML form ``{experts: [[log2_tokens, s_per_token], ...]}``."""
        return {c.experts: [list(p) for p in c.points] for c in self.curves}


def _interpolate(points: Sequence[tuple[float, float]], x: float) -> float:
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


def parse_scan_curves(raw: Any, where: str) -> ScanCurves | None:
    """``{experts: [[log2_tokens, s_per_token], ...]}`` from a profile (absent: None)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not raw:
        raise ZsimInputError(f"{where}: expected a mapping experts -> [[log2_tokens, s_per_token], ...]")
    curves = []
    for key, pts in raw.items():
        experts = int(key) if isinstance(key, str) and key.isdigit() else key
        if isinstance(experts, bool) or not isinstance(experts, int) or not 0 < experts <= 65536:
            raise ZsimInputError(f"{where}: expert count {key!r} must be an integer in 1..65536")
        if not isinstance(pts, list) or not pts:
            raise ZsimInputError(f"{where}.{experts}: expected a list of [log2_tokens, s_per_token]")
        rows = []
        for i, pt in enumerate(pts):
            at = f"{where}.{experts}[{i}]"
            if not (isinstance(pt, (list, tuple)) and len(pt) == 2):
                raise ZsimInputError(f"{at}: expected [log2_tokens, seconds per token], got {pt!r}")
            x = finite_number(pt[0], "log2_tokens", at, high=40)
            y = finite_number(pt[1], "seconds per token", at, high=1)
            if y <= 0:
                raise ZsimInputError(f"{at}: seconds per token must be above 0, got {pt[1]!r}")
            rows.append((x, y))
        if any(b[0] <= a[0] for a, b in zip(rows, rows[1:])):
            raise ZsimInputError(f"{where}.{experts}: points must be sorted by log2_tokens")
        curves.append(ScanCurve(experts, tuple(rows)))
    return ScanCurves(tuple(sorted(curves, key=lambda c: c.experts)))


def fit_scan_curves(rows: Sequence[Mapping]) -> dict[int, list[list[float]]]:
    """The YAML curves from microbenchmark rows ``{tokens, experts, time_s}`` (the median of
    repeated shapes)."""
    by: dict[int, dict[int, list[float]]] = {}
    for r in rows:
        by.setdefault(int(r["experts"]), {}).setdefault(int(r["tokens"]), []).append(float(r["time_s"]))
    out = {}
    for experts, per_tokens in sorted(by.items()):
        out[experts] = [[round(math.log2(t), 4), float(f"{sorted(v)[len(v) // 2] / t:.4g}")]
                        for t, v in sorted(per_tokens.items())]
    return out


__all__ = ["ScanCurve", "ScanCurves", "fit_scan_curves", "parse_scan_curves"]
