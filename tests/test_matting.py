"""Mask tools, foreground colour estimation and compositing (``comfyui_meticulous.matting``).

Expected values are derived independently of the implementation: hand arithmetic, discs and
squares drawn from their definitions, brute-force morphology over explicit offsets, a
breadth-first-search labelling, and synthetic composites with a known foreground.
"""

import collections
import math
import time

import pytest
import torch

from comfyui_meticulous import matting
from comfyui_meticulous.errors import InputError
from comfyui_meticulous.matting.components import label_components


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")


def _disc(size: int, centre: int, radius: float) -> torch.Tensor:
    y, x = _grid(size)
    return (((y - centre) ** 2 + (x - centre) ** 2) <= radius * radius).float()[None]


def _square(size: int, low: int, high: int) -> torch.Tensor:
    mask = torch.zeros(1, size, size)
    mask[0, low:high + 1, low:high + 1] = 1.0
    return mask


def _brute_dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Maximum over every offset of the disc, pixels outside the frame ignored."""
    frames, height, width = mask.shape
    padded = torch.full((frames, height + 2 * radius, width + 2 * radius), -math.inf,
                        dtype=mask.dtype)
    padded[:, radius:radius + height, radius:radius + width] = mask
    out = torch.full_like(mask, -math.inf)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx * dx + dy * dy <= radius * radius:
                shifted = padded[:, radius + dy:radius + dy + height,
                                 radius + dx:radius + dx + width]
                out = torch.maximum(out, shifted)
    return out


def _bfs_labels(on: torch.Tensor, connectivity: int) -> torch.Tensor:
    """Reference labelling: breadth-first search, label = first pixel in raster order."""
    frames, height, width = on.shape
    steps = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    if connectivity == 8:
        steps += [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    cells = on.tolist()
    labels = [[[on.numel()] * width for _ in range(height)] for _ in range(frames)]
    for b in range(frames):
        for y in range(height):
            for x in range(width):
                if not cells[b][y][x] or labels[b][y][x] != on.numel():
                    continue
                label = (b * height + y) * width + x
                labels[b][y][x] = label
                queue = collections.deque([(y, x)])
                while queue:
                    cy, cx = queue.popleft()
                    for dy, dx in steps:
                        ny, nx = cy + dy, cx + dx
                        if (0 <= ny < height and 0 <= nx < width and cells[b][ny][nx]
                                and labels[b][ny][nx] == on.numel()):
                            labels[b][ny][nx] = label
                            queue.append((ny, nx))
    return torch.tensor(labels)


# --- levels, threshold, invert ------------------------------------------------------------

def test_levels_remaps_clips_and_applies_gamma():
    ramp = torch.tensor([[0.0, 0.25, 0.5, 0.75, 1.0]])
    out = matting.levels(ramp, black_point=0.25, white_point=0.75)
    assert out.shape == (1, 1, 5)
    torch.testing.assert_close(out[0, 0], torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    lifted = matting.levels(ramp, gamma=2.0)[0, 0]
    torch.testing.assert_close(lifted, ramp[0] ** 0.5)
    assert lifted[2] > ramp[0, 2]  # gamma > 1 lifts mid-tones
    torch.testing.assert_close(matting.levels(ramp), ramp[None])


@pytest.mark.parametrize("kwargs", [
    dict(black_point=0.6, white_point=0.4), dict(black_point=0.5, white_point=0.5),
    dict(gamma=0.0), dict(gamma=-1.0), dict(white_point=1.5), dict(black_point=float("nan")),
])
def test_levels_rejects_bad_parameters(kwargs):
    with pytest.raises(InputError):
        matting.levels(torch.rand(1, 4, 4), **kwargs)


def test_threshold_and_invert():
    mask = torch.tensor([[[0.2, 0.5, 0.7, 1.0]]])
    assert matting.threshold(mask, 0.5).tolist() == [[[0.0, 1.0, 1.0, 1.0]]]
    assert matting.threshold(mask, 0.8).tolist() == [[[0.0, 0.0, 0.0, 1.0]]]
    torch.testing.assert_close(matting.invert(mask), 1.0 - mask)
    torch.testing.assert_close(matting.invert(matting.invert(mask)), mask)


# --- choke / spread -----------------------------------------------------------------------

@pytest.mark.parametrize("radius", [1, 2, 3, 4, 6, 9])
def test_spread_of_a_pixel_is_the_euclidean_disc(radius):
    point = torch.zeros(1, 25, 25)
    point[0, 12, 12] = 1.0
    assert torch.equal(matting.choke_spread(point, float(radius)), _disc(25, 12, radius))


def test_spread_and_choke_of_a_square():
    square = _square(40, 12, 27)
    y, x = _grid(40)
    # Distance from each pixel to the square, per axis, then Euclidean.
    dy = (12 - y).clamp(min=0) + (y - 27).clamp(min=0)
    dx = (12 - x).clamp(min=0) + (x - 27).clamp(min=0)
    rounded = ((dx * dx + dy * dy) <= 25).float()[None]
    assert torch.equal(matting.choke_spread(square, 5), rounded)
    assert torch.equal(matting.choke_spread(square, -5), _square(40, 17, 22))


def test_soft_mask_matches_brute_force_morphology():
    torch.manual_seed(0)
    mask = torch.rand(2, 23, 29)
    for radius in (2, 4):
        torch.testing.assert_close(matting.choke_spread(mask, radius),
                                   _brute_dilate(mask, radius))
        torch.testing.assert_close(matting.choke_spread(mask, -radius),
                                   -_brute_dilate(-mask, radius))


def test_fractional_radius_blends_neighbouring_discs():
    point = torch.zeros(1, 15, 15)
    point[0, 7, 7] = 1.0
    out = matting.choke_spread(point, 2.25)
    torch.testing.assert_close(out, 0.75 * _disc(15, 7, 2) + 0.25 * _disc(15, 7, 3))
    grow = [matting.choke_spread(point, r).sum().item() for r in (2.0, 2.25, 2.5, 3.0)]
    assert grow == sorted(grow) and len(set(grow)) == 4  # moves smoothly with the slider


@pytest.mark.parametrize("shape", ["square", "disc"])
def test_spread_then_choke_restores_a_convex_shape(shape):
    mask = _square(64, 20, 43) if shape == "square" else _disc(64, 32, 14)
    for radius in (3, 7.0, 12):
        closed = matting.choke_spread(matting.choke_spread(mask, radius), -radius)
        assert torch.equal(closed, mask), radius


def test_frame_border_is_not_background():
    full = torch.ones(1, 30, 30)
    assert torch.equal(matting.choke_spread(full, -6), full)
    half = torch.zeros(1, 30, 30)
    half[:, 15:] = 1.0  # subject cut by the bottom of the frame
    choked = matting.choke_spread(half, -4)
    assert choked[0, 19:].eq(1).all() and choked[0, :19].eq(0).all()


def test_large_radius_is_exact_and_fast():
    point = torch.zeros(1, 256, 256)
    point[0, 128, 128] = 1.0
    start = time.perf_counter()
    spread = matting.choke_spread(point, 40)
    choked = matting.choke_spread(spread, -40)
    elapsed = time.perf_counter() - start
    assert torch.equal(spread, _disc(256, 128, 40))
    assert torch.equal(choked, point)
    # Linear in the radius: a dense 81x81 window per pixel would be far slower. The bound is
    # loose because the test machines are shared.
    assert elapsed < 10.0


# --- feather ------------------------------------------------------------------------------

def test_feather_follows_a_gaussian_of_sigma_half_the_pixels():
    step = torch.zeros(1, 32, 96)
    step[..., 48:] = 1.0
    out = matting.feather(step, 8.0)
    sigma = 4.0
    row = out[0, 16]
    for column in (40, 44, 47, 48, 52, 56):
        # Edge between pixels 47 and 48, i.e. at 47.5.
        expected = 0.5 * (1.0 + math.erf((column - 47.5) / (sigma * math.sqrt(2.0))))
        assert abs(row[column].item() - expected) < 0.02, column
    assert torch.allclose(out[0, :, 0], torch.zeros(32), atol=1e-6)  # border repeated, not 0
    assert torch.allclose(out[0, :, -1], torch.ones(32), atol=1e-6)
    assert torch.equal(matting.feather(step, 0), step)


# --- fill holes / islands -----------------------------------------------------------------

def test_connected_components_match_breadth_first_search():
    torch.manual_seed(1)
    for density in (0.35, 0.5, 0.65):
        on = torch.rand(2, 37, 41) < density
        for connectivity in (4, 8):
            assert torch.equal(label_components(on, connectivity),
                               _bfs_labels(on, connectivity)), (density, connectivity)


def test_fill_holes_fills_enclosed_hole_but_not_open_notch():
    mask = torch.zeros(1, 64, 64)
    mask[0, 8:30, 8:30] = 1.0
    mask[0, 14:22, 14:22] = 0.0  # enclosed hole
    mask[0, 14:22, 14:24] = 0.0
    mask[0, 36:60, 30:60] = 1.0
    mask[0, 44:52, 38:64] = 0.0  # notch opening onto the right border
    mask[0, 2, 2] = 0.3  # soft pixel elsewhere
    mask[0, 20, 25] = 0.8  # soft pixel inside the solid region
    out = matting.fill_holes(mask)
    assert out[0, 14:22, 14:24].eq(1).all()
    assert out[0, 44:52, 38:64].eq(0).all()
    changed = out != mask
    assert changed.sum().item() == 8 * 10
    assert out[0, 2, 2].item() == pytest.approx(0.3)
    assert out[0, 20, 25].item() == pytest.approx(0.8)


def test_fill_holes_treats_a_diagonally_closed_ring_as_closed():
    # Foreground is 8-connected (background 4-connected), so a ring whose corners touch only
    # diagonally still encloses its hole; a gap in a side opens it.
    ring = torch.zeros(1, 12, 12)
    ring[0, 2, 2:9] = ring[0, 8, 2:9] = ring[0, 2:9, 2] = ring[0, 2:9, 8] = 1.0
    ring[0, 2, 8] = ring[0, 8, 2] = 0.0
    filled = matting.fill_holes(ring)
    assert filled[0, 3:8, 3:8].eq(1).all()
    assert filled[0, 2, 8].item() == 0.0 and filled[0, 8, 2].item() == 0.0
    ring[0, 2, 5] = 0.0
    assert torch.equal(matting.fill_holes(ring), ring)


def test_remove_small_islands_drops_specks_and_their_soft_edge():
    mask = torch.zeros(1, 64, 64)
    mask[0, 10:30, 10:30] = 1.0  # 20x20 blob
    mask[0, 9, 10:30] = 0.4  # its soft edge
    mask[0, 45:48, 45:48] = 1.0  # 3x3 speck
    mask[0, 44, 44:49] = 0.3  # the speck's soft edge
    mask[0, 55:58, 5:8] = 0.2  # faint region with no island: not an island at 0.5
    out = matting.remove_small_islands(mask, min_area_px=50)
    assert out[0, 10:30, 10:30].eq(1).all()
    assert out[0, 9, 10:30].eq(0.4).all()
    assert out[0, 40:50, 40:50].eq(0).all()
    assert out[0, 55:58, 5:8].eq(0.2).all()
    assert torch.equal(matting.remove_small_islands(mask, min_area_px=9), mask)  # 9 px kept
    assert matting.remove_small_islands(mask, min_area_px=10)[0, 46, 46].item() == 0.0


def test_island_area_counts_diagonal_neighbours():
    mask = torch.zeros(1, 20, 20)
    for i in range(6):
        mask[0, 5 + i, 5 + i] = 1.0  # 6 pixels joined only at corners: one island
    assert torch.equal(matting.remove_small_islands(mask, 6), mask)
    assert matting.remove_small_islands(mask, 7).sum().item() == 0.0


# --- foreground estimation ----------------------------------------------------------------

def _hair_scene(size: int = 128):
    """Smooth red foreground with thin strands over a green background; alpha is 1 below."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    fg = torch.stack([0.55 + 0.4 * x, 0.15 * y, 0.1 + 0.1 * x], -1)
    bg = torch.stack([0.1 + 0.1 * y, 0.85 - 0.1 * x, torch.full_like(x, 0.2)], -1)
    strands = ((torch.sin(2 * math.pi * (9 * x + 0.3 * torch.sin(4 * math.pi * y))) + 1) / 2) ** 3
    alpha = torch.where(y > 0.6, torch.ones_like(x), strands * ((y - 0.15) / 0.45).clamp(0, 1))
    image = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    return image[None], alpha[None], fg[None]


