"""GPU time by kernel kind, measured (train.py --profile traces) against zsim, per phase.

    python validation/kernel_kinds.py validation/results/h200/*/*/          [--json]
    python validation/kernel_kinds.py --layers <microbench JSON with a "layer" section> [--fit-layers]

zsim prices a step's GPU work kernel by kernel: GEMMs from the profile's efficiency curve,
attention from its per-head_dim curves, everything else as memory-bound bytes over HBM
bandwidth (zsim.compute.kernel_busy_s). A phase's compute total can be right while its kinds
are not. This splits both sides by kind:

- measured: the kernels a traced step launched, by name (nvjet/cutlass/gemm: GEMM;
  flash/fmha: attention; NCCL: comm; the rest: other), each in the phase of the CPU call that
  launched it, as `zsim diagnose` assigns them;
- zsim: each simulated compute span of the step, split over the kinds of its modules' kernels
  in proportion to their priced busy time; compute spans without modules (ZeRO copies, the
  optimizer's passes) count as other.

Folders without a trace are skipped. The step phase's GPU work is mostly the optimizer's
memory-bound passes; its kinds are printed too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from microbench.common import kernel_kind               # noqa: E402
from models import hf_fields                            # noqa: E402
from zsim.calibrate import predict_run, run_settings   # noqa: E402
from zsim.compute import in_decoder_layer, kernel_busy_s   # noqa: E402
from zsim.diagnose.compare import load_folder, trace_file   # noqa: E402
from zsim.diagnose.measured import gpu_items, phase_clock   # noqa: E402
from zsim.diagnose.trace import load_trace              # noqa: E402
from zsim.hardware import load_profile                  # noqa: E402
from zsim.job import resolve                            # noqa: E402
from zsim.model import from_hf_config                   # noqa: E402
from zsim.workload import Workload, layer_modules       # noqa: E402

KINDS = ("gemm", "attention", "other")
PHASES = ("forward", "backward", "step")


def measured_kinds(folder: Path) -> tuple[dict, dict]:
    """({(phase, kind): ms}, {(phase, kind): kernels}) of the traced step of ``folder``."""
    run, summary = load_folder(folder)
    trace = load_trace(trace_file(folder, summary))
    ms: dict = defaultdict(float)
    count: dict = defaultdict(int)
    for phase, _micro, stream, name, dur_s, _end in gpu_items(trace, phase_clock(trace)):
        if stream in ("compute", "comm"):   # kernels; copies and memsets are not priced by kind
            ms[(phase, kernel_kind(name))] += dur_s * 1e3
            count[(phase, kernel_kind(name))] += 1
    return ms, count


def _zsim_kind(kernel) -> str:
    """A zsim kernel's kind in the trace's terms: gemm, attention or other (memory-bound)."""
    return kernel.kind if kernel.kind in ("gemm", "attention") else "other"


def _preset_workload(model: str, batch: int, seq: int) -> Workload:
    """The bf16 workload of the validation preset ``model`` (validation/models.py)."""
    return Workload(from_hf_config(hf_fields(model), model), batch, seq, 2)


def layer_kinds(model: str, batch: int, seq: int, hardware: str) -> dict:
    """{(pass, kind): seconds} zsim prices for one decoder layer of the validation preset
    ``model`` (validation/models.py) at ``batch`` x ``seq``, "fwd" and "bwd"."""
    hw = load_profile(hardware)
    workload = _preset_workload(model, batch, seq)
    out: dict = defaultdict(float)
    for pass_ in ("fwd", "bwd"):
        for module in layer_modules(workload.model, 0):
            for k in workload.kernels(module, pass_):
                out[(pass_, _zsim_kind(k))] += kernel_busy_s(k, hw, "bf16", pass_)
    return out


def compare_layers(rows: list[dict], hardware: str) -> list[dict]:
    """The layer microbenchmark's rows (validation/microbench/layer.py) beside zsim's price of
    the same layer: per pass and kind, measured and zsim microseconds."""
    out = []
    for r in rows:
        pred = layer_kinds(r["model"], r["batch"], r["seq"], hardware)
        for pass_ in ("fwd", "bwd"):
            for kind in KINDS:
                fwd = r[f"fwd_{kind}_s"]
                meas = fwd if pass_ == "fwd" else r[f"fwd_bwd_{kind}_s"] - fwd
                out.append({"model": r["model"], "batch": r["batch"], "seq": r["seq"], "pass": pass_,
                            "kind": kind, "measured_us": round(meas * 1e6, 1),
                            "zsim_us": round(pred[(pass_, kind)] * 1e6, 1)})
    return out


def layer_memory_efficiencies(rows: list[dict], hardware: str) -> dict[str, float]:
    """The forward and backward module efficiencies (``compute.forward_memory_efficiency``,
    ``compute.backward_memory_efficiency``) that make zsim's memory-bound kernels of each
    measured layer take the layer's measured "other" time: per layer, the bytes zsim counts
    for its contiguous memory-bound kernels over (measured other time minus zsim's price of
    its strided ones), as a fraction of HBM bandwidth; the median over the layers.

    Layers of head_dim 100 are left out: their flash call pads q/k/v to 104 with copy kernels,
    which the kernel names class as "other" while zsim's attention curve (timed over the
    whole SDPA call) holds them.
    """
    hw = load_profile(hardware)
    effs: dict[str, list[float]] = {"fwd": [], "bwd": []}
    for r in rows:
        workload = _preset_workload(r["model"], r["batch"], r["seq"])
        if workload.model.head_dim % 8:
            continue
        for pass_ in ("fwd", "bwd"):
            kernels = [k for m in layer_modules(workload.model, 0) for k in workload.kernels(m, pass_)
                       if k.kind == "memory"]
            strided_s = sum(kernel_busy_s(k, hw, "bf16") for k in kernels if k.strided)
            contiguous_bytes = sum(k.nbytes for k in kernels if not k.strided)
            other_s = r["fwd_other_s"] if pass_ == "fwd" else r["fwd_bwd_other_s"] - r["fwd_other_s"]
            effs[pass_].append(contiguous_bytes / (other_s - strided_s) / (hw.gpu.hbm_bandwidth_GBps * 1e9))
    return {"forward_memory_efficiency": round(statistics.median(effs["fwd"]), 4),
            "backward_memory_efficiency": round(statistics.median(effs["bwd"]), 4),
            "layers": len(effs["fwd"]),
            "spread": {p: [round(min(v), 4), round(max(v), 4)] for p, v in effs.items()}}


def _module_shares(workload: Workload, op, hw, precision: str) -> dict[str, float]:
    """Fractions of a module op's priced GPU time per kernel kind."""
    busy: dict[str, float] = defaultdict(float)
    for module in op.modules:
        for k in workload.kernels(module, op.pass_):
            busy[_zsim_kind(k)] += kernel_busy_s(k, hw, precision, op.pass_ if in_decoder_layer(module) else "")
    total = sum(busy.values())
    return {k: v / total for k, v in busy.items()} if total > 0 else {"other": 1.0}


