"""Collective predictions against public nccl-tests figures.

Each test names its source, the configuration, the published figure and the tolerance. The
hardware profiles are uncalibrated (datasheet bandwidths × estimated efficiencies), so these
tests check that the topology + algorithm model lands near reality with no fitting to these
numbers. bench/README.md ("Collectives vs published figures") tabulates the same comparisons.

nccl-tests conventions: busbw = algbw × 2(n-1)/n for all_reduce, × (n-1)/n for
all_gather/reduce_scatter; GB/s = 1e9 bytes/s.

The per-protocol constants in the profiles are NCCL 2.18.5's tuner constants except two
values (LL128 NVLink bandwidth fraction, Simple ring NVLink step latency) fitted on the Azure
ND A100 v4 sizes listed in AZURE_A100_FIT_SET; the sizes the tests below pin were left out of
that fit.
"""

from __future__ import annotations

import pytest
import yaml

from zsim.collectives import collective_cost
from zsim.hardware import shared_profile
from zsim.network import load_topology


def _hw(cluster):
    """The cluster's own hardware profile, loaded (the collective layer reads no files)."""
    return shared_profile(cluster.hardware)

GiB = 2**30
MiB = 2**20


def busbw(topo, op, nbytes, algorithm="auto", **size):
    """Predicted nccl-tests busbw (GB/s) for one collective."""
    cluster = topo.cluster(**size) if not isinstance(topo, str) else load_topology(topo).cluster(**size)
    return collective_cost(cluster, _hw(cluster), op, nbytes, algorithm).busbw_GBps


# Source: Azure/AI-benchmarking-guide, Azure_Results/ND_A100_v4_results.md ("NCCL Bandwidth":
# all_reduce_perf in-place busbw on one ND A100 v4 VM = 8x A100-SXM4-80GB on NVSwitch,
# NCCL 2.18.5). A100 has no NVLink SHARP, so NCCL runs ring/tree here.
AZURE_A100_ALLREDUCE = [  # (bytes as the table labels them, busbw GB/s, tolerance)
    (8 * GiB, 231.58, 0.10),
    (1 * GiB, 228.10, 0.10),
    (256 * MiB, 213.87, 0.10),
    (64 * MiB, 166.63, 0.20),
    (16 * MiB, 109.22, 0.20),
]




@pytest.mark.parametrize("nbytes,published,tol", AZURE_A100_ALLREDUCE)
def test_a100_single_node_all_reduce_azure_nd_a100_v4(nbytes, published, tol):
    assert busbw("dgx-a100", "all_reduce", nbytes, gpus=8) == pytest.approx(published, rel=tol)


def test_a100_small_all_reduce_latency_azure_nd_a100_v4():
    # Same source: 1M -> 36.22 GB/s busbw. Needs NCCL's low-latency protocols (LL/LL128):
    # with one Simple-like latency per step this was 2.5x too slow.
    assert busbw("dgx-a100", "all_reduce", 1 * MiB, gpus=8) == pytest.approx(36.22, rel=0.25)


# Source: NVIDIA/nccl-tests issue #212, comment by NCCL maintainer S. Jeaugey (2024-05-06):
# "With the protocol overhead (~20%) NCCL can get an effective NVLink bandwidth of 370GB/s,
# which you can observe as BusBw when running non-allreduce operations, or when running with
# NCCL_ALGO=RING" on 8x H100 (450 GB/s NVLink line rate). Tolerance 10%.
@pytest.mark.parametrize("op", ["all_gather", "reduce_scatter", "all_reduce"])
def test_h100_single_node_ring_busbw_nccl_tests_212(op):
    assert busbw("dgx-h100", op, 8 * GiB, "ring", gpus=8) == pytest.approx(370, rel=0.10)


def test_h200_single_node_ring_busbw_nccl_tests_212():
    # H200 has the same NVLink4/NVSwitch fabric as H100; the same figure applies.
    assert busbw("hgx-h200", "all_gather", 8 * GiB, "ring", gpus=8) == pytest.approx(370, rel=0.10)


