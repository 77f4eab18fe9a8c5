"""NCCL protocols (LL / LL128 / Simple) in the collective cost model: choice and invariants."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from zsim.collectives import (OPS, collective_choice, collective_cost, protocol_costs,
                              supported_algorithms)
from zsim.errors import ZsimInputError
from zsim.hardware import PROTOCOL_NAMES, load_profile, profile_from_dict, shared_profile
from zsim.network import load_topology

from test_collectives import without_ring


def _hw(cluster):
    """The cluster's own hardware profile, loaded (the collective layer reads no files)."""
    return shared_profile(cluster.hardware)

CLUSTERS = [("dgx-a100", {}), ("dgx-h100", {"nodes": 2}), ("hgx-h200", {"nodes": 16}),
            ("pcie-8gpu", {"nodes": 4}), ("dgx-a100-40gb", {"nodes": 3}),
            ("dgx-h100", {"nodes": 512})]
SIZES = [2**10, 2**16, 2**20, 2**24, 2**28, 2**33]
ORDER = {name: i for i, name in enumerate(PROTOCOL_NAMES)}  # ll < ll128 < simple


def _cluster(name, kwargs):
    return load_topology(name).cluster(**kwargs)


def _bound_GBps(cluster, group="world"):
    """Per-rank bandwidth no busbw may exceed (see test_collectives)."""
    net = cluster.net
    if cluster.num_nodes == 1:
        return net.intra_GBps
    return net.rail_ib_GBps if group == "inter_node" else net.ring_ib_GBps


def _cases():
    for (name, kwargs), op in itertools.product(CLUSTERS, OPS):
        for algorithm in supported_algorithms(op):
            # PAT needs one rank per node: checked on the inter-node group of every cluster.
            group = "inter_node" if algorithm == "pat" else "world"
            yield pytest.param(name, kwargs, op, algorithm, group,
                               id=f"{name}-{kwargs}-{op}-{algorithm}-{group}")


@pytest.mark.parametrize("name,kwargs,op,algorithm,group", list(_cases()))
def test_every_protocol_of_every_algorithm_is_sane(name, kwargs, op, algorithm, group):
    cluster = _cluster(name, kwargs)
    hw = load_profile(cluster.hardware)
    table = [protocol_costs(cluster, hw, op, s, algorithm, group) for s in SIZES]
    if table[0][next(iter(table[0]))].group_size == 1:  # one node: nothing moves
        assert all(c.time_s == 0 for t in table for c in t.values())
        return
    protocols = {p for (_, p) in table[0]}
    assert protocols and protocols <= set(PROTOCOL_NAMES)
    assert "simple" in protocols  # NCCL always has Simple (and PAT has only Simple)
    for proto in protocols:
        costs = [t[(algorithm, proto)] for t in table]
        times = [c.time_s for c in costs]
        assert all(b > a or b == a == min(times) for a, b in zip(times, times[1:])), (proto, times)
        for c in costs:
            assert c.time_s > 0 and c.algorithm == algorithm
            assert c.busbw_GBps <= _bound_GBps(cluster, group) * (1 + 1e-9)
            assert all(0 <= u <= 1 for u in c.utilisation().values())
        if proto == "ll":  # LL's bus bandwidth is capped (NCCL's llMaxBw)
            assert all(c.busbw_GBps <= _ll_cap(cluster, hw, group) * (1 + 1e-9) for c in costs)


def _ll_cap(cluster, hw, group):
    """The smallest LL busbw cap among the link types the group's steps cross."""
    hops = [] if group == "inter_node" else [cluster.net.intra_link_type or "nvlink"]
    hops += ["ib"] if cluster.num_nodes > 1 else []
    caps = [hw.link(k).protocols["ll"].max_busbw_GBps for k in hops]
    return min((c for c in caps if c > 0), default=float("inf"))


@pytest.mark.parametrize("name,kwargs", CLUSTERS)
@pytest.mark.parametrize("op", OPS)
def test_the_choice_is_the_fastest_option(name, kwargs, op):
    cluster = _cluster(name, kwargs)
    for size in SIZES:
        options = protocol_costs(cluster, _hw(cluster), op, size)
        choice = collective_choice(cluster, _hw(cluster), op, size)
        assert choice.cost.time_s == min(c.time_s for c in options.values())
        assert options[(choice.algorithm, choice.protocol)] is choice.cost
        assert collective_cost(cluster, _hw(cluster), op, size) is choice.cost