@pytest.mark.parametrize("method, min_ratio, max_leak", [
    ("multilevel", 8.0, 0.015), ("blur_fusion", 3.0, 0.04)])
def test_foreground_estimation_removes_the_old_background(method, min_ratio, max_leak):
    image, alpha, true_fg = _hair_scene()
    estimate = matting.estimate_foreground(image, alpha, method=method)
    assert estimate.shape == image.shape and estimate.dtype == image.dtype
    assert torch.isfinite(estimate).all()
    edge = (alpha > 0.05) & (alpha < 0.95)
    assert edge.sum() > 1000
    naive_error = (image - true_fg).abs().mean(-1)[edge].mean()
    error = (estimate - true_fg).abs().mean(-1)[edge].mean()
    assert naive_error / error >= min_ratio

    # Over a new blue background, green from the old one must not bleed through.
    truth = matting.composite(true_fg, alpha, "#0000FF", premultiplied=False)
    naive = matting.composite(image, alpha, "#0000FF", premultiplied=False)
    ours = matting.composite(estimate, alpha, "#0000FF", premultiplied=False)
    naive_leak = (naive - truth)[..., 1][edge].mean()
    leak = (ours - truth)[..., 1][edge].mean()
    assert naive_leak > 0.1
    assert leak.abs() < max_leak

    solid = alpha == 1
    assert (estimate - image).abs()[solid].mean() < 1e-3
    assert (estimate - image).abs()[solid].max() < 0.02


