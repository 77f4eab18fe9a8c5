"""`zsim diagnose`: one measured run beside zsim's prediction of the same configuration.

A run folder written by ``validation/train.py`` is predicted with its own model, DeepSpeed
config, world size, sequence length, micro-batch and grad-accum. When the folder holds a
torch.profiler trace (``trace.json.gz``, one optimizer step) the measurement is split per
phase (forward, backward, step; per micro-step) and per stream (compute, communication,
copies, host busy/waiting, CPU optimizer) and put beside the simulated timeline split the
same way, largest gaps first, with the ops behind each gap. Without a trace only the phase
times of ``summary.json`` / ``raw_metrics.json`` are compared.

Modules: :mod:`.trace` reads a Kineto trace into typed records, :mod:`.measured` and
:mod:`.predicted` aggregate each side, :mod:`.compare` lines them up, :mod:`.perfetto` writes
the combined trace and :mod:`.text` the table.
"""

from .compare import Diagnosis, GapRow, diagnose

__all__ = ["Diagnosis", "GapRow", "diagnose"]
