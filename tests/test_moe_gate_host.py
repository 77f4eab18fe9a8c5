"""DeepSpeed-MoE's gate on the host: its launches cost the measured fraction of module code's
(validation/microbench/moe_host.py; validation/results/h200/2026-12-03-m16/_microbench/, three
processes on one H200: 0.69-0.77 of a decoder layer's per-launch host time)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from validation.cpu_truth.expert_cases import MIXTRAL_4E  # noqa: E402
from zsim.calibrate import find_microbench, moe_gate_host_ratio, with_values  # noqa: E402
from zsim.compute import launch_host_s, module_time_s  # noqa: E402
from zsim.errors import ZsimInputError  # noqa: E402
from zsim.hardware import load_profile  # noqa: E402
from zsim.inputs import check_microbench  # noqa: E402
from zsim.model import from_hf_config  # noqa: E402
from zsim.modeltree import model_tree  # noqa: E402
from zsim.parallel.expert import moe_config  # noqa: E402
from zsim.workload import Kernel, Workload  # noqa: E402

BENCH = ROOT / "validation/results/h200/2026-12-03-m16/_microbench"


def test_the_profile_holds_the_median_of_the_three_processes():
    bench, _, files = find_microbench([BENCH])
    assert len(files) == 3 and len(bench["moe_host"]) == 3          # pooled, one object per process
    ratios = sorted(r["ratio"] for p in bench["moe_host"] for r in p["rows"])
    assert len(ratios) == 6 and 0.6 < ratios[0] and ratios[-1] < 0.8
    assert load_profile("h200-sxm").host.moe_gate_launch_per_module_launch == moe_gate_host_ratio(bench["moe_host"])


def test_a_moe_host_section_without_rows_is_refused():
    with pytest.raises(ZsimInputError, match="moe_host"):
        check_microbench({"moe_host": []}, "x.json")
    with pytest.raises(ZsimInputError, match="no rows"):
        moe_gate_host_ratio([{"rows": []}])


def test_only_the_gate_forward_launches_are_priced_at_the_ratio():
    hw = load_profile("h200-sxm")
    ratio = hw.host.moe_gate_launch_per_module_launch
    assert launch_host_s(Kernel("memory", host_path="moe_gate"), hw) == pytest.approx(ratio * hw.compute.dispatch_s)
    assert launch_host_s(Kernel("memory"), hw) == hw.compute.dispatch_s
    unmeasured = with_values(hw, {"host.moe_gate_launch_per_module_launch": 0.0})
    assert launch_host_s(Kernel("memory", host_path="moe_gate"), unmeasured) == unmeasured.compute.dispatch_s
    spec = dataclasses.replace(from_hf_config(dict(MIXTRAL_4E, hidden_size=256), "gate"),
                               deepspeed_moe=moe_config({"k": 2, "ep_size": 1}, None))
    w = Workload(spec, 2, 512)
    tree = model_tree(spec)
    gate = next(n for n in tree.forward(tree.node("model.layers.0.mlp")) if n.kind == "ds_moe_gate")
    assert all(k.host_path == "moe_gate" for k in w.kernels(gate.op, "fwd"))
    assert not any(k.host_path for k in w.kernels(gate.op, "bwd"))     # backward: not measured
    launches = sum(k.launches for k in w.kernels(gate.op, "fwd"))
    _, host_s = module_time_s(w, gate.op, "fwd", hw, "bf16")
    _, host_unmeasured = module_time_s(w, gate.op, "fwd", unmeasured, "bf16")
    assert host_s == pytest.approx(launches * ratio * hw.compute.dispatch_s)
    assert host_unmeasured == pytest.approx(launches * hw.compute.dispatch_s)
