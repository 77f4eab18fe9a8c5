"""`zsim predict`: memory, step time and collectives of one configuration."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..defaults import DEFAULT_LAUNCHER
from ..dsconfig import OffloadDevice
from ..hostcost import LAUNCHERS
from ..io import dumps_json
from ..limits import check_finite_tree
from ..output import DEFAULT_OUTPUT_DIR, format_prediction, wire_bytes_per_gpu, write_prediction_outputs
from ..parallel.cli import add_expert_args, add_parallel_args, parallel_ask, parallel_lines, refuse_expert_with_3d
from ..parallel.predict3d import predict_any
from ..trace import write_trace
from .common import add_cluster_args, add_run_args, int_up_to, settings_from_args

HELP = "predict per-GPU memory, step time and collectives of one DeepSpeed ZeRO configuration"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `zsim predict` (the command-line contract of docs/design.md)."""
    add_run_args(p)
    add_cluster_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--trace", help="write a Chrome/Perfetto trace of one step to this file")
    p.add_argument("-o", "--output", default=None,
                   help="write training_metrics.csv, training_curves.png, summary.json, "
                        "deepspeed_config_auto.json here (default: output/deepspeed_metrics)")
    p.add_argument("--no-output", action="store_true", help="write no output folder")
    p.add_argument("--launcher", choices=LAUNCHERS, default=DEFAULT_LAUNCHER,
                   help="how the job is started, which sets the threads of each rank's CPU passes "
                        "under offload: deepspeed (torch's default: the node's cores shared by its "
                        "ranks) or torchrun (OMP_NUM_THREADS=1 with several ranks per node) "
                        "(default: %(default)s)")
    p.add_argument("--cpu-threads", type=int_up_to(4096), default=None,
                   help="threads per rank of the CPU passes (OMP_NUM_THREADS), overriding --launcher")
    add_parallel_args(p, " (see docs/parallelism.md for what is modelled)", megatron_sp=True)
    add_expert_args(p)


def run(args: argparse.Namespace) -> int:
    """Predict, then print and write what was asked."""
    refuse_expert_with_3d(args)
    # Outputs and wire bytes read the prediction's ops: keep the timeline.
    result = predict_any(settings_from_args(args), parallel_ask(args), keep_timeline=True)
    parallel = None if hasattr(result, "timeline") else result
    pred = result if parallel is None else parallel.prediction
    check_finite_tree(result.to_dict(), "prediction")  # before anything is printed or written
    if args.trace:
        write_trace(args.trace, pred.timeline, label=f"{pred.model} ZeRO-{pred.stage}",
                    link_utilisation=dict(pred.link_utilisation))
    ops = pred.ops
    written = []
    if not args.no_output:
        written = write_prediction_outputs(pred, args.output or DEFAULT_OUTPUT_DIR)
    if args.json:
        sys.stdout.write(dumps_json(result.to_dict()))
    else:
        wire = (wire_bytes_per_gpu(ops, pred.world_size, pred.gpus_per_node) if parallel is None
                else parallel.wire_bytes)
        print(format_prediction(pred, wire_bytes=wire, data_parallel=None if parallel is None else parallel.layout.dp))
        for line in parallel_lines(parallel) if parallel is not None else ():
            print(line)
        for line in host_memory_lines(pred):
            print(line)
        if written:
            print(f"\nwrote {len(written)} files to {Path(written[0]).parent}:")
            for path in written:
                print(f"  {Path(path).name:<28}{FILE_DESCRIPTIONS.get(Path(path).name, '')}")
        if args.trace:
            print(f"wrote the Perfetto trace {args.trace}")
    return 0


#: What each file of the output folder holds (printed after the prediction).
FILE_DESCRIPTIONS = {
    "training_metrics.csv": "forward/backward/optimizer-step ms per micro-step",
    "training_curves.png": "time per phase, memory at the peak and over the step",
    "summary.json": "this prediction as JSON (what --json prints)",
    "deepspeed_config_auto.json": 'the DeepSpeed config with every "auto" resolved',
}


def host_memory_lines(pred) -> list[str]:
    """Host memory needed against available, when anything is offloaded (else no lines)."""
    if pred.offload_optimizer == OffloadDevice.NONE and pred.offload_param == OffloadDevice.NONE:
        return []
    need, have = pred.host_memory_bytes_per_node, pred.host_memory_available_bytes
    gib = 2 ** 30
    if have <= 0:
        verdict = "the topology does not give the node's host memory (node.host): not checked"
    else:
        verdict = f"of {have / gib:,.1f} GiB -> {'FITS' if need <= have else 'DOES NOT FIT'}"
    return ["", f"host memory/node  offloaded states need {need / gib:,.1f} GiB "
                f"({pred.gpus_per_node} ranks) {verdict}"]
