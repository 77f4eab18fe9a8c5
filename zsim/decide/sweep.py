"""`zsim sweep`: predict every configuration of a grid; one row per configuration.

A grid maps axis names to lists of values. It comes from command-line flags
(``--stage 1,2,3 --micro-batch 1,2,4``), from a YAML file, or both (flags win per axis)::

    model: llama-2-7b          # optional defaults for scalar settings
    topo: dgx-a100
    grid:
      stage: [1, 2, 3]
      micro_batch: [1, 2, 4]
      nodes: [1, 2]
      activation_checkpointing: [false, true]
      tp: [1, 2, 4]              # tensor / pipeline / Ulysses degrees (zsim predict --tp/--pp/--sp)

Configurations DeepSpeed would reject (offload_param below stage 3, a broken batch identity)
are kept as rows with status ``invalid`` and the reason; those that do not fit as rows with
status ``does_not_fit``, the largest memory term and the overflow.
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
import math
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping

from ..defaults import default_ds_config
from ..dsconfig import load_ds_config
from ..errors import ZsimInputError
from ..yamlio import load_yaml_file
from ..limits import MAX_SWEEP_CONFIGS
from ..predict import predict
from .evaluate import MemoryVerdict
from .fanout import Backend, ProcessPool

#: Axis name -> (type, the :class:`zsim.job.RunSettings` field it sets, which is also
#: :func:`zsim.predict.predict`'s keyword). Order = CSV column order. The bucket axes are
#: ZeRO keys: they are written into each configuration's DeepSpeed config instead.
AXES: Mapping[str, tuple[type, str]] = {
    "model": (str, "model"),
    "topo": (str, "topo"),
    "nodes": (int, "nodes"),
    "gpus": (int, "gpus"),
    "stage": (int, "stage"),
    "offload_optimizer": (str, "offload_optimizer"),
    "offload_param": (str, "offload_param"),
    "micro_batch": (int, "micro_batch"),
    "grad_accum": (int, "grad_accum"),
    "seq": (int, "seq"),
    "activation_checkpointing": (bool, "activation_checkpointing"),
    "reduce_bucket_size": (int, "reduce_bucket_size"),
    "prefetch_bucket_size": (int, "prefetch_bucket_size"),
    "tp": (int, "tp"),
    "pp": (int, "pp"),
    "sp": (int, "sp"),
    "ep": (int, "ep"),
}

#: Axes that are DeepSpeed config keys, not run settings.
CONFIG_AXES = ("reduce_bucket_size", "prefetch_bucket_size")
#: Axes of the parallel layout (tensor, pipeline, Ulysses degrees: the fields of
#: zsim.parallel.predict3d.ParallelAsk, not run settings).
LAYOUT_AXES = ("tp", "pp", "sp")
#: A grid with any of these axes predicts through :func:`predict_layout` (``ep``, DeepSpeed-MoE's
#: expert-parallel degree, is a run setting that :func:`zsim.predict.predict` does not take).
_PARALLEL_AXES = LAYOUT_AXES + ("ep",)

RESULT_FIELDS = ("status", "fits", "step_time_s", "tokens_per_s", "tflops_per_gpu", "mfu",
                 "peak_memory_bytes", "gpu_memory_bytes", "exposed_comm_s", "largest_memory_term",
                 "overflow_bytes", "world_size", "train_batch", "reason")


@dataclass(frozen=True)
class SweepResult:
    """Rows (dicts with the axis columns then :data:`RESULT_FIELDS`) and the axes swept."""

    axes: tuple[str, ...]
    rows: tuple[dict[str, Any], ...]

    @property
    def columns(self) -> list[str]:
        """CSV header."""
        return list(AXES) + list(RESULT_FIELDS)

    def to_csv(self) -> str:
        """All rows as CSV text."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in self.columns})
        return buf.getvalue()


def parse_value(axis: str, text: Any) -> Any:
    """One grid value of ``axis`` (from YAML or a comma list), checked."""
    kind = AXES[axis][0]
    if kind is bool:
        if isinstance(text, bool):
            return text
        low = str(text).strip().lower()
        if low in ("on", "true", "yes", "1"):
            return True
        if low in ("off", "false", "no", "0"):
            return False
        raise ZsimInputError(f"sweep: {axis} values must be on/off, got {text!r}")
    if kind is int:
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise ZsimInputError(f"sweep: {axis} values must be integers, got {text!r}") from None
        if not value.is_integer() or value < (0 if axis == "stage" else 1):
            raise ZsimInputError(f"sweep: {axis} value {text!r} is out of range")
        return int(value)
    return str(text).strip()


def parse_list(axis: str, text: str) -> list[Any]:
    """A comma-separated command-line list."""
    items = [t for t in str(text).split(",") if t.strip()]
    if not items:
        raise ZsimInputError(f"sweep: --{axis.replace('_', '-')} needs at least one value")
    return [parse_value(axis, t) for t in items]


def load_grid_file(path: str | Path) -> dict[str, list[Any]]:
    """The grid of a YAML file (scalars at top level become one-value axes)."""
    data = load_yaml_file(Path(path), "sweep grid")
    if not isinstance(data, Mapping):
        raise ZsimInputError(f"sweep grid {path}: top level must be a mapping")
    grid: dict[str, list[Any]] = {}
    nested = data.get("grid") or {}
    if not isinstance(nested, Mapping):
        raise ZsimInputError(f"sweep grid {path}: 'grid' must be a mapping of axis -> values, "
                             f"got {type(nested).__name__}")
    items = dict(nested)
    for key, value in data.items():
        if key != "grid":
            items.setdefault(key, value)
    for key, values in items.items():
        if key not in AXES:
            raise ZsimInputError(f"sweep grid {path}: unknown axis {key!r} (known: {', '.join(AXES)})")
        values = values if isinstance(values, list) else [values]
        if not values:
            raise ZsimInputError(f"sweep grid {path}: axis {key!r} has no values")
        grid[key] = [parse_value(key, v) for v in values]
    return grid


