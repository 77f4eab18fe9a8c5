"""Topologies: shipped files load, clusters carve as documented, bad files fail clearly."""

from __future__ import annotations

import networkx as nx
import pytest
import yaml

from zsim.errors import ZsimInputError
from zsim.network import list_topologies, load_topology
from zsim.network.summary import fabric_share
from zsim.network.units import parse_bytes

SHIPPED = ["dgx-a100", "dgx-a100-40gb", "dgx-h100", "hgx-h200", "pcie-8gpu"]


def test_shipped_topologies_are_listed():
    assert set(SHIPPED) <= set(list_topologies())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_topology_loads_and_is_connected(name):
    topo = load_topology(name)
    assert topo.gpus_per_node == 8
    g = topo.graph(nodes=2)
    assert nx.is_connected(g)
    gpus = [v for v, d in g.nodes(data=True) if d["kind"] == "gpu"]
    assert len(gpus) == 16
    for _, _, d in g.edges(data=True):
        assert d["bandwidth_GBps"] > 0 and d["link_type"] in {"nvlink", "pcie", "ib"}


@pytest.mark.parametrize("name,profile", [("dgx-a100", "a100-sxm-80gb"),
                                          ("dgx-a100-40gb", "a100-sxm-40gb"),
                                          ("dgx-h100", "h100-sxm"), ("hgx-h200", "h200-sxm")])
def test_node_names_its_hardware_profile(name, profile):
    assert load_topology(name).cluster().hardware == profile


def test_nvlink_and_pcie_nodes_differ():
    nv = load_topology("dgx-h100").cluster().net
    pcie = load_topology("pcie-8gpu").cluster().net
    assert nv.intra_link_type == "nvlink" and nv.intra_GBps == 450
    assert pcie.intra_link_type == "pcie"
    assert pcie.intra_GBps < nv.intra_GBps


def test_gpus_takes_first_n_of_one_node():
    c = load_topology("dgx-a100").cluster(gpus=4)
    assert (c.world_size, c.gpus_per_node, c.num_nodes) == (4, 4, 1)
    assert len([v for v in c.graph() if "/gpu" in v]) == 8  # the graph is the whole node


def test_nodes_takes_whole_nodes():
    c = load_topology("dgx-h100").cluster(nodes=4)
    assert (c.world_size, c.gpus_per_node, c.num_nodes) == (32, 8, 4)
    assert c.net.ring_ib_GBps == pytest.approx(8 * 50)


def test_default_cluster_is_one_node():
    c = load_topology("hgx-h200").cluster()
    assert (c.world_size, c.num_nodes) == (8, 1)


@pytest.mark.parametrize("kwargs,match", [
    ({"gpus": 9}, "exceeds the 8 GPUs"),
    ({"gpus": 0}, "positive integer"),
    ({"nodes": 0}, "positive integer"),
    ({"nodes": -2}, "positive integer"),
    ({"nodes": 2.5}, "positive integer"),
    ({"gpus": 2, "nodes": 2}, "not both"),
    ({"nodes": 100000}, "exceeds"),
])
def test_cluster_size_errors(kwargs, match):
    with pytest.raises(ZsimInputError, match=match):
        load_topology("dgx-h100").cluster(**kwargs)


def test_shared_nics_split_bandwidth():
    # pcie-8gpu: one NIC per two GPUs, so each GPU gets half a NIC when all send.
    net = load_topology("pcie-8gpu").cluster(nodes=2).net
    assert net.nics_used == 4
    assert net.rail_ib_GBps == pytest.approx(25.0 / 2)


def test_large_clusters_are_cheap_to_describe():
    c = load_topology("dgx-h100").cluster(nodes=1024)
    assert c.world_size == 8192
    assert c.net.fabric_share == 1.0  # packed rail-optimized rings are non-blocking


# --- user-written topologies ---------------------------------------------------------------

