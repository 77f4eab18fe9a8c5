"""Property tests of the topology loader (zsim.network.load_topology) on generated YAML files.

Topologies valid by construction (1-16 GPUs per node, any split over PCIe switches and CPU
sockets, with or without NVLink, single-node or with a rail-optimized / fat-tree fabric):
they load, carve clusters, and price a collective and a whole prediction with finite
positive numbers. The same files with one thing broken must fail with one line naming the
key; arbitrary YAML text or bytes must load or fail cleanly, never crash.

Known crashes in zsim/network (reported, not generated here): integers beyond float range
(``gpus_per_node`` written as a 401-digit integer: OverflowError in spec._number), absurd
counts such as ``gpus_per_node: 10**30`` (MemoryError while checking placement) or
``switch_radix: 10**30`` (the connectivity check builds one graph vertex per spine), and a
5000-character ``--topo`` name (OSError: file name too long).
"""

from __future__ import annotations

import math
import os

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from zsim.errors import ZsimInputError
from zsim.network import load_topology

SCALE = float(os.environ.get("ZSIM_PROPERTY_SCALE", "1"))
EXAMPLES = {k: max(1, int(v * SCALE)) for k, v in {"valid": 80, "broken": 200, "text": 120}.items()}
SETTINGS = dict(deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
HARDWARE = ["a100-sxm-80gb", "a100-sxm-40gb", "h100-sxm", "h200-sxm"]
TINY_MODEL = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "intermediate_size": 256, "vocab_size": 1000, "max_position_embeddings": 256}


def check_error(exc: ZsimInputError, *needles: str) -> None:
    """One short line that names the offending key or value."""
    text = str(exc)
    assert text and "\n" not in text and len(text) < 800, repr(text)
    assert any(n.lower() in text.lower() for n in needles), (needles, text)


def _split(draw, items: list[int], parts: int) -> list[list[int]]:
    """Items over ``parts`` lists (order kept within each; some lists may be empty)."""
    owners = [draw(st.integers(0, parts - 1)) for _ in items]
    return [[i for i, o in zip(items, owners) if o == p] for p in range(parts)]


bandwidth = st.one_of(st.floats(0.5, 1000), st.integers(1, 1000), st.sampled_from(["64", "2e2"]))


@st.composite
def topologies(draw) -> dict:
    gpus = draw(st.integers(1, 16))
    cpus = draw(st.integers(1, 4))
    nvlink = draw(st.booleans())
    fabric = draw(st.booleans())
    nics = draw(st.integers(1, gpus)) if fabric else 0
    n_sw = draw(st.integers(1, max(1, gpus)))
    gpu_split = _split(draw, list(range(gpus)), n_sw)
    nic_split = _split(draw, list(range(nics)), n_sw)
    switches = []
    for g, n in zip(gpu_split, nic_split):
        sw = {"cpu": draw(st.integers(0, cpus - 1)), "gpus": g, "nics": n}
        if nvlink and not fabric and g and draw(st.integers(0, 4)) == 0:
            del sw["cpu"]  # a GPU board behind its own switch, reached over NVLink
        switches.append(sw)
    if not any("cpu" in sw and sw["gpus"] for sw in switches):
        for sw in switches:  # some GPU must sit under a CPU, or the CPUs are cut off
            sw.setdefault("cpu", 0)
    pcie = {"gpu_bandwidth_GBps": draw(bandwidth), "uplink_bandwidth_GBps": draw(bandwidth),
            "cpus": cpus, "switches": switches}
    if nics or draw(st.booleans()):
        pcie["nic_bandwidth_GBps"] = draw(bandwidth)
    if cpus > 1 or draw(st.booleans()):
        pcie["socket_bandwidth_GBps"] = draw(bandwidth)
    node = {"hardware": draw(st.sampled_from(HARDWARE)), "gpus_per_node": gpus, "pcie": pcie}
    if nvlink:
        node["nvlink"] = {"bandwidth_GBps": draw(bandwidth)}
        if draw(st.booleans()):
            node["nvlink"]["nvswitches"] = draw(st.integers(1, 6))
    doc = {"name": draw(st.text("abcdefgh-0123456789", min_size=1, max_size=12)), "node": node}
    doc.update(draw(st.fixed_dictionaries({}, optional={"description": st.text(max_size=30),
                                                         "source": st.text(max_size=30)})))
    if fabric:
        kind = draw(st.sampled_from(["rail_optimized", "fat_tree"]))
        levels = draw(st.integers(1, 3))
        radix = draw(st.integers(2, 128))
        over = draw(st.sampled_from([1.0, 2.0, 3.0, 0.5]))
        if kind == "fat_tree" and levels > 1:
            down = max(1, int(math.floor(radix * over / (1.0 + over) + 1e-9)))
            assume(down >= nics)
        doc["fabric"] = {"kind": kind, "nics_per_node": nics, "nic_bandwidth_Gbps": draw(st.sampled_from([100, 200, 400, 800])),
                         "levels": levels, "switch_radix": radix, "oversubscription": over,
                         "placement": draw(st.sampled_from(["packed", "scattered"]))}
    return doc


