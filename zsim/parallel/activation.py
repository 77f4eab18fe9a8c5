"""Megatron's activation memory per transformer layer and per pipeline stage, per TP rank.

The formulas of Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
Transformer Models" (arXiv:2205.05198), Table 2, for their GPT architecture (LayerNorm,
GeLU MLP of ``4h``, dropout, 16-bit activations and 1-byte dropout masks), with s the
sequence length, b the micro-batch, h the hidden size, a the attention heads and t the
tensor-parallel degree (bytes of one layer on one TP rank):

=================================================  ====================================
no parallelism                                     ``sbh (34 + 5as/h)``
tensor parallel                                    ``sbh (10 + 24/t + 5as/(ht))``
tensor + sequence parallel                         ``sbh (34/t + 5as/(ht))``
tensor parallel + selective recompute              ``sbh (10 + 24/t)``
tensor + sequence parallel + selective recompute   ``sbh (34/t)``
full recompute                                     ``sbh * 2``
=================================================  ====================================

Megatron-LM's own estimator (``megatron/training/theoretical_memory_usage.py``, commit
d98e8a64, lines 309-319 and 386) uses these with a general MLP width f: the 34 is
``18 + 4f/h`` and the 24 is ``8 + 4f/h`` (the 10 that TP does not split — LayerNorm inputs
4, dropout masks 2, the attention and MLP inputs 4 — does not depend on f).

"Sequence parallel" here is Megatron's (``--sequence-parallel``: the LayerNorm/dropout
regions split along the sequence inside the TP group), not DeepSpeed-Ulysses (the layout's
``sp``), whose activation memory is not modelled yet.

Pipeline parallelism: under 1F1B stage i (of p) keeps the activations of
``min(p - i, m)`` micro-batches at once (Megatron-LM ``core/pipeline_parallel/schedules.py``
lines 2277-2278: ``p - i - 1`` warm-up forwards, plus the one of the steady state), so the
first stage holds p micro-batches of its L/p layers: the same as one micro-batch of all L
layers (the paper's Section 4.2.3).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..errors import ZsimInputError


class Recompute(enum.StrEnum):
    """Activation recomputation: none, Megatron's selective (attention core only) or full."""

    NONE = "none"
    SELECTIVE = "selective"
    FULL = "full"


@dataclass(frozen=True)
class LayerShape:
    """One transformer layer's activation shape: s, b, h, a and the MLP width f (0: 4h)."""

    seq_len: int
    micro_batch: int
    hidden_size: int
    num_heads: int
    ffn_hidden_size: int = 0

    def __post_init__(self) -> None:
        for name in ("seq_len", "micro_batch", "hidden_size", "num_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ZsimInputError(f"{name} must be a positive integer, got {value!r}")
        if self.ffn_hidden_size == 0:
            object.__setattr__(self, "ffn_hidden_size", 4 * self.hidden_size)

    @property
    def sbh(self) -> int:
        """s * b * h, the unit of every term."""
        return self.seq_len * self.micro_batch * self.hidden_size


def _recompute(value: Recompute | str) -> Recompute:
    try:
        return Recompute(value)
    except ValueError:
        raise ZsimInputError(f"recompute must be one of {', '.join(Recompute)}, got {value!r}") from None


def layer_activation_bytes(shape: LayerShape, tp: int = 1, sequence_parallel: bool = False,
                           recompute: Recompute | str = Recompute.NONE) -> float:
    """Bytes one layer keeps for backward on one TP rank (Table 2, see the module docstring).

    Full recompute keeps the layer's 2-byte input only: ``2sbh`` (Table 2), split along the
    sequence, ``2sbh/t``, under sequence parallelism (the checkpointed input is the
    sequence-parallel region's own shard)."""
    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
        raise ZsimInputError(f"--tp must be a positive integer, got {tp!r}")
    recompute = _recompute(recompute)
    s, b, h, a, f = shape.seq_len, shape.micro_batch, shape.hidden_size, shape.num_heads, shape.ffn_hidden_size
    if recompute is Recompute.FULL:
        return 2 * shape.sbh / (tp if sequence_parallel else 1)
    split = 8 + 4 * f / h            # 24 for f = 4h: the GEMM inputs/outputs TP splits
    unsplit = 10                     # LayerNorm inputs 4, dropout masks 2, block inputs 4
    linear = (unsplit + split) / tp if sequence_parallel else unsplit + split / tp
    attention_core = 0.0 if recompute is Recompute.SELECTIVE else 5 * a * s / (h * tp)
    return shape.sbh * (linear + attention_core)


def in_flight_microbatches(stage: int, pp: int, micro_batches: int) -> int:
    """Micro-batches whose activations stage ``stage`` holds at its peak under 1F1B."""
    if not 0 <= stage < pp:
        raise ZsimInputError(f"stage {stage} is outside the {pp} pipeline stages")
    if micro_batches < 1:
        raise ZsimInputError(f"micro-batches must be >= 1, got {micro_batches}")
    return min(pp - stage, micro_batches)


def stage_activation_bytes(shape: LayerShape, layers: int, stage: int, pp: int, micro_batches: int,
                           tp: int = 1, sequence_parallel: bool = False,
                           recompute: Recompute | str = Recompute.NONE) -> float:
    """Peak bytes of the transformer layers' activations on one TP rank of ``stage`` holding
    ``layers`` layers: layers x in-flight micro-batches x one layer's bytes. Embedding,
    final norm, logits and loss are not included (they sit on the first and last stages)."""
    per_layer = layer_activation_bytes(shape, tp, sequence_parallel, recompute)
    return layers * in_flight_microbatches(stage, pp, micro_batches) * per_layer


__all__ = ["Recompute", "LayerShape", "layer_activation_bytes", "in_flight_microbatches",
           "stage_activation_bytes"]
