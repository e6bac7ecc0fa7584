"""Stand-in for ``comfy.model_management``, with ComfyUI's signatures.

The module-level settings describe the machine ComfyUI would see; tests change them:
``torch_device`` (where models run), ``free_memory_bytes`` (what ``get_free_memory`` reports),
``gpu_fp16``/``gpu_bf16`` (what a GPU supports). ``load_calls`` records every
``load_models_gpu`` call and ``loaded`` lists the loaded patchers, most recent first.
"""

import threading

import torch

torch_device = torch.device("cpu")
free_memory_bytes = 16 * 1024 ** 3
gpu_fp16 = True
gpu_bf16 = True
load_calls: list[dict] = []
loaded: list = []


def get_torch_device():
    return torch_device


def unet_offload_device():
    return torch.device("cpu")


def intermediate_device():
    return torch.device("cpu")


def get_free_memory(dev=None, torch_free_too=False):
    return (free_memory_bytes, 0) if torch_free_too else free_memory_bytes


def is_device_type(device, type):
    return getattr(device, "type", None) == type


def is_device_cpu(device):
    return is_device_type(device, "cpu")


def is_device_mps(device):
    return is_device_type(device, "mps")


def should_use_fp16(device=None, model_params=0, prioritize_performance=True, manual_cast=False):
    if device is not None and is_device_cpu(device):
        return False
    if device is not None and is_device_mps(device):
        return True  # as in ComfyUI: MPS reports fp16 as usable
    return gpu_fp16


def should_use_bf16(device=None, model_params=0, prioritize_performance=True, manual_cast=False):
    if device is not None and is_device_cpu(device):
        return False
    if device is not None and is_device_mps(device):
        return True  # as in ComfyUI on macOS 14 and later
    return gpu_bf16


def module_size(module):
    return sum(t.nelement() * t.element_size() for t in module.state_dict().values())


def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                    force_full_load=False):
    load_calls.append({"models": list(models), "memory_required": memory_required,
                       "force_full_load": force_full_load})
    for patcher in models:
        patcher.model.to(patcher.load_device)
        patcher.model.device = patcher.load_device
        patcher.model.model_loaded_weight_memory = patcher.model_size()
        if patcher in loaded:
            loaded.remove(patcher)
        loaded.insert(0, patcher)


def unload_all_models():
    """What the UI's "unload models" action does: every loaded model back to its offload device."""
    for patcher in loaded:
        patcher.model.to(patcher.offload_device)
        patcher.model.device = patcher.offload_device
        patcher.model.model_loaded_weight_memory = 0
    loaded.clear()


class InterruptProcessingException(Exception):
    pass


interrupt_processing_mutex = threading.RLock()
interrupt_processing = False


def interrupt_current_processing(value=True):
    global interrupt_processing
    with interrupt_processing_mutex:
        interrupt_processing = value


def processing_interrupted():
    with interrupt_processing_mutex:
        return interrupt_processing


def throw_exception_if_processing_interrupted():
    global interrupt_processing
    with interrupt_processing_mutex:
        if interrupt_processing:
            interrupt_processing = False
            raise InterruptProcessingException()
