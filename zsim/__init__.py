"""zsim: a digital twin of DeepSpeed ZeRO training.

The public API mirrors the command line: :func:`predict`, :func:`schedule`, :func:`plan`,
:func:`capacity`. Each returns typed results; the CLI only parses and prints. Each is a thin
wrapper over one :class:`RunSettings` (:mod:`zsim.job`), which :func:`resolve` turns into the
frozen :class:`~zsim.job.Job` every command predicts from.
"""

#: The package version: the one place it is written (pyproject.toml reads it from here).
__version__ = "0.1.0"

__all__ = ["predict", "schedule", "plan", "capacity", "RunSettings", "resolve", "__version__"]

# The API functions are bound eagerly, after the submodules they live in are imported:
# importing a submodule sets an attribute of the same name on this package (zsim.predict
# would become the module), so these assignments must come last and win. None of the
# submodules imports from this package at import time except __version__ (defined above),
# and none imports torch.
from .job import RunSettings, resolve  # noqa: E402
from .predict import predict  # noqa: E402
from . import schedule  # noqa: E402  (a callable package: zsim.schedule(...) runs steady_state_collectives)
from .decide.api import capacity, plan  # noqa: E402
