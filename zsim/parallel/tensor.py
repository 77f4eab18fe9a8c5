"""Tensor parallelism (Megatron-style, with or without Megatron sequence parallelism) and
DeepSpeed-Ulysses on one representative rank: the rank's shard of the model and the
collectives the split adds to its op list.

Megatron-LM sources (``megatron/core/tensor_parallel``, commit d98e8a64):

- ``layers.py:1328`` RowParallelLinear: the output is all-reduced over the TP group
  (``reduce_from_tensor_model_parallel_region``, line 1566) or, with sequence parallelism,
  reduce-scattered along the sequence (line 1562). Its backward is the identity (without
  sequence parallelism) or the all-gather that reverses the reduce-scatter.
- ``layers.py:932`` ColumnParallelLinear: the input enters through
  ``copy_to_tensor_model_parallel_region`` (line 1225), whose backward all-reduces the input
  gradient (``LinearWithGradAccumulationAndAsyncCommunication.backward``, line 696). With
  sequence parallelism the forward all-gathers the input along the sequence (line 628), the
  backward all-gathers it again for the weight gradient (line 674) and reduce-scatters the
  input gradient (line 707) instead of all-reducing it.
- ``layers.py:232`` VocabParallelEmbedding: each rank looks up its vocabulary slice and the
  output is all-reduced (line 383; reduce-scattered with sequence parallelism, line 378).
- ``cross_entropy.py:130,146,150``: the vocab-parallel loss all-reduces three fp32 values per
  token (the logits' max, the target logit, the sum of exponentials) in forward.
- The output layer is a ColumnParallelLinear (vocab-parallel logits, no gather), so its
  input gradient is all-reduced (or, with sequence parallelism, its input all-gathered
  forward and again backward, the gradient reduce-scattered).

Per decoder layer and micro-batch that is 2 all-reduces of ``b·s·h`` activations forward
(after attention's and the MLP's row-parallel linear) and 2 backward (at the input of each
block's column-parallel linears): the 4 of Megatron's f/g operators (Shoeybi et al. 2019,
Figure 4). zsim places them all on the compute stream: the forward ones block it in
Megatron too; the backward ones Megatron issues asynchronously behind the weight-gradient
GEMM (``layers.py:694-710``, relying on CUDA_DEVICE_MAX_CONNECTIONS=1), which zsim does not
overlap: its backward TP time is an upper bound.

DeepSpeed-Ulysses (deepspeed 0.19.8 ``sequence/layer.py:508-560``, DistributedAttention):
q, k and v each go through an ``all_to_all_single`` on the sequence-parallel group (from a
1/sp sequence shard of every head to the whole sequence of 1/sp of the heads), attention runs,
and the output goes through one more; backward reverses each (``_SeqAllToAll.backward``,
line 457): 4 all-to-alls forward and 4 backward per layer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterable

from ..errors import ZsimInputError
from ..groups import Group
from ..model import ModelSpec
from ..ops import Op

#: Families whose decoder layers zsim names the Megatron way (q/k/v -> o_proj, gate/up or
#: fc1 -> down or fc2, zsim.modeltree.llama): the ones tensor parallelism and Ulysses accept.
TP_FAMILIES = frozenset({"llama", "gemma", "gemma2"})


def check_family(spec: ModelSpec, what: str) -> None:
    """Refuse a model whose split zsim does not model (MoE layers, non-Llama-shaped layers)."""
    if spec.is_moe:
        raise ZsimInputError(f"{what} with the MoE model {spec.name!r} is not modelled (expert "
                             "layers under tensor/sequence/pipeline parallelism)")
    if spec.family not in TP_FAMILIES:
        raise ZsimInputError(f"{what} with the {spec.family} family ({spec.name!r}) is not modelled "
                             f"(Llama-shaped families only: {', '.join(sorted(TP_FAMILIES))})")


def shard_model(spec: ModelSpec, tp: int) -> ModelSpec:
    """One TP rank's shard of ``spec``: 1/tp of the heads, KV heads, MLP width and vocabulary
    (norms replicated; head_dim kept). The vocabulary is padded up to a multiple of tp, as
    Megatron pads it (``megatron/training/vocab_utils.py:58``, which pads further, to
    ``make_vocab_size_divisible_by · tp``; zsim pads only to tp)."""
    if tp == 1:
        return spec
    check_family(spec, f"--tp {tp}")
    for name, value in (("num_attention_heads", spec.num_heads), ("num_key_value_heads", spec.num_kv_heads),
                        ("intermediate_size", spec.intermediate_size)):
        if value % tp:
            raise ZsimInputError(f"--tp {tp}: {name} {value} of {spec.name!r} is not divisible by it")
    vocab = -(-spec.vocab_size // tp)
    return replace(spec, num_heads=spec.num_heads // tp, num_kv_heads=spec.num_kv_heads // tp,
                   intermediate_size=spec.intermediate_size // tp, vocab_size=vocab,
                   head_dim=spec.head_dim, rotary_dim=spec.rotary_dim)


@dataclass(frozen=True)
class Insert:
    """One collective to add to the compute stream of the op list."""

    name: str
    collective: str        # comms-logger name
    message_bytes: int
    buffer_bytes: int
    group: Group


#: Rule of one compute op: (before it, after it).
Rule = Callable[[Op], tuple[tuple[Insert, ...], tuple[Insert, ...]]]


def insert_collectives(ops: Iterable[Op], rule: Rule) -> tuple[Op, ...]:
    """``ops`` with the collectives ``rule`` asks for around each compute op, on the compute
    stream (where they block compute), ids renumbered and deps mapped."""
    out: list[Op] = []
    new_id: dict[int, int] = {}
    for op in ops:
        if op.kind == "compute":
            before, after = rule(op)
            for ins in before:
                out.append(_collective_op(len(out), op, ins))
        else:
            after = ()
        deps = tuple([new_id[d] for d in op.deps]) if op.deps else ()
        n = len(out)
        if op.id == n and deps == op.deps:
            out.append(op)                      # nothing inserted before it yet
        else:
            out.append(_renumbered(op, n, deps))
        new_id[op.id] = n
        for ins in after:
            out.append(_collective_op(len(out), op, ins))
    return tuple(out)


def _renumbered(op: Op, op_id: int, deps: tuple[int, ...]) -> Op:
    """``op`` with a new id and deps. A shallow copy, not ``dataclasses.replace``: only the
    numbering changes, consistently (deps keep preceding the op), so the checks the op
    passed when it was built still hold; replace would rerun them for every op of the step.
    The fields are copied as ``copy.copy`` does (the same object, without its
    ``__reduce_ex__`` detour)."""
    new = object.__new__(type(op))
    fields = new.__dict__
    fields.update(op.__dict__)
    fields["id"] = op_id
    fields["deps"] = deps
    return new


def _collective_op(op_id: int, at: Op, ins: Insert) -> Op:
    return Op(id=op_id, stream="compute", kind="collective", name=ins.name, micro_step=at.micro_step,
              phase=at.phase, collective=ins.collective, message_bytes=int(ins.message_bytes),
              buffer_bytes=int(ins.buffer_bytes), group=ins.group)


@dataclass(frozen=True)
class TensorComm:
    """The TP collectives of one rank: degree, Megatron sequence parallelism, the activation
    size ``b·s·h·p`` of one micro-batch and the TP group's placement."""

    tp: int
    sequence_parallel: bool
    activation_bytes: int     # b·s·h·p: one micro-batch's hidden states
    tokens: int               # b·s
    group: Group

    def _reduce(self, name: str) -> Insert:
        """A row-parallel output: all-reduce, or reduce-scatter under sequence parallelism."""
        if self.sequence_parallel:
            return Insert(name, "reduce_scatter_tensor", self.activation_bytes, self.activation_bytes, self.group)
        return Insert(name, "all_reduce", self.activation_bytes, self.activation_bytes, self.group)

    def _gather(self, name: str) -> Insert:
        """A sequence-parallel all-gather of the hidden states (input shard in, whole out)."""
        return Insert(name, "all_gather_into_tensor", self.activation_bytes // self.tp,
                      self.activation_bytes, self.group)

    def _column_backward(self, name: str) -> tuple[Insert, ...]:
        """After a column-parallel block's backward: the input gradient's all-reduce, or under
        sequence parallelism the input's re-gather and the gradient's reduce-scatter."""
        if self.sequence_parallel:
            return (self._gather(f"{name}_regather"), self._reduce(name))
        return (self._reduce(name),)

    def rule(self, op: Op) -> tuple[tuple[Insert, ...], tuple[Insert, ...]]:
        """Collectives before and after one compute op (see the module docstring)."""
        module, pass_ = op.modules[0], op.pass_
        sp = self.sequence_parallel
        forward = pass_ in ("fwd", "recompute")
        leaf = module.rsplit(".", 1)[-1]
        if module == "model.embed_tokens":
            return ((), (self._reduce("tp_embedding"),)) if forward else (
                ((self._gather("tp_embedding_grad"),) if sp else ()), ())
        if module == "lm_head":
            if forward:
                loss = tuple(Insert(f"tp_cross_entropy_{i}", "all_reduce", 4 * self.tokens, 4 * self.tokens,
                                    self.group) for i in range(3))
                return ((self._gather("tp_lm_head_input"),) if sp else ()), loss
            return (), self._column_backward("tp_lm_head_grad")
        if leaf in ("o_proj", "down_proj", "fc2"):      # row-parallel
            if forward:
                return (), (self._reduce(f"tp_{leaf}"),)
            return ((self._gather(f"tp_{leaf}_grad"),) if sp else ()), ()
        if leaf in ("q_proj", "gate_proj", "fc1"):      # first column-parallel linear of a block
            if forward:
                return ((self._gather(f"tp_{leaf}_input"),) if sp else ()), ()
            # backward runs the block's column-parallel linears last to first: q_proj (gate_proj,
            # fc1) is the last, after which the summed input gradient is reduced
            return (), self._column_backward(f"tp_{leaf}_grad")
        return (), ()