BASE = {
    "name": "tiny",
    "node": {
        "hardware": "h100-sxm", "gpus_per_node": 4,
        "nvlink": {"bandwidth_GBps": 450, "nvswitches": 2},
        "pcie": {"gpu_bandwidth_GBps": 64, "nic_bandwidth_GBps": 64, "uplink_bandwidth_GBps": 64,
                 "cpus": 1, "switches": [{"cpu": 0, "gpus": [0, 1], "nics": [0]},
                                         {"cpu": 0, "gpus": [2, 3], "nics": [1]}]},
    },
    "fabric": {"kind": "fat_tree", "nics_per_node": 2, "nic_bandwidth_Gbps": 400, "levels": 2,
               "switch_radix": 8, "oversubscription": 1.0},
}


def _write(tmp_path, data, name="t.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _variant(**changes):
    import copy
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        target = data
        keys = dotted.split("__")
        for k in keys[:-1]:
            target = target[k]
        if value is None:
            target.pop(keys[-1])
        else:
            target[keys[-1]] = value
    return data


def test_user_topology_without_code(tmp_path):
    topo = load_topology(_write(tmp_path, BASE))
    assert topo.gpus_per_node == 4  # never hard-coded 8
    c = topo.cluster(nodes=3)
    assert (c.world_size, c.gpus_per_node) == (12, 4)
    assert topo.fabric.nodes_per_leaf == 2  # 4 down ports / 2 NICs per node
    assert nx.is_connected(c.graph())


@pytest.mark.parametrize("changes,match", [
    ({"node__pcie__gpu_bandwidth_GBps": 0}, "gpu_bandwidth_GBps must be positive"),
    ({"node__nvlink__bandwidth_GBps": -5}, "bandwidth_GBps must be positive"),
    ({"fabric__nic_bandwidth_Gbps": 0}, "nic_bandwidth_Gbps must be positive"),
    ({"fabric__nic_bandwidth_Gbps": "fast"}, "nic_bandwidth_Gbps must be a finite number"),
    ({"fabric__nics_per_node": 0}, "nics_per_node is 0"),
    ({"fabric__nics_per_node": 3}, "NIC 2 .* is not placed"),
    ({"node__pcie__switches": [{"cpu": 0, "gpus": [0, 1, 2], "nics": [0, 1]}]}, "GPU 3"),
    ({"node__pcie__switches": [{"cpu": 0, "gpus": [0, 1, 2, 3, 4], "nics": [0, 1]}]},
     "places GPU 4"),
    ({"node__pcie__switches": [{"cpu": 0, "gpus": [0, 1, 1, 2, 3], "nics": [0, 1]}]},
     "more than one"),
    ({"node__pcie__switches": [{"cpu": 3, "gpus": [0, 1, 2, 3], "nics": [0, 1]}]},
     "cpus = 1"),
    ({"node__bandwidth": 5}, "unknown key 'bandwidth' in node"),
    ({"fabric__oversubscribe": 2}, "unknown key 'oversubscribe' in fabric"),
    ({"extra": 1}, "unknown key 'extra' in top level"),
    ({"fabric__kind": "torus"}, "fabric.kind must be one of"),
    ({"fabric__levels": 4}, "levels must be 1, 2 or 3"),
    ({"fabric__placement": "random"}, "placement must be one of"),
    ({"node__hardware": "tpu-v9"}, "unknown profile 'tpu-v9'"),
    ({"node__gpus_per_node": None}, "missing key 'node.gpus_per_node'"),
    ({"name": None}, "missing key 'name'"),
    ({"node__pcie__nic_bandwidth_GBps": None}, "missing key 'node.pcie.nic_bandwidth_GBps'"),
    ({"node__pcie__cpus": 2}, "missing key 'node.pcie.socket_bandwidth_GBps'"),
    ({"node__pcie__switches": []}, "non-empty list"),
    ({"fabric__switch_radix": 1}, "at least 2"),
])
def test_validation_errors_name_the_problem(tmp_path, changes, match):
    path = _write(tmp_path, _variant(**changes))
    with pytest.raises(ZsimInputError, match=match):
        load_topology(path)


def test_disconnected_graph_is_an_error(tmp_path):
    data = _variant(node__nvlink=None)
    data["node"]["pcie"]["switches"][1].pop("cpu")  # a switch hanging off nothing
    with pytest.raises(ZsimInputError, match="disconnected"):
        load_topology(_write(tmp_path, data))


def test_single_node_topology_refuses_nodes(tmp_path):
    data = _variant(fabric=None)
    for sw in data["node"]["pcie"]["switches"]:
        sw["nics"] = []
    topo = load_topology(_write(tmp_path, data))
    assert topo.cluster(gpus=4).world_size == 4
    with pytest.raises(ZsimInputError, match="no fabric"):
        topo.cluster(nodes=2)


def test_malformed_and_missing_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("node: [unclosed\n")
    with pytest.raises(ZsimInputError, match="malformed YAML"):
        load_topology(str(bad))
    with pytest.raises(ZsimInputError, match="unknown topology 'nope'"):
        load_topology("nope")
    with pytest.raises(ZsimInputError, match="not found"):
        load_topology(str(tmp_path / "missing.yaml"))


def test_edited_file_is_reloaded(tmp_path):
    import os
    path = _write(tmp_path, BASE)
    assert load_topology(path).cluster().net.intra_GBps == 450
    data = _variant(node__nvlink__bandwidth_GBps=300)
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(data))
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert load_topology(path).cluster().net.intra_GBps == 300


