"""`zsim sweep`: predict a grid of configurations, write CSV and JSON (one row each)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..decide.sweep import AXES, load_grid_file, parse_list, sweep
from ..defaults import DEFAULT_MODEL, DEFAULT_TOPO
from ..io import atomic_write_set, dumps_json
from ..limits import check_finite_tree
from ..output import MEMORY_LABELS, format_bytes, format_seconds
from .common import add_fanout_args, add_quiet_arg, backend_from_args, progress_for

HELP = "predict every configuration of a grid (flags like --stage 1,2,3 or a YAML file); write CSV and JSON"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Each axis takes a comma-separated list; --grid FILE reads a YAML grid."""
    p.add_argument("--grid", help="YAML file with a grid (flags override its axes)")
    for axis in AXES:
        p.add_argument(f"--{axis.replace('_', '-')}", dest=f"axis_{axis}", metavar="LIST",
                       help=f"comma-separated values of {axis}")
    p.add_argument("--ds-config", help="base DeepSpeed JSON for every configuration")
    p.add_argument("-o", "--output", default="output/sweep", help="folder for sweep.csv and sweep.json (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the rows as one JSON object (the files are written too)")
    add_quiet_arg(p)
    add_fanout_args(p)


def run(args: argparse.Namespace) -> int:
    """Build the grid, run it, write the files, print a summary."""
    grid = load_grid_file(args.grid) if args.grid else {}
    for axis in AXES:
        value = getattr(args, f"axis_{axis}")
        if value is not None:
            grid[axis] = parse_list(axis, value)
    grid.setdefault("model", [DEFAULT_MODEL])
    grid.setdefault("topo", [DEFAULT_TOPO])
    backend = backend_from_args(args)
    bar = progress_for(args, "zsim sweep")
    try:
        result = sweep(grid, args.ds_config, progress=bar, backend=backend)
    finally:
        bar.close()
    check_finite_tree(list(result.rows), "sweep")
    out = Path(args.output)
    atomic_write_set(out, {"sweep.csv": result.to_csv(),
                           "sweep.json": dumps_json({"axes": list(result.axes), "rows": list(result.rows)})})
    if args.json:
        sys.stdout.write(dumps_json({"axes": list(result.axes), "rows": list(result.rows),
                                     "files": [str(out / "sweep.csv"), str(out / "sweep.json")]}))
        return 0
    counts = {s: sum(r["status"] == s for r in result.rows) for s in ("fits", "does_not_fit", "invalid")}
    fits = [r for r in result.rows if r["status"] == "fits"]
    print(f"sweep: {len(result.rows)} configurations ({counts['fits']} fit, {counts['does_not_fit']} do not fit, "
          f"{counts['invalid']} invalid); wrote {out / 'sweep.csv'} and {out / 'sweep.json'}")
    if len(result.rows) <= MAX_PRINTED_ROWS:
        print("\n".join(["", *format_rows(result.rows, result.axes), ""]))
    else:
        print(f"({len(result.rows)} rows: more than {MAX_PRINTED_ROWS}, see {out / 'sweep.csv'})")
    if fits:
        best = max(fits, key=lambda r: r["tokens_per_s"])
        print("best: " + " ".join(f"{a}={best[a]}" for a in result.axes) + f" -> {best['tokens_per_s']:,.0f} tokens/s")
    return 0


#: Most rows the text output lists (the files always hold every row).
MAX_PRINTED_ROWS = 60


def format_rows(rows, axes) -> list[str]:
    """One line per configuration: the swept axes, then the verdict in human units."""
    names = [a for a in axes if len({str(r.get(a)) for r in rows}) > 1] or list(axes)[:1]
    width = {a: max(len(a), *(len(str(r.get(a))) for r in rows)) for a in names}
    head = "  ".join(f"{a:>{width[a]}}" for a in names)
    lines = [f"{head}  {'status':<12} {'step':>9} {'tokens/s':>10} {'peak/GPU':>10}  largest term"]
    for r in rows:
        cells = "  ".join(f"{str(r.get(a)):>{width[a]}}" for a in names)
        if r["status"] == "invalid":
            lines.append(f"{cells}  {'invalid':<12} {r.get('reason', '')}"[:100])
            continue
        term = r.get("largest_memory_term") or ""
        lines.append(f"{cells}  {r['status']:<12} {format_seconds(r['step_time_s']):>9} "
                     f"{r['tokens_per_s']:>10,.0f} {format_bytes(r['peak_memory_bytes']):>10}  "
                     f"{MEMORY_LABELS.get(term, term)}"[:100])
    return lines
