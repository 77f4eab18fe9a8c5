"""Group descriptors, the no-op emitter, typed stage-3 events and the callable zsim.schedule."""

from __future__ import annotations

import pytest

import zsim
from zsim.collectives import GROUPS, collective_cost, link_table
from zsim.collectives.base import GroupShape, group_shape
from zsim.errors import ZsimInputError
from zsim.groups import INTER_NODE, INTRA_NODE, NAMED_GROUPS, WORLD, Dim, Group, as_group
from zsim.hardware import load_profile
from zsim.network import load_topology
from zsim.ops import Op
from zsim.output import wire_bytes_per_gpu
from zsim.schedule.emit import NullEmitter


@pytest.mark.parametrize("gpus_per_node,nodes", [(1, 1), (1, 4), (8, 1), (8, 4), (4, 16)])
def test_named_groups_have_the_shapes_of_the_old_strings(gpus_per_node, nodes):
    # The shapes group_shape gave the strings "world", "intra_node", "inter_node".
    old = {"world": GroupShape(gpus_per_node, nodes),
           "intra_node": GroupShape(gpus_per_node, 1),
           "inter_node": GroupShape(1, nodes, rails_busy=gpus_per_node > 1)}
    for label, shape in old.items():
        assert GroupShape(*NAMED_GROUPS[label].placement(gpus_per_node, nodes)) == shape


def test_labels_are_the_cli_choices_and_convert():
    assert GROUPS == ("world", "intra_node", "inter_node")
    assert [as_group(g) for g in GROUPS] == [WORLD, INTRA_NODE, INTER_NODE]
    assert as_group(WORLD) is WORLD and str(INTER_NODE) == "inter_node"
    for bad in ("rack", None, 3):
        with pytest.raises(ZsimInputError, match="unknown group"):
            as_group(bad)
    with pytest.raises(ZsimInputError):
        Group("tensor", Dim.TENSOR, ranks_per_node=-1)


def test_label_and_descriptor_price_the_same():
    cluster = load_topology("dgx-h100").cluster(nodes=2)
    hw = load_profile(cluster.hardware)
    for label, group in NAMED_GROUPS.items():
        a = collective_cost(cluster, hw, "all_gather", 2**28, group=label)
        b = collective_cost(cluster, link_table(hw), "all_gather", 2**28, group=group)
        assert a == b


def test_a_new_placement_prices_without_new_code():
    cluster = load_topology("dgx-h100").cluster(nodes=2)
    hw = load_profile(cluster.hardware)
    tp4 = Group("tensor", Dim.TENSOR, ranks_per_node=4, nodes=1, concurrent=True)
    assert group_shape(cluster, tp4) == GroupShape(4, 1, rails_busy=True)
    assert collective_cost(cluster, hw, "all_reduce", 2**26, group=tp4).group_size == 4
    with pytest.raises(ZsimInputError, match="spans"):
        group_shape(cluster, Group("too-wide", ranks_per_node=16))


def test_group_sizes_match_wire_bytes():
    assert [g.size(64, 8) for g in (WORLD, INTRA_NODE, INTER_NODE)] == [64, 8, 8]
    assert INTER_NODE.size(4, 8) == 1
    ops = [Op(id=0, stream="comm", kind="collective", name="x", collective="all_gather_into_tensor",
              buffer_bytes=800, group="intra_node")]
    assert ops[0].group is INTRA_NODE  # a label is converted on construction
    assert wire_bytes_per_gpu(ops, 64, 8) == {"all_gather_into_tensor": 700.0}


def test_null_emitter_records_nothing():
    em = NullEmitter(8)
    em.wait_for.append(3)
    assert em.collective("x", "all_reduce", 4) is None
    assert em.compute("m", "fwd") is None
    assert em.ops.ops == [] and em.wait_for == [] and em.last_compute is None


def test_schedule_is_callable_and_a_package():
    import zsim.schedule.stage3 as stage3  # failed while zsim.schedule was a function

    assert callable(zsim.schedule) and stage3.emit_stage3
    result = zsim.schedule("tinyllama-1.1b", None, 2, stage=1)
    assert result.collectives == zsim.schedule.steady_state_collectives("tinyllama-1.1b", None, 2, stage=1)


def test_deprecated_name_form_prices_like_the_loaded_profile():
    # validation/published/evaluate.py still passes None (the cluster's own profile).
    cluster = load_topology("dgx-a100").cluster(nodes=2)
    loaded = collective_cost(cluster, load_profile(cluster.hardware), "all_reduce", 2**24)
    assert collective_cost(cluster, None, "all_reduce", 2**24) == loaded
    assert collective_cost(cluster, cluster.hardware, "all_reduce", 2**24) == loaded