def write(tmp_path_factory, doc=None, text: str | bytes | None = None):
    path = tmp_path_factory.mktemp("topo") / "gen.yaml"
    if doc is not None:
        text = yaml.safe_dump(doc, allow_unicode=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def _finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@settings(max_examples=EXAMPLES["valid"], **SETTINGS)
@given(topologies(), st.data())
def test_valid_topologies_load_and_price(tmp_path_factory, doc, data):
    from zsim.collectives import collective_cost
    from zsim.hardware import load_profile
    from zsim.predict import predict

    path = write(tmp_path_factory, doc)
    topo = load_topology(path)
    gpus = doc["node"]["gpus_per_node"]
    assert topo.gpus_per_node == gpus and topo.name == doc["name"]
    k = data.draw(st.integers(1, gpus), label="gpus")
    cluster = topo.cluster(gpus=k)
    assert cluster.world_size == k
    if "fabric" in doc:
        m = data.draw(st.integers(1, min(topo.max_nodes, 8)), label="nodes")
        cluster = topo.cluster(nodes=m)
        assert cluster.world_size == m * gpus
    import json
    json.dumps(topo.describe(nodes=cluster.num_nodes), allow_nan=False)
    hw = load_profile(cluster.hardware)
    size = data.draw(st.integers(1, 2**34), label="bytes")
    op = data.draw(st.sampled_from(["all_reduce", "all_gather", "reduce_scatter"]), label="op")
    cost = collective_cost(cluster, hw, op, size, group="world")
    assert cost.time_s >= 0 and math.isfinite(cost.time_s)
    if cluster.world_size > 1:
        assert cost.time_s > 0
    pred = predict(model=_tiny_model(tmp_path_factory), topo=path, nodes=cluster.num_nodes,
                   stage=data.draw(st.integers(0, 3), label="stage"))
    assert _finite_positive(pred.step_time_s) and pred.peak_memory_bytes > 0


_TINY = {}


def _tiny_model(tmp_path_factory):
    if "path" not in _TINY:
        import json
        path = tmp_path_factory.mktemp("tiny") / "config.json"
        path.write_text(json.dumps(TINY_MODEL))
        _TINY["path"] = path
    return _TINY["path"]


BAD_NUMBER = st.sampled_from([0, -1, -0.5, "x", "", True, [], {}, float("nan"), float("inf"), None, "1e400"])
BAD_COUNT = st.sampled_from([0, -2, 1.5, "eight", True, [], float("nan"), float("-inf")])


@st.composite
def broken_topologies(draw) -> tuple[dict, tuple[str, ...]]:
    doc = draw(topologies())
    node, pcie = doc["node"], doc["node"]["pcie"]
    kind = draw(st.sampled_from(["name", "gpus", "bw", "nvlink_bw", "cpus", "switch_cpu", "dup_gpu",
                                 "lost_gpu", "gpu_range", "unknown", "hardware", "fabric_kind",
                                 "placement", "levels", "radix", "nics0", "nic_bw", "switches",
                                 "section"]))
    if kind == "name":
        doc["name"] = draw(st.sampled_from([None, "", 5, []]))
        return doc, ("name",)
    if kind == "gpus":
        node["gpus_per_node"] = draw(BAD_COUNT)
        return doc, ("gpus_per_node",)
    if kind == "bw":
        key = draw(st.sampled_from(["gpu_bandwidth_GBps", "uplink_bandwidth_GBps"]))
        pcie[key] = draw(BAD_NUMBER)
        return doc, (f"node.pcie.{key}",)
    if kind == "nvlink_bw":
        node["nvlink"] = {"bandwidth_GBps": draw(BAD_NUMBER.filter(lambda v: v != 0))}
        return doc, ("node.nvlink.bandwidth_GBps",)
    if kind == "cpus":
        pcie["cpus"] = draw(BAD_COUNT)
        return doc, ("node.pcie.cpus",)
    if kind == "switch_cpu":
        i = draw(st.integers(0, len(pcie["switches"]) - 1))
        pcie["switches"][i]["cpu"] = draw(st.one_of(st.integers(pcie["cpus"], 100), st.sampled_from([-1, "a", 0.5])))
        return doc, (f"switches[{i}].cpu",)
    if kind == "dup_gpu":
        gpu = draw(st.integers(0, node["gpus_per_node"] - 1))
        pcie["switches"].append({"cpu": 0, "gpus": [gpu], "nics": []})
        return doc, (f"GPU {gpu}",)
    if kind == "lost_gpu":
        sw = draw(st.sampled_from([s for s in pcie["switches"] if s["gpus"]]))
        lost = sw["gpus"].pop()
        return doc, (f"GPU {lost}",)
    if kind == "gpu_range":
        pcie["switches"][0]["gpus"].append(node["gpus_per_node"] + draw(st.integers(0, 5)))
        return doc, ("GPU", "gpus_per_node")
    if kind == "unknown":
        where = draw(st.sampled_from(["top", "node", "pcie", "switch", "fabric", "nvlink"]))
        target = {"top": doc, "node": node, "pcie": pcie, "switch": pcie["switches"][0],
                  "fabric": doc.get("fabric"), "nvlink": node.get("nvlink")}[where]
        assume(target is not None)
        key = draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in target and k.strip() == k
                                                           and k.isprintable()))
        allowed = {"top": {"description", "source"}, "pcie": {"nic_bandwidth_GBps", "socket_bandwidth_GBps"},
                   "switch": {"cpu", "gpus", "nics"}, "nvlink": {"nvswitches"},
                   "fabric": set(), "node": {"nvlink"}}[where]
        assume(key not in allowed)
        target[key] = draw(st.sampled_from([1, "x", None, [1]]))
        return doc, (repr(key), key)
    if kind == "hardware":
        node["hardware"] = draw(st.sampled_from(["z100", "", 5, None, "missing.yaml", []]))
        return doc, ("hardware",)
    if kind == "switches":
        pcie["switches"] = draw(st.sampled_from([[], None, {}, "four", [1], [None]]))
        return doc, ("switches",)
    if kind == "section":
        key = draw(st.sampled_from(["node", "pcie"]))
        (doc if key == "node" else node)[key] = draw(st.sampled_from([[], "x", 3, None]))
        return doc, (key,)
    fabric = doc.get("fabric")
    assume(fabric is not None)
    if kind == "fabric_kind":
        fabric["kind"] = draw(st.sampled_from(["torus", "", 3, [], "Fat_Tree"]))
        return doc, ("fabric.kind",)
    if kind == "placement":
        fabric["placement"] = draw(st.sampled_from(["random", "", 0, {}]))
        return doc, ("fabric.placement",)
    if kind == "levels":
        fabric["levels"] = draw(st.sampled_from([0, 4, -1, 2.5, "two"]))
        return doc, ("fabric.levels",)
    if kind == "radix":
        fabric["switch_radix"] = draw(st.sampled_from([1, 0, -8, 1.5, "x"]))
        return doc, ("fabric.switch_radix",)
    if kind == "nics0":
        fabric["nics_per_node"] = 0
        return doc, ("nics_per_node",)
    fabric["nic_bandwidth_Gbps"] = draw(BAD_NUMBER)
    return doc, ("fabric.nic_bandwidth_Gbps",)


