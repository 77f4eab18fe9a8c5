"""One job, one path: RunSettings -> Job -> the prediction stages, and the one home of defaults."""

from __future__ import annotations

import dataclasses

import pytest

import zsim
from zsim import defaults
from zsim.commands.common import settings_from_args
from zsim.cli import build_parser
from zsim.decide.space import OFFLOAD_DEVICES, SearchSpace, valid_offload
from zsim.decide.sweep import AXES, CONFIG_AXES
from zsim.dsconfig import (ZERO_DEFAULTS, OffloadDevice, ZeroConfig, build_run_config, default_overlap_comm,
                           offload_error)
from zsim.errors import ZsimInputError
from zsim.job import RUN_FIELDS, SETTING_FIELDS, RunSettings, job_at, place, resolve
from zsim.model import load_model
from zsim.predict import (memory_facts, memory_stage, predict, predict_job, present, schedule_stage,
                          simulate_stage)


def test_predict_is_the_stages_composed():
    """predict(...) == resolve -> schedule -> memory -> simulate -> present, field for field."""
    settings = RunSettings(model="tinyllama-1.1b", topo="hgx-h200", gpus=2, stage=3, micro_batch=1)
    job = resolve(settings)
    schedule = schedule_stage(job)
    memory = memory_stage(job, memory_facts(schedule, job.run, job.model))
    staged = present(job, schedule, memory, simulate_stage(job, schedule))
    direct = predict(model="tinyllama-1.1b", topo="hgx-h200", gpus=2, stage=3, micro_batch=1)
    assert staged.to_dict() == direct.to_dict() == predict_job(job).to_dict()


def test_job_is_frozen_and_with_run_keeps_the_site():
    job = resolve(RunSettings(model="tinyllama-1.1b", topo="hgx-h200", gpus=2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.run = None  # type: ignore[misc]
    other = job.with_run(stage=2, micro_batch=4)
    assert other.cluster is job.cluster and other.hardware is job.hardware and other.model is job.model
    assert (other.run.zero.stage, other.run.micro_batch) == (2, 4)
    with pytest.raises(TypeError):
        job.settings.with_run(topo="dgx-h100")   # not a run field: a new site, resolve() it


def test_job_at_equals_resolve():
    settings = RunSettings(model="tinyllama-1.1b", topo="hgx-h200", gpus=2, stage=1, grad_accum=2)
    a, b = job_at(place(settings), settings), resolve(settings)
    for field in ("settings", "model", "run", "provenance", "cpu_threads", "notes"):
        assert getattr(a, field) == getattr(b, field), field
    assert (a.cluster.world_size, a.hardware.name) == (b.cluster.world_size, b.hardware.name)


def test_bad_run_setting_is_an_input_error():
    with pytest.raises(ZsimInputError, match="offload_param requires ZeRO stage 3"):
        resolve(RunSettings(stage=2, offload_param="cpu"))


def test_launcher_sets_threads_only_when_given():
    """The API passes cpu_threads through; the CLI's --launcher applies the launcher's rule."""
    api = resolve(RunSettings(topo="dgx-h100"))
    cli = resolve(RunSettings(topo="dgx-h100", launcher="torchrun"))
    assert api.cpu_threads is None and cli.cpu_threads == 1.0


@pytest.mark.parametrize("command", ["predict", "plan", "report", "capacity"])
def test_every_command_fills_the_same_settings(command):
    args = build_parser().parse_args([command, "--topo", "hgx-h200", "--gpus", "2", "--seq", "512"])
    s = settings_from_args(args, **({"stage": None} if command == "capacity" else {}))
    assert (s.topo, s.gpus, s.seq) == ("hgx-h200", 2, 512)
    assert s.nodes is None and s.hardware is None


def test_cli_defaults_are_the_defaults_module():
    args = build_parser().parse_args(["predict"])
    assert args.topo == defaults.DEFAULT_TOPO and args.launcher == defaults.DEFAULT_LAUNCHER
    assert RunSettings().topo == defaults.DEFAULT_TOPO
    for command in ("validate", "diagnose"):
        a = build_parser().parse_args([command, "x"])
        assert (a.hardware, a.topo) == (defaults.DEFAULT_PROFILE, defaults.DEFAULT_RUN_TOPO)


def test_sweep_axes_are_run_settings():
    from zsim.decide.sweep import LAYOUT_AXES
    from zsim.parallel.predict3d import ParallelAsk
    assert all(AXES[a][1] in SETTING_FIELDS for a in AXES if a not in CONFIG_AXES + LAYOUT_AXES)
    assert {AXES[a][1] for a in LAYOUT_AXES} <= {f.name for f in dataclasses.fields(ParallelAsk)}
    assert set(RUN_FIELDS) <= set(SETTING_FIELDS)


def test_zero_defaults_have_one_home():
    """ZeroConfig carries no defaults of its own: DeepSpeed's are ZERO_DEFAULTS."""
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(ZeroConfig))
    zero = build_run_config({}, load_model(None), 8).zero
    for key, value in ZERO_DEFAULTS.items():
        assert getattr(zero, key) == (default_overlap_comm(0) if key == "overlap_comm" else value)


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
@pytest.mark.parametrize("opt", list(OffloadDevice))
@pytest.mark.parametrize("par", list(OffloadDevice))
def test_search_space_and_run_config_share_the_offload_rule(stage, opt, par):
    refused = offload_error(stage, opt, par)
    assert valid_offload(stage, opt, par) is (refused is None)
    if refused:
        with pytest.raises(ZsimInputError):
            build_run_config({}, load_model(None), 8, RunSettings(stage=stage, offload_optimizer=opt,
                                                                  offload_param=par).overrides())
    else:
        build_run_config({}, load_model(None), 8, RunSettings(stage=stage, offload_optimizer=opt,
                                                              offload_param=par).overrides())


def test_search_overlap_follows_deepspeed_default():
    space = SearchSpace(8, (0, 1, 2, 3), OFFLOAD_DEVICES[:1], OFFLOAD_DEVICES[:1], (1,), (1,), (False,),
                        (5e8,), (5e7,), None)
    overlaps = {s: {c.overlap_comm for c in space.structures() if c.stage == s} for s in range(4)}
    assert overlaps == {0: {False}, 1: {False, True}, 2: {False, True}, 3: {True}}


def test_api_wrappers_keep_their_signatures():
    assert zsim.predict is predict
    for fn, name in ((zsim.plan, "constraints"), (zsim.capacity, "rows")):
        assert name in fn.__code__.co_varnames
