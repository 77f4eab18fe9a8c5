"""Where a prediction's prices come from, and how wrong that profile was measured to be.

A hardware profile YAML may carry two top-level sections the loader ignores:
``calibration`` (written by `zsim calibrate`: ``base_profile``, ``fit_runs``, ...) and
``measured_error`` (the profile's error on runs it was not fitted on: ``step_time_mape_pct``,
``step_time_max_pct``, ``peak_memory_mape_pct``, ``peak_memory_max_pct``, ``evaluated_on``).
:func:`profile_provenance` reads them so every output can say which profile it used,
whether it is calibrated and from how many runs, and its measured error (or "not measured").
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .errors import ZsimInputError
from .hardware import PROFILE_DIR, HardwareProfile
from .yamlio import load_yaml_file

#: Memory headroom a plan keeps when the profile has no measured memory error (percent).
DEFAULT_MEMORY_HEADROOM_PCT = 5.0

#: Step-time error band that makes two configurations a tie when none was measured (percent).
DEFAULT_STEP_TIME_ERROR_PCT = 10.0

_ERROR_KEYS = ("step_time_mape_pct", "step_time_max_pct", "peak_memory_mape_pct", "peak_memory_max_pct")


@dataclass(frozen=True)
class Provenance:
    """Which hardware profile a prediction used and how far it can be trusted."""

    profile: str
    calibrated: bool
    fit_runs: int                       # runs the calibration fitted on (0: datasheet or unknown)
    base_profile: str                   # the profile the calibration started from ("" if none)
    step_time_mape_pct: float | None    # None: not measured
    step_time_max_pct: float | None
    peak_memory_mape_pct: float | None
    peak_memory_max_pct: float | None
    evaluated_on: str = ""
    #: When the calibration's measurements were taken: the UTC date of its microbenchmarks
    #: (calibration.microbench_meta.date_utc; "" when not recorded or not calibrated).
    measured_on: str = ""

    @property
    def memory_headroom_pct(self) -> float:
        """Default memory margin of a plan: the measured peak-memory MAPE, else 5 %."""
        m = self.peak_memory_mape_pct
        return DEFAULT_MEMORY_HEADROOM_PCT if m is None else m

    @property
    def step_time_error_pct(self) -> float:
        """Band within which two predicted times are a tie: the measured MAPE, else 10 %."""
        m = self.step_time_mape_pct
        return DEFAULT_STEP_TIME_ERROR_PCT if m is None else m

    def kind(self) -> str:
        """``calibrated on 31 runs (from h200-sxm-datasheet)`` or ``not calibrated (...)``.

        An uncalibrated profile holds datasheet figures, published measurements and labelled
        transfers from another profile (each sourced in its YAML), never a fit on this GPU."""
        if not self.calibrated:
            return "not calibrated (datasheet and published figures, sources in the profile YAML)"
        runs = f" on {self.fit_runs} runs" if self.fit_runs else ""
        origin = [f"from {self.base_profile}"] if self.base_profile else []
        if self.measured_on:
            origin.append(f"microbenchmarks of {self.measured_on}")
        return f"calibrated{runs}" + (f" ({'; '.join(origin)})" if origin else "")

    def error_text(self) -> str:
        """``step time 5.4 % MAPE (max 12.6 %), peak memory 6.1 % (max 9.3 %)`` or not measured."""
        def one(what: str, mape: float | None, high: float | None) -> str:
            if mape is None:
                return f"{what} not measured"
            return f"{what} {mape:.1f} % MAPE" + (f" (max {high:.1f} %)" if high is not None else "")
        if self.step_time_mape_pct is None and self.peak_memory_mape_pct is None:
            return "not measured"
        return (one("step time", self.step_time_mape_pct, self.step_time_max_pct) + ", "
                + one("peak memory", self.peak_memory_mape_pct, self.peak_memory_max_pct))

    def describe(self) -> str:
        """One line for text outputs."""
        return f"hardware profile {self.profile}: {self.kind()}; measured error: {self.error_text()}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (errors None when not measured)."""
        return {"profile": self.profile, "calibrated": self.calibrated, "fit_runs": self.fit_runs,
                "base_profile": self.base_profile, "step_time_mape_pct": self.step_time_mape_pct,
                "step_time_max_pct": self.step_time_max_pct,
                "peak_memory_mape_pct": self.peak_memory_mape_pct,
                "peak_memory_max_pct": self.peak_memory_max_pct, "evaluated_on": self.evaluated_on,
                "measured_on": self.measured_on}


def _profile_path(name_or_path: str | Path) -> Path | None:
    """The YAML behind a profile name or path (None when there is none, e.g. an in-memory profile)."""
    text = str(name_or_path)
    path = Path(text)
    try:
        if text.endswith((".yaml", ".yml")) or path.is_file():
            return path
        shipped = PROFILE_DIR / f"{text}.yaml"
        return shipped if shipped.is_file() else None
    except (OSError, ValueError):
        return None


def _pct(section: Mapping[str, Any], key: str, where: str) -> float | None:
    value = section.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ZsimInputError(f"{where}: measured_error.{key} must be a percentage >= 0, got {value!r}")
    return float(value)


def _mapping(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    section = data.get(key) or {}
    if not isinstance(section, Mapping):
        raise ZsimInputError(f"{where}: {key} must be a mapping")
    return section


def provenance_from_dict(data: Mapping[str, Any], where: str = "hardware profile") -> Provenance:
    """Provenance of a parsed profile YAML."""
    if not isinstance(data, Mapping):
        raise ZsimInputError(f"{where}: expected a mapping at the top level")
    err = _mapping(data, "measured_error", where)
    cal = _mapping(data, "calibration", where)
    runs = cal.get("fit_runs") or ()
    meta = cal.get("microbench_meta")
    date = str(meta.get("date_utc") or "")[:10] if isinstance(meta, Mapping) else ""
    return Provenance(
        profile=str(data.get("name") or where), calibrated=data.get("calibrated") is True,
        fit_runs=len(runs) if isinstance(runs, (list, tuple, Mapping)) else 0,
        base_profile=str(cal.get("base_profile") or ""),
        **{k: _pct(err, k, where) for k in _ERROR_KEYS},
        evaluated_on=" ".join(str(err.get("evaluated_on") or "").split()),
        measured_on=date if data.get("calibrated") is True else "")


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except (OSError, ValueError):
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _read(path: str, mtime_ns: int, size: int) -> Provenance:
    """Parse once per file version (a plan predicts hundreds of times with one profile)."""
    del mtime_ns, size    # cache keys only
    return provenance_from_dict(load_yaml_file(Path(path), "hardware profile"), where=Path(path).name)


def profile_provenance(profile: str | Path | HardwareProfile) -> Provenance:
    """Provenance of a profile given by name, YAML path, or loaded :class:`HardwareProfile`
    (a loaded one is looked up by name among the shipped profiles; else "not measured")."""
    name = profile.name if isinstance(profile, HardwareProfile) else profile
    path = _profile_path(name)
    if path is not None:
        found = _read(str(path), *_stamp(path))
        if not isinstance(profile, HardwareProfile) or found.profile == profile.name:
            return found
    calibrated = isinstance(profile, HardwareProfile) and profile.calibrated
    return Provenance(str(name), calibrated, 0, "", None, None, None, None)


__all__ = ["Provenance", "profile_provenance", "provenance_from_dict",
           "DEFAULT_MEMORY_HEADROOM_PCT", "DEFAULT_STEP_TIME_ERROR_PCT"]
