"""Pure-PyTorch segmentation networks and their weight loading."""

from .basnet import BASNet
from .birefnet import BiRefNet
from .loading import build_from_state_dict, detect_family, load_model, read_safetensors

__all__ = ["BASNet", "BiRefNet", "build_from_state_dict", "detect_family", "load_model", "read_safetensors"]
