"""DeepSpeed-MoE's token scans (zsim.tokenscan): torch.cumsum over the token axis of the gate's
[S, E] mask, priced per token from the H200 microbenchmark
(validation/results/h200/2026-12-02-m12/_microbench/microbench_moe_gate.json)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from validation.cpu_truth.expert_cases import MIXTRAL_4E  # noqa: E402
from zsim.calibrate import calibrate  # noqa: E402
from zsim.cli import main  # noqa: E402
from zsim.compute import kernel_busy_s  # noqa: E402
from zsim.errors import ZsimInputError  # noqa: E402
from zsim.hardware import load_profile  # noqa: E402
from zsim.model import from_hf_config  # noqa: E402
from zsim.modeltree import model_tree  # noqa: E402
from zsim.parallel.expert import moe_config  # noqa: E402
from zsim.parallel.expert_work import GATE_FORWARD_OPS  # noqa: E402
from zsim.tokenscan import fit_scan_curves, parse_scan_curves  # noqa: E402
from zsim.workload import Workload, _scan  # noqa: E402

BENCH = ROOT / "validation/results/h200/2026-12-02-m12/_microbench/microbench_moe_gate.json"


def _rows():
    return json.loads(BENCH.read_text())["moe_scan"]


def test_shipped_curves_reproduce_the_measured_scans():
    """Every measured shape (1k-64k tokens, 8-128 experts) within 0.5 % on the H200 profile."""
    hw = load_profile("h200-sxm")
    for r in _rows():
        got = kernel_busy_s(_scan(r["tokens"], r["experts"]), hw, "bf16")
        assert got == pytest.approx(r["time_s"], rel=5e-3), r


def test_cost_is_per_token_and_between_expert_counts_in_log2():
    curves = parse_scan_curves(fit_scan_curves(_rows()), "x")
    assert curves.seconds(8192, 8) == pytest.approx(2 * curves.seconds(4096, 8), rel=1e-3)
    mid = curves.seconds(4096, 32)   # log2 32 is halfway between 16 and 64
    assert mid == pytest.approx((curves.seconds(4096, 16) + curves.seconds(4096, 64)) / 2, rel=1e-9)
    assert curves.seconds(4096, 4) == curves.seconds(4096, 8)      # flat below the measured counts


@pytest.mark.parametrize("k,scans", [(1, 1), (2, 2), (3, 1)])
def test_the_gate_runs_its_scans_and_keeps_its_launch_count(k, scans):
    """top-1 numbers tokens once, top-2 for both choices, top-k once (sharded_moe.py:299,
    349-350, 457-476); the gate's kernels still launch the measured op count."""
    spec = dataclasses.replace(from_hf_config(dict(MIXTRAL_4E, hidden_size=256), "scan"),
                               deepspeed_moe=moe_config({"k": k, "ep_size": 1}, None))
    w = Workload(spec, 2, 512)
    gate = next(n for n in model_tree(spec).forward(model_tree(spec).node("model.layers.0.mlp"))
                if n.kind == "ds_moe_gate")
    kernels = w.kernels(gate.op, "fwd")
    assert [kk.rows for kk in kernels if kk.kind == "scan"] == [2 * 512] * scans
    assert sum(kk.launches for kk in kernels) == GATE_FORWARD_OPS.get(k, 44)
    assert not [kk for kk in w.kernels(gate.op, "bwd") if kk.kind == "scan"]


def test_a_profile_without_curves_refuses_moe_in_one_line(tmp_path, capsys):
    cfg = tmp_path / "mixtral.json"
    cfg.write_text(json.dumps(dict(MIXTRAL_4E, hidden_size=256)))
    prof = tmp_path / "noscan.yaml"
    text = (ROOT / "zsim/data/topologies/hardware/h200-sxm-datasheet.yaml").read_text()
    start = text.index("  # DeepSpeed-MoE's gate scans")
    end = text.index("links:")
    prof.write_text(text[:start] + text[end:])
    assert main(["predict", "--model", str(cfg), "--ep", "1", "--topo", "hgx-h200", "--gpus", "1",
                 "--hardware", str(prof), "--no-output"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "token_scan_curves" in err


def test_bad_curves_are_refused():
    with pytest.raises(ZsimInputError, match="sorted"):
        parse_scan_curves({8: [[12.0, 1e-7], [10.0, 1e-7]]}, "p")
    with pytest.raises(ZsimInputError, match="seconds per token"):
        parse_scan_curves({8: [[12.0, -1.0]]}, "p")
    with pytest.raises(ZsimInputError, match="expert count"):
        parse_scan_curves({"eight": [[12.0, 1e-7]]}, "p")


def test_calibrate_reads_the_scan_rows():
    cal = calibrate([BENCH], base="h200-sxm-datasheet")
    assert cal.details["from_microbench"]["compute.token_scan_curves"] == fit_scan_curves(_rows())
    assert cal.profile.compute.token_scan_curves.seconds(4096, 8) == pytest.approx(6.287e-4, rel=1e-3)
