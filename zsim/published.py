"""Published DeepSpeed ZeRO training measurements: load, predict with zsim, score.

The rows live in ``zsim/data/published/training_runs.yaml`` (source URL, exact quote, full
configuration, the source's FLOP formula, how zsim expresses the machine). Every expressible
row is predicted with :func:`zsim.predict.predict` and compared on the source's own metric:
TFLOP/s per GPU through the source's formula applied to zsim's step time, or tokens/s per
GPU, or samples/s. Nothing in zsim is fitted on these rows.

``python -m zsim.published [--json] [PATH]`` prints the tables; :func:`published_report`
returns the same data.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import ZsimInputError
from .job import RunSettings
from .model import ModelSpec
from .parallel.predict3d import ParallelAsk, predict_any

#: The shipped data file (next to this module, under data/published/).
DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "published" / "training_runs.yaml"

METRICS = ("tflops_per_gpu", "tokens_per_s_per_gpu", "samples_per_s", "step_time_s")

#: Named DeepSpeed configs the rows refer to (each from the recipe the row cites).
DS_CONFIGS: dict[str, dict[str, Any]] = {
    # Megatron-DeepSpeed examples_deepspeed/azure/run-175b.sh and run-1t.sh (offload device
    # and micro-batch come from the row).
    "azure-z3": {
        "fp16": {"enabled": True, "initial_scale_power": 15, "loss_scale_window": 1000,
                 "hysteresis": 2, "min_loss_scale": 1},
        "gradient_clipping": 1.0,
        "zero_optimization": {
            "stage": 3, "stage3_max_live_parameters": 3e9, "stage3_max_reuse_distance": 3e9,
            "stage3_param_persistence_threshold": 1e5, "stage3_prefetch_bucket_size": 5e7,
            "contiguous_gradients": True, "overlap_comm": True, "reduce_bucket_size": 90000000,
            "sub_group_size": 1e9,
        },
    },
    # DeepSpeedExamples benchmarks/deepcompile/configs/ds_config.json.template without its
    # "compile" section (deepcompile off for the ZeRO3 baseline).
    "deepcompile-z3": {
        "bf16": {"enabled": True},
        "gradient_clipping": 1.0,
        "zero_optimization": {"stage": 3, "sub_group_size": 100000000},
    },
    # Megatron-LM (Narayanan et al. 2021) expressed as DeepSpeed's engine without ZeRO: fp16
    # with dynamic loss scaling, Adam with fp32 master weights, gradients all-reduced over
    # the data-parallel group after the last micro-batch's backward (Megatron-LM's 2021
    # train_step: the local DDP's allreduce_gradients() after forward_backward_func, as the
    # rows state; DeepSpeed's stage 0 all-reduces at the accumulation boundary), clip-grad
    # 1.0 (Megatron's default).
    "megatron-lm-fp16": {
        "fp16": {"enabled": True, "initial_scale_power": 32, "loss_scale_window": 1000,
                 "hysteresis": 2, "min_loss_scale": 1},
        "gradient_clipping": 1.0,
        "zero_optimization": {"stage": 0},
    },
    # huggingface/accelerate#2624's DeepSpeed config.
    "hf-z3-bf16": {
        "bf16": {"enabled": True},
        "gradient_clipping": 1.0,
        "zero_optimization": {"stage": 3, "offload_param": {"device": "none"},
                              "offload_optimizer": {"device": "none"}},
    },
}


# ---- loading -----------------------------------------------------------------------------
def load_runs(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The rows of the data file (default: the shipped ``training_runs.yaml``), checked."""
    p = Path(path) if path is not None else DEFAULT_PATH
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ZsimInputError(f"published runs: cannot read {p}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ZsimInputError(f"published runs: malformed YAML in {p}: {exc.__class__.__name__}") from None
    if not isinstance(doc, Mapping) or not isinstance(doc.get("runs"), list):
        raise ZsimInputError(f"published runs: {p} has no 'runs' list")
    runs = doc["runs"]
    seen: set[str] = set()
    for row in runs:
        _check_row(row, seen)
    return runs


def _check_row(row: Any, seen: set[str]) -> None:
    if not isinstance(row, Mapping):
        raise ZsimInputError("published runs: every row must be a mapping")
    rid = row.get("id")
    if not isinstance(rid, str) or not rid:
        raise ZsimInputError("published runs: a row has no id")
    if rid in seen:
        raise ZsimInputError(f"published runs: duplicate id {rid!r}")
    seen.add(rid)
    for key in ("source", "quote"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise ZsimInputError(f"published runs: {rid}: missing {key}")
    if not isinstance(row.get("config"), Mapping) or not row["config"]:
        raise ZsimInputError(f"published runs: {rid}: missing config")
    measured = row.get("measured")
    if (not isinstance(measured, Mapping) or measured.get("metric") not in METRICS
            or not isinstance(measured.get("value"), (int, float)) or measured["value"] <= 0):
        raise ZsimInputError(f"published runs: {rid}: measured needs a metric ({', '.join(METRICS)}) "
                             "and a positive value")
    if measured.get("reading") == "figure":
        unc = measured.get("reading_uncertainty")
        if isinstance(unc, bool) or not isinstance(unc, (int, float)) or not unc > 0:
            raise ZsimInputError(f"published runs: {rid}: a value read off a figure needs a positive "
                                 "reading_uncertainty")
    if not isinstance(row.get("expressible"), bool):
        raise ZsimInputError(f"published runs: {rid}: expressible must be true or false")
    if row["expressible"]:
        if row.get("split") not in ("fit", "eval"):
            raise ZsimInputError(f"published runs: {rid}: split must be fit or eval")
        if not isinstance(row.get("zsim"), Mapping):
            raise ZsimInputError(f"published runs: {rid}: an expressible row needs a zsim section")
        for key in ("tp", "pp", "sp"):
            degree = row["zsim"].get(key, 1)
            if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
                raise ZsimInputError(f"published runs: {rid}: zsim.{key} must be a positive integer")
        if measured["metric"] == "tflops_per_gpu" and (row.get("flop_formula") or {}).get("name") != "megatron":
            raise ZsimInputError(f"published runs: {rid}: TFLOP/s rows need a formula zsim knows (megatron)")
    elif not isinstance(row.get("reason"), str) or not row["reason"].strip():
        raise ZsimInputError(f"published runs: {rid}: a row zsim cannot express needs a reason")


# ---- the source's own metric -------------------------------------------------------------
def megatron_flops_per_step(*, global_batch: int, seq: int, layers: int, hidden: int, vocab: int) -> float:
    """Megatron's count (Narayanan et al. 2021, with activation recompute) for one step.

    ``96 * B * s * l * h^2 * (1 + s/(6h) + V/(16 l h))`` as printed in the DeepSpeed on
    Azure post and computed by Megatron-DeepSpeed's ``throughput_calculator``.
    """
    return 96.0 * global_batch * seq * layers * hidden ** 2 * (
        1.0 + seq / (6.0 * hidden) + vocab / (16.0 * layers * hidden))


def data_parallel_ranks(row: Mapping[str, Any], gpus: int) -> int:
    """The row's data-parallel ranks: ``gpus / (tp * pp * sp)`` (all of them without a 3D layout)."""
    z = row["zsim"]
    return gpus // (int(z.get("tp", 1)) * int(z.get("pp", 1)) * int(z.get("sp", 1)))


def source_metric(row: Mapping[str, Any], step_time_s: float, gpus: int) -> float:
    """zsim's step time of ``gpus`` ranks in the row's published metric (the source's own formula).

    The global batch is micro-batch x grad-accum x data-parallel ranks (a tensor/pipeline
    group of ranks shares one sample stream: DeepSpeed runtime/config.py:461-469)."""
    z = row["zsim"]
    mb, ga = int(z["micro_batch"]), int(z.get("grad_accum", 1))
    seq = int(z["seq"])
    global_batch = mb * ga * data_parallel_ranks(row, gpus)
    metric = row["measured"]["metric"]
    if metric == "tokens_per_s_per_gpu":
        return global_batch * seq / step_time_s / gpus
    if metric == "samples_per_s":
        return global_batch / step_time_s
    if metric == "step_time_s":   # a published iteration time (Korthikanti et al. Table 5)
        return step_time_s
    shape = z["model"]
    flops = megatron_flops_per_step(global_batch=global_batch, seq=seq, layers=int(shape["num_layers"]),
                                    hidden=int(shape["hidden_size"]), vocab=int(row["flop_formula"]["vocab"]))
    return flops / (step_time_s * gpus) / 1e12


# ---- predicting --------------------------------------------------------------------------
def model_for(row: Mapping[str, Any]) -> str | ModelSpec:
    """The zsim model of a row: a preset name or a ModelSpec of a Megatron GPT shape."""
    m = row["zsim"]["model"]
    if "preset" in m:
        return m["preset"]
    if m.get("shape") != "megatron-gpt":
        raise ZsimInputError(f"published runs: {row['id']}: unknown model shape {m.get('shape')!r}")
    h, heads = int(m["hidden_size"]), int(m["num_heads"])
    # Megatron pretrain_gpt.py: 4h GeLU MLP with biases, LayerNorm, q/k/v biases, tied
    # embeddings, GPT-2 vocab padded to 50304, a learned position table of seq rows.
    return ModelSpec(f"megatron-gpt-{row['id']}", h, int(m["num_layers"]), heads, heads, 4 * h,
                     int(row["flop_formula"]["vocab"]), tie_word_embeddings=True,
                     max_position_embeddings=max(int(row["zsim"]["seq"]), 2048), qkv_bias=True,
                     mlp="gelu", norm="layernorm", learned_positions=True)


def parallel_ask(row: Mapping[str, Any]) -> ParallelAsk:
    """The row's tensor / pipeline / Ulysses degrees and Megatron sequence parallelism
    (``zsim: {tp, pp, sp, sequence_parallel}``; absent: data parallelism only)."""
    z = row["zsim"]
    return ParallelAsk(tp=int(z.get("tp", 1)), pp=int(z.get("pp", 1)), sp=int(z.get("sp", 1)),
                       sequence_parallel=bool(z.get("sequence_parallel", False)))


def predict_row(row: Mapping[str, Any]):
    """zsim's prediction of one expressible row: a :class:`~zsim.predict.Prediction`, or a
    :class:`~zsim.parallel.predict3d.ParallelPrediction` when the row has a 3D layout (the
    plain path is taken unchanged when it has none, as `zsim predict` does)."""
    z = row["zsim"]
    ds = json.loads(json.dumps(DS_CONFIGS[z["ds_config"]]))
    ds["train_micro_batch_size_per_gpu"] = int(z["micro_batch"])
    ds["gradient_accumulation_steps"] = int(z.get("grad_accum", 1))
    where = {"gpus": z["gpus"]} if "gpus" in z else {"nodes": z["nodes"]}
    settings = RunSettings(model=model_for(row), topo=z["topo"], ds_config=ds, seq=int(z["seq"]),
                           activation_checkpointing=bool(z.get("activation_checkpointing", False)),
                           offload_optimizer=z.get("offload_optimizer"), **where)
    return predict_any(settings, parallel_ask(row))


# ---- scoring -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoredRow:
    """One expressible row: the published value beside zsim's, on the source's metric."""

    id: str
    split: str
    metric: str
    published: float
    predicted: float
    error_pct: float          # (predicted - published) / published * 100
    step_time_s: float
    fits: bool
    topo: str
    world_size: int
    reading: str
    # Where zsim's step goes (seconds): GPU kernels, communication the compute stream waited
    # for, and all communication time (hidden or not); README "Where the misses are" uses them.
    compute_s: float = 0.0
    exposed_comm_s: float = 0.0
    comm_busy_s: float = 0.0
    # 3D rows (tp x pp x dp): the layout and the rest of the slowest stage's step: its
    # TP collectives (on the compute stream), pipeline idle time, gradient reduction + step.
    layout: str = ""
    tp_comm_s: float = 0.0
    pipeline_bubble_s: float = 0.0
    reduce_and_step_s: float = 0.0


@dataclass(frozen=True)
class PublishedReport:
    """Scores of every expressible row and the rows zsim cannot express yet."""

    path: str
    rows: tuple[ScoredRow, ...]
    not_expressible: tuple[tuple[str, str], ...]     # (id, reason)
    total_rows: int
    mape_pct: dict[str, float] = field(default_factory=dict)   # split -> MAPE; "all" too
    #: "<source URL> <split>" -> MAPE, so one source with many rows cannot hide another's error.
    mape_by_source_pct: dict[str, float] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)      # row id -> source URL
    #: split -> MAPE of the rows with a tensor/pipeline layout alone (they are in mape_pct too).
    mape_3d_pct: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "total_rows": self.total_rows,
                "expressible_rows": len(self.rows), "mape_pct": self.mape_pct,
                "mape_by_source_pct": self.mape_by_source_pct, "mape_3d_pct": self.mape_3d_pct,
                "rows": [asdict(r) for r in self.rows],
                "not_expressible": [{"id": i, "reason": r} for i, r in self.not_expressible]}