def test_foreground_estimation_handles_batches_and_degenerate_alpha():
    torch.manual_seed(2)
    image = torch.rand(3, 24, 20, 3)
    alpha = torch.stack([torch.zeros(24, 20), torch.ones(24, 20), torch.rand(24, 20)])
    for method in matting.METHODS:
        out = matting.estimate_foreground(image, alpha, method=method)
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
        torch.testing.assert_close(out[1], image[1], atol=1e-3, rtol=0)
        single = matting.estimate_foreground(image[2:], alpha[2:], method=method)
        torch.testing.assert_close(out[2:], single)  # frames are independent
    tiny = matting.estimate_foreground(torch.rand(1, 1, 1, 3), torch.full((1, 1), 0.5))
    assert torch.isfinite(tiny).all()


def test_foreground_estimation_validates_inputs():
    image = torch.rand(1, 16, 16, 3)
    with pytest.raises(InputError, match="same batch size"):
        matting.estimate_foreground(image, torch.rand(1, 16, 15))
    with pytest.raises(InputError, match="method"):
        matting.estimate_foreground(image, torch.rand(1, 16, 16), method="fast")
    with pytest.raises(InputError, match=r"\[B,H,W,3\]"):
        matting.estimate_foreground(torch.rand(1, 16, 16, 4), torch.rand(1, 16, 16))
    with pytest.raises(InputError):
        matting.blur_fusion_foreground(image, torch.rand(1, 16, 16), radii=(0,))


