"""Torch ops a DeepSpeed-MoE layer dispatches per phase (the host's kernel launches), on CPU.

A dispatch mode counts every aten op that is not a view or a scalar read while one
``deepspeed.moe.layer.MoE`` layer (ep_size 1: no process group, expert_parallel.py) runs
forward and backward on bf16 inputs (the second step: the first builds the gating's
samplers, sharded_moe.py:70-86, 268-272), split by phase with module hooks: the gate
(TopKGate.forward), the encode (between the gate and the experts), the experts, the decode
(after the experts) and the whole backward. zsim's launch counts for the gate and MOELayer's
own op (zsim.parallel.expert_work) are these numbers.

    python -m validation.cpu_truth.expert_op_counts      # counts for k = 1, 2, 3 and E = 8, 16
"""

from __future__ import annotations

import collections

#: Ops that launch no kernel: views, aliases, scalar tensors made on the host, ``.item()``.
NOT_LAUNCHES = frozenset({
    "aten.view.default", "aten._unsafe_view.default", "aten.t.default", "aten.transpose.int",
    "aten.unsqueeze.default", "aten.squeeze.dim", "aten.expand.default", "aten.slice.Tensor",
    "aten.select.int", "aten.split.Tensor", "aten.chunk.default", "aten.reshape.default",
    "aten.detach.default", "aten.alias.default", "aten.permute.default", "aten.split_with_sizes.default",
    "aten.lift_fresh.default", "aten._local_scalar_dense.default", "aten.narrow.default", "aten.unbind.int",
    "aten.as_strided.default"})


def op_counts(k: int, num_experts: int, tokens: int = 512, hidden: int = 256, inter: int = 384) -> dict[str, int]:
    """``{phase: ops}`` of one DeepSpeed-MoE layer, forward and backward (the test's own
    loss is not counted: its cast and sum, the seed gradient and the cast back, 4 ops)."""
    import torch
    import transformers
    from torch.utils._python_dispatch import TorchDispatchMode

    from validation.cpu_truth.expert_cases import MIXTRAL_4E
    from validation.cpu_truth.expert_parallel import deepspeed_moe_mlp_class

    cfg = transformers.AutoConfig.for_model(**dict(MIXTRAL_4E, hidden_size=hidden, intermediate_size=inter,
                                                   num_local_experts=num_experts))
    torch.manual_seed(0)
    moe = deepspeed_moe_mlp_class()(cfg, dict(ep_size=1, k=k)).to(torch.bfloat16).train()

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.phase, self.counts = "input", collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if str(func) not in NOT_LAUNCHES:
                self.counts[self.phase] += 1
            return func(*args, **(kwargs or {}))

    mode = Count()
    layer = moe.moe.deepspeed_moe

    def phase(name: str):
        return lambda *_: setattr(mode, "phase", name)
    layer.gate.register_forward_pre_hook(phase("gate"))
    layer.gate.register_forward_hook(phase("encode"))
    layer.experts.register_forward_pre_hook(phase("experts"))
    layer.experts.register_forward_hook(phase("decode"))
    x = torch.randn(1, tokens, hidden, dtype=torch.bfloat16, requires_grad=True)
    moe(x).float().sum().backward()   # warm-up: the gating's samplers are built on first use
    moe.zero_grad(set_to_none=True)    # no gradient to accumulate into (AccumulateGrad adds none)
    x.grad = None
    mode.counts.clear()
    with mode:
        y = moe(x)
        mode.phase = "backward"
        y.float().sum().backward()
    counts = dict(mode.counts)
    counts["backward"] -= 4   # the loss: _to_copy, sum, ones_like (seed), _to_copy (cast back)
    counts.pop("input", None)
    return counts


def main() -> int:
    """Print the counts for top-1/2/3 at 8 and 16 experts."""
    for k in (1, 2, 3):
        for e in (8, 16):
            print(f"k={k} E={e}:", op_counts(k, e))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