def configurations(grid: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of the grid, axes in :data:`AXES` order."""
    axes = [a for a in AXES if a in grid]
    return [dict(zip(axes, combo)) for combo in itertools.product(*(grid[a] for a in axes))]


def _ds_config(cfg: Mapping[str, Any], base: Mapping[str, Any] | None) -> dict[str, Any]:
    out = copy.deepcopy(dict(base)) if base else default_ds_config()
    zero = dict(out.get("zero_optimization") or {})
    if cfg.get("reduce_bucket_size") is not None:
        zero["reduce_bucket_size"] = cfg["reduce_bucket_size"]
    if cfg.get("prefetch_bucket_size") is not None:
        zero["stage3_prefetch_bucket_size"] = cfg["prefetch_bucket_size"]
    if zero:
        out["zero_optimization"] = zero
    return out


def predict_layout(tp: int = 1, pp: int = 1, sp: int = 1, **settings: Any):
    """:func:`zsim.predict.predict` of ``settings`` under a tensor/pipeline/Ulysses layout
    (``zsim predict --tp/--pp/--sp``; the worst pipeline stage's prediction, whose step time
    and throughput are the whole pipeline's, zsim.parallel.predict3d) or with DeepSpeed-MoE
    expert parallelism (``settings['ep']``, ``zsim predict --ep``)."""
    from ..job import RunSettings
    from ..parallel.predict3d import ParallelAsk, predict_any
    if settings.get("ep") is not None and max(tp, pp, sp) > 1:
        raise ZsimInputError("ep with tp/pp/sp above 1: expert parallelism combined with "
                             "tensor/pipeline/sequence parallelism is not modelled")
    result = predict_any(RunSettings(**settings), ParallelAsk(tp=tp, pp=pp, sp=sp))
    return getattr(result, "prediction", result)


def run_one(cfg: Mapping[str, Any], base_config: Mapping[str, Any] | None, predictor: Callable) -> dict[str, Any]:
    """Predict one configuration; bad combinations become ``invalid`` rows."""
    kwargs = {AXES[a][1]: v for a, v in cfg.items() if a not in CONFIG_AXES}
    row: dict[str, Any] = dict(cfg)
    try:
        p = predictor(ds_config=_ds_config(cfg, base_config), **kwargs)
    except ZsimInputError as exc:
        row.update(status="invalid", reason=str(exc))
        return row
    verdict = MemoryVerdict(bool(p.fits), int(p.peak_memory_bytes), int(p.gpu_memory_bytes),
                            dict(p.memory_breakdown))
    term = verdict.largest_term[0]
    row.update(status="fits" if p.fits else "does_not_fit", fits=bool(p.fits),
               step_time_s=p.step_time_s, tokens_per_s=p.tokens_per_s, tflops_per_gpu=p.tflops_per_gpu,
               mfu=p.mfu, peak_memory_bytes=p.peak_memory_bytes, gpu_memory_bytes=p.gpu_memory_bytes,
               exposed_comm_s=p.exposed_comm_s, largest_memory_term=term,
               overflow_bytes=max(0, p.peak_memory_bytes - p.gpu_memory_bytes), world_size=p.world_size,
               train_batch=p.train_batch, reason="" if p.fits else verdict.reason())
    return row


def sweep(grid: Mapping[str, list[Any]], base_config: Mapping[str, Any] | str | Path | None = None,
          predictor: Callable | None = None, progress: Callable | None = None, jobs: int = 1,
          backend: Backend | None = None) -> SweepResult:
    """Run every configuration of ``grid`` (``predictor``: default :func:`zsim.predict.predict`,
    or :func:`predict_layout` when the grid has a tp, pp, sp or ep axis).

    ``backend`` says where the predictions run (:mod:`zsim.decide.fanout`: this process, a
    process pool, a Dask cluster); ``jobs`` > 1 is short for ``ProcessPool(jobs)``. The rows
    are in grid order whichever runs them; away from this process the predictor must be
    picklable (a module-level function)."""
    if backend is not None and jobs != 1:
        raise ZsimInputError("sweep: give jobs or backend, not both")
    backend = backend if backend is not None else ProcessPool(jobs)   # checks jobs; 1 runs here
    if "gpus" in grid and "nodes" in grid:
        raise ZsimInputError("sweep: give gpus or nodes, not both")
    size = math.prod(len(v) for v in grid.values())
    if size > MAX_SWEEP_CONFIGS:
        raise ZsimInputError(f"sweep: the grid has {size} configurations, at most {MAX_SWEEP_CONFIGS} allowed")
    base = load_ds_config(base_config) if base_config is not None else None
    configs = configurations(grid)
    if predictor is None:
        predictor = predict_layout if any(a in grid for a in _PARALLEL_AXES) else predict
    rows = []
    # closing(): an interrupted sweep still shuts the pool down / closes the cluster client.
    task = partial(run_one, base_config=base, predictor=predictor)
    with closing(backend.map_in_order(task, configs)) as results:
        for i, cfg in enumerate(configs):
            if progress:   # i done, waiting for cfg
                progress(i, len(configs), " ".join(f"{k}={v}" for k, v in cfg.items()))
            rows.append(next(results))
    if progress:
        progress(len(configs), len(configs), "done")
    return SweepResult(axes=tuple(a for a in AXES if a in grid), rows=tuple(rows))
