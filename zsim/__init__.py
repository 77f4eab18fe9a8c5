"""zsim: a digital twin of DeepSpeed ZeRO training.

The public API mirrors the command line: :func:`predict`, :func:`schedule`, :func:`plan`,
:func:`capacity`. Each returns typed results; the CLI only parses and prints.
"""

__version__ = "0.1.0"

__all__ = ["predict", "schedule", "plan", "capacity", "__version__"]


def __getattr__(name):
    # Lazy imports keep `import zsim` cheap and free of import cycles.
    if name == "predict":
        from .predict import predict
        return predict
    if name == "schedule":
        from .schedule import steady_state_collectives
        return steady_state_collectives
    if name == "plan":
        from .decide.api import plan
        return plan
    if name == "capacity":
        from .decide.api import capacity
        return capacity
    raise AttributeError(name)
