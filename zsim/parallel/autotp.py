"""DeepSpeed AutoTP training (``"tensor_parallel": {"autotp_size": N}``) on one representative
rank: the rank's shard and the collectives DeepSpeed 0.19.8 issues for it.

Sources (deepspeed 0.19.8):

- ``runtime/engine.py:595-601``: ``deepspeed.initialize`` shards the model when
  ``autotp_size > 1``; ``engine.py:958`` builds the groups through
  ``utils/groups.py:202-237`` ``_init_tp_mesh_device``: a (data, tensor) DeviceMesh, tensor
  ranks adjacent (zsim's rank order), data-parallel size ``world / autotp_size``.
  ``runtime/config.py:464-465`` counts the batch over that data-parallel group and ZeRO
  partitions over it (the engine's ``mpu`` is ``groups``, engine.py:957).
- ``engine.py:1054, 1108-1191``: a Hugging Face model with a ``base_model_tp_plan`` (Llama:
  q/k/v and gate/up ``colwise``, o/down ``rowwise``, lm_head ``colwise_gather_output``,
  embed_tokens ``embedding_rowwise``) is split by that plan. The embedding stays whole
  unless the output head is tied to it (then both become vocab-parallel with a distributed
  loss, engine.py:1114-1124: refused here).
- ``module_inject/layers.py:973-1011`` LinearLayer (column-parallel): its input enters
  through ``ColumnParallel`` (:298-313), whose backward all-reduces the input gradient: one
  all-reduce of ``b·s·h`` per column-parallel linear, q, k, v, gate and up separately (5 per
  Llama layer, against Megatron's 2 with fused QKV and fc1). lm_head is a LinearLayer with
  ``gather_output``: forward all-gathers the logits shards (``GatherFromTensorParallelRegion``,
  :317-357; backward narrows, no collective), backward all-reduces its input gradient.
- ``layers.py:878-900`` LinearAllreduce (row-parallel): ``RowParallel`` (:204-233)
  all-reduces the output in forward; its backward is the identity.
- ZeRO-1/2 (``runtime/zero/stage_1_and_2.py``): the overflow flag and the gradient norm are
  all-reduced over the data-parallel group and then again over the model-parallel (TP) group
  (:3242 then :3246, :2693 then :2695, both through ``_model_parallel_all_reduce``, :2646).
  With one data-parallel rank the parameter all-gather after the step is skipped
  (``runtime/utils.py:1011-1015``). Both are Megatron's too under a model-parallel unit:
  :func:`zsim.parallel.tensor.add_model_parallel_collectives` models them for either.

All of them block the compute stream (``dist.all_reduce`` without ``async_op``), as zsim
places them. Not modelled, refused in one line: ZeRO-3 with AutoTP, tied embeddings (the
vocab-parallel head and loss), Qwen3's q/k norms (their gradients get extra TP all-reduces,
``module_inject/auto_tp.py:931-960``), biased linears, other families and MoE, the
``tensor_parallel`` options other than ``autotp_size`` (zsim.dsconfig.autotp_size), and AutoTP
together with pipeline, Ulysses or Megatron sequence parallelism.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import ZsimInputError
from ..groups import Group
from ..model import ModelSpec
from ..ops import Op
from .tensor import Insert

#: Column-parallel linears of a Llama layer (LinearLayer) and the row-parallel ones
#: (LinearAllreduce), by HF's LlamaConfig.base_model_tp_plan.
COLUMN = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
ROW = ("o_proj", "down_proj")


def check_autotp_model(spec: ModelSpec, tp: int) -> None:
    """Refuse a model whose AutoTP split zsim does not model, in one line."""
    what = f"tensor_parallel.autotp_size {tp}"
    if spec.is_moe or spec.family != "llama":
        raise ZsimInputError(f"{what} with {spec.name!r} ({spec.family}{', MoE' if spec.is_moe else ''}) is not "
                             "modelled (AutoTP is modelled for dense Llama-shaped models only)")
    for flag, why in (("tie_word_embeddings", "a tied lm_head makes AutoTP split the vocabulary with a distributed "
                                              "loss (engine.py:1114-1124)"),
                      ("qk_norm", "q/k norms get TP gradient all-reduces (auto_tp.py:931-960)"),
                      ("qkv_bias", "biased q/k/v"), ("o_bias", "a biased o_proj"), ("mlp_bias", "biased MLP linears")):
        if getattr(spec, flag):
            raise ZsimInputError(f"{what} with {spec.name!r}: {why} is not modelled")
    for name, value in (("num_attention_heads", spec.num_heads), ("num_key_value_heads", spec.num_kv_heads),
                        ("intermediate_size", spec.intermediate_size), ("vocab_size", spec.vocab_size)):
        if value % tp:
            raise ZsimInputError(f"{what}: {name} {value} of {spec.name!r} is not divisible by it (uneven AutoTP "
                                 "shards are not modelled)")


def shard_model_autotp(spec: ModelSpec, tp: int) -> ModelSpec:
    """One AutoTP rank's shard: 1/tp of the heads, KV heads, MLP width and of lm_head's rows
    (``vocab_size``: lm_head and its logits), the embedding whole (``embed_vocab_size``), the
    norms replicated."""
    if tp == 1:
        return spec
    check_autotp_model(spec, tp)
    return replace(spec, num_heads=spec.num_heads // tp, num_kv_heads=spec.num_kv_heads // tp,
                   intermediate_size=spec.intermediate_size // tp, vocab_size=spec.vocab_size // tp,
                   embed_vocab_size=spec.vocab_size, head_dim=spec.head_dim, rotary_dim=spec.rotary_dim)


@dataclass(frozen=True)
class AutoTPComm:
    """The AutoTP collectives of one rank: degree, one micro-batch's hidden states ``b·s·h·p``
    and its logits shard ``b·s·(V/tp)·p``, and the TP group's placement."""

    tp: int
    activation_bytes: int
    logits_shard_bytes: int
    group: Group

    def _all_reduce(self, name: str) -> Insert:
        return Insert(name, "all_reduce", self.activation_bytes, self.activation_bytes, self.group)

    def rule(self, op: Op) -> tuple[tuple[Insert, ...], tuple[Insert, ...]]:
        """Collectives before and after one compute op (see the module docstring)."""
        module, forward = op.modules[0], op.pass_ in ("fwd", "recompute")
        leaf = module.rsplit(".", 1)[-1]
        if module == "lm_head":
            if forward:    # GatherFromTensorParallelRegion, layers.py:353
                return (), (Insert("autotp_lm_head_gather", "all_gather_into_tensor", self.logits_shard_bytes,
                                   self.logits_shard_bytes * self.tp, self.group),)
            return (), (self._all_reduce("autotp_lm_head_grad"),)      # ColumnParallel.backward, :313
        if leaf in ROW and forward:                                     # RowParallel.forward, :225
            return (), (self._all_reduce(f"autotp_{leaf}"),)
        if leaf in COLUMN and not forward:                              # ColumnParallel.backward, :313
            return (), (self._all_reduce(f"autotp_{leaf}_grad"),)
        return (), ()


__all__ = ["COLUMN", "ROW", "check_autotp_model", "shard_model_autotp", "AutoTPComm"]