# --- alpha conventions and compositing ----------------------------------------------------

def test_straight_and_premultiplied_agree():
    torch.manual_seed(3)
    fg = torch.rand(2, 12, 10, 3)
    alpha = torch.rand(2, 12, 10)
    background = torch.rand(1, 12, 10, 3)
    straight = matting.composite(fg, alpha, background, premultiplied=False)
    premult = matting.composite(matting.premultiply(fg, alpha), alpha, background,
                                premultiplied=True)
    torch.testing.assert_close(straight, premult)
    by_hand = alpha[..., None] * fg + (1 - alpha[..., None]) * background
    torch.testing.assert_close(straight, by_hand)


def test_composite_over_colours():
    fg = torch.zeros(1, 2, 2, 3)
    fg[..., 0] = 1.0
    alpha = torch.tensor([[[1.0, 0.0], [0.5, 0.25]]])
    out = matting.composite(fg, alpha, "#00FF00", premultiplied=False)
    expected = torch.tensor([[[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
                              [[0.5, 0.5, 0.0], [0.25, 0.75, 0.0]]]])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(matting.composite(fg, alpha, (0.0, 1.0, 0.0), premultiplied=False),
                               expected)
    assert matting.parse_colour("#80ff00") == (128 / 255, 1.0, 0.0)
    for bad in ("#12345", "red", (255, 0, 0), (0.1, 0.2)):
        with pytest.raises(InputError):
            matting.composite(fg, alpha, bad, premultiplied=False)


def test_rgba_and_unpremultiply():
    torch.manual_seed(4)
    fg = torch.rand(1, 8, 8, 3)
    alpha = torch.rand(8, 8)
    alpha[0, 0] = 0.0
    rgba = matting.straight_rgba(fg, alpha)
    assert rgba.shape == (1, 8, 8, 4)
    torch.testing.assert_close(rgba[..., :3], fg)
    torch.testing.assert_close(rgba[..., 3], alpha[None])
    recovered = matting.unpremultiply(matting.premultiply(fg, alpha), alpha)
    visible = alpha[None] > 1e-3
    torch.testing.assert_close(recovered[visible], fg[visible])
    assert recovered[0, 0, 0].eq(0).all()


def test_composite_validates_shapes():
    fg = torch.rand(2, 8, 8, 3)
    alpha = torch.rand(2, 8, 8)
    with pytest.raises(InputError, match="background"):
        matting.composite(fg, alpha, torch.rand(1, 8, 9, 3), premultiplied=False)
    with pytest.raises(InputError, match="background"):
        matting.composite(fg, alpha, torch.rand(3, 8, 8, 3), premultiplied=False)
    with pytest.raises(InputError, match="same batch size"):
        matting.composite(fg, torch.rand(1, 8, 8), "#000000", premultiplied=False)
    with pytest.raises(InputError, match="premultiplied"):
        matting.composite(fg, alpha, "#000000", premultiplied="yes")


# --- input checks -------------------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda m: matting.invert(m), lambda m: matting.threshold(m, 0.5),
    lambda m: matting.choke_spread(m, 2), lambda m: matting.feather(m, 2),
    lambda m: matting.fill_holes(m), lambda m: matting.remove_small_islands(m, 4),
    lambda m: matting.levels(m)])