@dataclass(frozen=True)
class UlyssesComm:
    """The Ulysses all-to-alls of one rank: per micro-batch the q, k, v and output shards
    (``b·s/sp`` tokens of q_dim, kv_dim, kv_dim, q_dim values of p bytes)."""

    q_bytes: int
    kv_bytes: int
    group: Group

    def _a2a(self, name: str, nbytes: int) -> Insert:
        return Insert(name, "all_to_all_single", nbytes, nbytes, self.group)

    def rule(self, op: Op) -> tuple[tuple[Insert, ...], tuple[Insert, ...]]:
        """Around the attention core (``model.layers.i.self_attn``): q, k, v before and the
        output after in forward; the output's gradient before and q, k, v's after in backward."""
        if not op.modules[0].endswith(".self_attn"):
            return (), ()
        qkv = (self._a2a("ulysses_q", self.q_bytes), self._a2a("ulysses_k", self.kv_bytes),
               self._a2a("ulysses_v", self.kv_bytes))
        out = (self._a2a("ulysses_out", self.q_bytes),)
        if op.pass_ in ("fwd", "recompute"):
            return qkv, out
        return out, qkv


#: ZeRO's step collectives that DeepSpeed 0.19.8 repeats over the model-parallel group of the
#: ``mpu`` it was given (stage_1_and_2.py:309-316, stage3.py:371-376): each goes through
#: ``_model_parallel_all_reduce`` (stage_1_and_2.py:2642-2646, stage3.py:2412-2416), a no-op
#: for a group of one rank, right after its all-reduce over the data-parallel group. The
#: overflow flag: stage_1_and_2.py:3242 then :3246, stage3.py:3027 then :3040. The gradient
#: norm: stage_1_and_2.py:2693 then :2695 (offloaded :1945 then :1947), stage3.py:2469 then
#: :2472 (offloaded :1991 then :1994).
MODEL_PARALLEL_REPEATS = ("overflow_check", "grad_norm")


