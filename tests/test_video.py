"""Video matting: chunked streaming, memory bounds, temporal stabilisation."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from comfyui_meticulous.errors import InputError
from comfyui_meticulous.inference import predict_logits
from comfyui_meticulous.inference.images import IMAGENET_MEAN, IMAGENET_STD
from comfyui_meticulous.video import TemporalState, batch_size_for, matte_video, model_runner, retention, stabilise
from comfyui_meticulous.models.base import SegmentationModel

pytestmark = pytest.mark.usefixtures("single_thread")


class PoolNet(SegmentationModel):
    """A small deterministic network built only from batch-invariant operations.

    CPU convolutions are not batch-invariant: oneDNN picks its algorithm by batch size (torch
    2.13, e.g. a 3->8 3x3 conv on 64x64 differs by ~6e-6 between batch 1 and batch 2), so a
    conv net cannot show "same numbers" for different chunk sizes. Pooling, bilinear resizing
    and elementwise arithmetic compute each frame on its own and are exact.
    """

    native_resolution = (32, 32)
    size_multiple = 16
    input_normalisation = "imagenet"

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(7)
        self.weight = nn.Parameter(torch.randn(3, 3, generator=generator))
        self.bias = nn.Parameter(torch.randn(3, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scales = [x, F.avg_pool2d(x, 3, 1, 1), F.max_pool2d(x, 5, 1, 2)]
        logits = 0.0
        for row, feature in zip(range(3), scales):
            mixed = sum(self.weight[row, c] * feature[:, c:c + 1] for c in range(3))
            logits = logits + torch.tanh(mixed + self.bias[row])
        return 2.0 * logits


class Redness(SegmentationModel):
    """Stand-in segmenter: logits grow with how red a pixel is (elementwise, so noise leaks in).

    The synthetic scene's background sits a little below the threshold, so sensor noise makes
    its soft mask flicker the way a real network's does; the red object is well above it.
    """

    native_resolution = (64, 64)
    size_multiple = 16
    input_normalisation = "imagenet"
    threshold = 0.3

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(20.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, g, b = (x[:, c:c + 1] * IMAGENET_STD[c] + IMAGENET_MEAN[c] for c in range(3))
        return self.gain * (r - (g + b) / 2 - self.threshold)


def synthetic_video(frames=40, height=128, width=128, noise=0.03, radius=14, seed=0):
    """A static textured scene with sensor noise and a red disc moving across it.

    Returns frames ``[T,H,W,3]``, the disc's true masks ``[T,H,W]`` (bool) and the static
    region ``[H,W]`` (bool): pixels at least 8 px away from every position of the disc.
    """
    generator = torch.Generator().manual_seed(seed)

    def texture(low, high):
        coarse = torch.rand(1, 1, height // 16, width // 16, generator=generator)
        field = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[0, 0]
        field = (field - field.min()) / (field.max() - field.min())
        return low + (high - low) * field

    grey, red = texture(0.35, 0.65), texture(0.05, 0.25)
    background = torch.stack([grey + red, grey, grey], dim=-1)
    y, x = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    video, truth = [], []
    for t in range(frames):
        cx = 20 + (width - 40) * t / (frames - 1)
        cy = height / 2 + 12 * torch.sin(torch.tensor(t / 6)).item()
        disc = (x - cx) ** 2 + (y - cy) ** 2 <= radius ** 2
        frame = torch.where(disc[..., None], torch.tensor([0.85, 0.25, 0.25]), background)
        video.append((frame + noise * torch.randn(height, width, 3, generator=generator)).clamp(0, 1))
        truth.append(disc)
    truth = torch.stack(truth)
    near = F.max_pool2d(truth.any(0).float()[None, None], 17, stride=1, padding=8)[0, 0] > 0
    return torch.stack(video), truth, ~near


def _iou(masks, truth):
    predicted = masks > 0.5
    return (predicted & truth).flatten(1).sum(1) / (predicted | truth).flatten(1).sum(1)


def _static_change(masks, static):
    return (masks[1:] - masks[:-1]).abs()[:, static].mean().item()


def test_stabiliser_removes_flicker_and_keeps_up_with_motion():
    frames, truth, static = synthetic_video()
    run = model_runner(Redness())
    raw = matte_video(frames, run, device="cpu", temporal_smoothing=0.0).masks
    smooth = matte_video(frames, run, device="cpu", temporal_smoothing=0.5).masks

    raw_change, smooth_change = _static_change(raw, static), _static_change(smooth, static)
    assert raw_change > 0.005, "the synthetic scene must flicker without smoothing"
    assert raw_change / smooth_change >= 5.0, (raw_change, smooth_change)

    raw_iou, smooth_iou = _iou(raw, truth), _iou(smooth, truth)
    assert raw_iou.min() > 0.85
    assert (smooth_iou >= raw_iou - 0.01).all(), (smooth_iou - raw_iou).min().item()

    # The gate is what keeps up: the same smoothing without it drags the mask behind the disc.
    logits = predict_logits(Redness(), frames).logits
    keep, plain = retention(0.5), [logits[:1]]
    for frame_logits in logits[1:]:
        plain.append(torch.lerp(frame_logits[None], plain[-1], keep))
    plain_masks = torch.sigmoid(F.interpolate(torch.cat(plain), size=frames.shape[1:3],
                                              mode="bilinear", align_corners=False))[:, 0]
    assert (_iou(plain_masks, truth) < raw_iou - 0.05).any()


def test_zero_strength_is_exact_passthrough():
    frames, _, _ = synthetic_video(frames=6, height=64, width=64)
    logits = torch.randn(6, 1, 32, 32)
    smoothed, state = stabilise(logits, frames, 0.0)
    assert smoothed is logits
    assert torch.equal(state.logits, logits[-1:])
    assert retention(0.0) == 0.0
    with pytest.raises(InputError):
        retention(1.5)


@pytest.mark.parametrize("batch_size", [2, 3, 10, 0])
def test_batched_equals_per_frame(batch_size):
    generator = torch.Generator().manual_seed(3)
    frames = torch.rand(10, 48, 64, 3, generator=generator)
    run = model_runner(PoolNet())
    single = matte_video(frames, run, device="cpu", batch_size=1)
    batched = matte_video(frames, run, device="cpu", batch_size=batch_size)
    assert torch.equal(batched.masks, single.masks)
    assert torch.equal(batched.rgba, single.rgba)
    assert torch.equal(batched.rgba[..., :3], frames)
    assert torch.equal(batched.rgba[..., 3], batched.masks)
    alone = [matte_video(frames[i:i + 1], run, device="cpu").masks for i in range(len(frames))]
    assert torch.equal(torch.cat(alone), batched.masks)


def test_state_carries_across_executions_and_resets():
    frames, _, _ = synthetic_video(frames=12, height=64, width=64)
    run = model_runner(Redness())
    whole = matte_video(frames, run, device="cpu", temporal_smoothing=0.5, source="clip")
    first = matte_video(frames[:5], run, device="cpu", temporal_smoothing=0.5, source="clip")
    second = matte_video(frames[5:], run, device="cpu", temporal_smoothing=0.5,
                         state=first.state, source="clip")
    assert torch.equal(torch.cat([first.masks, second.masks]), whole.masks)
    assert torch.equal(second.state.logits, whole.state.logits)
    raw = matte_video(frames, run, device="cpu")
    assert not torch.equal(raw.masks, whole.masks), "smoothing must have changed something"

    fresh = matte_video(frames[5:], run, device="cpu", temporal_smoothing=0.5, source="clip")
    other_source = matte_video(frames[5:], run, device="cpu", temporal_smoothing=0.5,
                               state=first.state, source="another clip")
    assert torch.equal(other_source.masks, fresh.masks)
    assert not torch.equal(second.masks, fresh.masks)

    smaller = frames[:4, :48, :48]
    resized = matte_video(smaller, run, device="cpu", temporal_smoothing=0.5,
                          state=first.state, source="clip")
    assert torch.equal(resized.masks, matte_video(smaller, run, device="cpu",
                                                  temporal_smoothing=0.5, source="clip").masks)
    other_resolution = model_runner(Redness(), resolution=32)
    rerun = matte_video(frames[5:], other_resolution, device="cpu", temporal_smoothing=0.5,
                        state=first.state, source="clip")
    assert torch.equal(rerun.masks, matte_video(frames[5:], other_resolution, device="cpu",
                                                temporal_smoothing=0.5, source="clip").masks)


def test_out_of_memory_halves_the_chunk_once():
    frames = torch.rand(10, 32, 32, 3, generator=torch.Generator().manual_seed(1))
    model_run = model_runner(PoolNet())
    sizes = []

    def run_limited(limit):
        def run(chunk):
            sizes.append(len(chunk))
            if len(chunk) > limit:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return model_run(chunk)
        return run

    reference = matte_video(frames, model_run, device="cpu", batch_size=1)
    result = matte_video(frames, run_limited(4), device="cpu", batch_size=8)
    assert sizes == [8, 4, 4, 2]
    assert torch.equal(result.masks, reference.masks)

    sizes.clear()
    with pytest.raises(InputError, match="out of memory"):
        matte_video(frames, run_limited(2), device="cpu", batch_size=8)
    assert sizes == [8, 4]


def test_batch_size_from_free_memory():
    assert batch_size_for(free_bytes=10 * 2**30, frame_bytes=2**30) == 7
    assert batch_size_for(free_bytes=2**20, frame_bytes=2**30) == 1
    assert batch_size_for(free_bytes=2**40, frame_bytes=2**20) == 32


def test_single_frame():
    run = model_runner(PoolNet())
    frame = torch.rand(1, 40, 56, 3)
    result = matte_video(frame, run, device="cpu", temporal_smoothing=0.5)
    assert result.masks.shape == (1, 40, 56) and result.rgba.shape == (1, 40, 56, 4)
    bare = matte_video(frame[0], run, device="cpu")
    assert torch.equal(bare.masks, result.masks)
    rgba_input = matte_video(torch.cat([frame, torch.ones(1, 40, 56, 1)], -1), run, device="cpu")
    assert torch.equal(rgba_input.rgba[..., :3], frame)
    with pytest.raises(InputError):
        matte_video(torch.rand(0, 8, 8, 3), run, device="cpu")


def test_interruption_leaves_state_intact():
    frames, _, _ = synthetic_video(frames=12, height=64, width=64)
    run = model_runner(Redness())
    first = matte_video(frames[:4], run, device="cpu", temporal_smoothing=0.5)
    saved = TemporalState(first.state.source, first.state.image_size,
                          first.state.frame.clone(), first.state.logits.clone())
    calls = []

    def interrupt(done, total):
        calls.append(done)
        if len(calls) == 2:
            raise KeyboardInterrupt("stopped by the user")

    with pytest.raises(KeyboardInterrupt):
        matte_video(frames[4:], run, device="cpu", batch_size=4, temporal_smoothing=0.5, state=first.state,
                    progress=interrupt)
    assert calls == [4, 8]
    assert torch.equal(first.state.frame, saved.frame)
    assert torch.equal(first.state.logits, saved.logits)
    resumed = matte_video(frames[4:], run, device="cpu", temporal_smoothing=0.5, state=first.state)
    whole = matte_video(frames, run, device="cpu", temporal_smoothing=0.5)
    assert torch.equal(resumed.masks, whole.masks[4:])


MEMORY_PROBE = textwrap.dedent("""
    import gc, json, os, sys
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from test_video import PoolNet
    from comfyui_meticulous.video import matte_video, model_runner

    PAGE = os.sysconf("SC_PAGE_SIZE")

    def resident():
        return int(open("/proc/self/statm").read().split()[1]) * PAGE

    def peak():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

    torch.manual_seed(0)
    scene = torch.rand(1, 48, 64, 3)
    frames = (scene + 0.03 * torch.randn(1000, 48, 64, 3)).clamp(0, 1)
    run = model_runner(PoolNet())
    matte_video(frames[:16], run, device="cpu", temporal_smoothing=0.5)
    report = {{}}
    for count in (250, 1000):
        gc.collect()
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets the peak resident size to the current one
        before = resident()
        result = matte_video(frames[:count], run, device="cpu", temporal_smoothing=0.5)
        report[count] = {{"growth": peak() - before,
                         "outputs": result.masks.nbytes + result.rgba.nbytes}}
        del result
    print(json.dumps(report))
""")


def test_host_memory_does_not_grow_with_frames():
    script = MEMORY_PROBE.format(tests=str(Path(__file__).parent))
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    excess = {count: r["growth"] - r["outputs"] for count, r in report.items()}
    # 1000 frames of outputs are 61 MB; a second copy of even the masks alone would be 12 MB.
    assert report["1000"]["outputs"] == 1000 * 48 * 64 * 5 * 4
    assert max(excess.values()) < 4 * 2**20, excess
    assert excess["1000"] - excess["250"] < 2**20, excess