def test_mask_functions_reject_bad_masks(call):
    with pytest.raises(InputError, match=r"mask must be \[B,H,W\] or \[H,W\], got \[1,3,4,5\]"):
        call(torch.rand(1, 3, 4, 5))
    with pytest.raises(InputError, match="floating-point"):
        call(torch.ones(4, 4, dtype=torch.uint8))
    assert call(torch.rand(6, 5)).shape == (1, 6, 5)


def test_parameter_checks():
    mask = torch.rand(1, 8, 8)
    for bad in (float("inf"), "3", None):
        with pytest.raises(InputError):
            matting.choke_spread(mask, bad)
    with pytest.raises(InputError):
        matting.feather(mask, -1)
    with pytest.raises(InputError):
        matting.remove_small_islands(mask, 2.5)
    with pytest.raises(InputError):
        matting.remove_small_islands(mask, 4, threshold=0.0)
    with pytest.raises(InputError):
        matting.threshold(mask, 1.5)


@pytest.mark.parametrize("method", ["multilevel", "blur_fusion"])
def test_foreground_estimation_refuses_an_empty_batch(method):
    with pytest.raises(InputError, match="batch is empty"):
        matting.estimate_foreground(torch.zeros(0, 8, 8, 3), torch.zeros(0, 8, 8), method=method)