# Source: NVIDIA/nccl-tests issue #290, comment by NVIDIA's AddyLaddy (2025-03-03): "For NDR @
# 400Gbps you should see 46-48GB/s per NIC" (multi-node H100, NCCL_ALGO=RING). Two DGX H100
# nodes, 8 NICs each: busbw / 8 against the middle of the range, 47 GB/s. Tolerance 10%.
def test_ndr_per_nic_busbw_nccl_tests_290():
    per_nic = busbw("dgx-h100", "all_reduce", 8 * GiB, "ring", nodes=2) / 8
    assert per_nic == pytest.approx(47.0, rel=0.10)


# Source: NVIDIA/nccl-tests issue #309 (2025-05-20), quoting NVIDIA's DGX H100 figures:
# "DGX could get nearly 370 GB/s in a single node, and 380GB/s in a multi-host" all_reduce
# busbw. Two DGX H100 nodes with NCCL_ALGO=RING-like behaviour (no SHARP). Tolerance 10%.
def test_dgx_h100_multi_node_all_reduce_nccl_tests_309():
    assert busbw("dgx-h100", "all_reduce", 8 * GiB, nodes=2) == pytest.approx(380, rel=0.10)


# Source: NVIDIA/nccl-tests issue #119 (2022-11-17): 3 servers, each 8x A100-SXM4-40GB with 4x
# HDR 200 Gb/s NICs; all_reduce_perf -np 24 up to 128 MiB; "peak performance reaches about
# 96GB/s" (theoretical 100 = 4 x 25 GB/s). The topology is written as a user would: the DGX
# A100 40GB file with 4 NICs, one per PCIe switch. Tolerance 20%: the uncalibrated profile
# under-predicts (IB efficiency 0.90 where NCCL reaches ~0.96 of line rate, and ring latency
# at 24 ranks weighs on 128 MiB).
def test_a100_4hdr_three_nodes_nccl_tests_119(tmp_path):
    with open(load_topology("dgx-a100-40gb").spec.path) as fh:
        data = yaml.safe_load(fh)
    data["name"] = "a100-40gb-4hdr"
    data["fabric"]["nics_per_node"] = 4
    for i, switch in enumerate(data["node"]["pcie"]["switches"]):
        switch["nics"] = [i]
    path = tmp_path / "a100-40gb-4hdr.yaml"
    path.write_text(yaml.safe_dump(data))
    topo = load_topology(str(path))
    assert busbw(topo, "all_reduce", 128 * MiB, nodes=3) == pytest.approx(96.0, rel=0.20)
    # And the ceiling the issue computes (100 GB/s) is never exceeded at any size.
    assert busbw(topo, "all_reduce", 64 * GiB, nodes=3) < 100.0


# Source: NVIDIA/nccl-tests issue #130, comment by S. Jeaugey (2023-02-03): for alltoall "On 2
# nodes, 50% of the traffic is inter-node so you should see BusBW = 2x network bandwidth per
# GPU ... it will go down to 1x the network bandwidth per GPU" as nodes grow. With the 46-48
# GB/s per NDR NIC of issue #290 (one NIC per GPU on DGX H100), 2 nodes should give ~94 GB/s
# and many nodes ~47 GB/s. Tolerance 15% (the maintainer's "2x" ignores the (n-1)/n factor).
def test_dgx_h100_all_to_all_scaling_nccl_tests_130():
    two = busbw("dgx-h100", "all_to_all", 8 * GiB, nodes=2)
    many = busbw("dgx-h100", "all_to_all", 8 * GiB, nodes=64)
    assert two == pytest.approx(2 * 47.0, rel=0.15)
    assert many == pytest.approx(47.0, rel=0.15)


# --- the fit/eval split of validation/published/nccl_tests.yaml ---------------------------
# Fit: our 2x H200 sweep and the H100 systems (7 published points); eval: the A100 systems
# (15 published points), never fitted. The targets are the file's: MAPE <= 10 % for >= 16 MiB
# and <= 20 % for 1-16 MiB, per group size. KNOWN_MISSES are (ranks, band) groups that miss
# today, each a strict xfail so that a fix (or a regression elsewhere) shows.
KNOWN_MISSES = {(24, "large"): "nccl-tests#119: one 3-node A100 point, -12.3 %: the borrowed "
                                "H100 IB efficiency and the Azure-fitted Simple step latency"}


