"""Snapshot of zsim's observable behaviour, for refactors that must change nothing.

Runs a fixed matrix of CLI commands in-process (predict over models, stages, offload,
checkpointing, topologies and configs; schedule, collective, topo, plan, sweep, capacity,
report, validate, diagnose, calibrate) and writes each command's stdout and every file it
writes under OUTDIR. Two snapshots of the same behaviour are byte-identical, so a refactor
is checked with::

    python bench/behaviour_snapshot.py /tmp/before      # on the old commit
    python bench/behaviour_snapshot.py /tmp/after       # on the new one
    diff -r /tmp/before /tmp/after                      # must print nothing

PNG figures are compared by their pixels' hash-free stand-in: size only (matplotlib embeds
its version), everything else byte for byte.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from zsim.cli import main as zsim_main

REPO = Path(__file__).resolve().parent.parent
# Relative to the repository root (main() changes there), so that snapshots of two
# checkouts in different folders compare equal.
RESULTS = Path("validation") / "results" / "h200"
EXAMPLE_CONFIG = Path("tests") / "data" / "ds_config_zero2_offload.json"

PREDICT = [
    [],
    ["--stage", "0"], ["--stage", "1"], ["--stage", "2"], ["--stage", "3"],
    ["--stage", "3", "--topo", "dgx-a100"],
    ["--stage", "2", "--offload-optimizer", "cpu"],
    ["--stage", "3", "--offload-optimizer", "cpu", "--offload-param", "cpu"],
    ["--stage", "3", "--offload-param", "cpu"],
    ["--stage", "3", "--offload-optimizer", "nvme"],
    ["--stage", "1", "--grad-accum", "4", "--micro-batch", "2"],
    ["--stage", "3", "--activation-checkpointing", "--seq", "4096"],
    ["--model", "llama-2-70b", "--topo", "dgx-h100", "--nodes", "4", "--stage", "3", "--micro-batch", "2"],
    ["--model", "llama-2-13b", "--topo", "dgx-h100", "--nodes", "2", "--stage", "2"],
    ["--model", "tinyllama-1.1b", "--topo", "hgx-h200", "--gpus", "1", "--stage", "0"],
    ["--model", "tinyllama-1.1b", "--topo", "hgx-h200", "--gpus", "2", "--stage", "3"],
    ["--model", "qwen2.5-7b", "--stage", "3"],
    ["--model", "mistral-7b", "--stage", "2", "--launcher", "torchrun", "--offload-optimizer", "cpu"],
    ["--model", "llama-3-8b", "--stage", "1", "--cpu-threads", "4"],
    ["--model", "llama-3-70b", "--topo", "dgx-h100", "--nodes", "8", "--stage", "3"],
    ["--ds-config", str(EXAMPLE_CONFIG)],
    ["--ds-config", str(EXAMPLE_CONFIG), "--stage", "3"],
]
CONFIGS = {
    "fp16_z1": {"fp16": {"enabled": True}, "zero_optimization": {"stage": 1},
                "train_micro_batch_size_per_gpu": 4},
    "fp32_z2": {"zero_optimization": {"stage": 2, "reduce_bucket_size": 5e7,
                                      "overlap_comm": False}},
    "zpp_z3": {"bf16": {"enabled": True}, "zero_optimization": {
        "stage": 3, "zero_hpz_partition_size": 8, "zero_quantized_weights": True,
        "zero_quantized_gradients": True}},
    "z3_knobs": {"bf16": {"enabled": True}, "zero_optimization": {
        "stage": 3, "stage3_prefetch_bucket_size": 1e7, "stage3_param_persistence_threshold": 1e6,
        "stage3_max_live_parameters": 1e8, "stage3_max_reuse_distance": 0}},
}
OTHER = {
    "schedule_z0": ["schedule", "--model", "tinyllama-1.1b", "--world-size", "4", "--stage", "0", "--ds-config", "{cfg:fp16_z1}", "--json"],
    "schedule_z1": ["schedule", "--model", "tinyllama-1.1b", "--world-size", "4", "--stage", "1", "--ds-config", "{cfg:fp16_z1}", "--json"],
    "schedule_z2": ["schedule", "--model", "llama-2-7b", "--world-size", "8", "--stage", "2", "--grad-accum", "2", "--ds-config", "{cfg:fp32_z2}", "--json"],
    "schedule_z3": ["schedule", "--model", "llama-2-7b", "--world-size", "8", "--stage", "3", "--ds-config", "{cfg:z3_knobs}", "--json"],
    "schedule_text": ["schedule", "--model", "llama-2-7b", "--world-size", "8", "--stage", "3", "--ds-config", "{cfg:zpp_z3}"],
    "collective_ar": ["collective", "--op", "all_reduce", "--bytes", "1GiB", "--topo", "dgx-h100", "--gpus", "8", "--json"],
    "collective_ag": ["collective", "--op", "all_gather", "--bytes", "64MiB", "--topo", "dgx-h100", "--nodes", "4", "--json"],
    "collective_rs": ["collective", "--op", "reduce_scatter", "--bytes", "4MiB", "--topo", "hgx-h200", "--gpus", "2"],
    "topo_list": ["topo", "list"],
    "topo_show": ["topo", "show", "dgx-h100", "--nodes", "2"],
    "plan_7b": ["plan", "--model", "llama-2-7b", "--topo", "dgx-a100", "--json", "--no-output"],
    "plan_cfg": ["plan", "--model", "llama-2-7b", "--topo", "dgx-a100", "--ds-config", str(EXAMPLE_CONFIG), "--output", "{out}"],
    "plan_text": ["plan", "--model", "tinyllama-1.1b", "--topo", "hgx-h200", "--gpus", "2", "--no-output"],
    "sweep": ["sweep", "--model", "llama-2-7b,tinyllama-1.1b", "--stage", "1,3", "--micro-batch", "1,4", "--output", "{out}"],
    "capacity": ["capacity", "--topo", "dgx-a100", "--json"],
    "capacity_text": ["capacity", "--topo", "hgx-h200", "--gpus", "1"],
    "report": ["report", "--model", "tinyllama-1.1b", "--topo", "hgx-h200", "--gpus", "2", "--output", "{out}"],
    "validate": ["validate", str(RESULTS / "2026-11-28"), str(RESULTS / "2026-12-01"), "--json"],
    "validate_text": ["validate", str(RESULTS / "2026-11-28"), str(RESULTS / "2026-12-01")],
    "calibrate": ["calibrate", str(RESULTS / "2026-11-28"), "--base", "h200-sxm-datasheet",
                  "--name", "snap", "--fit-models", "llama-0.13b,llama-3b", "-o", "{out}/profile.yaml"],
}
#: A progress line of plan/sweep/report on a non-terminal stderr (zsim.decide.progress).
PROGRESS = re.compile(r"zsim (plan|sweep|report): \d+/\d+ after ")

DIAGNOSE = ["llama-0.13b-z3-offparam-mb4-ga1-s1024-r1", "llama-3b-z2-mb4-ga1-s1024-ac-r1",
            "tinyllama-1.1b-z2-offopt-mb2-ga8-s1024-guide-r1", "llama-0.13b-z0-mb4-ga1-s1024-r1"]


def run(argv: list[str], out: Path) -> None:
    """Run one zsim command; keep its exit code, stdout, stderr and written files."""
    work = Path(tempfile.mkdtemp(prefix="zsim-snap-"))
    argv = [a.replace("{out}", str(work / "out")) for a in argv]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = zsim_main(argv)
        except SystemExit as exc:   # argparse usage errors exit from inside main
            code = exc.code
    text = stdout.getvalue().replace(str(work), "WORK")
    out.mkdir(parents=True, exist_ok=True)
    (out / "stdout").write_text(f"exit {code}\n{text}")
    # Progress lines come every couple of seconds of wall time: not behaviour, left out.
    errors = [line for line in stderr.getvalue().splitlines(keepends=True) if not PROGRESS.match(line)]
    (out / "stderr").write_text("".join(errors).replace(str(work), "WORK"))
    for f in sorted(p for p in work.rglob("*") if p.is_file()):
        rel = f.relative_to(work).as_posix().replace("/", "__")
        data = f.read_bytes()
        if f.suffix == ".png":
            data = f"png {len(data) > 0}\n".encode()
        else:
            data = data.replace(str(work).encode(), b"WORK")
        (out / rel).write_bytes(data)
    shutil.rmtree(work)


def main(outdir: str) -> int:
    """Write the snapshot under ``outdir`` (replaced if it exists)."""
    root = Path(outdir).resolve()
    os.chdir(REPO)
    shutil.rmtree(root, ignore_errors=True)
    for i, args in enumerate(PREDICT):
        run(["predict", *args, "--json", "--trace", "{out}/trace.json", "--output", "{out}/metrics"],
            root / f"predict_{i:02d}")
        run(["predict", *args, "--no-output"], root / f"predict_{i:02d}_text")
    # A fixed folder (the paths show in outputs), shared by concurrent snapshots: written
    # atomically and never removed.
    config_dir = Path(tempfile.gettempdir()) / "zsim-snap-configs"
    config_dir.mkdir(exist_ok=True)
    for name, cfg in CONFIGS.items():
        path = config_dir / f"{name}.json"
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cfg))
        os.replace(tmp, path)
        run(["predict", "--ds-config", str(path), "--json", "--no-output"], root / f"config_{name}")
        run(["schedule", "--model", "llama-2-7b", "--ds-config", str(path), "--world-size", "8", "--json"],
            root / f"config_{name}_schedule")
    for name, argv in OTHER.items():
        argv = [a.replace("{cfg:", str(config_dir) + "/").replace("}", ".json") if a.startswith("{cfg:") else a
                for a in argv]
        run(argv, root / name)
    for name in DIAGNOSE:
        run_dir = RESULTS / "2026-12-01" / name
        run(["diagnose", str(run_dir), "--json", "--trace", "{out}/diag.json"], root / f"diagnose_{name}")
        run(["diagnose", str(run_dir)], root / f"diagnose_{name}_text")
    digest = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        if f.is_file():
            digest.update(f.relative_to(root).as_posix().encode() + f.read_bytes())
    print(f"{sum(1 for _ in root.rglob('*'))} files, sha256 {digest.hexdigest()[:16]}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write("usage: python bench/behaviour_snapshot.py OUTDIR\n")
        raise SystemExit(2)
    raise SystemExit(main(sys.argv[1]))
