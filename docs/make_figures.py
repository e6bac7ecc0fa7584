"""The README's pictures, drawn by the library itself.

    python docs/make_figures.py
        docs/highres.png      the high-res pipeline on a synthetic scene: uncertain band, refined
                              windows, one-shot and high-res alpha side by side
        docs/edge_tools.png   the mask tools on a hair-like mask
    python docs/make_figures.py --comfyui http://127.0.0.1:8188 --chromium /usr/bin/chromium
        docs/workflow.png     also: workflows/photo_to_transparent_png.json opened in a running
                              ComfyUI with this pack installed and a photo named example.png in
                              its input/ folder (needs ``pip install playwright``; the browser is
                              the given Chromium, nothing is downloaded)

The scenes are deterministic, so the PNGs change only when the code they show does.
"""

import argparse
import io
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from comfyui_meticulous.files.atomic import atomic_write
from comfyui_meticulous.highres import HighResOptions, segment_highres
from comfyui_meticulous.matting import (
    choke_spread,
    feather,
    fill_holes,
    invert,
    levels,
    remove_small_islands,
    threshold,
)
from comfyui_meticulous.training.synthetic import CoverageModel, draw_coverage

DOCS = Path(__file__).resolve().parent
WORKFLOWS = DOCS.parent / "workflows"
PAPER, INK = (246, 248, 250), (36, 41, 47)  # readable on GitHub's light and dark pages
GAP, LABEL = 12, 26


def font(size: int = 15) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def grey(values: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(values, 0, 1) * 255).round().astype(np.uint8))


