"""The Python API: zsim.predict / schedule / plan / capacity stay callable on every use."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import zsim
from zsim.cli import main
from zsim.decide.api import Constraints

TOPO = "dgx-a100"
MODEL = "tinyllama-1.1b"
DS_CONFIG = {"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1}
PINNED = Constraints(stage=2, micro_batch=4, offload_optimizer="none", offload_param="none",
                     activation_checkpointing=False)

CALLS = {
    "predict": lambda f: f(MODEL, TOPO, gpus=8, stage=3, seq=512),
    "schedule": lambda f: f(MODEL, DS_CONFIG, 8),
    "plan": lambda f: f(MODEL, TOPO, gpus=8, global_batch=32, seq=512, constraints=PINNED,
                        top_n=1, refine=0),
    "capacity": lambda f: f(TOPO, gpus=8, checkpointing=(False,)),
}
RESULT_TYPES = {"predict": "Prediction", "schedule": "ScheduleResult", "plan": "PlanResult",
                "capacity": "CapacityResult"}
#: The submodule each name could be shadowed by (importing it sets that attribute on zsim).
SUBMODULES = {"predict": "zsim.predict", "schedule": "zsim.schedule", "plan": "zsim.decide.api",
              "capacity": "zsim.decide.capacity"}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_api_function_callable_twice(name):
    first = CALLS[name](getattr(zsim, name))
    importlib.import_module(SUBMODULES[name])  # what a first call (or any user) may import
    second = CALLS[name](getattr(zsim, name))
    assert callable(getattr(zsim, name))
    assert type(first).__name__ == type(second).__name__ == RESULT_TYPES[name]


def test_from_import_gives_the_functions():
    import zsim.predict  # noqa: F401  the submodule import that used to shadow the function
    import zsim.schedule  # noqa: F401
    from zsim import capacity, plan, predict, schedule

    for name, f in {"predict": predict, "schedule": schedule, "plan": plan,
                    "capacity": capacity}.items():
        assert callable(f) and f is getattr(zsim, name), name
        assert f.__doc__, name
    assert type(predict(MODEL, TOPO, gpus=8, stage=3, seq=512)).__name__ == "Prediction"
    assert type(schedule(MODEL, DS_CONFIG, 8)).__name__ == "ScheduleResult"


def test_import_zsim_does_not_import_torch():
    code = "import sys, zsim; zsim.predict; sys.exit(1 if 'torch' in sys.modules else 0)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr or "import zsim imported torch"


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"zsim {zsim.__version__}"
