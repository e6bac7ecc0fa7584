"""The README's pictures: the script that draws them still runs on the library, and they stay small."""

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
FIGURES = ("highres.png", "edge_tools.png", "workflow.png")


@pytest.fixture(scope="module")
def make_figures():
    spec = importlib.util.spec_from_file_location("make_figures", DOCS / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_shows_every_figure_and_they_are_small():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    shown = set(re.findall(r"!\[[^\]]*\]\(docs/([^)]+\.png)\)", readme))
    assert shown == set(FIGURES)
    sizes = {name: (DOCS / name).stat().st_size for name in FIGURES}
    assert max(sizes.values()) < 150_000 and sum(sizes.values()) < 600_000, sizes
    assert "python docs/make_figures.py" in readme


def test_highres_figure_shows_band_windows_and_both_alphas(make_figures):
    # a smaller scene than the README's keeps this quick; the same code draws both
    figure = make_figures.highres_figure(size=512, native=128)
    width, height = figure.size
    assert width > 3 * 420 and height > 420
    pixels = figure.convert("RGB").load()
    panel_top = make_figures.GAP + make_figures.LABEL
    scene = [pixels[x, y] for x in range(make_figures.GAP, make_figures.GAP + 420, 3)
             for y in range(panel_top, panel_top + 420, 3)]
    assert (255, 230, 0) in scene  # window outlines
    assert any(r > 200 and b > 150 and g < 150 for r, g, b in scene)  # the magenta band


def test_edge_tools_figure_has_one_tile_per_tool(make_figures):
    figure = make_figures.edge_tools_figure()
    tile = 208
    assert figure.size == (make_figures.GAP + 4 * (tile + make_figures.GAP),
                           make_figures.GAP + 2 * (make_figures.LABEL + tile + make_figures.GAP))
    grey = figure.convert("L")
    tiles = []
    for index in range(8):
        x = make_figures.GAP + (index % 4) * (tile + make_figures.GAP)
        y = make_figures.GAP + (index // 4) * (make_figures.LABEL + tile + make_figures.GAP) + make_figures.LABEL
        tiles.append(grey.crop((x, y, x + tile, y + tile)).tobytes())
    assert len(set(tiles)) == 8  # every tool changes the mask
