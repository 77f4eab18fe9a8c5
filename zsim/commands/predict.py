"""`zsim predict`: memory, step time and collectives of one configuration."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..io import dumps_json
from ..limits import check_finite_tree
from .common import add_cluster_args, add_run_args

HELP = "predict per-GPU memory, step time and collectives of one DeepSpeed ZeRO configuration"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `zsim predict` (DESIGN.md's contract)."""
    add_run_args(p)
    add_cluster_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--trace", help="write a Chrome/Perfetto trace of one step to this file")
    p.add_argument("--output", default=None,
                   help="write training_metrics.csv, training_curves.png, summary.json, "
                        "deepspeed_config_auto.json here (default: output/deepspeed_metrics)")
    p.add_argument("--no-output", action="store_true", help="write no output folder")


def run(args: argparse.Namespace) -> int:
    """Predict, then print and write what was asked."""
    from ..output import DEFAULT_OUTPUT_DIR, format_prediction, wire_bytes_per_gpu, write_prediction_outputs
    from ..predict import predict
    from ..trace import write_trace

    pred = predict(model=args.model, topo=args.topo, gpus=args.gpus, nodes=args.nodes,
                   ds_config=args.ds_config, hardware=args.hardware, stage=args.stage,
                   micro_batch=args.micro_batch, grad_accum=args.grad_accum, seq=args.seq,
                   offload_optimizer=args.offload_optimizer, offload_param=args.offload_param,
                   activation_checkpointing=args.activation_checkpointing,
                   keep_timeline=bool(args.trace) or not args.no_output)
    check_finite_tree(pred.to_dict(), "prediction")  # before anything is printed or written
    if args.trace:
        write_trace(args.trace, pred.timeline, label=f"{pred.model} ZeRO-{pred.stage}",
                    link_utilisation=dict(pred.link_utilisation))
    from ..diagnose.predicted import prediction_ops
    from ..model import load_model

    ops = prediction_ops(pred, load_model(args.model))
    written = []
    if not args.no_output:
        written = write_prediction_outputs(pred, args.output or DEFAULT_OUTPUT_DIR, model=args.model, ops=ops)
    if args.json:
        sys.stdout.write(dumps_json(pred.to_dict()))
    else:
        print(format_prediction(pred, wire_bytes=wire_bytes_per_gpu(ops, pred.world_size, pred.gpus_per_node)))
        if written:
            print(f"\nwrote {len(written)} files to {Path(written[0]).parent}: {', '.join(Path(w).name for w in written)}"
                  " (training_metrics.csv: forward/backward/step ms per micro-step)")
        if args.trace:
            print(f"wrote the Perfetto trace {args.trace}")
    return 0
