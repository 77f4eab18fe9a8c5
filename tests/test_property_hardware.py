"""Property tests of the hardware-profile loader (zsim.hardware), the other YAML users edit
(--hardware, `zsim calibrate` output).

Every shipped profile with its timings, bandwidths and sizes rescaled must load and survive
a round trip through ``to_dict``; the same profiles with one number broken or one required
key removed must fail with one line naming that key.
"""

from __future__ import annotations

import copy
import math
import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zsim.errors import ZsimInputError
from zsim.hardware import PROFILE_DIR, list_profiles, load_profile, profile_from_dict

SCALE = float(os.environ.get("ZSIM_PROPERTY_SCALE", "1"))
EXAMPLES = {k: max(1, int(v * SCALE)) for k, v in {"valid": 60, "broken": 150}.items()}
SETTINGS = dict(deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
PROFILES = {name: yaml.safe_load((PROFILE_DIR / f"{name}.yaml").read_text()) for name in list_profiles()}
#: Keys whose values are absolute amounts (rescaling them keeps a profile valid).
SCALED = ("_s", "_GBps", "_flops", "_bytes", "per_s")


def _leaves(node, path=()):
    """(path, value) of every number in a parsed profile."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, path + (i,))
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path, node


def _set(doc, path, value):
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


@settings(max_examples=EXAMPLES["valid"], **SETTINGS)
@given(st.sampled_from(sorted(PROFILES)), st.data())
def test_rescaled_profiles_load_and_round_trip(name, data):
    doc = copy.deepcopy(PROFILES[name])
    for path, value in _leaves(doc):
        if isinstance(path[-1], str) and path[-1].endswith(SCALED) and path[-1] != "memory_bytes":
            _set(doc, path, value * data.draw(st.floats(0.25, 4.0), label=".".join(map(str, path))))
    profile = profile_from_dict(doc, where=name)
    again = profile_from_dict(profile.to_dict(), where=name)
    assert again.to_dict() == profile.to_dict()
    assert all(math.isfinite(v) for _, v in _leaves(profile.to_dict()))


BAD = st.sampled_from([-1, -1e-9, "fast", "", True, None, [], {}, float("nan"), float("inf"),
                       float("-inf"), 10**400])


@st.composite
def broken_profiles(draw):
    name = draw(st.sampled_from(sorted(PROFILES)))
    doc = copy.deepcopy(PROFILES[name])
    leaves = [p for p, _ in _leaves(doc) if p[0] not in ("version", "calibration", "measured_error")]  # metadata the loader does not read
    path = draw(st.sampled_from(leaves))
    if draw(st.integers(0, 4)) == 0 and isinstance(path[-1], str) and path[-1] in _required(path):
        node = doc
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
        return doc, path
    if draw(st.integers(0, 9)) == 5:  # the one flag: "false" in quotes must not read as true
        doc["calibrated"] = draw(st.sampled_from(["false", "no", 0, 1, None, []]))
        return doc, ("calibrated",)
    _set(doc, path, draw(BAD))
    return doc, path


def _required(path) -> set[str]:
    """Keys the loader requires (a removed optional key is simply the default)."""
    section = path[0]
    return {"gpu": {"memory_bytes", "peak_bf16_flops", "peak_fp32_flops", "hbm_bandwidth_GBps"},
            "compute": {"attention_efficiency", "memory_bound_efficiency", "kernel_launch_s"},
            "host": {"h2d_bandwidth_GBps", "d2h_bandwidth_GBps", "cpu_adam_params_per_s"},
            "overheads": {"zero3_module_hook_s", "step_fixed_s"}}.get(section, set()) \
        if len(path) == 2 else ({"efficiency"} if section == "links" and len(path) == 3 else set())


@settings(max_examples=EXAMPLES["broken"], **SETTINGS)
@given(broken_profiles())
def test_one_broken_number_is_named(case):
    doc, path = case
    with pytest.raises(ZsimInputError) as info:
        profile_from_dict(doc, where="gen.yaml")
    text = str(info.value)
    assert "\n" not in text and len(text) < 600, text
    key = path[-1] if isinstance(path[-1], str) else path[-2]
    assert str(key) in text, (path, text)


@pytest.mark.parametrize("name", ["", "a" * 5000, "a\x00b", "no-such-gpu", "/no/such/profile.yaml"])
def test_unknown_profiles_fail_cleanly(name):
    with pytest.raises(ZsimInputError) as info:
        load_profile(name)
    assert "\n" not in str(info.value)


def test_fp32_gemm_curve_is_used_for_fp32_only():
    """A profile's fp32 curve prices fp32 GEMMs; bf16 (and profiles without one) use the bf16 curve."""
    from zsim.hardware import load_profile
    hw = load_profile("h200-sxm")
    c = hw.compute
    assert c.gemm_efficiency_fp32
    assert c.gemm_eff(1e10, "fp32") != c.gemm_eff(1e10, "bf16")
    assert c.gemm_eff(1e10) == c.gemm_eff(1e10, "bf16")
    plain = load_profile("h200-sxm-datasheet").compute
    assert plain.gemm_efficiency_fp32 == () and plain.gemm_eff(1e10, "fp32") == plain.gemm_eff(1e10)
