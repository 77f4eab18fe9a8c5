"""`zsim capacity`: the Llama family ladder, monotonicity (stage 3 >= 2 >= 1; more nodes never
less), agreement with `zsim predict` at the boundary, and the rule-of-thumb lines."""

import pytest

from zsim.cli import main
from zsim.decide.capacity import family
from zsim.model import load_model
from zsim.decide.api import capacity


NO_OFFLOAD = ((1, "none", "none"), (2, "none", "none"), (3, "none", "none"))


@pytest.fixture(scope="module")
def one_node():
    return capacity("dgx-a100", seq=2048, micro_batch=1, checkpointing=(False,))


@pytest.fixture(scope="module")
def one_node_ckpt():
    return capacity("dgx-a100", seq=2048, micro_batch=1, checkpointing=(True,), rows=NO_OFFLOAD)


def test_family_is_strictly_increasing_and_passes_through_llama2():
    ladder = family()
    sizes = [m.num_parameters for m in ladder]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    for preset in ("llama-2-7b", "llama-2-13b", "llama-2-70b"):
        assert load_model(preset).num_parameters in sizes, preset


def test_stage3_ge_stage2_ge_stage1(one_node, one_node_ckpt):
    for ckpt, res in ((False, one_node), (True, one_node_ckpt)):
        s1, s2, s3 = (res.largest(s, activation_checkpointing=ckpt) for s in (1, 2, 3))
        assert s3 >= s2 >= s1 > 0, (ckpt, s1, s2, s3)
        assert s3 > s1                       # sharding everything must buy something
    # Offloading never lowers what fits, nor does checkpointing.
    for stage, oo, op in NO_OFFLOAD:
        assert one_node_ckpt.largest(stage, oo, op, True) >= one_node.largest(stage, oo, op, False)
    assert one_node.largest(1, "cpu") >= one_node.largest(1)
    assert one_node.largest(2, "cpu") >= one_node.largest(2)
    assert one_node.largest(3, "cpu", "cpu") >= one_node.largest(3, "cpu") >= one_node.largest(3)


def test_more_nodes_never_less(one_node):
    rows = ((1, "none", "none"), (2, "none", "none"), (2, "cpu", "none"), (3, "none", "none"), (3, "cpu", "none"))
    two = capacity("dgx-a100", nodes=2, seq=2048, micro_batch=1, rows=rows, checkpointing=(False,))
    four = capacity("dgx-a100", nodes=4, seq=2048, micro_batch=1, rows=rows, checkpointing=(False,))
    for b, c in zip(two.rows, four.rows):
        a = one_node.largest(b.stage, b.offload_optimizer, b.offload_param, False)
        assert a <= b.largest_params <= c.largest_params, b.label
    # ZeRO-3 shards model states over all GPUs: 4 nodes must fit a strictly larger model.
    assert four.largest(3) > one_node.largest(3)


def test_boundary_agrees_with_predict(one_node):
    from zsim.predict import predict
    row = next(r for r in one_node.rows if (r.stage, r.offload_optimizer) == (2, "none"))
    kw = dict(topo="dgx-a100", stage=2, micro_batch=1, grad_accum=1, seq=2048, activation_checkpointing=False)
    assert predict(row.largest, **kw).fits
    assert not predict(row.next_larger, **kw).fits
    assert "exceeds" in row.limit


def test_rule_of_thumb_printed_with_assumptions(one_node, capsys):
    lines = one_node.rule_of_thumb
    assert [ln.split(" ")[0] for ln in lines] == ["ZeRO-1", "ZeRO-2", "ZeRO-3"]
    assert "30B" in lines[0] and "60B" in lines[1] and "100B" in lines[2]
    assert all("holds with" in ln and "fails with" in ln for ln in lines)
    # The guides' communication low / medium / high, as simulated busy time per step.
    busy = dict(one_node.comm_busy_s)
    assert busy[3] > busy[2] > busy[1] > 0
    assert main(["capacity", "--topo", "dgx-a100", "--stage", "1", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"rule_of_thumb"' in out and '"ZeRO-1 ~ 30B' in out and "ZeRO-2" not in out