@settings(max_examples=EXAMPLES["broken"], **SETTINGS)
@given(broken_topologies())
def test_one_broken_key_is_named(tmp_path_factory, case):
    doc, needles = case
    path = write(tmp_path_factory, doc)
    with pytest.raises(ZsimInputError) as info:
        load_topology(path)
    check_error(info.value, *needles)


yaml_text = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    st.sampled_from(["", "---\n", "- a\n- b\n", "name: [unclosed\n", "name: x\n\tnode: 1\n",
                     "!!python/object/apply:os.system ['true']\n", "a: &x [*x]\n", "? [a]\n: 1\n",
                     "[" * 5000 + "]" * 5000, "a:\n" + "".join(" " * (i + 1) + "a:\n" for i in range(1500)),
                     "name: x\nnode: " + "9" * 5000 + "\n"]).map(str),
    st.sampled_from([b"\xff\xfe\x00n\x00a", b"name: \xe9\n", b"\xef\xbb\xbfname: x\n"]),
)


@settings(max_examples=EXAMPLES["text"], **SETTINGS)
@given(topologies(), yaml_text, st.integers(0, 3))
def test_arbitrary_yaml_loads_or_fails_cleanly(tmp_path_factory, doc, text, mode):
    """Garbage alone, or spliced into a valid file (before, after, or replacing a line)."""
    good = yaml.safe_dump(doc, allow_unicode=True).encode("utf-8")
    junk = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    lines = good.splitlines(keepends=True)
    content = [junk, junk + b"\n" + good, good + junk,
               b"".join(lines[:len(lines) // 2]) + junk + b"\n" + b"".join(lines[len(lines) // 2 + 1:])][mode]
    path = write(tmp_path_factory, text=content)
    try:
        load_topology(path)
    except ZsimInputError as exc:
        check_error(exc, path.name)

