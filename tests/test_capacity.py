"""`zsim capacity`: the Llama family ladder, monotonicity (stage 3 >= 2 >= 1; more nodes never
less), agreement with `zsim predict` at the boundary, and the rule-of-thumb lines."""

import pytest

from zsim.cli import main
from zsim.decide.capacity import ROWS, family
from zsim.model import load_model
from zsim.plan import capacity


@pytest.fixture(scope="module")
def one_node():
    return capacity("dgx-a100", seq=2048, micro_batch=1)


def test_family_is_strictly_increasing_and_passes_through_llama2():
    ladder = family()
    sizes = [m.num_parameters for m in ladder]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    for preset in ("llama-2-7b", "llama-2-13b", "llama-2-70b"):
        assert load_model(preset).num_parameters in sizes, preset


def test_stage3_ge_stage2_ge_stage1(one_node):
    for ckpt in (False, True):
        s1, s2, s3 = (one_node.largest(s, activation_checkpointing=ckpt) for s in (1, 2, 3))
        assert s3 >= s2 >= s1 > 0, (ckpt, s1, s2, s3)
        assert s3 > s1                       # sharding everything must buy something
    # Offloading never lowers what fits, nor does checkpointing.
    for stage, oo, op in ROWS:
        assert one_node.largest(stage, oo, op, True) >= one_node.largest(stage, oo, op, False)
    assert one_node.largest(2, "cpu") >= one_node.largest(2)
    assert one_node.largest(3, "cpu", "cpu") >= one_node.largest(3, "cpu") >= one_node.largest(3)


def test_more_nodes_never_less(one_node):
    two = capacity("dgx-a100", nodes=2, seq=2048, micro_batch=1)
    four = capacity("dgx-a100", nodes=4, seq=2048, micro_batch=1)
    for a, b, c in zip(one_node.rows, two.rows, four.rows):
        assert a.largest_params <= b.largest_params <= c.largest_params, a.label
    # ZeRO-3 shards model states over all GPUs: 4 nodes must fit a strictly larger model.
    assert four.largest(3) > one_node.largest(3)


def test_boundary_agrees_with_predict(one_node):
    from zsim.predict import predict
    row = next(r for r in one_node.rows if (r.stage, r.offload_optimizer, r.activation_checkpointing) == (2, "none", False))
    kw = dict(topo="dgx-a100", stage=2, micro_batch=1, grad_accum=1, seq=2048, activation_checkpointing=False)
    assert predict(row.largest, **kw).fits
    assert not predict(row.next_larger, **kw).fits
    assert "exceeds" in row.limit


def test_rule_of_thumb_printed_with_assumptions(one_node, capsys):
    lines = one_node.rule_of_thumb
    assert [ln.split(" ")[0] for ln in lines] == ["ZeRO-1", "ZeRO-2", "ZeRO-3"]
    assert "30B" in lines[0] and "60B" in lines[1] and "100B" in lines[2]
    assert all("holds with" in ln and "fails with" in ln for ln in lines)
    assert main(["capacity", "--topo", "dgx-a100", "--json"]) == 0
    assert '"rule_of_thumb"' in capsys.readouterr().out
