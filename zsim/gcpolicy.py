"""How often the cyclic garbage collector runs while a search builds and drops many ops.

A search (``zsim plan``, ``zsim plan --search-3d``) builds hundreds of thousands of ops per
schedule and simulation and drops them again, while it keeps schedules, predictions and size
facts cached. Reference counting frees those ops (they form no cycles); the cyclic collector
only walks them, and with CPython's default young-generation threshold (700 allocations) it
walks and promotes every op of a schedule while the schedule is alive, then collects the old
generation over and over. Measured on ``zsim plan --model llama-2-70b --topo dgx-h100
--nodes 16``: 9.9 s of a 35.8 s run in old-generation collections; in the joint 3D search
of the same model about 1 s of 5.5 s CPU (bench/README.md).
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator

#: Allocations between young-generation collections during a search (CPython's default: 700).
#: 1,000,000: a simulated ZeRO-3 step holds 40,000-80,000 ops and spans for a moment, which a
#: threshold of 20,000 or 100,000 walked and promoted while they were alive (0.7 s of
#: collection in the 3D search on 2026-12-02 at 20,000; on 2026-12-03, 45 young and 4 middle
#: collections, 2.0 s of ``zsim plan --model llama-2-70b --topo dgx-h100 --nodes 16``, at
#: 100,000). A build leaves no reference cycle (``tests/test_no_cycles.py``), so what the
#: young generation gains between collections is what the search keeps, not garbage: one
#: collection in that plan, the same peak memory.
SEARCH_GC_THRESHOLD = 1_000_000


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Run the block with the young generation collected every :data:`SEARCH_GC_THRESHOLD`
    allocations instead of 700; what the block kept moves to the oldest generation
    (:func:`_promote_kept`) and the old thresholds return. The collector still runs, so a
    cycle made meanwhile is still freed."""
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], SEARCH_GC_THRESHOLD), *old[1:])
    try:
        yield
    finally:
        _promote_kept()   # first: the next allocation under the old threshold would walk it
        gc.set_threshold(*old)


def _promote_kept() -> None:
    """Move every tracked object to the oldest generation without examining it, as
    collections would promote what survives them: else the first allocation after the young
    threshold is restored walks all the search kept (its caches, schedules and result: 1.1
    million objects, 0.4 s on the plan above). A cycle among them is still found by the next
    full collection. ``gc.freeze`` then ``gc.unfreeze`` is that move (two list splices); it
    is skipped when the caller froze objects of its own, which unfreeze would release."""
    if gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()
