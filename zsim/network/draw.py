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


#: Row names drawn at the left of the picture.
_ROW_NAMES = {"core": "core switches", "spine": "spine switches", "leaf": "leaf switches", "nic": "NICs",
              "nvswitch": "NVSwitch chips", "gpu": "GPUs", "pcie_switch": "PCIe switches", "cpu": "CPU sockets"}
#: Label colour per vertex kind, readable on its marker.
_TEXT = {"gpu": "white", "core": "white", "spine": "white", "cpu": "white", "leaf": "white"}
#: Most vertices of one row in one slot that still get a label each (beyond: only a count).
MAX_LABELLED_PER_ROW = 16
_SLOT = 10.0       # width of one server's slot, in drawing units
_GAP = 1.15        # slot pitch / slot width


def expand_nvswitches(g: nx.Graph) -> nx.Graph:
    """A copy of ``g`` in which each node's NVSwitch plane (one vertex of ``count`` chips,
    :mod:`zsim.network.graph`) is ``count`` vertices, each GPU linked to every chip with
    an equal share of its NVLink bandwidth (NVIDIA's DGX A100/H100 guides: every GPU
    connects to every NVSwitch chip of the baseboard). For drawing only: routing and
    pricing use the plane."""
    h = g.copy()
    for v, d in g.nodes(data=True):
        count = int(d.get("count", 1) or 1) if d["kind"] == "nvswitch" else 1
        if count <= 1:
            continue
        nbrs = [(u, dict(g[v][u])) for u in g[v]]
        h.remove_node(v)
        for k in range(count):
            w = f"{v}{k}"
            h.add_node(w, **{**d, "index": k, "count": 1})
            for u, e in nbrs:
                h.add_edge(u, w, **{**e, "bandwidth_GBps": e["bandwidth_GBps"] / count})
    return h


def _rows(g) -> dict[tuple, list]:
    """Vertices grouped by (kind, server; -1 for the fabric), each group in index order."""
    by_kind: dict[tuple, list] = {}
    for v, d in g.nodes(data=True):
        by_kind.setdefault((d["kind"], d.get("node", -1)), []).append(v)
    for members in by_kind.values():
        members.sort(key=lambda v: (g.nodes[v].get("index", 0), v))
    return by_kind


def _positions(g) -> dict:
    nodes = sorted({d.get("node", 0) for _, d in g.nodes(data=True) if "node" in d}) or [0]
    pos = {}
    for (kind, j), members in _rows(g).items():
        if j >= 0:  # inside server j: spread within its slot
            left, span = j * _SLOT * _GAP, _SLOT
        else:
            left, span = 0.0, len(nodes) * _SLOT * _GAP - (_GAP - 1) * _SLOT
        for i, v in enumerate(members):
            x = left + span * (i + 0.5) / len(members)
            pos[v] = (x, _ROW[kind])
    return pos


def _label_rows(ax, g, pos, nodes: int) -> None:
    """A name for each row at the left; each vertex's index on its marker where the row is
    sparse enough to read; the count where it is not; each server's number above its slot."""
    for (kind, j), members in _rows(g).items():
        if len(members) <= MAX_LABELLED_PER_ROW:
            for v in members:
                x, y = pos[v]
                ax.text(x, y, str(g.nodes[v].get("index", "")), ha="center", va="center", fontsize=7,
                        color=_TEXT.get(kind, "black"), fontweight="bold")
        elif j <= 0:
            x = min(pos[v][0] for v in members)
            ax.text(x, _ROW[kind] + 0.3, f"{len(members)} {_ROW_NAMES[kind]} (too many to number)",
                    fontsize=8, ha="left", va="bottom")
    kinds = {k for k, _ in _rows(g)}
    for kind in kinds:
        ax.text(-0.4, _ROW[kind], _ROW_NAMES[kind], ha="right", va="center", fontsize=9)
    if nodes > 1:
        for j in range(nodes):
            ax.text(j * _SLOT * _GAP + _SLOT / 2, _ROW["nic"] + 0.55, f"server {j}", ha="center",
                    fontsize=9, fontweight="bold")


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
    g = expand_nvswitches(topo.graph(nodes))
    pos = _positions(g)
    fig, ax = plt.subplots(figsize=(max(11, 6 * nodes), 7))
    for link_type, color in _EDGE.items():
        edges = [(u, v) for u, v, d in g.edges(data=True) if d["link_type"] == link_type]
        widths = [0.5 + g[u][v]["bandwidth_GBps"] / 150 for u, v in edges]
        nx.draw_networkx_edges(g, pos, edgelist=edges, edge_color=color, width=widths, ax=ax,
                               alpha=0.7, label=link_type)
    for kind, color in _COLOR.items():
        members = [v for v, d in g.nodes(data=True) if d["kind"] == kind]
        if members:
            crowded = max(len(m) for (k, _), m in _rows(g).items() if k == kind) > MAX_LABELLED_PER_ROW
            nx.draw_networkx_nodes(g, pos, nodelist=members, node_color=color,
                                   node_size=80 if crowded else 260, ax=ax, label=_ROW_NAMES[kind])
    _label_rows(ax, g, pos, nodes)
    nvswitches = sum(1 for _, d in g.nodes(data=True) if d["kind"] == "nvswitch")
    nv_note = f", {nvswitches // nodes} NVSwitch chips per server" if nvswitches else ""
    servers = f"{nodes} server{'s' if nodes != 1 else ''}"
    ax.set_title(f"{topo.name}: {servers}{nv_note} (edge width ~ GB/s per direction; "
                 "numbers: index within the row)", fontsize=11)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, markerscale=0.6)
    ax.axis("off")
    fmt = out.suffix.lower().lstrip(".")
    try:
        with plt.rc_context({"svg.hashsalt": "zsim"}):  # stable SVG element ids
            atomic_write_with(out, lambda f: fig.savefig(f, format=fmt, dpi=130, bbox_inches="tight",
                                                         metadata=REPRODUCIBLE_METADATA[fmt]))
    finally:
        plt.close(fig)
    return out
