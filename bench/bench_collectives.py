"""Speed of the network/collective layer, and its predictions against published figures.

Usage:  python bench/bench_collectives.py [--table]

Prints (1) how long building a cluster and pricing collectives takes from 8 to 8,192 GPUs
(cold = first call for a size, warm = cached), and (2) with --table, the markdown table of
predicted vs published nccl-tests figures that bench/README.md shows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml  # noqa: E402

from zsim.collectives import collective_cost  # noqa: E402
from zsim.collectives import _cost  # noqa: E402  (to clear the cache between runs)
from zsim.hardware import load_profile  # noqa: E402
from zsim.network import load_topology  # noqa: E402

GiB, MiB = 2**30, 2**20


def speed() -> None:
    """Cluster build time and per-call cost at growing scale."""
    hw = load_profile("h100-sxm")
    topo = load_topology("dgx-h100")
    print("| GPUs | build cluster (ms) | cold call (us) | warm call (us) |")
    print("|---:|---:|---:|---:|")
    for nodes in (1, 8, 64, 128, 512, 1024):
        t0 = time.perf_counter()
        cluster = topo.cluster(nodes=nodes)
        build = time.perf_counter() - t0
        _cost.cache_clear()
        sizes = [2**20 + 4096 * i for i in range(2000)]
        ops = ("all_gather", "reduce_scatter", "all_reduce")
        t0 = time.perf_counter()
        for i, s in enumerate(sizes):
            collective_cost(cluster, hw, ops[i % 3], s)
        cold = (time.perf_counter() - t0) / len(sizes)
        t0 = time.perf_counter()
        for i, s in enumerate(sizes):
            collective_cost(cluster, hw, ops[i % 3], s)
        warm = (time.perf_counter() - t0) / len(sizes)
        print(f"| {cluster.world_size} | {build * 1e3:.1f} | {cold * 1e6:.1f} | {warm * 1e6:.1f} |")


def _four_hdr_topology(folder: Path):
    with open(load_topology("dgx-a100-40gb").spec.path) as fh:
        data = yaml.safe_load(fh)
    data["name"] = "a100-40gb-4hdr"
    data["fabric"]["nics_per_node"] = 4
    for i, switch in enumerate(data["node"]["pcie"]["switches"]):
        switch["nics"] = [i]
    path = folder / "a100-40gb-4hdr.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_topology(str(path))


def table() -> None:
    """Predicted vs published busbw (the rows of tests/test_published_collectives.py)."""
    azure = "Azure ND A100 v4 (Azure/AI-benchmarking-guide, ND_A100_v4_results.md)"
    rows = [  # (source, what, topology, size kwargs, op, bytes, algorithm, published, tolerance)
        (azure, "8x A100 all_reduce 8 GiB", "dgx-a100", {"gpus": 8}, "all_reduce", 8 * GiB, "auto", 231.58, "10%"),
        (azure, "8x A100 all_reduce 1 GiB", "dgx-a100", {"gpus": 8}, "all_reduce", GiB, "auto", 228.10, "10%"),
        (azure, "8x A100 all_reduce 256 MiB", "dgx-a100", {"gpus": 8}, "all_reduce", 256 * MiB, "auto", 213.87, "10%"),
        (azure, "8x A100 all_reduce 64 MiB", "dgx-a100", {"gpus": 8}, "all_reduce", 64 * MiB, "auto", 166.63, "20%"),
        (azure, "8x A100 all_reduce 16 MiB", "dgx-a100", {"gpus": 8}, "all_reduce", 16 * MiB, "auto", 109.22, "20%"),
        (azure, "8x A100 all_reduce 1 MiB", "dgx-a100", {"gpus": 8}, "all_reduce", MiB, "auto", 36.22, "25%"),
        ("nccl-tests#212 (S. Jeaugey, NVIDIA)", "8x H100 ring busbw (all_gather 8 GiB)", "dgx-h100", {"gpus": 8}, "all_gather", 8 * GiB, "ring", 370.0, "10%"),
        ("nccl-tests#212 (S. Jeaugey, NVIDIA)", "8x H100 all_reduce, NCCL_ALGO=RING", "dgx-h100", {"gpus": 8}, "all_reduce", 8 * GiB, "ring", 370.0, "10%"),
        ("nccl-tests#290 (AddyLaddy, NVIDIA)", "NDR 400G: busbw per NIC, 2x DGX H100", "dgx-h100", {"nodes": 2}, "all_reduce", 8 * GiB, "ring", 47.0, "10%"),
        ("nccl-tests#309 (quoting NVIDIA)", "2x DGX H100 all_reduce", "dgx-h100", {"nodes": 2}, "all_reduce", 8 * GiB, "auto", 380.0, "10%"),
        ("nccl-tests#119", "3 nodes x 8 A100-40GB, 4x HDR, all_reduce 128 MiB", "4hdr", {"nodes": 3}, "all_reduce", 128 * MiB, "auto", 96.0, "20%"),
        ("nccl-tests#130 + #290 (NVIDIA)", "2x DGX H100 alltoall (2x 47 GB/s per GPU)", "dgx-h100", {"nodes": 2}, "all_to_all", 8 * GiB, "auto", 94.0, "15%"),
        ("nccl-tests#130 + #290 (NVIDIA)", "64x DGX H100 alltoall (1x 47 GB/s per GPU)", "dgx-h100", {"nodes": 64}, "all_to_all", 8 * GiB, "auto", 47.0, "15%"),
    ]
    print("| source | configuration | published busbw GB/s | predicted GB/s | error | test tolerance |")
    print("|---|---|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        four_hdr = _four_hdr_topology(Path(tmp))
        for source, what, topo, size, op, nbytes, algorithm, published, tol in rows:
            t = four_hdr if topo == "4hdr" else load_topology(topo)
            cost = collective_cost(t.cluster(**size), None, op, nbytes, algorithm)
            value = cost.busbw_GBps / (8 if "per NIC" in what else 1)
            err = (value - published) / published
            print(f"| {source} | {what} | {published:g} | {value:.1f} | {err:+.1%} | {tol} |")
    nvls = collective_cost(load_topology("hgx-h200").cluster(), None, "all_reduce", 8 * GiB)
    print(f"| Azure ND H200 v5 (same repository) | 8x H200 all_reduce 8 GiB, NVLS | 479.98 | "
          f"{nvls.busbw_GBps:.1f} | not modelled | NVLink SHARP reduces in the switch |")


def main() -> int:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="store_true", help="also print the published-figure table")
    args = parser.parse_args()
    speed()
    if args.table:
        print()
        table()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