@pytest.mark.parametrize("name,kwargs", CLUSTERS)
@pytest.mark.parametrize("op", ["all_gather", "reduce_scatter", "all_reduce"])
def test_protocol_moves_towards_bandwidth_as_messages_grow(name, kwargs, op):
    # Each protocol is latency + bytes/bandwidth; the fastest of such lines can only move to
    # protocols with more bandwidth (LL -> LL128 -> Simple) as the message grows.
    cluster = _cluster(name, kwargs)
    sizes = [2**k for k in range(8, 35)]
    chosen = [ORDER[collective_choice(cluster, _hw(cluster), op, s, "ring").protocol] for s in sizes]
    assert chosen == sorted(chosen)


def test_small_messages_use_ll_and_large_ones_simple():
    h100 = load_topology("dgx-h100")
    for cluster in (h100.cluster(), h100.cluster(nodes=16)):
        assert collective_choice(cluster, _hw(cluster), "all_gather", 64 * 2**10).protocol == "ll"
        assert collective_choice(cluster, _hw(cluster), "all_reduce", 8 * 2**10).protocol == "ll"
        assert collective_choice(cluster, _hw(cluster), "all_gather", 8 * 2**30).protocol == "simple"
        assert collective_choice(cluster, _hw(cluster), "all_reduce", 8 * 2**30).protocol == "simple"
    # Mid sizes on one DGX A100 run LL128 (NCCL's NVLink middle ground).
    a100 = load_topology("dgx-a100").cluster()
    assert collective_choice(a100, _hw(a100), "all_reduce", 4 * 2**20).protocol == "ll128"


def test_ll_wins_where_the_ring_is_long():
    # 4,096 ranks: LL's sub-microsecond step latency is what makes a few-MB gather affordable.
    cluster = load_topology("dgx-h100").cluster(nodes=512)
    options = protocol_costs(cluster, _hw(cluster), "all_gather", 4 * 2**20)
    assert options[("ring", "ll")].time_s < options[("ring", "ll128")].time_s \
        < options[("ring", "simple")].time_s


def test_no_ll128_between_gpus_without_nvlink():
    # NCCL enables LL128 only over NVLink; the PCIe server runs LL and Simple.
    single = load_topology("pcie-8gpu").cluster()
    assert {p for (_, p) in protocol_costs(single, _hw(single), "all_gather", 2**20)} == {"ll", "simple"}
    # One rank per node (ZeRO++ inter-node group) only crosses ib, which has LL128.
    multi = load_topology("pcie-8gpu").cluster(nodes=4)
    inter = protocol_costs(multi, _hw(multi), "all_gather", 2**20, group="inter_node")
    assert ("ring", "ll128") in inter


def _without_protocols(hw):
    return dataclasses.replace(hw, links={k: dataclasses.replace(v, protocols={})
                                          for k, v in hw.links.items()})


def test_profile_without_protocols_keeps_one_latency_per_step():
    cluster = load_topology("dgx-a100").cluster()
    hw = _without_protocols(without_ring(load_profile(cluster.hardware)))
    size = 2**26
    options = protocol_costs(cluster, hw, "all_gather", size, "ring")
    assert list(options) == [("ring", "simple")]
    nv = hw.link("nvlink")
    expected = (hw.compute.kernel_launch_s + 7 * nv.latency_s
                + size * 7 / 8 / (cluster.net.intra_GBps * nv.efficiency * 1e9))
    assert options[("ring", "simple")].time_s == pytest.approx(expected)


def test_ring_step_floor_applies_only_to_rings_that_cross_nodes():
    hw = without_ring(load_profile("h100-sxm"))  # no call floor to hide the step latencies
    ll_ib = hw.link("ib").protocols["ll"]
    slow = dataclasses.replace(hw, links={**hw.links, "ib": dataclasses.replace(
        hw.link("ib"), protocols={**hw.link("ib").protocols,
                                  "ll": dataclasses.replace(ll_ib, ring_step_floor_s=5e-6)})})
    one, two = load_topology("dgx-h100").cluster(), load_topology("dgx-h100").cluster(nodes=2)
    key = ("ring", "ll")
    assert protocol_costs(one, slow, "all_gather", 4096)[key].time_s == \
        pytest.approx(protocol_costs(one, hw, "all_gather", 4096)[key].time_s)
    extra = (protocol_costs(two, slow, "all_gather", 4096)[key].time_s
             - protocol_costs(two, hw, "all_gather", 4096)[key].time_s)
    assert extra == pytest.approx(14 * (5e-6 - ll_ib.ring_step_floor_s))  # 15 steps, 1 across


def test_protocols_round_trip_through_the_profile_schema():
    hw = load_profile("a100-sxm-80gb")
    again = profile_from_dict(hw.to_dict())
    assert again.links == hw.links
    cluster = load_topology("dgx-a100").cluster(nodes=2)
    assert collective_cost(cluster, again, "all_reduce", 2**22).time_s == \
        collective_cost(cluster, hw, "all_reduce", 2**22).time_s


