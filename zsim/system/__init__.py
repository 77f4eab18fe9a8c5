"""System layer: streams, dependencies and overlap, as a SimPy discrete-event simulation.

It runs the op list of :mod:`zsim.ops` for one representative rank. It never knows which
ZeRO stage produced the ops or which network model prices a collective: a cost function
maps each op to a duration and a category (see :mod:`zsim.system.costs`).
"""

from .engine import OpCost, Span, Timeline, simulate
from .host import split_host

__all__ = ["OpCost", "Span", "Timeline", "simulate", "split_host"]