def score_row(row: Mapping[str, Any]) -> ScoredRow:
    """Predict one expressible row and compare it on its published metric."""
    result = predict_row(row)
    p = getattr(result, "prediction", result)       # a 3D prediction wraps the worst stage's
    published = float(row["measured"]["value"])
    predicted = source_metric(row, p.step_time_s, p.world_size)
    bd = p.time_breakdown
    exposed = sum(v for k, v in bd.items() if k.startswith("exposed_comm"))
    extra: dict[str, Any] = {}
    if p is not result:
        lay = result.layout
        if lay.pp > 1:     # the slowest stage's path (zsim.parallel.predict3d._pipeline_step)
            reduce_and_step = bd.get("reduce_and_step_s", 0.0)
        else:              # one stage: the TP collectives are exposed (compute stream); the
            # rest of the exposed communication is the data-parallel reduction, then the step
            reduce_and_step = exposed - result.tp_comm_s + bd.get("optimizer_s", 0.0)
        extra = {"layout": f"tp{lay.tp}{'+sp' if result.sequence_parallel else ''} x pp{lay.pp} x dp{lay.dp}",
                 "tp_comm_s": result.tp_comm_s, "pipeline_bubble_s": bd.get("pipeline_bubble_s", 0.0),
                 "reduce_and_step_s": reduce_and_step}
    return ScoredRow(id=row["id"], split=row["split"], metric=row["measured"]["metric"],
                     published=published, predicted=predicted,
                     error_pct=(predicted - published) / published * 100.0,
                     step_time_s=p.step_time_s, fits=p.fits, topo=row["zsim"]["topo"],
                     world_size=p.world_size, reading=row["measured"].get("reading", "quote"),
                     compute_s=bd.get("compute_s", 0.0),
                     exposed_comm_s=exposed, comm_busy_s=sum(p.comm_busy_s.values()), **extra)


