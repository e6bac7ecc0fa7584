"""Image backbones: known configurations by name, and recognition from weights alone.

Every backbone maps ``[B,3,H,W]`` to four NCHW feature maps at strides 4/8/16/32 (H and W
multiples of 32). ``BACKBONES[name].channels`` gives their widths.
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from math import isqrt

from torch import Tensor, nn

from ...errors import InputError, WeightsError
from .pvt_v2 import PvtV2Config, PyramidVisionTransformerV2
from .swin import SwinConfig, SwinTransformer

__all__ = ["BACKBONES", "BackboneSpec", "build_backbone", "detect_backbone"]


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    architecture: type[nn.Module]
    config: SwinConfig | PvtV2Config

    @property
    def channels(self) -> tuple[int, int, int, int]:
        """Output widths at strides 4/8/16/32."""
        return self.config.channels

    def build(self) -> nn.Module:
        return self.architecture(self.config)


def _swin(name: str, dim: int, depths: tuple, heads: tuple, window: int) -> BackboneSpec:
    return BackboneSpec(name, SwinTransformer, SwinConfig(dim, depths, heads, window))


def _pvt(name: str, dims: tuple, depths: tuple, mlp_ratios: tuple) -> BackboneSpec:
    return BackboneSpec(name, PyramidVisionTransformerV2, PvtV2Config(dims, depths, mlp_ratios))


BACKBONES: dict[str, BackboneSpec] = {spec.name: spec for spec in (
    _swin("swin_v1_t", 96, (2, 2, 6, 2), (3, 6, 12, 24), 7),
    _swin("swin_v1_s", 96, (2, 2, 18, 2), (3, 6, 12, 24), 7),
    _swin("swin_v1_b", 128, (2, 2, 18, 2), (4, 8, 16, 32), 12),
    _swin("swin_v1_l", 192, (2, 2, 18, 2), (6, 12, 24, 48), 12),
    _pvt("pvt_v2_b0", (32, 64, 160, 256), (2, 2, 2, 2), (8, 8, 4, 4)),
    _pvt("pvt_v2_b1", (64, 128, 320, 512), (2, 2, 2, 2), (8, 8, 4, 4)),
    _pvt("pvt_v2_b2", (64, 128, 320, 512), (3, 4, 6, 3), (8, 8, 4, 4)),
    _pvt("pvt_v2_b5", (64, 128, 320, 512), (3, 6, 40, 3), (4, 4, 4, 4)),
)}


def build_backbone(name: str) -> nn.Module:
    """The backbone ``name`` (a key of :data:`BACKBONES`) with untrained weights."""
    if name not in BACKBONES:
        raise InputError(f"unknown backbone {name!r}; known backbones: {', '.join(BACKBONES)}")
    return BACKBONES[name].build()


def _depth(keys: Iterable[str], stem: str) -> int:
    """How many children ``{stem}.0``, ``{stem}.1``, ... have keys."""
    pattern = re.compile(re.escape(stem) + r"\.(\d+)\.")
    return len({m.group(1) for key in keys if (m := pattern.match(key))})


def _read_swin(sd: Mapping[str, Tensor], p: str) -> SwinConfig:
    tables = [sd[f"{p}layers.{i}.blocks.0.attn.relative_position_bias_table"].shape
              for i in range(4)]
    return SwinConfig(
        embed_dim=sd[f"{p}patch_embed.proj.weight"].shape[0],
        depths=tuple(_depth(sd, f"{p}layers.{i}.blocks") for i in range(4)),
        num_heads=tuple(shape[1] for shape in tables),
        window_size=(isqrt(tables[0][0]) + 1) // 2)  # the table has (2w-1)² rows


def _read_pvt_v2(sd: Mapping[str, Tensor], p: str) -> PvtV2Config:
    dims = tuple(sd[f"{p}patch_embed{i}.proj.weight"].shape[0] for i in range(1, 5))
    sr = [sd.get(f"{p}block{i}.0.attn.sr.weight") for i in range(1, 5)]
    # Head counts leave no trace in the weights; every PVT-v2 uses the config default.
    return PvtV2Config(
        embed_dims=dims,
        depths=tuple(_depth(sd, f"{p}block{i}") for i in range(1, 5)),
        mlp_ratios=tuple(sd[f"{p}block{i}.0.mlp.fc1.weight"].shape[0] // dim
                         for i, dim in enumerate(dims, start=1)),
        sr_ratios=tuple(1 if w is None else w.shape[-1] for w in sr))


def detect_backbone(state_dict: Mapping[str, Tensor], prefix: str = "bb.") -> str:
    """Name of the backbone whose weights sit under ``prefix`` in ``state_dict``.

    Reads shapes only (any device or dtype, ``meta`` included): widths, block counts,
    head counts, window and MLP sizes must all match a known configuration.
    Raises ``WeightsError`` naming what was found and what was expected otherwise.
    """
    if f"{prefix}patch_embed.proj.weight" in state_dict:
        family, read = "Swin v1", _read_swin
    elif f"{prefix}patch_embed1.proj.weight" in state_dict:
        family, read = "PVT-v2", _read_pvt_v2
    else:
        sample = ", ".join(list(state_dict)[:3]) or "none"
        raise WeightsError(
            f"no known backbone in these weights: expected '{prefix}patch_embed.proj.weight' "
            f"(Swin v1) or '{prefix}patch_embed1.proj.weight' (PVT-v2); first keys found: "
            f"{sample}. Use a BiRefNet checkpoint with a Swin v1 or PVT-v2 backbone.")
    try:
        config = read(state_dict, prefix)
    except KeyError as err:
        raise WeightsError(f"incomplete {family} backbone weights: key {err} is missing") from None
    for spec in BACKBONES.values():
        if spec.config == config:
            return spec.name
    known = "; ".join(f"{spec.name}: {spec.config}" for spec in BACKBONES.values()
                      if isinstance(spec.config, type(config)))
    raise WeightsError(
        f"{family} backbone weights with an unknown configuration: found {config}; "
        f"known configurations are {known}")
