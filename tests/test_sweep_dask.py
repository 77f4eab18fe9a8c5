"""`zsim sweep --dask ADDRESS`: the grid predicted on a Dask cluster (a two-worker local one
started here) gives the serial sweep's rows, in its order; without dask, with --jobs too, or
with no scheduler at the address it is one line on stderr and exit 2.

The cluster tests need dask.distributed (the ``cluster`` extra, part of ``test``): they skip
without it, unless ZSIM_REQUIRE_TRUTH=1 (CI), where they fail.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from truth_packages import require_truth_packages
from zsim.cli import main
from zsim.decide import fanout
from zsim.decide.fanout import DaskCluster, ProcessPool, Serial, backend_for
from zsim.decide.sweep import sweep
from zsim.errors import ZsimInputError

#: 12 configurations: fitting, not fitting (stage 1 at micro-batch 8) and invalid
#: (offload_param below stage 3) rows.
GRID = {"model": ["tinyllama-1.1b"], "topo": ["dgx-a100"], "stage": [1, 3],
        "offload_param": ["none", "cpu"], "micro_batch": [1, 8, 32]}
FLAGS = ["--model", "tinyllama-1.1b", "--topo", "dgx-a100", "--stage", "1,3",
         "--offload-param", "none,cpu", "--micro-batch", "1,8,32"]


#: Progress ticks of the reference sweep, filled by the ``serial`` fixture.
SERIAL_TICKS: list[tuple[int, int, str]] = []


@pytest.fixture(scope="module")
def serial():
    """The reference: the grid swept in this process (its progress ticks in SERIAL_TICKS)."""
    SERIAL_TICKS.clear()
    return sweep(GRID, progress=lambda i, n, label: SERIAL_TICKS.append((i, n, label)))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A two-process local Dask cluster, closed after this module's tests; its scheduler
    also writes a scheduler file (``cluster.zsim_scheduler_file``)."""
    require_truth_packages("the Dask sweep tests", "distributed")
    from distributed import LocalCluster
    scheduler_file = tmp_path_factory.mktemp("dask") / "scheduler.json"
    # dashboard_address=None: no web server, no port to collide with a parallel test run.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      scheduler_kwargs={"scheduler_file": str(scheduler_file)}) as c:
        c.zsim_scheduler_file = scheduler_file
        yield c


def test_serial_grid_has_every_kind_of_row(serial):
    """The grid exercises fits, does_not_fit and invalid rows (so equality below means something)."""
    assert len(serial.rows) == 12
    assert {r["status"] for r in serial.rows} == {"fits", "does_not_fit", "invalid"}


def test_api_dask_rows_equal_serial_rows_and_progress(cluster, serial):
    ticks = []
    got = sweep(GRID, backend=DaskCluster(cluster.scheduler_address),
                progress=lambda i, n, label: ticks.append((i, n, label)))
    assert got.rows == serial.rows and got.axes == serial.axes
    # One tick per configuration in grid order, then "done": what the serial sweep reports.
    assert ticks == SERIAL_TICKS and len(ticks) == 13 and ticks[-1] == (12, 12, "done")


def test_cli_dask_writes_the_serial_rows(cluster, tmp_path, serial):
    assert main(["sweep", *FLAGS, "--dask", cluster.scheduler_address, "-o", str(tmp_path), "-q"]) == 0
    assert (tmp_path / "sweep.csv").read_text() == serial.to_csv()
    data = json.loads((tmp_path / "sweep.json").read_text())
    assert data["rows"] == json.loads(json.dumps(list(serial.rows)))


def test_cli_dask_takes_a_scheduler_file(cluster, tmp_path, serial):
    """The file a scheduler writes (`dask scheduler --scheduler-file F`) in place of its address."""
    assert cluster.zsim_scheduler_file.is_file()
    assert main(["sweep", *FLAGS, "--dask", str(cluster.zsim_scheduler_file), "-o", str(tmp_path / "out"),
                 "-q"]) == 0
    rows = json.loads((tmp_path / "out" / "sweep.json").read_text())["rows"]
    assert [r["status"] for r in rows] == [r["status"] for r in serial.rows]
    assert [r.get("step_time_s") for r in rows] == [r.get("step_time_s") for r in serial.rows]


def test_workers_on_another_zsim_version_are_refused(cluster, monkeypatch):
    """Rows from another zsim would differ: refuse in one line rather than mix them."""
    monkeypatch.setattr(fanout, "__version__", "0.0.0-other")
    with pytest.raises(ZsimInputError, match=r"workers run zsim .*this is 0\.0\.0-other"):
        sweep(GRID, backend=DaskCluster(cluster.scheduler_address))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_one_line_exit_2(capsys, monkeypatch, tmp_path):
    require_truth_packages("the Dask sweep tests", "distributed")
    monkeypatch.setattr(fanout, "DASK_CONNECT_TIMEOUT_S", 1.0)   # the test waits 1 s, not 10
    address = f"tcp://127.0.0.1:{_closed_port()}"
    assert main(["sweep", *FLAGS, "--dask", address, "-o", str(tmp_path), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--dask {address}: cannot reach a Dask scheduler" in err
    assert not (tmp_path / "sweep.csv").exists()


def test_dask_without_dask_installed_names_the_extra(capsys, monkeypatch, tmp_path):
    # None in sys.modules makes `import distributed` raise ImportError, as when it is absent.
    monkeypatch.setitem(sys.modules, "distributed", None)
    assert main(["sweep", *FLAGS, "--dask", "tcp://127.0.0.1:8786", "-o", str(tmp_path), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'zsim[cluster]'" in err


def test_jobs_and_dask_together_are_refused(capsys, tmp_path):
    assert main(["sweep", *FLAGS, "--jobs", "2", "--dask", "tcp://127.0.0.1:8786", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--jobs and --dask" in err
    with pytest.raises(ZsimInputError, match="jobs or backend"):
        sweep(GRID, jobs=2, backend=Serial())


def test_backend_for_picks_what_the_flags_say():
    assert backend_for() == Serial() and backend_for(jobs=1) == Serial()
    assert backend_for(jobs=3) == ProcessPool(3)
    assert backend_for(dask="tcp://h:8786") == DaskCluster("tcp://h:8786")
    with pytest.raises(ZsimInputError, match="scheduler address"):
        DaskCluster("  ")


def test_core_imports_without_dask():
    """zsim and its sweep command import no dask: it stays an optional extra."""
    code = ("import sys, zsim.cli, zsim.commands.sweep, zsim.decide.sweep; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