def _evaluation():
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "validation" / "published"))
    import evaluate
    data = evaluate.load()
    return evaluate, data, evaluate.predict(evaluate.all_points(data))


def _eval_groups():
    evaluate, data, rows = _evaluation()
    return [t for t in evaluate.mape_table(rows, data["targets"])
            if t["split"] == "eval" and t["target_pct"] is not None]


@pytest.mark.parametrize("group", _eval_groups(), ids=lambda t: f"{t['ranks']}ranks-{t['band']}")
def test_evaluation_mape_within_target(group, request):
    key = (group["ranks"], group["band"])
    if key in KNOWN_MISSES:
        request.applymarker(pytest.mark.xfail(strict=True, reason=KNOWN_MISSES[key]))
    assert group["mape_pct"] <= group["target_pct"], group


def test_split_fits_at_most_half_the_published_points_and_splits_by_system():
    evaluate, data, _ = _evaluation()
    points = data["points"]
    fit = [p for p in points if p["split"] == "fit"]
    assert len(fit) <= len(points) / 2
    systems = {}
    for p in points:
        systems.setdefault(p["system"], set()).add(p["split"])
    assert all(len(s) == 1 for s in systems.values()), systems
    assert all(p.get("url") and p.get("quote") for p in points)


def test_evaluation_would_fail_on_a_wrong_model():
    # The MAPE check can fail: a profile with half the NVLink efficiency misses the targets.
    import dataclasses
    from zsim.hardware import load_profile
    evaluate, data, _ = _evaluation()
    hw = load_profile("a100-sxm-80gb")
    nv = hw.link("nvlink")
    ring = dataclasses.replace(nv.ring, achieved_fraction=tuple(
        (op, tuple((n, f / 2) for n, f in pts)) for op, pts in nv.ring.achieved_fraction))
    bad = dataclasses.replace(hw, links={**hw.links, "nvlink": dataclasses.replace(nv, ring=ring)})
    azure = [p for p in data["points"] if p["system"] == "azure-nd-a100-v4"]
    table = evaluate.mape_table(evaluate.predict(azure, bad), data["targets"])
    assert any(t["mape_pct"] > t["target_pct"] for t in table)


# NCCL's own tuner (src/graph/tuning.cc, NCCL 2.18.5 constants, Intel hosts, Hopper) for a ring
# all_gather over 512 DGX H100 nodes = 4,096 ranks: 4,095 steps of which 511 cross nodes.
#   LL:    3.6 + 3584 x (0.47 x 1.8) + 511 x 2.7 = 4,415 us; busBw min(llMaxBw 20.4, 370/4)
#   LL128: 10  + 3584 x 1.9          + 511 x 4.0 = 8,864 us; busBw 370 x 0.92
# A 4 MiB gather then costs 4.62 ms under LL (NCCL's pick) and 8.88 ms under LL128; with
# NCCL 2.28's constants (LL step max(0.6, 1.0 us), LL busBw x 0.5) LL costs 5.18 ms. The
# model's own kernel launch (5 us) is the only term NCCL does not have.
NCCL_MODEL_4096_RANKS_4MIB_MS = {"ll": 4.62, "ll128": 8.88}


def test_4096_rank_gather_matches_nccl_tuner_model():
    from zsim.collectives import collective_choice, protocol_costs
    cluster = load_topology("dgx-h100").cluster(nodes=512)
    options = protocol_costs(cluster, _hw(cluster), "all_gather", 4 * MiB)
    for proto, ms in NCCL_MODEL_4096_RANKS_4MIB_MS.items():
        assert options[("ring", proto)].time_s * 1e3 == pytest.approx(ms, rel=0.05)
    assert collective_choice(cluster, _hw(cluster), "all_gather", 4 * MiB).protocol == "ll"
