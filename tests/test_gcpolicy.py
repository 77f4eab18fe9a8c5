"""zsim.gcpolicy.fewer_collections: the thresholds return, what the block kept leaves the
young generation, and a caller's frozen objects stay frozen."""

import gc

from zsim.gcpolicy import SEARCH_GC_THRESHOLD, fewer_collections


def test_thresholds_return_and_kept_objects_are_promoted():
    before = gc.get_threshold()
    with fewer_collections():
        assert gc.get_threshold()[0] == max(before[0], SEARCH_GC_THRESHOLD)
        kept = [[i] for i in range(5_000)]
    assert gc.get_threshold() == before
    young = {id(o) for o in gc.get_objects(generation=0)}
    assert not any(id(o) in young for o in kept)
    assert all(gc.is_tracked(o) for o in kept)   # still collectable


def test_a_callers_frozen_objects_stay_frozen():
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with fewer_collections():
            [[i] for i in range(1_000)]
        assert gc.get_freeze_count() >= frozen
    finally:
        gc.unfreeze()
