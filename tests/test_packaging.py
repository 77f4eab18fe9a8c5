"""A built wheel carries the shipped topologies and hardware profiles (package data)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "zsim" / "data" / "topologies"


def _pip_wheel_available() -> bool:
    try:
        import setuptools  # noqa: F401  (needed by --no-build-isolation)
    except ImportError:
        return False
    probe = subprocess.run([sys.executable, "-m", "pip", "wheel", "--help"],
                           capture_output=True, text=True)
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _pip_wheel_available(), reason="pip wheel (with setuptools) not available")
def test_wheel_contains_topology_and_hardware_yaml(tmp_path):
    # Build from a copy so that concurrent builds do not share the tree's build/ folder.
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy2(REPO / "pyproject.toml", src)
    shutil.copy2(REPO / "README.md", src)
    shutil.copytree(REPO / "zsim", src / "zsim",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path / "wheel"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-q", str(src), "-w", str(out)],
        capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    wheels = list(out.glob("zsim-*.whl"))
    assert len(wheels) == 1, wheels
    names = set(zipfile.ZipFile(wheels[0]).namelist())

    expected = {f"zsim/data/topologies/{p.relative_to(DATA).as_posix()}"
                for p in DATA.rglob("*.yaml")}
    assert any(n.startswith("zsim/data/topologies/hardware/") for n in expected)
    assert any("/" not in n.removeprefix("zsim/data/topologies/") for n in expected)
    missing = expected - names
    assert not missing, f"wheel lacks {sorted(missing)}"
    assert "zsim/data/topologies/README.md" in names
