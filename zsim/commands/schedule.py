"""`zsim schedule`: the collectives of one steady-state optimizer step, in comms-logger units."""

from __future__ import annotations

import argparse
import json

from dataclasses import asdict

from .. import limits
from ..output import format_bytes, wire_bytes_per_message
from ..schedule.result import schedule as schedule_api
from .common import int_up_to, settings_from_args

HELP = "print the collectives DeepSpeed issues in one steady-state optimizer step (comms-logger units)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `zsim schedule`."""
    parser.add_argument("--model", required=True, help="preset name or path to a HF config.json")
    parser.add_argument("--ds-config", required=True, help="DeepSpeed JSON config (\"auto\" values allowed)")
    parser.add_argument("--world-size", required=True, type=int_up_to(limits.MAX_WORLD_SIZE), help="data-parallel ranks")
    parser.add_argument("--micro-batch", type=int_up_to(limits.MAX_MICRO_BATCH), help="micro-batch per GPU (overrides the file)")
    parser.add_argument("--grad-accum", type=int_up_to(limits.MAX_GRAD_ACCUM), help="gradient accumulation steps (overrides the file)")
    parser.add_argument("--stage", type=int, choices=[0, 1, 2, 3], help="ZeRO stage (overrides the file)")
    parser.add_argument("--json", action="store_true",
                        help='print {"op": {"message_bytes": count}} as DeepSpeed\'s comms logger counts')


def run(args: argparse.Namespace) -> int:
    """Run `zsim schedule`."""
    # The run flags this command has (--stage, --micro-batch, --grad-accum) override the config.
    given = {k: v for k, v in asdict(settings_from_args(args).overrides()).items() if v is not None}
    result = schedule_api(args.model, args.ds_config, args.world_size, **given)
    if args.json:
        print(json.dumps(result.collectives))
        return 0
    print(format_table(result.collectives, result.stage, result.grad_accum, result.world_size,
                       wire_bytes_per_message(result.ops, result.world_size, result.gpus_per_node)))
    for note in result.notes:  # what "auto" resolved to, what the command line overrode
        print(f"note: {note}")
    return 0


def format_table(collectives: dict, stage: int, grad_accum: int, world_size: int,
                 wire_bytes: dict | None = None) -> str:
    """A human-readable table: op, message bytes, count, total bytes per step and, with
    ``wire_bytes`` (:func:`zsim.output.wire_bytes_per_message`), the bytes one GPU puts on
    the wire for that row."""
    wire_head = f"{'on the wire/GPU':>17}" if wire_bytes is not None else ""
    lines = [f"ZeRO stage {stage}, {world_size} ranks, {grad_accum} micro-step(s) per optimizer step",
             "(rank 0; message_bytes as DeepSpeed's comms logger records them)",
             f"{'op':<26}{'message_bytes':>16}{'count':>8}{'total_bytes':>18}{wire_head}"]
    grand, wire_total = 0, 0.0
    for op in sorted(collectives):
        for size, count in sorted(collectives[op].items(), key=lambda kv: int(kv[0])):
            total = int(size) * count
            grand += total
            wire = ""
            if wire_bytes is not None:
                sent = wire_bytes.get((op, int(size)), 0.0)
                wire_total += sent
                wire = f"{format_bytes(sent):>17}"
            lines.append(f"{op:<26}{int(size):>16,}{count:>8}{total:>18,}{wire}")
    lines.append(f"{'total':<26}{'':>16}{sum(sum(v.values()) for v in collectives.values()):>8}{grand:>18,}"
                 + (f"{format_bytes(wire_total):>17}" if wire_bytes is not None else ""))
    if wire_bytes is not None:
        lines.append("on the wire/GPU: bytes one rank sends for the row's calls (nccl-tests' bus convention)")
    return "\n".join(lines)