def _mape(rows: list[ScoredRow]) -> float:
    return sum(abs(r.error_pct) for r in rows) / len(rows) if rows else math.nan


def published_report(path: str | Path | None = None) -> PublishedReport:
    """Score every expressible row of the data file (default: the shipped one)."""
    runs = load_runs(path)
    scored = tuple(score_row(r) for r in runs if r["expressible"])
    mape = {s: _mape([r for r in scored if r.split == s]) for s in ("fit", "eval")}
    mape["all"] = _mape(list(scored))
    mape = {k: v for k, v in mape.items() if not math.isnan(v)}
    sources = {r["id"]: r["source"] for r in runs if r["expressible"]}
    by_source = {}
    for src in dict.fromkeys(sources.values()):
        for split in ("fit", "eval"):
            rows = [r for r in scored if sources[r.id] == src and r.split == split]
            if rows:
                by_source[f"{src} {split}"] = _mape(rows)
    mape_3d = {s: _mape([r for r in scored if r.layout and r.split == s]) for s in ("fit", "eval")}
    return PublishedReport(path=str(Path(path) if path is not None else DEFAULT_PATH), rows=scored,
                           not_expressible=tuple((r["id"], r["reason"]) for r in runs if not r["expressible"]),
                           total_rows=len(runs), mape_pct=mape, mape_by_source_pct=by_source,
                           sources=sources, mape_3d_pct={k: v for k, v in mape_3d.items() if not math.isnan(v)})


