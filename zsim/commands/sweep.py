"""`zsim sweep`: predict a grid of configurations, write CSV and JSON (one row each)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..decide.sweep import AXES, load_grid_file, parse_list, sweep
from ..defaults import DEFAULT_MODEL, DEFAULT_TOPO
from ..io import atomic_write_set, dumps_json
from ..limits import check_finite_tree
from .common import add_quiet_arg, progress_for

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


def run(args: argparse.Namespace) -> int:
    """Build the grid, run it, write the files, print a summary."""
    grid = load_grid_file(args.grid) if args.grid else {}
    for axis in AXES:
        value = getattr(args, f"axis_{axis}")
        if value is not None:
            grid[axis] = parse_list(axis, value)
    grid.setdefault("model", [DEFAULT_MODEL])
    grid.setdefault("topo", [DEFAULT_TOPO])
    bar = progress_for(args, "zsim sweep")
    try:
        result = sweep(grid, args.ds_config, progress=bar)
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
    if fits:
        best = max(fits, key=lambda r: r["tokens_per_s"])
        print("best: " + " ".join(f"{a}={best[a]}" for a in result.axes) + f" -> {best['tokens_per_s']:,.0f} tokens/s")
    return 0
