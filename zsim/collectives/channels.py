"""NCCL's ring channels on a GPU-to-GPU link type, and the share of them calls reach.

NCCL prices a ring's bus bandwidth as channels × bandwidth per channel, both from its
topology search (src/graph/tuning.cc:324, ``busBw = nChannels * bw``). The search
(src/graph/search.cc:1170-1264) starts from the fastest per-channel speed of its list that
fits the GPU's link bandwidth, packs as many channels of that speed as the bandwidth holds,
and tries slower speeds while they stay above about half of the best one
(search.cc:1262), keeping the largest channels × speed; it then doubles the channels at half
the speed (search.cc:1036-1048), which leaves the product unchanged. The GPU's link
bandwidth is NCCL's own per-link figure (src/graph/topo.h:21-22: 20 GB/s per NVLink3 link,
20.6 per NVLink4 link) times the link count, not the datasheet's.

That product is the same for 2 and for 8 GPUs on an NVSwitch: NCCL's model has no group
size term there. Measured calls reach a fraction of it that does depend on the op and the
group size (2 H200: ~0.71 for all_gather/reduce_scatter, ~0.87 for all_reduce; 8 GPUs
~0.97-1.03): the profile's ``achieved_fraction`` table, by ranks in the group,
interpolated in log2(ranks) and held flat outside its points.
"""

from __future__ import annotations

import math

from ..hardware import RingChannels

#: NCCL's search keeps lowering the per-channel speed while the next one is above this
#: share of the best found (src/graph/search.cc:1262).
SLOWER_SPEED_SHARE = 0.49
#: NCCL duplicates the channels when one carries at least this many GB/s
#: (src/graph/search.cc:1039).
DUP_MIN_CHANNEL_GBps = 25.0


def link_count(model: RingChannels, gpu_GBps: float) -> int:
    """GPU-to-GPU links per GPU: the topology's per-GPU bandwidth over one link's."""
    return max(1, round(gpu_GBps / model.datasheet_link_GBps))


def ring_search(model: RingChannels, gpu_GBps: float) -> tuple[int, float]:
    """(channels, GB/s per channel) of NCCL's ring search for one GPU's links."""
    total_GBps = link_count(model, gpu_GBps) * model.link_GBps
    speeds = [s for s in model.speeds_GBps if s <= total_GBps] or [model.speeds_GBps[-1]]
    best_n, best_s = 0, 0.0
    for speed in speeds:
        if best_n and speed / best_s <= SLOWER_SPEED_SHARE:
            break
        n = min(int(total_GBps // speed), model.max_channels)
        if n * speed > best_n * best_s + 1e-9:
            best_n, best_s = n, speed
    if best_s >= DUP_MIN_CHANNEL_GBps and 2 * best_n <= model.max_channels:
        best_n, best_s = 2 * best_n, best_s / 2
    return best_n, best_s


def ring_busbw_GBps(model: RingChannels, gpu_GBps: float) -> float:
    """NCCL's modelled ring bus bandwidth: channels × bandwidth per channel."""
    n, speed = ring_search(model, gpu_GBps)
    return n * speed


def achieved_fraction(model: RingChannels, op: str, ranks: int) -> float:
    """Share of NCCL's modelled busbw a call of ``op`` on ``ranks`` ranks reaches."""
    table = dict(model.achieved_fraction)
    points = table.get(op, table["default"])
    x = math.log2(max(ranks, 1))
    xs = [math.log2(n) for n, _ in points]
    if x <= xs[0]:
        return points[0][1]
    if x >= xs[-1]:
        return points[-1][1]
    for (x0, (_, y0)), (x1, (_, y1)) in zip(zip(xs, points), zip(xs[1:], points[1:])):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


def intra_efficiency(model: RingChannels, gpu_GBps: float, op: str, ranks: int) -> float:
    """Achieved fraction of the datasheet GPU-to-GPU bandwidth for ``op`` on ``ranks``."""
    return ring_busbw_GBps(model, gpu_GBps) / gpu_GBps * achieved_fraction(model, op, ranks)
