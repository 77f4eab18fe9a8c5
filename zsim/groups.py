"""Process groups: which ranks a collective runs on, and so which links it crosses.

A :class:`Group` names a parallelism dimension (``dim``: data parallelism today; tensor,
pipeline and expert parallelism are named but not yet emitted) and its placement on the
topology: how many of its ranks sit in each node, on how many nodes, and whether every copy
of the group in a node runs at the same time (then the copies share the node's NICs). The
schedule layer puts one on every collective op; the collective layer turns it into a
:class:`zsim.collectives.base.GroupShape` on a cluster; the system layer passes it through.

``label`` is the name outputs and ``zsim collective --group`` use ("world", "intra_node",
"inter_node"): the strings groups were before they became descriptors, so nothing printed
changes. A new dimension is a new :class:`Group` value (e.g. tensor parallelism of degree 4
inside 8-GPU nodes: ``Group("tensor", Dim.TENSOR, ranks_per_node=4, nodes=1,
concurrent=True)``); the collective layer prices any placement without new code.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import ZsimInputError

#: ``ranks_per_node`` / ``nodes`` value meaning "all of them": every GPU of a node, every node.
ALL = 0


class Dim(enum.StrEnum):
    """The parallelism dimension a group belongs to."""

    DATA = "data"
    TENSOR = "tensor"
    PIPELINE = "pipeline"
    SEQUENCE = "sequence"   # DeepSpeed-Ulysses' sequence-parallel group (zsim.parallel.layout)
    EXPERT = "expert"


@dataclass(frozen=True)
class Group:
    """One process group as a placement on the topology (see the module docstring).

    ``ranks_per_node``: ranks of the group in each node it spans (:data:`ALL`: every GPU of
    the node); ``nodes``: nodes it spans (:data:`ALL`: every node); ``concurrent``: every
    copy of the group inside a node runs at once (the node's other GPUs run their own), so
    each copy gets only its share of the node's NICs.
    """

    label: str
    dim: Dim = Dim.DATA
    ranks_per_node: int = ALL
    nodes: int = ALL
    concurrent: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.dim, Dim):
            if self.dim not in tuple(Dim):
                raise ZsimInputError(f"group {self.label!r}: unknown dimension {self.dim!r} "
                                     f"(choose from {', '.join(Dim)})")
            object.__setattr__(self, "dim", Dim(self.dim))
        for name in ("ranks_per_node", "nodes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ZsimInputError(f"group {self.label!r}: {name} must be an integer >= 0, "
                                     f"got {value!r}")
        object.__setattr__(self, "_hash", hash((self.label, self.dim, self.ranks_per_node,
                                                self.nodes, self.concurrent)))

    def __str__(self) -> str:
        return self.label

    def __hash__(self) -> int:
        # Groups key the op-pricing caches on every call: hash once (equal groups hash equal).
        return self._hash

    def placement(self, gpus_per_node: int, num_nodes: int) -> tuple[int, int, bool]:
        """(ranks per node, nodes, rails busy) of the group on a cluster of that size;
        rails are busy when other copies of the group in the node run at the same time."""
        per = self.ranks_per_node or gpus_per_node
        copies_per_node = gpus_per_node // per
        return per, self.nodes or num_nodes, self.concurrent and copies_per_node > 1

    def size(self, world_size: int, gpus_per_node: int) -> int:
        """Ranks in the group in a job of ``world_size`` ranks with ``gpus_per_node`` per node."""
        if self.ranks_per_node == ALL and self.nodes == ALL:
            return world_size
        per = self.ranks_per_node or gpus_per_node
        return per * (self.nodes or max(1, world_size // max(1, gpus_per_node)))


#: The data-parallel group: every rank (ZeRO partitions over it).
WORLD = Group("world")
#: The data-parallel ranks of one node: ZeRO++ hpZ's secondary partition group (assumed to be
#: one node, as DeepSpeed recommends) and qgZ's intra-node all_to_all.
INTRA_NODE = Group("intra_node", nodes=1, concurrent=True)
#: One data-parallel rank per node, the same local rank on every node (every local rank
#: runs its own copy at once): qgZ's inter-node all_to_all, hierarchical schemes.
INTER_NODE = Group("inter_node", ranks_per_node=1, concurrent=True)

#: Groups by the label outputs and the command line use.
NAMED_GROUPS: dict[str, Group] = {g.label: g for g in (WORLD, INTRA_NODE, INTER_NODE)}


def as_group(group: Group | str) -> Group:
    """``group`` itself, or the named group with that label; unknown names raise
    :class:`ZsimInputError`."""
    if isinstance(group, Group):
        return group
    found = NAMED_GROUPS.get(group) if isinstance(group, str) else None
    if found is None:
        raise ZsimInputError(f"unknown group {group!r} (choose from {', '.join(NAMED_GROUPS)})")
    return found


__all__ = ["ALL", "Dim", "Group", "WORLD", "INTRA_NODE", "INTER_NODE", "NAMED_GROUPS", "as_group"]
