"""One rank of a CPU schedule-truth case (launched by harness.py, one process per rank).

Reads the case JSON (argv[1]), builds a randomly initialised Hugging Face causal LM from the
case's config (LlamaForCausalLM, Qwen2ForCausalLM or, by model_type, another family's causal LM
such as MixtralForCausalLM; no downloads), trains it with DeepSpeed on
the gloo backend with the comms logger on, and writes, for every optimizer step, the
cumulative comms-logger counts ``{op: {msg_bytes: count}}`` to argv[2] (rank 0; every rank
writes ``<argv[2]>.rank<R>`` so that per-rank differences can be inspected).
"""

from __future__ import annotations

import json
import os
import sys
import time

_T0 = time.monotonic()


def _counts(comms_dict: dict) -> dict[str, dict[str, int]]:
    """Cumulative counts from the logger's ``comms_dict[op][size] = [count, lats, algbw, busbw]``."""
    return {op: {str(size): int(v[0]) for size, v in sizes.items()} for op, sizes in comms_dict.items()}


def _build_model(case: dict):
    import torch
    import transformers

    cfg = dict(case["model"])
    arch = cfg.pop("model_type", "llama")
    if arch in ("llama", "qwen2"):
        cls_cfg = transformers.Qwen2Config if arch == "qwen2" else transformers.LlamaConfig
        cls_model = transformers.Qwen2ForCausalLM if arch == "qwen2" else transformers.LlamaForCausalLM
        config = cls_cfg(**cfg)
    else:   # another family (Mixtral, Qwen2-MoE): its config class and causal LM by model_type
        config = transformers.AutoConfig.for_model(arch, **cfg)
        cls_model = transformers.AutoModelForCausalLM.from_config
    config._attn_implementation = "sdpa"
    torch.manual_seed(1234)
    if case["ds_config"].get("zero_optimization", {}).get("stage", 0) == 3 and case.get("zero_init", True):
        # Users (and the HF Trainer) build stage-3 models under zero.Init: that path decides
        # the persistence threshold DeepSpeed uses (PP:1198), so the truth run does the same.
        import deepspeed
        with deepspeed.zero.Init(config_dict_or_path=case["ds_config"]):
            model = cls_model(config)
    else:
        model = cls_model(config)
    if case.get("deepspeed_moe") is not None:   # DeepSpeed-MoE layers (expert parallelism)
        from validation.cpu_truth.expert_parallel import replace_moe_blocks
        replace_moe_blocks(model, case["deepspeed_moe"])
    if case.get("activation_checkpointing"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def _record_sequence(logger, sequence: list) -> None:
    """Also keep the ORDER of logged collectives ((op, bytes) per call) for debugging."""
    original = logger.append

    def append(raw_name, record_name, latency, msg_size):
        sequence.append((record_name, int(msg_size)))
        return original(raw_name, record_name, latency, msg_size)
    logger.append = append


def _trace_small_collectives(dist) -> None:
    """Debug aid: print the Python stack of every all_reduce of at most 8 bytes (rank 0)."""
    import traceback
    original = dist.all_reduce

    def traced(tensor, *args, **kwargs):
        if tensor.numel() * tensor.element_size() <= 8 and os.environ.get("RANK") == "0":
            print("SMALL all_reduce", tensor.numel() * tensor.element_size(), "".join(traceback.format_stack(limit=6)))
        return original(tensor, *args, **kwargs)
    dist.all_reduce = traced


def _mark(what: str) -> None:
    """Timestamped progress line on stderr (the case log shows where time goes)."""
    print(f"[zsim-truth {time.monotonic() - _T0:6.1f}s rank {os.environ.get('RANK')}] {what}",
          file=sys.stderr, flush=True)


def main() -> int:
    """Command-line entry: ``worker.py CASE_JSON OUT_PATH`` with the rank's environment."""
    return run_rank(sys.argv[1], sys.argv[2])


def forked_entry(case_path: str, out_path: str, env: dict, log_path: str) -> None:
    """Entry of a rank forked from harness's fork server, where torch, deepspeed and
    transformers are already imported (their import is most of a rank's CPU time): take the
    rank's environment, send output to the case log, run, and leave without teardown."""
    global _T0
    _T0 = time.monotonic()
    os.environ.update(env)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    code = 1
    try:
        code = run_rank(case_path, out_path)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_rank(case_path: str, out_path: str) -> int:
    """Run one rank of the case in ``case_path``; write its counts to ``out_path``."""
    case = json.loads(open(case_path).read())
    import torch
    import deepspeed
    import deepspeed.comm as dist
    _mark("imported torch+deepspeed")
    import transformers  # noqa: F401  (timed separately: it is the largest import)
    _mark("imported transformers")

    torch.set_num_threads(1)
    if os.environ.get("ZSIM_TRUTH_TRACE_SMALL"):
        _trace_small_collectives(dist)
    deepspeed.init_distributed(dist_backend="gloo")
    _mark("init_distributed done")
    rank = dist.get_rank()
    model = _build_model(case)
    _mark("model built")
    ds_config = case["ds_config"]
    moe = case.get("deepspeed_moe") is not None
    if moe:
        from validation.cpu_truth import expert_parallel
        params = expert_parallel.moe_param_groups(model)
    else:
        params = model.parameters()
    optimizer = torch.optim.AdamW(params, lr=1e-4) if "optimizer" not in ds_config else None
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                           optimizer=optimizer, config=ds_config)
    _mark("deepspeed.initialize done")
    dtype = torch.bfloat16 if ds_config.get("bf16", {}).get("enabled") else torch.float32
    # the ranks of one AutoTP group must see the same batch (DeepSpeed checks it on the first
    # forward, engine.py:964-1005): seed by the data-parallel rank (TP ranks are adjacent,
    # utils/groups.py:220)
    tp = int((ds_config.get("tensor_parallel") or {}).get("autotp_size", 1))
    gen = torch.Generator().manual_seed(rank // tp)
    vocab, seq = case["model"]["vocab_size"], case.get("seq_len", 16)
    micro = ds_config["train_micro_batch_size_per_gpu"]
    gas = ds_config.get("gradient_accumulation_steps", 1)
    sequence: list = []
    _record_sequence(dist.comms_logger, sequence)
    grouped: list = []
    autotp = tp > 1
    if moe:
        expert_parallel.record_groups(grouped)
    elif autotp:   # every collective with its group (validation/cpu_truth/autotp.py)
        from validation.cpu_truth import autotp as autotp_truth, expert_parallel
        autotp_truth.record_groups(grouped)
    steps, sequences = [], []
    grouped_steps = []
    for _ in range(case.get("steps", 3)):
        sequence.clear()
        grouped.clear()
        for _ in range(gas):
            ids = torch.randint(0, vocab, (micro, seq), generator=gen)
            loss = engine(input_ids=ids, labels=ids).loss
            engine.backward(loss)
            engine.step()
        steps.append(_counts(dist.comms_logger.comms_dict))
        sequences.append(list(sequence))
        grouped_steps.append(list(grouped))
    del dtype
    _mark("steps done")
    result = {"rank": rank, "steps": steps, "sequence": sequences[-1]}
    if moe:
        result["group_sequence"] = grouped_steps[-1]
        result["optimizer_groups"] = expert_parallel.optimizer_facts(engine)
        result["parameter_numels"] = expert_parallel.parameter_numels(engine.module)
    if autotp:   # AutoTP (validation/cpu_truth/autotp.py): the grouped sequence, the TP shard, ZeRO's groups
        result["group_sequence"] = grouped_steps[-1]
        result["optimizer_groups"] = expert_parallel.optimizer_facts(engine)
        result["parameter_numels"] = expert_parallel.parameter_numels(engine.module)
    if rank == 0 and hasattr(engine.optimizer, "parameter_offload"):  # stage 3: the module trace
        names = {id(m): n for n, m in engine.module.named_modules()}
        coord = engine.optimizer.parameter_offload.get_param_coordinator()
        order = getattr(coord, "_PartitionedParameterCoordinator__submodule_order", ())
        result["module_trace"] = [names.get(id(m), "?") for m in order]
    text = json.dumps(result)
    path = out_path if rank == 0 else f"{out_path}.rank{rank}"
    with open(path + ".tmp", "w") as fh:
        fh.write(text)
    os.replace(path + ".tmp", path)
    if rank == 0:
        with open(f"{out_path}.rank0", "w") as fh:
            fh.write(text)
    dist.barrier()
    _mark("results written")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip the interpreter's teardown (gloo/DeepSpeed atexit work took ~6 s per case): the
    # results are on disk and every rank has passed the barrier.
    os._exit(code)