def format_report(report: PublishedReport) -> str:
    """The Markdown tables ``zsim validate --published`` prints."""
    out = [f"Published DeepSpeed ZeRO training runs: {report.total_rows} rows, "
           f"{len(report.rows)} expressible (nothing in zsim is fitted on them)", "",
           "| split | rows | MAPE % | worst row |", "|---|---:|---:|---|"]
    for split in ("fit", "eval", "all"):
        rows = [r for r in report.rows if split == "all" or r.split == split]
        if rows:
            worst = max(rows, key=lambda r: abs(r.error_pct))
            out.append(f"| {split} | {len(rows)} | {report.mape_pct[split]:.1f} | {worst.id} {worst.error_pct:+.1f}% |")
    for split, value in report.mape_3d_pct.items():
        rows = [r for r in report.rows if r.layout and r.split == split]
        worst = max(rows, key=lambda r: abs(r.error_pct))
        out.append(f"| {split}, 3D rows | {len(rows)} | {value:.1f} | {worst.id} {worst.error_pct:+.1f}% |")
    if report.mape_by_source_pct:
        out += ["", "| source | split | rows | MAPE % |", "|---|---|---:|---:|"]
        for key, value in report.mape_by_source_pct.items():
            src, split = key.rsplit(" ", 1)
            n = sum(1 for r in report.rows if report.sources.get(r.id) == src and r.split == split)
            out.append(f"| {src} | {split} | {n} | {value:.1f} |")
    out += ["", "| row | split | metric | published | zsim | error | zsim step s | fits | topo x GPUs | reading |",
            "|---|---|---|---:|---:|---:|---:|---|---|---|"]
    for r in report.rows:
        out.append(f"| {r.id} | {r.split} | {r.metric} | {r.published:.2f} | {r.predicted:.2f} | "
                   f"{r.error_pct:+.1f}% | {r.step_time_s:.2f} | {'yes' if r.fits else 'no'} | "
                   f"{r.topo} x {r.world_size} | {r.reading} |")
    parallel = [r for r in report.rows if r.layout]
    if parallel:
        out += ["", "| 3D row | layout | zsim step s | compute s | TP collectives s | bubble s | "
                "reduction + step s | error |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        out += [f"| {r.id} | {r.layout} | {r.step_time_s:.2f} | {r.compute_s:.2f} | {r.tp_comm_s:.2f} | "
                f"{r.pipeline_bubble_s:.2f} | {r.reduce_and_step_s:.2f} | {r.error_pct:+.1f}% |" for r in parallel]
    if report.not_expressible:
        out += ["", "| not expressible | why |", "|---|---|"]
        out += [f"| {i} | {reason} |" for i, reason in report.not_expressible]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zsim.published", description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", help="data file (default: the shipped training_runs.yaml)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        report = published_report(args.path)
    except ZsimInputError as exc:
        print(f"zsim: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_json(), indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
