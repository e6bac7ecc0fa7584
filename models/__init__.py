"""Pure-PyTorch segmentation networks behind one contract, one registry and one loader.

- :mod:`.base`: the contract every network implements (:class:`SegmentationModel`).
- :mod:`.registry`: every network by id, with its role and the keys that recognise its weights.
- :mod:`.loading`: :func:`load_model` for every file we publish or produce.
"""

from .base import SegmentationModel
from .basnet import BASNet
from .birefnet import BiRefNet
from .loading import (build_from_state_dict, detect_family, file_role, inspect_weights, load_model, read_safetensors,
                      save_model)
from .registry import ARCHITECTURES, architectures, build, get_architecture, recognise

__all__ = ["ARCHITECTURES", "BASNet", "BiRefNet", "SegmentationModel", "architectures", "build",
           "build_from_state_dict", "detect_family", "file_role", "get_architecture", "inspect_weights",
           "load_model", "read_safetensors", "recognise", "save_model"]
