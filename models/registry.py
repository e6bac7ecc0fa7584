"""Every network of this package by id: its class, its role, and the keys that recognise its weights.

The ids are those of the weights catalogue's ``architecture`` field and of the ``block`` a
trained file records in its header. Image backbones are a registry of their own
(:data:`.backbones.BACKBONES`): a BiRefNet is one head over any of them, as in timm/smp.
Nodes and the command line derive their lists from here.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from ..errors import InputError, WeightsError
from .base import ROLES, SegmentationModel
from .basnet import BASNet
from .birefnet import BiRefNet
from .hierpr import MeticulousNet
from .hrsod import GLFN, GSN, LRN
from .refinemask import RefineMaskRefiner


@dataclass(frozen=True)
class Architecture:
    """One network. ``signature``: keys only its state dicts have together; ``excludes``: keys
    that rule it out (an LRN has all of a GSN's keys and more). ``roles``: the roles its
    configurations can take (MeticulousNet L predicts, H refines). ``trainable``: whether
    ``train`` can train it."""

    id: str
    model_class: type[SegmentationModel]
    description: str
    roles: tuple[str, ...]
    signature: frozenset[str]
    excludes: frozenset[str] = frozenset()
    trainable: bool = True

    def matches(self, keys: Iterable[str]) -> bool:
        """Whether a state dict with ``keys`` has this architecture's key layout (names only)."""
        keys = set(keys)
        return self.signature <= keys and not self.excludes & keys

    def build(self, config: Mapping | None = None) -> SegmentationModel:
        """A freshly initialised network with constructor arguments ``config``."""
        try:
            return self.model_class(**dict(config or {}))
        except TypeError as err:
            raise InputError(f"bad configuration for {self.id}: {err}") from None


def _arch(id, model_class, description, roles, signature, excludes=(), trainable=True) -> Architecture:
    return Architecture(id, model_class, description, tuple(roles), frozenset(signature), frozenset(excludes),
                        trainable)


ARCHITECTURES: dict[str, Architecture] = {a.id: a for a in (
    _arch("birefnet", BiRefNet, "BiRefNet (bilateral reference) over a Swin v1 or PVT-v2 backbone", ["coarse"],
          ["squeeze_module.0.conv_in.weight", "decoder.conv_out1.0.weight", "decoder.ipt_blk1.conv1.weight"],
          trainable=False),
    _arch("basnet", BASNet, "BASNet (predict and refine)", ["coarse"],
          ["inconv.weight", "convbg_1.weight", "outconvb.weight", "refunet.conv_d0.weight"]),
    _arch("gsn", GSN, "HRSOD Global Semantic Network (VGG-16 FCN, dilated side branches)", ["coarse"],
          ["trunk.blocks.0.0.weight", "score5.score.weight", "up3.deconv.weight"], ["guide8.conv.weight"]),
    _arch("lrn", LRN, "HRSOD Local Refinement Network (VGG-16 FCN guided at strides 8 and 4)", ["refiner"],
          ["trunk.blocks.0.0.weight", "score5.score.weight", "guide8.conv.weight"]),
    _arch("glfn", GLFN, "HRSOD Global-Local Fusion Network (dense, growth 2, dilations 1/6/12/18)", ["fusion"],
          ["dense.0.conv1.weight", "final.weight", "branches.0.weight"]),
    _arch("hierpr", MeticulousNet, "MeticulousNet (HierPR point-wise refinement, recursive decoder)",
          ["refiner", "coarse"], ["d8_init.0.weight", "mask_encoder.encode.0.0.weight", "s2.points.predictor.weight"]),
    _arch("refinemask", RefineMaskRefiner, "RefineMask-style stage-wise refiner with boundary-aware updates",
          ["refiner"], ["stem.0.weight", "stages.0.mask_logits.weight", "final_logits.2.weight"]),
)}


def get_architecture(architecture: str) -> Architecture:
    """The registered architecture ``architecture``; ``InputError`` naming the known ids otherwise."""
    if architecture not in ARCHITECTURES:
        raise InputError(f"unknown architecture {architecture!r}; expected one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[architecture]


def architectures(*, role: str | None = None, trainable: bool | None = None) -> list[Architecture]:
    """Registered architectures, optionally those that can take ``role`` or can be trained."""
    if role is not None and role not in ROLES:
        raise InputError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return [a for a in ARCHITECTURES.values()
            if (role is None or role in a.roles) and (trainable is None or a.trainable == trainable)]


def trainable_ids() -> list[str]:
    """Ids that ``train`` accepts, in registry order."""
    return [a.id for a in architectures(trainable=True)]


def build(architecture: str, config: Mapping | None = None) -> SegmentationModel:
    """A freshly initialised ``architecture`` with constructor arguments ``config``."""
    return get_architecture(architecture).build(config)


def recognise(keys: Iterable[str]) -> Architecture:
    """The architecture whose key signature ``keys`` (a state dict's key names) has.

    ``WeightsError`` naming what was found when none or several match.
    """
    keys = list(keys)
    found = [a for a in ARCHITECTURES.values() if a.matches(keys)]
    if len(found) == 1:
        return found[0]
    sample = ", ".join(keys[:4]) or "no tensors at all"
    if found:
        raise WeightsError(f"these weights fit several architectures ({', '.join(a.id for a in found)}); "
                           f"a file trained with this package records which one in its header")
    raise WeightsError(
        f"not a BiRefNet or BASNet state dict, nor a network trained with this package (whose header "
        f"names it): expected BiRefNet's keys under 'bb.', 'squeeze_module.' and 'decoder.' or BASNet's "
        f"'inconv.', 'convbg_1.', 'refunet.'; found {sample}")


def role_of(architecture: str, config: Mapping | None = None) -> str:
    """The role of ``architecture`` built with ``config`` (built on the meta device: no memory)."""
    spec = get_architecture(architecture)
    if len(spec.roles) == 1:
        return spec.roles[0]
    with torch.device("meta"):
        return spec.build(config).role
