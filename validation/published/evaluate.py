"""Collective model vs published nccl-tests figures and our own sweep: the error table.

    python validation/published/evaluate.py            # markdown table, fit and eval
    python validation/published/evaluate.py --json

Points and the fit/eval split live in ``nccl_tests.yaml`` next to this file. Predictions use
the shipped topologies and hardware profiles (nothing is refitted here). Error = predicted /
published busbw - 1; MAPE is over the points of one split, group size and size band
(1-16 MiB: "mid", >= 16 MiB: "large").
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
POINTS_FILE = Path(__file__).resolve().parent / "nccl_tests.yaml"


@dataclass(frozen=True)
class Row:
    """One compared point."""

    id: str
    system: str
    split: str
    op: str
    ranks: int
    bytes: int
    published_GBps: float
    predicted_GBps: float
    choice: str

    @property
    def error(self) -> float:
        """Predicted / published busbw - 1."""
        return self.predicted_GBps / self.published_GBps - 1.0


def load(path: Path = POINTS_FILE) -> dict:
    """The points file, parsed."""
    with open(path) as fh:
        return yaml.safe_load(fh)


def _cluster(point: dict, tmp: Path):
    """The point's cluster (``nics_per_node`` rewrites the topology, one NIC per switch)."""
    from zsim.network import load_topology
    topo = load_topology(point["topology"])
    if "nics_per_node" in point:
        with open(topo.spec.path) as fh:
            data = yaml.safe_load(fh)
        data["name"] = f"{data['name']}-{point['nics_per_node']}nic"
        data["fabric"]["nics_per_node"] = point["nics_per_node"]
        for i, switch in enumerate(data["node"]["pcie"]["switches"]):
            switch["nics"] = [i] if i < point["nics_per_node"] else []
        path = tmp / f"{data['name']}.yaml"
        path.write_text(yaml.safe_dump(data))
        topo = load_topology(str(path))
    return topo.cluster(**point["cluster"])


def _sweep_points(sweep: dict) -> list[dict]:
    with open(ROOT / sweep["file"]) as fh:
        rows = json.load(fh)["rows"]
    return [{**sweep, "id": f"{sweep['system']}-{r['op']}-{r['bytes']}", "op": r["op"],
             "bytes": r["bytes"], "algorithm": "auto", "busbw_GBps": r["busbw_GBps"]}
            for r in rows]


def all_points(data: dict) -> list[dict]:
    """Published points and sweep rows, one dict each."""
    out = list(data.get("points", []))
    for sweep in data.get("sweeps", []):
        out.extend(_sweep_points(sweep))
    return out


def predict(points: list[dict], hardware=None) -> list[Row]:
    """One :class:`Row` per point (``hardware``: a profile to use instead of the shipped)."""
    from zsim.collectives import collective_choice
    from zsim.hardware import shared_profile
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for p in points:
            cluster = _cluster(p, Path(tmp))
            hw = hardware if hardware is not None else shared_profile(cluster.hardware)
            c = collective_choice(cluster, hw, p["op"], p["bytes"], p.get("algorithm", "auto"))
            rows.append(Row(p["id"], p["system"], p["split"], p["op"], c.cost.group_size,
                            p["bytes"], p["busbw_GBps"], c.cost.busbw_GBps,
                            f"{c.algorithm}/{c.protocol}"))
    return rows


def band(nbytes: int, targets: dict) -> str:
    """"large" (>= 16 MiB), "mid" (1-16 MiB) or "small"."""
    if nbytes >= targets["large_min_bytes"]:
        return "large"
    return "mid" if nbytes >= targets["mid_min_bytes"] else "small"


def mape_table(rows: list[Row], targets: dict) -> list[dict]:
    """MAPE per (split, ranks, band), with the target and the worst point."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault((r.split, r.ranks, band(r.bytes, targets)), []).append(r)
    out = []
    for (split, ranks, b), rs in sorted(groups.items()):
        errs = [abs(r.error) * 100 for r in rs]
        worst = max(rs, key=lambda r: abs(r.error))
        out.append({"split": split, "ranks": ranks, "band": b, "points": len(rs),
                    "mape_pct": sum(errs) / len(errs), "target_pct": targets.get(f"{b}_mape_pct"),
                    "worst": f"{worst.id} {worst.error * 100:+.1f}%"})
    return out


def markdown(rows: list[Row], targets: dict) -> str:
    """The error table and the per-point table, as markdown."""
    lines = ["| split | ranks | size band | points | MAPE % | target % | worst point |",
             "|---|---:|---|---:|---:|---:|---|"]
    for t in mape_table(rows, targets):
        tgt = "" if t["target_pct"] is None else f"{t['target_pct']:.0f}"
        lines.append(f"| {t['split']} | {t['ranks']} | {t['band']} | {t['points']} | "
                     f"{t['mape_pct']:.1f} | {tgt} | {t['worst']} |")
    lines += ["", "| point | split | op | ranks | bytes | published GB/s | zsim GB/s | error | zsim pick |",
              "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r.id} | {r.split} | {r.op} | {r.ranks} | {r.bytes} | {r.published_GBps:.1f} | "
                     f"{r.predicted_GBps:.1f} | {r.error * 100:+.1f}% | {r.choice} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Print the error table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    data = load()
    rows = predict(all_points(data))
    if args.json:
        print(json.dumps({"table": mape_table(rows, data["targets"]),
                          "points": [{**vars(r), "error": r.error} for r in rows]}, indent=1))
    else:
        print(markdown(rows, data["targets"]))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
