"""Motion-gated smoothing of segmentation logits across video frames.

Predicting every frame on its own makes masks flicker: sensor noise and compression change the
logits a little from frame to frame even where nothing moves. The stabiliser averages logits over
time only where the picture is still, and lets them follow the current frame wherever it moves.

For frame ``t`` with logits ``z_t`` at the prediction's resolution ``(h, w)``::

    Y_t = box3(box3(resize(frame_t, (h, w))))           RGB; 3x3 box twice ≈ Gaussian σ 1.15 px
    d_t = mean_c |Y_t - Y_{t-1}|                         frame difference, [h, w]
    τ_t = clamp(4 · median(d_t), 2/255, 10/255)          the frame's own noise level
    m_t = clamp(d_t / τ_t - 1, 0, 1)                     0 below τ, 1 from 2τ on
    g_t = avgpool_k(maxpool_k(m_t)),  k = 2·max(1, round(max(h, w) / 128)) + 1
    a   = s·L / (1 + s·L),  L = 15 frames                s = strength in 0..1
    ẑ_t = z_t + a·(1 - g_t)·(ẑ_{t-1} - z_t)

Normalising the difference by the median keeps the gate closed on sensor noise of any level
while most of the frame is still; the clamp keeps a noisy or fast-panning video from raising the
threshold above real object edges. ``g`` never falls below ``m`` (every window of the average
lies inside the max-pool of its centre), so moving pixels are always released, and the dilation
also releases the few pixels around a moving edge whose difference is diluted by the blur.
Where ``g = 1`` the output is exactly ``z_t``: a moving object is followed without lag. In
still regions the filter is an exponential moving average whose mean delay is ``s·L`` frames.
"""

from dataclasses import dataclass, replace
from typing import Hashable

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..inference.images import resize_images

MEMORY_FRAMES = 15
NOISE_FACTOR = 4.0
THRESHOLD_RANGE = (2 / 255, 10 / 255)


@dataclass(frozen=True)
class TemporalState:
    """What the stabiliser carries from one chunk of a video to the next.

    A ComfyUI node keeps one per node id, so a video split into chunks by VideoHelperSuite's
    meta-batch manager is smoothed as if it had arrived in one piece. ``source`` is whatever the
    caller uses to tell videos apart (e.g. the loader's path and settings); a state is only
    continued for the same source, image size and logits resolution.
    """

    source: Hashable
    image_size: tuple[int, int]
    frame: torch.Tensor   # [1,3,h,w] blurred last frame at the logits resolution
    logits: torch.Tensor  # [1,1,h,w] smoothed logits of the last frame

    def continues(self, source: Hashable, image_size: tuple[int, int],
                  logits_size: tuple[int, int]) -> bool:
        return (self.source == source and tuple(self.image_size) == tuple(image_size)
                and tuple(self.logits.shape[-2:]) == tuple(logits_size))

    def to(self, device: torch.device | str) -> "TemporalState":
        return replace(self, frame=self.frame.to(device), logits=self.logits.to(device))


def retention(strength: float) -> float:
    """The weight ``a`` of the previous smoothed logits in a still region (0 for strength 0)."""
    if not 0.0 <= strength <= 1.0:
        raise InputError(f"temporal smoothing must be between 0 and 1, got {strength}")
    memory = strength * MEMORY_FRAMES
    return memory / (1.0 + memory)


def _box(x: torch.Tensor, radius: int, pool=F.avg_pool2d, **options) -> torch.Tensor:
    """A ``(2·radius+1)²`` box filter (mean or max) as a row pass then a column pass."""
    x = pool(x, (1, 2 * radius + 1), stride=1, padding=(0, radius), **options)
    return pool(x, (2 * radius + 1, 1), stride=1, padding=(radius, 0), **options)


def _box_blur(x: torch.Tensor) -> torch.Tensor:
    # Pooling instead of a Gaussian convolution: CPU convolution kernels choose their algorithm
    # by batch size, so chunked and whole-video runs would differ in the last bits.
    for _ in range(2):
        x = _box(x, 1, count_include_pad=False)
    return x


def gate_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[n,H,W,3]`` frames -> ``[n,3,h,w]`` blurred frames at the logits size, for the gate."""
    return _box_blur(resize_images(frames.float(), size))


def motion_gate(frames: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Gate ``g`` ``[n,1,h,w]`` in 0..1 (1 = moving) of blurred ``frames`` ``[n,3,h,w]``.

    ``previous`` ``[1,3,h,w]`` is the blurred frame before the first one.
    """
    before = torch.cat([previous, frames[:-1]])
    difference = (frames - before).abs().mean(dim=1, keepdim=True)
    noise = difference.flatten(1).median(dim=1).values.view(-1, 1, 1, 1)
    threshold = (NOISE_FACTOR * noise).clamp(*THRESHOLD_RANGE)
    moving = (difference / threshold - 1.0).clamp(0.0, 1.0)
    radius = max(1, round(max(frames.shape[-2:]) / 128))
    return _box(_box(moving, radius, F.max_pool2d), radius, count_include_pad=False)


def stabilise(logits: torch.Tensor, frames: torch.Tensor, strength: float,
              state: TemporalState | None = None,
              source: Hashable = None) -> tuple[torch.Tensor, TemporalState]:
    """Smooth ``logits`` ``[n,1,h,w]`` of consecutive ``frames`` ``[n,H,W,3]`` (same device).

    Continues from ``state`` when it belongs to the same ``source`` and sizes, else starts
    afresh (the first frame passes unchanged). Returns the smoothed logits and the state after
    the last frame; ``state`` itself is never modified, so an interrupted run leaves it intact.
    With ``strength`` 0 the logits are returned as they are.
    """
    keep = retention(strength)
    if logits.ndim != 4 or logits.shape[1] != 1 or logits.shape[0] != frames.shape[0]:
        raise InputError(f"logits {list(logits.shape)} do not match frames {list(frames.shape)}")
    image_size, size = tuple(frames.shape[1:3]), tuple(logits.shape[-2:])
    if state is not None and not state.continues(source, image_size, size):
        state = None
    if keep == 0.0:
        return logits, TemporalState(source, image_size, gate_frames(frames[-1:], size),
                                     logits[-1:].clone())
    blurred = gate_frames(frames, size)
    if state is None:
        # Compared with itself the first frame is still everywhere, and lerp(z, z, w) == z.
        state = TemporalState(source, image_size, blurred[:1], logits[:1])
    weights = keep * (1.0 - motion_gate(blurred, state.frame.to(blurred)))
    smoothed = torch.empty_like(logits)
    previous = state.logits.to(logits)
    for index in range(len(logits)):
        previous = torch.lerp(logits[index:index + 1], previous, weights[index:index + 1])
        smoothed[index:index + 1] = previous
    # Copies, so the state does not keep the whole chunk alive.
    return smoothed, TemporalState(source, image_size, blurred[-1:].clone(), smoothed[-1:].clone())