def predicted_kinds(folder: Path, hardware: str) -> dict:
    """{(phase, kind): ms} of zsim's simulated step for the run of ``folder``."""
    run, _ = load_folder(folder)
    pred = predict_run(run, hardware, keep_timeline=True)
    job = resolve(run_settings(run, hardware))
    workload = Workload(job.model, job.run.micro_batch, job.run.seq_len, job.run.param_bytes)
    ms: dict = defaultdict(float)
    for span in pred.timeline.spans:
        op = pred.ops[span.op_id]
        if op.stream != "compute" or op.phase not in PHASES:
            continue
        dur_ms = (span.end_s - span.start_s) * 1e3
        shares = _module_shares(workload, op, job.hardware, job.run.precision) if op.modules else {"other": 1.0}
        for kind, share in shares.items():
            ms[(op.phase, kind)] += dur_ms * share
    return ms


def compare(folder: Path, hardware: str) -> dict:
    """One run's rows: per phase and kind, measured and zsim ms and the measured kernel count."""
    meas, count = measured_kinds(folder)
    pred = predicted_kinds(folder, hardware)
    rows = [{"phase": ph, "kind": k, "measured_ms": round(meas.get((ph, k), 0.0), 3),
             "zsim_ms": round(pred.get((ph, k), 0.0), 3), "measured_kernels": count.get((ph, k), 0)}
            for ph in PHASES for k in KINDS]
    return {"run": folder.name, "rows": rows}


def _pct(a: float, b: float) -> str:
    return f"{(b - a) / a * 100:+5.0f}%" if a > 0 else "    -"


def render(result: dict) -> str:
    """One run as text: per phase, measured/zsim ms and the gap per kind."""
    lines = [result["run"]]
    for ph in PHASES:
        cells = [f"{r['kind']} {r['measured_ms']:7.1f}/{r['zsim_ms']:7.1f} {_pct(r['measured_ms'], r['zsim_ms'])}"
                 for r in result["rows"] if r["phase"] == ph]
        lines.append(f"  {ph:8s} " + " | ".join(cells))
    return "\n".join(lines)


def main(argv=None) -> int:
    """Print measured vs zsim GPU time by kernel kind for every traced run folder given."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="*", type=Path)
    p.add_argument("--hardware", default="h200-sxm")
    p.add_argument("--layers", type=Path, help="a microbench JSON with a 'layer' section: compare "
                   "zsim's price of one decoder layer per kind with it instead")
    p.add_argument("--fit-layers", action="store_true", help="with --layers: print the forward and "
                   "backward module memory efficiencies that the layers measure")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.layers and args.fit_layers:
        print(json.dumps(layer_memory_efficiencies(json.loads(args.layers.read_text())["layer"], args.hardware)))
        return 0
    if args.layers:
        rows = compare_layers(json.loads(args.layers.read_text())["layer"], args.hardware)
        for r in rows:
            gap = _pct(r["measured_us"], r["zsim_us"])
            print(f"{r['model']:17s} {r['batch']}x{r['seq']:<5d} {r['pass']} {r['kind']:9s} "
                  f"{r['measured_us']:8.1f} {r['zsim_us']:8.1f} us {gap}")
        return 0
    results = []
    for folder in args.folders:
        if not (folder / "trace.json.gz").is_file() and not (folder / "trace.json").is_file():
            continue
        results.append(compare(folder, args.hardware))
        if not args.json:
            print(render(results[-1]), flush=True)
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
