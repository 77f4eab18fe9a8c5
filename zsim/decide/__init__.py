"""Decisions: search, sweep and capacity logic behind `zsim plan`, `sweep`, `capacity`.

The public entry points live in :mod:`zsim.decide.api` (exported as ``zsim.plan`` and ``zsim.capacity``) (``plan``, ``capacity``); this package holds
the pieces: the search space (:mod:`.space`), the cached evaluator (:mod:`.evaluate`), the
search itself (:mod:`.search`), the user's DeepSpeed config (:mod:`.autoconfig`), capacity
(:mod:`.capacity`), sweeps (:mod:`.sweep`) and where their predictions run (:mod:`.fanout`:
this process, a process pool, a Dask cluster), text output (:mod:`.text`) and a progress bar.
"""