def add_model_parallel_collectives(ops: tuple[Op, ...], model_parallel: Group | None,
                                   zero_size: int) -> tuple[Op, ...]:
    """ZeRO's step as DeepSpeed runs it under a model-parallel unit: each overflow-flag and
    gradient-norm all-reduce followed by its repeat over ``model_parallel`` (None: a group of
    one rank, no repeat; see :data:`MODEL_PARALLEL_REPEATS`), and, when the ZeRO group has
    one rank, no stage-1/2 parameter all-gather after the step.

    The skip: ``stage_1_and_2.py:3155`` calls ``all_gather_dp_groups`` after the update,
    whose ``all_gather_into_tensor_dp_groups`` (runtime/utils.py:1008-1016) skips every
    group of one rank (lines 1011-1015: ``if dp_world_size == 1: continue``, "no groups
    share optimizer states"). Stage 3's post-step gathers (``allgather_persistent``) and
    its parameter fetches are not touched.

    Both hold for DeepSpeed AutoTP (its mpu is ``deepspeed.utils.groups``, engine.py:957)
    and for Megatron's tensor and pipeline parallelism: Megatron-DeepSpeed's ``mpu``, whose
    model-parallel group is the tensor and pipeline ranks of one data-parallel index
    (megatron/core/parallel_state.py, "Build the model-parallel groups"), or under a pipeline
    the PipelineModule's grid (``deepspeed/__init__.py:582-583``), whose model group is the
    same ranks (runtime/pipe/topology.py:300-313). Ops before the first change are kept as
    they are."""
    out: list[Op] = []
    new_id: dict[int, int] = {}
    for op in ops:
        if zero_size == 1 and op.kind == "collective" and op.name == "allgather_params" and op.phase == "step":
            # what depended on the skipped all-gather depends on what it depended on
            new_id[op.id] = new_id[op.deps[0]] if op.deps else -1
            continue
        deps = tuple(sorted({new_id[d] for d in op.deps if new_id[d] >= 0}))
        new_id[op.id] = len(out)
        out.append(op if op.id == len(out) and deps == op.deps else _renumbered(op, len(out), deps))
        if model_parallel is not None and op.kind == "collective" and op.name in MODEL_PARALLEL_REPEATS:
            rep = _renumbered(op, len(out), (len(out) - 1,))
            rep.__dict__.update(name=f"{op.name}_model_parallel", group=model_parallel)
            new_id[op.id] = len(out)
            out.append(rep)
    return tuple(out)


__all__ = ["TP_FAMILIES", "check_family", "shard_model", "Insert", "insert_collectives", "TensorComm",
           "UlyssesComm", "MODEL_PARALLEL_REPEATS", "add_model_parallel_collectives"]
