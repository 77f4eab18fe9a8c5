"""The 3D layout: degrees and their checks, Megatron's rank order, DeepSpeed's batch identity
and layer partition, and each dimension's group placed on a cluster."""

from __future__ import annotations

import re

import pytest

from truth_packages import require_truth_packages
from zsim.collectives.base import GroupShape, group_shape
from zsim.errors import ZsimInputError
from zsim.groups import Dim, Group
from zsim.network import load_topology
from zsim.parallel.layout import (RankCoords, check_model, derive_layout, pipeline_batch,
                                  place_layout, stage_layer_counts)


def _groups(text: str) -> list[list[int]]:
    """Megatron's docstring notation "[g0, g2], [g1, g3]" as lists of ranks."""
    return [[int(g) for g in re.findall(r"g(\d+)", grp)] for grp in re.findall(r"\[[^\]]*\]", text)]


def test_megatron_docstring_example_of_16_gpus():
    """Megatron-LM megatron/core/parallel_state.py (commit d98e8a64) lines 755-765: 16 GPUs,
    tensor parallel 2, pipeline parallel 4 give these data, tensor and pipeline groups."""
    layout = derive_layout(16, tp=2, pp=4)
    assert layout.dp == 2
    data = "[g0, g2], [g1, g3], [g4, g6], [g5, g7], [g8, g10], [g9, g11], [g12, g14], [g13, g15]"
    tensor = "[g0, g1], [g2, g3], [g4, g5], [g6, g7], [g8, g9], [g10, g11], [g12, g13], [g14, g15]"
    pipeline = "[g0, g4, g8, g12], [g1, g5, g9, g13], [g2, g6, g10, g14], [g3, g7, g11, g15]"
    assert [list(g) for g in layout.group_ranks(Dim.DATA)] == _groups(data)
    assert [list(g) for g in layout.group_ranks(Dim.TENSOR)] == _groups(tensor)
    assert [list(g) for g in layout.group_ranks(Dim.PIPELINE)] == _groups(pipeline)


def test_megatron_equation_one_and_the_example_of_24_ranks():
    """parallel_state.py line 292, global_rank = tp_rank + dp_rank*tp + pp_rank*tp*dp, and the
    docstring example of lines 309-319 (tp 2, dp 3, pp 4: dp_group[7] = [19, 21, 23])."""
    layout = derive_layout(24, tp=2, pp=4)
    assert layout.dp == 3
    for rank in range(24):
        c = layout.coords(rank)
        assert rank == c.tp + c.dp * 2 + c.pp * 2 * 3
        assert layout.rank(c) == rank
    dp_groups = layout.group_ranks(Dim.DATA)
    assert list(dp_groups[0]) == [0, 2, 4] and list(dp_groups[1]) == [1, 3, 5]
    assert list(dp_groups[7]) == [19, 21, 23]


def test_deepspeed_pipe_model_data_topology_agrees():
    """DeepSpeed's own PipeModelDataParallelTopology (axes pipe, data, model) numbers ranks
    the same way (skips without deepspeed, fails under ZSIM_REQUIRE_TRUTH=1)."""
    require_truth_packages("DeepSpeed's pipeline topology", "deepspeed")
    from deepspeed.runtime.pipe import topology as topo_mod
    for pp, tp, dp in ((2, 2, 2), (4, 2, 3), (3, 1, 4)):
        topo = topo_mod.PipeModelDataParallelTopology(num_pp=pp, num_mp=tp, num_dp=dp)
        layout = derive_layout(pp * tp * dp, tp=tp, pp=pp)
        for rank in range(layout.world_size):
            c = topo.get_coord(rank)
            assert layout.coords(rank) == RankCoords(tp=c.model, sp=0, dp=c.data, pp=c.pipe)


def test_ulysses_groups_are_consecutive_ranks():
    """Megatron-DeepSpeed parallel_state.py (commit f4157bea) lines 209-211: sequence-parallel
    group i is ranks [i*sp, (i+1)*sp)."""
    layout = derive_layout(16, sp=4)
    assert layout.dp == 4
    assert [list(g) for g in layout.group_ranks(Dim.SEQUENCE)] == [list(range(i, i + 4)) for i in range(0, 16, 4)]
    assert list(layout.group_ranks(Dim.DATA)[0]) == [0, 4, 8, 12]


@pytest.mark.parametrize("world,kw,match", [
    (12, dict(tp=8), "not divisible"),
    (16, dict(tp=2, sp=2), "Ulysses"),
    (16, dict(pp=2, sp=2), "Ulysses"),
    (8, dict(tp=0), "positive"),
    (8, dict(pp=True), "positive"),
])
def test_bad_degrees_are_refused(world, kw, match):
    with pytest.raises(ZsimInputError, match=match):
        derive_layout(world, **kw)


