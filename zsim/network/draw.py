"""Draw a topology graph with matplotlib (layered: fabric on top, then NICs, GPUs, PCIe, CPUs)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import networkx as nx

from ..errors import ZsimInputError
from ..io import atomic_write_with
from .topology import Topology

matplotlib.use("Agg")  # headless: this module only writes files; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

#: Most nodes a drawing shows (beyond that it is unreadable).
MAX_DRAWN_NODES = 16

_ROW = {"core": 7.0, "spine": 6.0, "leaf": 5.0, "nic": 3.6, "nvswitch": 2.6, "gpu": 1.8,
        "pcie_switch": 0.9, "cpu": 0.0}
_COLOR = {"core": "#6a3d9a", "spine": "#1f78b4", "leaf": "#33a02c", "nic": "#ff7f00",
          "nvswitch": "#76b900", "gpu": "#222222", "pcie_switch": "#a6cee3", "cpu": "#b15928"}
_EDGE = {"nvlink": "#76b900", "pcie": "#1f78b4", "ib": "#ff7f00"}


def _positions(g) -> dict:
    by_kind: dict[tuple, list] = {}
    for v, d in g.nodes(data=True):
        key = (d["kind"], d.get("node", -1))
        by_kind.setdefault(key, []).append(v)
    nodes = sorted({d.get("node", 0) for _, d in g.nodes(data=True) if "node" in d}) or [0]
    width = 10.0
    pos = {}
    for (kind, j), members in by_kind.items():
        members.sort(key=lambda v: (g.nodes[v].get("index", 0), v))
        if j >= 0:  # inside node j: spread within its slot
            left, span = j * width * 1.15, width
        else:
            left, span = 0.0, len(nodes) * width * 1.15 - 0.15 * width
        for i, v in enumerate(members):
            x = left + span * (i + 0.5) / len(members)
            pos[v] = (x, _ROW[kind])
    return pos


#: Image metadata without creation dates or tool versions, so two runs write identical bytes.
REPRODUCIBLE_METADATA = {
    "png": {"Software": None},
    "svg": {"Date": None, "Creator": None},
    "pdf": {"CreationDate": None, "ModDate": None, "Creator": None, "Producer": None},
}


def draw_topology(topo: Topology, output: str | Path, nodes: int = 1) -> Path:
    """Draw ``nodes`` nodes of ``topo`` (and their fabric) to ``output``; returns the path."""
    if nodes > MAX_DRAWN_NODES:
        raise ZsimInputError(f"--nodes {nodes}: drawings show at most {MAX_DRAWN_NODES} nodes")
    out = Path(output)
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ZsimInputError(f"-o {output}: the image must end in .png, .svg or .pdf")
    g = topo.graph(nodes)
    pos = _positions(g)
    fig, ax = plt.subplots(figsize=(max(8, 5 * nodes), 6))
    for link_type, color in _EDGE.items():
        edges = [(u, v) for u, v, d in g.edges(data=True) if d["link_type"] == link_type]
        widths = [0.5 + g[u][v]["bandwidth_GBps"] / 150 for u, v in edges]
        nx.draw_networkx_edges(g, pos, edgelist=edges, edge_color=color, width=widths, ax=ax,
                               alpha=0.7, label=link_type)
    for kind, color in _COLOR.items():
        members = [v for v, d in g.nodes(data=True) if d["kind"] == kind]
        if members:
            nx.draw_networkx_nodes(g, pos, nodelist=members, node_color=color, node_size=160,
                                   ax=ax, label=kind)
    if g.number_of_nodes() <= 80:
        labels = {v: v.split("/")[-1] for v in g.nodes}
        nx.draw_networkx_labels(g, pos, labels, font_size=6, font_color="#444444", ax=ax,
                                verticalalignment="bottom")
    ax.set_title(f"{topo.name}: {nodes} node(s) — edge width ~ GB/s per direction")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    ax.axis("off")
    fmt = out.suffix.lower().lstrip(".")
    try:
        with plt.rc_context({"svg.hashsalt": "zsim"}):  # stable SVG element ids
            atomic_write_with(out, lambda f: fig.savefig(f, format=fmt, dpi=130, bbox_inches="tight",
                                                         metadata=REPRODUCIBLE_METADATA[fmt]))
    finally:
        plt.close(fig)
    return out
