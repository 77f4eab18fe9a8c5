"""The pictures a user opens are real pictures: `zsim topo draw` (PNG, and SVG as headless
Chromium renders it) and the prediction's training_curves.png with its memory-over-time curve.

Each image is loaded and measured: size, share of non-background pixels, distinct colours,
edge density. A blank and a uniform image are checked too, so the checks themselves can
fail. The NVSwitch chips of a DGX-H100 are counted as marker blobs of their colour.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zsim.cli import main

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
NVSWITCH_RGB = (0x76, 0xB9, 0x00)     # zsim/network/draw.py's NVSwitch marker colour


def load_rgb(path: Path) -> np.ndarray:
    """The image as an H x W x 3 uint8 array (alpha composited on white)."""
    img = Image.open(path)
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img)
    return np.asarray(img.convert("RGB"))


def picture_problems(rgb: np.ndarray, min_size=(600, 400)) -> list[str]:
    """What makes ``rgb`` a trivial picture (empty list: none)."""
    problems = []
    h, w = rgb.shape[:2]
    if w < min_size[0] or h < min_size[1]:
        problems.append(f"too small: {w}x{h}")
    background = np.median(rgb.reshape(-1, 3), axis=0)
    ink = np.abs(rgb.astype(int) - background).sum(axis=2) > 60
    share = ink.mean()
    if not 0.02 <= share <= 0.9:
        problems.append(f"{share:.1%} of pixels differ from the background")
    colours = len(np.unique(rgb.reshape(-1, 3), axis=0))
    if colours < 64:
        problems.append(f"only {colours} distinct colours")
    grey = rgb.astype(float).mean(axis=2)
    edges = (np.abs(np.diff(grey, axis=0))[:, :-1] + np.abs(np.diff(grey, axis=1))[:-1, :]) > 40
    if edges.mean() < 0.005:
        problems.append(f"edge density {edges.mean():.2%}")
    return problems


def blobs_of_colour(rgb: np.ndarray, colour, min_pixels: int = 40) -> int:
    """Connected regions (4-neighbour) of exactly ``colour`` with at least ``min_pixels``."""
    mask = np.all(rgb == np.array(colour, dtype=rgb.dtype), axis=2)
    seen = np.zeros_like(mask)
    h, w = mask.shape
    count = 0
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        size, queue = 0, deque([(y, x)])
        seen[y, x] = True
        while queue:
            cy, cx = queue.popleft()
            size += 1
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        count += size >= min_pixels
    return count


def test_the_checks_reject_blank_and_uniform_images():
    assert picture_problems(np.full((500, 800, 3), 255, np.uint8))
    assert picture_problems(np.full((500, 800, 3), 40, np.uint8))
    noise = np.random.default_rng(0).integers(0, 256, (500, 800, 3), dtype=np.uint8)
    assert picture_problems(noise[:100, :100])            # too small
    two = np.zeros((400, 600, 3), np.uint8)
    two[:, :300] = NVSWITCH_RGB
    assert blobs_of_colour(two, NVSWITCH_RGB) == 1


def _draw(tmp_path, capsys, name: str, suffix: str, nodes: int = 1) -> Path:
    out = tmp_path / f"{name}{suffix}"
    assert main(["topo", "draw", name, "--nodes", str(nodes), "-o", str(out)]) == 0
    capsys.readouterr()
    return out


@pytest.mark.parametrize("name,chips", [("dgx-h100", 4), ("dgx-a100", 6)])
def test_topo_draw_png_is_a_picture_with_every_nvswitch(tmp_path, capsys, name, chips):
    rgb = load_rgb(_draw(tmp_path, capsys, name, ".png"))
    assert picture_problems(rgb, min_size=(1000, 600)) == []
    # One blob per chip, plus the legend's marker.
    assert blobs_of_colour(rgb, NVSWITCH_RGB) == chips + 1


def test_two_server_drawing_has_both_servers_switches(tmp_path, capsys):
    rgb = load_rgb(_draw(tmp_path, capsys, "dgx-h100", ".png", nodes=2))
    assert picture_problems(rgb, min_size=(1000, 600)) == []
    assert blobs_of_colour(rgb, NVSWITCH_RGB) == 2 * 4 + 1


def _chromium_screenshot(svg: Path, out: Path) -> None:
    profile = Path(tempfile.mkdtemp(prefix="zsim-chromium-"))
    try:
        subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", "--hide-scrollbars", "--window-size=1600,900",
                        f"--screenshot={out}", svg.resolve().as_uri()],
                       capture_output=True, text=True, timeout=120, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_topo_draw_svg_renders_in_chromium(tmp_path, capsys):
    if BROWSER is None:
        if os.environ.get("ZSIM_REQUIRE_BROWSER") == "1":
            pytest.fail("ZSIM_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install -y chromium)")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    svg = _draw(tmp_path, capsys, "dgx-h100", ".svg")
    shot = tmp_path / "shot.png"
    _chromium_screenshot(svg, shot)
    assert shot.exists(), "chromium wrote no screenshot"
    rgb = load_rgb(shot)
    assert picture_problems(rgb, min_size=(1000, 600)) == []
    assert blobs_of_colour(rgb, NVSWITCH_RGB) >= 4


def _coloured_height_per_column(rgb: np.ndarray) -> np.ndarray:
    """Pixels per column whose colour is saturated (the stacked memory terms; the phase
    shading, grid, text and grey allocator band are not)."""
    rgbi = rgb.astype(int)
    saturated = (rgbi.max(axis=2) - rgbi.min(axis=2)) > 60
    return saturated.sum(axis=0)


def test_memory_curve_is_drawn_and_rises_and_falls(tmp_path, capsys):
    out = tmp_path / "pred"
    assert main(["predict", "--model", "tinyllama-1.1b", "--stage", "3", "--grad-accum", "2",
                 "-o", str(out)]) == 0
    capsys.readouterr()
    rgb = load_rgb(out / "training_curves.png")
    assert picture_problems(rgb, min_size=(1000, 650)) == []
    h, w = rgb.shape[:2]
    # The lower panel (memory over the step), without the legend at its right.
    panel = rgb[int(0.55 * h):int(0.92 * h), int(0.12 * w):int(0.80 * w)]
    heights = _coloured_height_per_column(panel)
    assert heights.min() > 0, "a column of the step has no memory drawn"
    # Activations fill and drain twice: the stack's height changes by a good part of the panel.
    assert heights.max() - heights.min() > 0.25 * panel.shape[0], (heights.min(), heights.max())
    # ... and not monotonically: it rises, falls, rises again (two micro-steps).
    smooth = np.convolve(heights, np.ones(9) / 9, mode="valid")
    turns = np.sum(np.diff(np.sign(np.diff(smooth[::6]))) != 0)
    assert turns >= 3