# --- fabric arithmetic ---------------------------------------------------------------------

def _fabric(tmp_path, **fab):
    data = _variant()
    data["fabric"].update(fab)
    return load_topology(_write(tmp_path, data, f"f{abs(hash(str(fab)))}.yaml")).fabric


def test_oversubscription_sets_port_split(tmp_path):
    f = _fabric(tmp_path, switch_radix=64, oversubscription=3.0)
    assert (f.leaf_down_ports, f.leaf_up_ports) == (48, 16)


def test_scattered_jobs_feel_oversubscription(tmp_path):
    packed = _fabric(tmp_path, switch_radix=64, oversubscription=2.0, placement="packed")
    scattered = _fabric(tmp_path, switch_radix=64, oversubscription=2.0, placement="scattered")
    nodes = 4 * packed.nodes_per_leaf
    assert fabric_share(packed, nodes) == 1.0
    assert fabric_share(scattered, nodes) < 0.7
    assert fabric_share(scattered, 1) == 1.0
    # Within one leaf nothing crosses an uplink.
    assert fabric_share(scattered, scattered.nodes_per_leaf) == 1.0


def test_more_levels_hold_more_nodes(tmp_path):
    sizes = [_fabric(tmp_path, switch_radix=16, levels=lv).max_nodes for lv in (1, 2, 3)]
    assert sizes[0] < sizes[1] < sizes[2]


def test_graph_has_spines_when_nodes_span_leaves(tmp_path):
    topo = load_topology(_write(tmp_path, BASE))
    g = topo.graph(nodes=4)  # 2 nodes per leaf -> 2 leaves
    kinds = {d["kind"] for _, d in g.nodes(data=True)}
    assert {"leaf", "spine"} <= kinds
    assert nx.is_connected(g)


# --- sizes as users write them -------------------------------------------------------------

@pytest.mark.parametrize("text,value", [("1e9", 10**9), ("4096", 4096), ("256MiB", 256 * 2**20),
                                        ("1GiB", 2**30), ("2GB", 2 * 10**9), ("1.5e8", 150_000_000),
                                        ("8M", 8 * 2**20)])
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["0", "-5", "-1GiB", "abc", "1ZB", "", "nan", "inf"])
def test_parse_bytes_rejects(text):
    with pytest.raises(ZsimInputError):
        parse_bytes(text)


def test_gpu_without_pcie_path_to_a_nic_is_an_error(tmp_path):
    # GPUs 2,3 reach the others only over NVLink; their switch has no CPU and no NIC.
    data = _variant()
    data["node"]["pcie"]["switches"] = [{"cpu": 0, "gpus": [0, 1], "nics": [0, 1]},
                                        {"gpus": [2, 3], "nics": []}]
    with pytest.raises(ZsimInputError, match="GPU 2 reaches no NIC"):
        load_topology(_write(tmp_path, data))  # connected, but only through NVLink