@pytest.mark.parametrize("entry,match", [
    ({"ll64": {"latency_s": 1e-6}}, "unknown protocol"),
    ({"ll": {"base_latency_s": 1e-6}}, "missing key 'latency_s'"),
    ({"ll": {"latency_s": 1e-6, "bandwidth_fraction": 1.5}}, "at most 1"),
    ({"ll": {"latency_s": 1e-6, "bandwidth_fraction": 0}}, "must be positive"),
    ({"ll": {"latency_s": -1e-6}}, "must be positive"),
    ({"ll": {"latency_s": 1e-6, "speed": 3}}, "unknown key"),
    ({"ll": [1e-6]}, "expected a mapping"),
    ([1, 2], "expected a mapping"),
])
def test_bad_protocol_entries_are_named(entry, match):
    data = load_profile("h100-sxm").to_dict()
    data["links"]["nvlink"]["protocols"] = entry
    with pytest.raises(ZsimInputError, match=match) as err:
        profile_from_dict(data, where="h100.yaml")
    assert "h100.yaml.links.nvlink.protocols" in str(err.value)


def test_a_protocol_missing_on_a_hop_link_is_not_offered():
    hw = load_profile("h100-sxm")
    no_ll_ib = dataclasses.replace(hw, links={**hw.links, "ib": dataclasses.replace(
        hw.link("ib"), protocols={k: v for k, v in hw.link("ib").protocols.items() if k != "ll"})})
    one, two = load_topology("dgx-h100").cluster(), load_topology("dgx-h100").cluster(nodes=2)
    assert ("ring", "ll") in protocol_costs(one, no_ll_ib, "all_gather", 2**16)
    assert ("ring", "ll") not in protocol_costs(two, no_ll_ib, "all_gather", 2**16)


def test_pat_runs_only_with_one_rank_per_node():
    cluster = load_topology("dgx-h100").cluster(nodes=64)
    with pytest.raises(ZsimInputError, match="one rank per node"):
        collective_cost(cluster, _hw(cluster), "all_gather", 2**20, "pat")
    # auto never offers it to an 8-GPU-per-node world group...
    assert all(a != "pat" for (a, _) in protocol_costs(cluster, _hw(cluster), "all_gather", 2**20))
    # ...but weighs it against the ring for ZeRO++'s one-rank-per-node groups, Simple only.
    options = protocol_costs(cluster, _hw(cluster), "all_gather", 2**20, group="inter_node")
    assert [p for (a, p) in options if a == "pat"] == ["simple"]


def test_pat_beats_the_ring_across_many_nodes_and_loses_at_large_sizes():
    cluster = load_topology("dgx-h100").cluster(nodes=512)
    mid = protocol_costs(cluster, _hw(cluster), "all_gather", 64 * 2**20, group="inter_node")
    assert mid[("pat", "simple")].time_s < mid[("ring", "simple")].time_s  # log2 vs 511 steps
    big = collective_choice(cluster, _hw(cluster), "all_gather", 64 * 2**30, group="inter_node")
    assert big.algorithm == "ring"  # PAT runs at 0.75 of the ring's bandwidth


def test_pat_needs_profile_entries():
    hw = load_profile("h100-sxm")
    simple = hw.link("ib").protocols["simple"]
    no_pat = dataclasses.replace(hw, links={**hw.links, "ib": dataclasses.replace(
        hw.link("ib"), protocols={**hw.link("ib").protocols, "simple": dataclasses.replace(
            simple, algorithms=tuple(x for x in simple.algorithms if x[0] != "pat"))})})
    cluster = load_topology("dgx-h100").cluster(nodes=8)
    options = protocol_costs(cluster, no_pat, "all_gather", 2**20, group="inter_node")
    assert all(a != "pat" for (a, _) in options)
    with pytest.raises(ZsimInputError, match="prices no protocol"):
        collective_cost(cluster, no_pat, "all_gather", 2**20, "pat", "inter_node")


def test_algorithm_entries_override_the_protocol_for_that_algorithm_only():
    hw = load_profile("h100-sxm")
    ll = hw.link("nvlink").protocols["ll"]
    assert ll.for_algorithm("tree").latency_s != ll.latency_s  # NCCL's tree column
    assert ll.for_algorithm("ring") is ll
    # An override inherits what it does not list.
    assert ll.for_algorithm("tree").bandwidth_fraction == ll.bandwidth_fraction


def test_all_to_all_never_runs_ll128():
    # NCCL's all_to_all is point-to-point sends: Simple, or LL for small ones; no LL128.
    cluster = load_topology("dgx-h100").cluster(nodes=4)
    options = protocol_costs(cluster, _hw(cluster), "all_to_all", 2**20)
    assert {p for (_, p) in options} == {"ll", "simple"}
