"""`zsim plan --jobs N` / `--dask ADDRESS`: the candidates' simulations run on worker processes
(or a Dask cluster) and the plan is byte for byte the one-process plan: the same pruning, the
same counters, the same ranking. The flags are sweep's (same help, same one-line errors).

The Dask test needs dask.distributed (the ``cluster`` extra, part of ``test``): it skips
without it, unless ZSIM_REQUIRE_TRUTH=1 (CI), where it fails.
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pytest

from truth_packages import require_truth_packages
from zsim.cli import build_parser, main
from zsim.decide.api import Constraints, plan
from zsim.decide.evaluate import Evaluator
from zsim.decide.fanout import ProcessPool, Serial

#: A small search (about 2 s in one process) that still prunes (16 of 24 fitting structures),
#: screens grad-accum above 2 (two simulations each) and refines buckets.
CASE = ["--model", "tinyllama-1.1b", "--topo", "dgx-a100", "--gpus", "2", "--seq", "512",
        "--global-batch", "64", "--top", "2", "--stage", "2", "--offload-optimizer", "none"]
API_CASE = dict(model="tinyllama-1.1b", topo="dgx-a100", gpus=2, seq=512, global_batch=64, top_n=2,
                constraints=Constraints(stage=2, offload_optimizer="none"))


def _plan_json(capsys, *extra: str) -> str:
    assert main(["plan", *CASE, "--json", "-q", "--no-output", *extra]) == 0
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def serial_json() -> str:
    """The reference: the plan searched in this process, as `zsim plan --json` prints it."""
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["plan", *CASE, "--json", "-q", "--no-output"]) == 0
    return out.getvalue()


def test_reference_search_prunes(serial_json):
    """Equality below means something: the search prunes and ranks."""
    search = json.loads(serial_json)["search"]
    assert search["pruned"] > 0 and search["simulations"] > 0 and json.loads(serial_json)["ranked"]


def test_jobs_2_prints_the_serial_plan(capsys, serial_json):
    assert _plan_json(capsys, "--jobs", "2") == serial_json


class _Recording:
    """A backend that runs here and records what it was sent (as ProcessPool would get it)."""

    workers = 2

    def __init__(self):
        self.sent = 0

    def map_in_order(self, fn, items):
        """Plain map, counting the items."""
        self.sent += len(items)
        yield from map(fn, items)


def test_fanned_out_search_sends_batches_and_counts_what_it_takes(serial_json):
    """The simulations go to the backend; the counters are the serial search's (speculated
    simulations the search never asked for are not counted)."""
    backend = _Recording()
    got = plan(**API_CASE, backend=backend)
    want = json.loads(serial_json)
    assert got.to_dict()["search"] == want["search"]
    # Every simulation the search took came from the backend, and speculation besides.
    assert backend.sent >= want["search"]["simulations"]


def test_injected_predictor_never_fans_out():
    """A test's predictor need not be picklable: it runs here whatever the backend."""
    ev = Evaluator.__new__(Evaluator)
    ev._real, ev._backend = False, ProcessPool(2)
    assert not ev.fans_out
    ev._real = True
    assert ev.fans_out
    for here in (None, Serial(), ProcessPool(1)):
        ev._backend = here
        assert not ev.fans_out


def _one_line_exit_2(capsys, argv: list[str]) -> str:
    try:
        rc = main(argv)
    except SystemExit as exc:   # argparse's own usage error (zsim's parser: one line)
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("bad, says", [
    (["--jobs", "2", "--dask", "tcp://127.0.0.1:8786"], "--jobs and --dask"),
    (["--jobs", "0"], "expected a positive integer"),
    (["--jobs", "65"], "at most 64"),
    (["--jobs", "two"], "expected a positive integer"),
    (["--jobs", "2", "--search-3d"], "--search-3d"),
])
def test_bad_fanout_flags_are_one_line_exit_2(capsys, bad, says):
    assert says in _one_line_exit_2(capsys, ["plan", "--model", "tinyllama-1.1b", "--no-output", *bad])


def test_plan_and_sweep_share_the_flags():
    """One definition: the same help text in both commands."""
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    helps = {name: {a.dest: a.help for a in sub.choices[name]._actions if a.dest in ("jobs", "dask")}
             for name in ("plan", "sweep")}
    assert helps["plan"] == helps["sweep"] and set(helps["plan"]) == {"jobs", "dask"}


def test_dask_prints_the_serial_plan(capsys, serial_json):
    require_truth_packages("the Dask plan test", "distributed")
    from distributed import LocalCluster
    # dashboard_address=None: no web server, no port to collide with a parallel test run.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        assert _plan_json(capsys, "--dask", cluster.scheduler_address) == serial_json
