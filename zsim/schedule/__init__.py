"""The schedule layer: a model + DeepSpeed config -> the ops one rank issues per step.

Pure data, no time (docs/design.md). Reproduces what DeepSpeed 0.19.8 really issues (each
rule cites its DeepSpeed source line), checked against its comms logger on CPU
(validation/cpu_truth, tests/test_schedule_truth.py).

This package is also the API function ``zsim.schedule``: calling it,
``zsim.schedule(model, ds_config, world_size, **overrides)``, runs :func:`schedule`
(:mod:`zsim.schedule.result`) and returns a frozen :class:`ScheduleResult`, whose
``collectives`` are the comms-logger counts :func:`steady_state_collectives` returns as a
plain dict. Being the package itself, rather than a function bound over it, keeps its
submodules importable as ``import zsim.schedule.stage3``.
"""

import sys
import types

from .api import Schedule, ScheduleFacts, build_schedule, steady_state_collectives
from .result import ScheduleResult, schedule as _schedule

__all__ = ["Schedule", "ScheduleFacts", "ScheduleResult", "build_schedule", "steady_state_collectives"]

#: ``inspect.signature(zsim.schedule)`` follows this to the function's signature.
__wrapped__ = _schedule


class _CallableModule(types.ModuleType):
    """This package's module type: calling the package calls :func:`zsim.schedule.result.schedule`."""

    def __call__(self, *args, **kwargs):
        return _schedule(*args, **kwargs)


# The module-type swap is Python's documented way to customise a module
# (docs: "Customizing module attribute access", sys.modules[__name__].__class__).
sys.modules[__name__].__class__ = _CallableModule