def sheet(tiles: list[tuple[str, Image.Image]], columns: int) -> Image.Image:
    """Tiles of one size in a grid, each with its label above it."""
    width, height = tiles[0][1].size
    rows = math.ceil(len(tiles) / columns)
    page = Image.new("RGB", (GAP + columns * (width + GAP), GAP + rows * (LABEL + height + GAP)), PAPER)
    draw = ImageDraw.Draw(page)
    for index, (label, tile) in enumerate(tiles):
        x = GAP + (index % columns) * (width + GAP)
        y = GAP + (index // columns) * (LABEL + height + GAP)
        draw.text((x, y + 2), label, fill=INK, font=font())
        page.paste(tile.convert("RGB"), (x, y + LABEL))
    return page


def save_png(image: Image.Image, path: Path, colours: int | None = None) -> int:
    """Write ``image`` as an optimised PNG (palette of ``colours`` if given); returns its size in bytes."""
    if colours:
        image = image.quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    atomic_write(path, buffer.getvalue())
    return len(buffer.getvalue())


def highres_figure(size: int = 1024, native: int = 256, seed: int = 3) -> Image.Image:
    """A ``size``² scene through a model that sees ``native``²: the same 4x squeeze as a 4K photo
    through a 1024² model. The stand-in model reads the red channel back as coverage, so it is
    perfect except for its input resolution: what the one-shot result lacks is resolution alone."""
    coverage = draw_coverage(size, np.random.default_rng(seed))
    c = coverage[..., None]
    # red carries the coverage for the stand-in model; green and blue only make it look like a photo
    image = np.concatenate([c, 0.62 * c + 0.32 * (1 - c), 0.25 * c + 0.55 * (1 - c)], axis=-1)
    options = HighResOptions()
    result = segment_highres(CoverageModel(native), torch.from_numpy(image)[None], options)
    band = options.band.select(result.coarse)[0].numpy()
    one_shot = result.coarse.probabilities()[0].numpy()
    high = result.prediction.probabilities()[0].numpy()

    panel = 420
    scale = panel / size
    scene = Image.fromarray((image * 255).round().astype(np.uint8)).resize((panel, panel), Image.LANCZOS)
    tint = Image.new("RGB", scene.size, (230, 40, 200))
    band_mask = grey(band.astype(np.float32)).resize((panel, panel), Image.NEAREST).point(lambda v: v * 0.55)
    scene.paste(tint, (0, 0), band_mask)
    draw = ImageDraw.Draw(scene)
    for window in result.plans[0].windows:
        top, left, bottom, right = result.plans[0].box(window)
        draw.rectangle([left * scale, top * scale, right * scale - 1, bottom * scale - 1], outline=(255, 230, 0))

    # the crop: the square of the hair with the most partly covered pixels
    crop = size // 6
    soft = ((coverage > 0.02) & (coverage < 0.98)).astype(np.float32)
    counts = np.add.reduceat(np.add.reduceat(soft, np.arange(0, size, crop // 2), 0), np.arange(0, size, crop // 2), 1)
    cy, cx = np.unravel_index(np.argmax(counts[:-1, :-1] + counts[1:, :-1] + counts[:-1, 1:] + counts[1:, 1:]),
                              (counts.shape[0] - 1, counts.shape[1] - 1))
    y0, x0 = cy * (crop // 2), cx * (crop // 2)
    draw.rectangle([x0 * scale, y0 * scale, (x0 + crop) * scale, (y0 + crop) * scale], outline=(255, 255, 255), width=2)

    def zoomed(alpha):
        return grey(alpha[y0:y0 + crop, x0:x0 + crop]).resize((panel, panel), Image.NEAREST)

    return sheet([(f"{size} px scene: uncertain band (magenta), {len(result.plans[0])} windows", scene),
                  (f"one-shot at {native} px: the white square, zoomed", zoomed(one_shot)),
                  ("high-res: the windows fused in the band", zoomed(high))], columns=3)


def hair_mask(size: int = 384, seed: int = 5) -> np.ndarray:
    """A mask as a segmenter might give it for loose hair: soft edges, a faint haze around the
    subject, specks of background taken for foreground, and holes."""
    rng = np.random.default_rng(seed)
    coverage = draw_coverage(size, rng)
    soft = np.asarray(grey(coverage).filter(ImageFilter.GaussianBlur(0.8)), np.float32) / 255
    haze = np.asarray(grey(coverage).filter(ImageFilter.GaussianBlur(3)), np.float32) / 255
    around = np.asarray(grey(coverage).filter(ImageFilter.GaussianBlur(12)), np.float32) / 255
    specks = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(specks)
    # specks where a segmenter makes them: in the background near the subject
    near = np.argwhere((around > 0.05) & (haze < 0.01))
    for index in rng.choice(len(near), 80, replace=False):
        (y, x), r = near[index], rng.uniform(1.0, 3.0)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=int(rng.uniform(150, 255)))
    specks = np.asarray(specks.filter(ImageFilter.GaussianBlur(0.6)), np.float32) / 255
    return np.maximum(np.clip(soft + 0.3 * haze * (1 - soft), 0, 1), specks)


def edge_tools_figure(tile: int = 208, zoom: int = 2) -> Image.Image:
    mask = hair_mask()
    size = mask.shape[0]
    # the square of the mask with the most partly covered pixels
    crop = tile // zoom
    soft = ((mask > 0.05) & (mask < 0.95)).astype(np.float32)
    sums = soft.cumsum(0).cumsum(1)
    best, y0, x0 = -1.0, 0, 0
    for y in range(0, size - crop, 8):
        for x in range(0, size - crop, 8):
            total = sums[y + crop - 1, x + crop - 1] - (sums[y - 1, x + crop - 1] if y else 0) \
                - (sums[y + crop - 1, x - 1] if x else 0) + (sums[y - 1, x - 1] if x and y else 0)
            if total > best:
                best, y0, x0 = total, y, x
    m = torch.from_numpy(mask)[None]
    steps = [
        ("raw mask", m),
        ("Levels 0.2 / 0.8", levels(m, 0.2, 0.8)),
        ("Threshold 0.5", threshold(m, 0.5)),
        ("Choke 2 px", choke_spread(m, -2)),
        ("Feather 3 px", feather(m, 3)),
        ("Fill Holes", fill_holes(m, 0.5)),
        ("Remove Small Islands 64 px", remove_small_islands(m, 64, 0.5)),
        ("Invert", invert(m)),
    ]
    tiles = [(label, grey(out[0].numpy()[y0:y0 + crop, x0:x0 + crop]).resize((tile, tile), Image.NEAREST))
             for label, out in steps]
    return sheet(tiles, columns=4)


def workflow_screenshot(url: str, chromium: str, workflow: Path, width: int = 1280, height: int = 640) -> Image.Image:
    """``workflow`` opened in the ComfyUI frontend at ``url`` and fitted to the window."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SystemExit("the workflow screenshot needs playwright: pip install playwright") from None
    graph = json.loads(workflow.read_text(encoding="utf-8"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(url, wait_until="load", timeout=120_000)
        page.wait_for_function("() => window.app && window.app.graph && window.app.canvas", timeout=120_000)
        page.wait_for_timeout(2000)
        page.evaluate(QUIET_CANVAS)
        page.evaluate("async ([graph, name]) => { await window.app.loadGraphData(graph, true, true, name) }",
                      [graph, workflow.stem])
        page.wait_for_timeout(3000)  # the Load Image preview
        page.keyboard.press("Escape")
        page.evaluate(FIT_TO_VIEW)
        page.wait_for_timeout(800)
        png = page.screenshot()
        browser.close()
    return Image.open(io.BytesIO(png)).convert("RGB")


# No minimap and no render statistics over the picture.
QUIET_CANVAS = """async () => {
  await window.app.ui.settings.setSettingValueAsync("Comfy.Minimap.Visible", false);
  await window.app.ui.settings.setSettingValueAsync("Comfy.Graph.CanvasInfo", false);
}"""

# Fit the nodes into the canvas area left free by the menu bar, the tabs and the side bar.
FIT_TO_VIEW = """() => {
  const c = window.app.canvas;
  let x0 = 1e9, y0 = 1e9, x1 = -1e9, y1 = -1e9;
  for (const n of window.app.graph._nodes) {
    const b = n.boundingRect;
    x0 = Math.min(x0, b[0]); y0 = Math.min(y0, b[1]); x1 = Math.max(x1, b[0] + b[2]); y1 = Math.max(y1, b[1] + b[3]);
  }
  const r = c.canvas.getBoundingClientRect();
  const left = 70, top = 84, w = r.width - left - 20, h = r.height - top - 24;
  const s = Math.min(w / (x1 - x0), h / (y1 - y0), 1);
  c.ds.scale = s;
  c.ds.offset[0] = (left + (w - s * (x1 - x0)) / 2) / s - x0;
  c.ds.offset[1] = (top + (h - s * (y1 - y0)) / 2) / s - y0;
  c.setDirty(true, true);
}"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", help="URL of a running ComfyUI with this pack, for docs/workflow.png")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium or Chrome executable")
    parser.add_argument("--workflow", default=str(WORKFLOWS / "photo_to_transparent_png.json"))
    args = parser.parse_args(argv)
    sizes = {"highres.png": save_png(highres_figure(), DOCS / "highres.png", colours=128),
             "edge_tools.png": save_png(edge_tools_figure().convert("L"), DOCS / "edge_tools.png")}
    if args.comfyui:
        shot = workflow_screenshot(args.comfyui, args.chromium, Path(args.workflow))
        sizes["workflow.png"] = save_png(shot, DOCS / "workflow.png", colours=128)
    for name, size in sizes.items():
        print(f"docs/{name}: {size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
