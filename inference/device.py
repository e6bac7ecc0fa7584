"""Device and precision choice outside ComfyUI (inside it, ComfyUI's model management decides)."""

import torch

from ..errors import InputError

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Images per model pass on the CPU when the caller leaves it to us. Batching saves no arithmetic
# there and costs cache locality: one frame at a time was the fastest in bench/bench_video.py.
CPU_BATCH = 1


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA, then Apple MPS, then the CPU; or any name torch understands."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_model(device: torch.device) -> str:
    """The catalogue id to use on ``device`` when the user names no model: the full BiRefNet
    (Swin-L) on a GPU, the Swin-T "lite" one on the CPU, where it needs 2-3x less time and half
    the memory (README, "Which model `cut` uses"; ``bench/bench_default_model.py``)."""
    return "birefnet-lite" if device.type == "cpu" else "birefnet"


def pick_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """``auto``: bf16 on CUDA GPUs that support it, fp16 on other CUDA GPUs, fp32 elsewhere.

    Half precision is never chosen on the CPU or MPS, where it is slow or inaccurate; asking for
    it explicitly is allowed.
    """
    if precision != "auto":
        if precision not in PRECISIONS:
            raise InputError(f"precision must be auto, {', '.join(PRECISIONS)}; got {precision!r}")
        return PRECISIONS[precision]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32
