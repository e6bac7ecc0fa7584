"""Alpha conventions and compositing.

*Straight* (unassociated) colour is the object's own colour, independent of alpha; it is what
an RGBA file stores. *Premultiplied* (associated) colour is ``colour * alpha``; it is what
"over" adds to ``(1 - alpha) * background``. Mixing the two up darkens edges twice or leaves
a fringe, so every function here says which one it takes and returns.
"""

import torch
from torch import Tensor

from ..checks import as_mask, check_image, check_number, check_pair
from ..errors import InputError

Colour = str | tuple[float, float, float] | list[float]


def straight_rgba(foreground: Tensor, alpha: Tensor) -> Tensor:
    """Straight RGBA ``[B,H,W,4]`` from straight colour ``[B,H,W,3]`` and alpha ``[B,H,W]``."""
    foreground, alpha = _checked(foreground, alpha, "foreground")
    return torch.cat([foreground, alpha.to(foreground.dtype).unsqueeze(-1)], dim=-1)


def premultiply(foreground: Tensor, alpha: Tensor) -> Tensor:
    """Premultiplied colour ``[B,H,W,3]`` = straight colour ``[B,H,W,3]`` * alpha ``[B,H,W]``."""
    foreground, alpha = _checked(foreground, alpha, "foreground")
    return foreground * alpha.to(foreground.dtype).unsqueeze(-1)


def unpremultiply(premultiplied: Tensor, alpha: Tensor, eps: float = 1e-4) -> Tensor:
    """Straight colour ``[B,H,W,3]`` from premultiplied colour and alpha, clipped to 0..1.

    Where ``alpha <= eps`` no colour survives premultiplication; those pixels return 0 rather
    than amplified noise.
    """
    premultiplied, alpha = _checked(premultiplied, alpha, "premultiplied")
    eps = check_number(eps, "eps", minimum=0.0)
    alpha = alpha.to(premultiplied.dtype).unsqueeze(-1)
    straight = (premultiplied / alpha.clamp(min=max(eps, torch.finfo(alpha.dtype).tiny)))
    return torch.where(alpha > eps, straight.clamp(0.0, 1.0), torch.zeros_like(straight))


def composite(foreground: Tensor, alpha: Tensor, background: Tensor | Colour, *,
              premultiplied: bool) -> Tensor:
    """``foreground`` over ``background``, ``[B,H,W,3]``, clipped to 0..1.

    ``foreground`` ``[B,H,W,3]`` holds premultiplied colour when ``premultiplied`` is true,
    straight colour otherwise; ``alpha`` is ``[B,H,W]``. ``background`` is a colour (``"#RRGGBB"``
    or three floats in 0..1) or an image ``[B,H,W,3]`` / ``[1,H,W,3]`` of the same size (a
    single frame is used behind every frame).
    """
    if not isinstance(premultiplied, bool):
        raise InputError(f"premultiplied must be True or False, got {premultiplied!r}")
    foreground, alpha = _checked(foreground, alpha, "foreground")
    alpha = alpha.to(foreground.dtype).unsqueeze(-1)
    back = _background(background, foreground)
    front = foreground if premultiplied else foreground * alpha
    return (front + (1.0 - alpha) * back).clamp_(0.0, 1.0)


def parse_colour(colour: Colour) -> tuple[float, float, float]:
    """``"#RRGGBB"`` / ``"RRGGBB"`` or three numbers in 0..1 -> ``(r, g, b)`` in 0..1."""
    if isinstance(colour, str):
        digits = colour.strip().removeprefix("#")
        if len(digits) != 6 or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise InputError(f"colour must be a hex string like '#1A2B3C', got {colour!r}")
        return tuple(int(digits[i:i + 2], 16) / 255.0 for i in (0, 2, 4))
    if not isinstance(colour, (tuple, list)) or len(colour) != 3:
        raise InputError(
            f"colour must be '#RRGGBB' or three numbers in 0..1, got {colour!r}")
    return tuple(check_number(c, "each colour component (0..1; use '#RRGGBB' for 0..255)",
                              minimum=0.0, maximum=1.0) for c in colour)


def _checked(colour: Tensor, alpha: Tensor, name: str) -> tuple[Tensor, Tensor]:
    colour = check_image(colour, name)
    alpha = as_mask(alpha, "alpha")
    check_pair(colour, alpha, name, "alpha")
    return colour, alpha


def _background(background: Tensor | Colour, like: Tensor) -> Tensor:
    """Background as a tensor broadcastable to ``like`` ``[B,H,W,3]``."""
    if not isinstance(background, Tensor):
        return torch.tensor(parse_colour(background), dtype=like.dtype, device=like.device)
    background = check_image(background, "background")
    frames = background.shape[0]
    if background.shape[1:3] != like.shape[1:3] or frames not in (1, like.shape[0]):
        raise InputError(
            f"background [{','.join(map(str, background.shape))}] must be [1,H,W,3] or "
            f"[B,H,W,3] with the foreground's size [{','.join(map(str, like.shape))}]; "
            f"resize or crop it first")
    return background.to(device=like.device, dtype=like.dtype)
