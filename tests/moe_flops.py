"""Shared by the MoE family tests: a model's forward GEMM FLOPs against two per active
parameter (top-k of the experts, every other matrix once; the tied lm_head counted too)."""

from __future__ import annotations

import pytest

from zsim.modeltree import model_tree
from zsim.workload import Workload


def check_two_flops_per_active_parameter(spec) -> tuple:
    """Assert that the workload's forward GEMMs are 2 FLOPs per active parameter per token
    and backward's twice that; returns (forward module nodes, workload) for further checks."""
    tree = model_tree(spec)
    w = Workload(spec, 2, 64, 2)
    ops = tree.forward()
    assert [n.op for n in ops] == w.all_modules()
    assert all(w.kernels(n.op, "fwd") and w.kernels(n.op, "bwd") for n in ops)
    fwd = sum(k.flops for n in ops for k in w.kernels(n.op, "fwd") if k.kind == "gemm")
    bwd = sum(k.flops for n in ops for k in w.kernels(n.op, "bwd") if k.kind == "gemm")
    owner = {p.name: n for n in tree.named_modules() for p in n.params}
    active = 0
    for p in tree.parameters():
        kind = owner[p.name].kind
        if kind == "experts":   # (E, out, in): top-k of the E experts run per token
            active += p.numel * spec.experts_per_token // spec.num_experts
        elif len(p.shape) == 2 and kind != "embedding":
            active += p.numel
    if spec.tie_word_embeddings:
        active += spec.vocab_size * spec.hidden_size
    assert fwd == pytest.approx(2 * w.tokens * active, rel=1e-12)
    assert bwd == pytest.approx(2 * fwd, rel=1e-12)
    return ops, w
