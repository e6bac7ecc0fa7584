"""Everything the nodes use from ComfyUI, in one module.

The rest of the pack reaches ComfyUI only through the names below, so this list is the whole
surface a ComfyUI release must provide (and the test stand-in in ``tests/comfy_standin``
imitates):

* ``comfy_api.latest``: ``ComfyExtension``, ``io`` (``ComfyNode`` and its ``hidden``,
  ``Schema``, ``NodeOutput``, ``Hidden.unique_id``, ``Image``, ``Mask``, ``Int``, ``Float``,
  ``Boolean``, ``String``, ``Combo``, ``Custom``)
* ``comfy.model_management``: ``get_torch_device``, ``unet_offload_device``,
  ``intermediate_device``, ``get_free_memory``, ``is_device_cpu``, ``is_device_mps``,
  ``should_use_bf16``, ``should_use_fp16``, ``load_models_gpu``,
  ``throw_exception_if_processing_interrupted``
* ``comfy.model_patcher``: ``ModelPatcher``
* ``comfy.utils``: ``ProgressBar``
* ``folder_paths``: what ``model_folders.register_model_folders`` uses, plus
  ``get_filename_list`` and ``get_full_path_or_raise``

Model folders are registered by :mod:`.model_folders`, which imports ``folder_paths`` itself.
"""

from collections.abc import Callable

import comfy.model_management as model_management
import comfy.model_patcher
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import ComfyExtension, io
from torch import nn

from ..inference.device import PRECISIONS
from .model_folders import FOLDER_KEY

PRECISION_OPTIONS = ["auto", *PRECISIONS]


def compute_device() -> torch.device:
    """Where ComfyUI runs models and where mask tools do their work."""
    return model_management.get_torch_device()


def output_device() -> torch.device:
    """Where node outputs live between nodes (the CPU unless ComfyUI runs with ``--gpu-only``)."""
    return model_management.intermediate_device()


def free_memory(device: torch.device) -> int:
    """Bytes ComfyUI reports free on ``device``."""
    return model_management.get_free_memory(device)


def is_cpu(device: torch.device) -> bool:
    return model_management.is_device_cpu(device)


def is_cpu_like(device: torch.device) -> bool:
    """CPU or Apple MPS: devices where half precision is slow or inaccurate."""
    return is_cpu(device) or model_management.is_device_mps(device)


def model_dtype(device: torch.device, precision: str) -> torch.dtype:
    """The weight dtype for ``precision`` on ``device``.

    ``auto``: bf16 where ComfyUI says the GPU supports it, else fp16 where ComfyUI says it is
    safe, else fp32; always fp32 on the CPU and MPS (ComfyUI calls fp16 usable on MPS, but the
    networks' attention and normalisation lose accuracy there). Forced values are used as given.
    """
    if precision != "auto":
        return PRECISIONS[precision]
    if is_cpu_like(device):
        return torch.float32
    if model_management.should_use_bf16(device):
        return torch.bfloat16
    if model_management.should_use_fp16(device):
        return torch.float16
    return torch.float32


def model_files() -> list[str]:
    """Weight files in the ``models/meticulous`` folders (extra_model_paths.yaml included)."""
    return folder_paths.get_filename_list(FOLDER_KEY)


def model_file_path(name: str) -> str:
    """Full path of a file listed by :func:`model_files`."""
    return folder_paths.get_full_path_or_raise(FOLDER_KEY, name)


def wrap_model(module: nn.Module) -> "comfy.model_patcher.ModelPatcher":
    """A ModelPatcher for ``module``: ComfyUI moves it to its device when a node needs it and to
    the offload device when memory is needed elsewhere, and "unload models" frees it."""
    return comfy.model_patcher.ModelPatcher(module, load_device=model_management.get_torch_device(),
                                            offload_device=model_management.unet_offload_device())


def load_for_inference(patcher, memory_required: int) -> nn.Module:
    """Ask ComfyUI to put the model on its device, freeing ``memory_required`` bytes beside it.

    The load is always full: the networks are plain torch modules whose layers cannot be
    streamed from host memory the way ComfyUI's own low-VRAM layers are, so a partial load
    would leave layers on the wrong device.
    """
    model_management.load_models_gpu([patcher], memory_required=memory_required, force_full_load=True)
    return patcher.model


def progress_reporter(total: int) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback for the library: moves the node's progress bar and
    stops the run between batches when the user presses cancel."""
    bar = comfy.utils.ProgressBar(total)

    def report(done: int, total: int) -> None:
        bar.update_absolute(done, total)
        model_management.throw_exception_if_processing_interrupted()

    return report
