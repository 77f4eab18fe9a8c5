"""Golden output of the main job: `zsim predict --stage 3 --topo dgx-a100 --json`.

The golden file pins every field; a change in the model that moves any figure shows up
here and must be reviewed. Regenerate on purpose with ZSIM_UPDATE_GOLDEN=1.
"""

import json
import math
import os
from pathlib import Path

from zsim.cli import main

GOLDEN = Path(__file__).parent / "golden" / "predict_stage3_dgx-a100.json"


def _close(a, b, path="$"):
    if isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), f"{path}: {a} != {b}"
    elif isinstance(a, dict):
        assert sorted(a) == sorted(b), f"{path}: keys differ: {sorted(set(a) ^ set(b))}"
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), f"{path}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def test_golden_predict_stage3_dgx_a100(capsys, tmp_path):
    assert main(["predict", "--stage", "3", "--topo", "dgx-a100", "--json",
                 "--output", str(tmp_path / "out")]) == 0
    got = json.loads(capsys.readouterr().out)
    if os.environ.get("ZSIM_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    _close(got, want)
    # The contract's keys (DESIGN.md) are all present.
    for key in ("step_time_s", "tokens_per_s", "tflops_per_gpu", "mfu", "peak_memory_bytes",
                "memory_breakdown", "fits", "exposed_comm_s", "collectives"):
        assert key in got
    # The output folder has the four files a real run writes.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "deepspeed_config_auto.json", "summary.json", "training_curves.png", "training_metrics.csv"]
