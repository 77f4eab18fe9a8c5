"""validation/host_probe.py's residual trend: the slope of log(measured / predicted) on
log(probe / reference) is 0 when the prediction follows the probe as the steps do, positive
when fast hosts are predicted slow (the m8b case, validation/README.md)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "validation"))
from host_probe import residual_trend  # noqa: E402

REF_S = 20e-6


def _runs(probes_s):
    return [SimpleNamespace(host_speed_in_run=SimpleNamespace(small_linear_call_s=p)) for p in probes_s]


def test_flat_when_errors_do_not_follow_the_probe():
    runs = _runs([10e-6, 15e-6, 20e-6, 30e-6])
    _, slope = residual_trend(runs, [5.0, -5.0, 5.0, -5.0], REF_S)
    assert abs(slope) < 0.1


def test_positive_when_fast_hosts_are_predicted_slow():
    """Predicted steps that move with the probe to the power 0.5 while the measured ones move
    in proportion: measured / predicted = (probe / reference) ** 0.5, a slope of 0.5."""
    probes = [10e-6, 15e-6, 20e-6, 30e-6]
    errors_pct = [100 * ((p / REF_S) ** -0.5 - 1) for p in probes]   # predicted / measured - 1
    corr, slope = residual_trend(_runs(probes), errors_pct, REF_S)
    assert slope == pytest.approx(0.5, abs=1e-9) and corr == pytest.approx(1.0)
    assert math.isnan(residual_trend(_runs(probes[:2]), errors_pct[:2], REF_S)[0])


def test_layer_slopes_recover_a_power_law():
    """Layer seconds made to follow the probe to the power 1 (forward) and 0.5 (backward) give
    those slopes, with correlation 1."""
    from host_probe import layer_probe_slopes
    records = [{"host_probe": {"probe_small_linear_call_s": p},
                "layers": [{"kind": k, "forward_s": 1e-3 * p / REF_S, "backward_s": 2e-3 * (p / REF_S) ** 0.5}
                           for k in ("dense", "moe")]} for p in (10e-6, 15e-6, 20e-6, 30e-6)]
    slopes = layer_probe_slopes(records)
    assert slopes["dense forward_s"][0] == pytest.approx(1.0) and slopes["moe backward_s"][0] == pytest.approx(0.5)
    assert slopes["dense forward_s"][1] == pytest.approx(1.0) and slopes["dense forward_s"][2] == 4
