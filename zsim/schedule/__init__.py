"""The schedule layer: a model + DeepSpeed config -> the ops one rank issues per step.

Pure data, no time (DESIGN.md). Reproduces what DeepSpeed 0.19.8 really issues
(../shared/notes/deepspeed-zero.md), checked against its comms logger on CPU
(validation/cpu_truth, tests/test_schedule_truth.py).
"""

from .api import Schedule, ScheduleFacts, build_schedule, steady_state_collectives

__all__ = ["Schedule", "ScheduleFacts", "build_schedule", "steady_state_collectives"]
