"""The one rule of the CPU truth tests: skip without their packages, unless CI requires them."""

from __future__ import annotations

import importlib
import os

import pytest


def require_truth_packages(what: str, *modules: str) -> None:
    """Import ``modules``; without them skip, or fail when ``ZSIM_REQUIRE_TRUTH=1`` (CI)."""
    try:
        for name in modules:
            importlib.import_module(name)
    except Exception as exc:  # ImportError, or a broken install raising anything else
        message = f"{what} needs {', '.join(modules)}: {exc!r}"
        if os.environ.get("ZSIM_REQUIRE_TRUTH") == "1":
            pytest.fail(message)
        pytest.skip(message)