def test_model_checks():
    layout = derive_layout(32, tp=8, pp=4)
    check_model(layout, num_layers=80, num_heads=64, num_kv_heads=8)   # Llama-2-70B: fine
    with pytest.raises(ZsimInputError, match="num_key_value_heads 4"):
        check_model(layout, 80, 64, 4)
    with pytest.raises(ZsimInputError, match="num_attention_heads 12"):
        check_model(layout, 80, 12, 4)
    with pytest.raises(ZsimInputError, match="only 3 layers"):
        check_model(layout, 3, 64, 8)
    with pytest.raises(ZsimInputError, match="Ulysses"):
        check_model(derive_layout(8, sp=8), 32, 12, 12)


def test_batch_identity():
    """DeepSpeed runtime/config.py:602: train batch = micro batch x grad accum x dp, with the
    pipeline's micro-batches = grad accum (pipe/engine.py:93)."""
    layout = derive_layout(384, tp=4, pp=12)       # BLOOM-176B's layout: dp 8
    assert layout.dp == 8
    batch = pipeline_batch(layout, micro_batch=2, global_batch=2048)
    assert batch.micro_batches == 128 and batch.global_batch == 2048
    assert pipeline_batch(layout, 2, grad_accum=128, global_batch=2048) == batch
    with pytest.raises(ZsimInputError, match="!="):
        pipeline_batch(layout, 2, grad_accum=64, global_batch=2048)
    with pytest.raises(ZsimInputError, match="not divisible"):
        pipeline_batch(layout, 3, global_batch=2048)


def test_uniform_partition_matches_deepspeed():
    """runtime/utils.py:606 partition_uniform (skips without deepspeed, fails under
    ZSIM_REQUIRE_TRUTH=1)."""
    require_truth_packages("DeepSpeed's partition_uniform", "deepspeed")
    from deepspeed.runtime import utils
    for layers in (4, 7, 30, 70, 105):
        for pp in (1, 2, 3, 4, 8):
            if layers < pp:
                continue
            parts = utils.partition_uniform(layers, pp)
            assert stage_layer_counts(layers, pp) == tuple(b - a for a, b in zip(parts, parts[1:]))
    with pytest.raises(ZsimInputError):
        stage_layer_counts(3, 4)


def test_placement_tensor_inside_nodes_pipeline_across():
    """tp 8 x pp 2 x dp 2 on 4 nodes of 8: each TP group fills one node, each DP group has one
    rank on each of 2 nodes, each PP group one rank on each of 2 nodes."""
    placed = place_layout(derive_layout(32, tp=8, pp=2), gpus_per_node=8, num_nodes=4)
    assert placed.group(Dim.TENSOR) == Group("tensor", Dim.TENSOR, ranks_per_node=8, nodes=1, concurrent=True)
    assert placed.group(Dim.DATA) == Group("data", Dim.DATA, ranks_per_node=1, nodes=2, concurrent=True)
    assert placed.group(Dim.PIPELINE) == Group("pipeline", Dim.PIPELINE, ranks_per_node=1, nodes=2, concurrent=True)
    assert placed.group(Dim.SEQUENCE) is None
    assert [placed.node_of(r) for r in placed.layout.group_ranks(Dim.PIPELINE)[0]] == [0, 2]


def test_placement_prices_through_the_collective_layer():
    """The groups are ordinary descriptors: group_shape turns them into shapes on a cluster."""
    cluster = load_topology("dgx-h100").cluster(nodes=2)
    placed = place_layout(derive_layout(16, tp=4, pp=2), cluster.gpus_per_node, cluster.num_nodes)
    assert group_shape(cluster, placed.group(Dim.TENSOR)) == GroupShape(4, 1, rails_busy=True)
    assert group_shape(cluster, placed.group(Dim.DATA)) == GroupShape(2, 1, rails_busy=True)
    assert group_shape(cluster, placed.group(Dim.PIPELINE)) == GroupShape(1, 2, rails_busy=True)


def test_placement_refusals():
    with pytest.raises(ZsimInputError, match="NVLink"):
        place_layout(derive_layout(16, tp=16), 8, 2)
    wide = place_layout(derive_layout(16, tp=16), 8, 2, allow_tp_across_nodes=True)
    assert wide.group(Dim.TENSOR).nodes == 2
    with pytest.raises(ZsimInputError, match="unevenly"):
        place_layout(derive_layout(12, tp=3), 4, 3)
    with pytest.raises(ZsimInputError, match="cluster has"):
        place_layout(derive_layout(16, tp=2), 8, 1)
