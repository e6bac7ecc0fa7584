"""Device and precision choice outside ComfyUI (inside it, ComfyUI's model management decides)."""

from functools import cache
from pathlib import Path

import torch

from ..errors import InputError

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Images per model pass on the CPU when the caller leaves it to us. Batching saves no arithmetic
# there and costs cache locality: one frame at a time was the fastest in bench/bench_video.py.
CPU_BATCH = 1


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA, then Apple MPS, then the CPU; or ``cpu``, ``cuda``, ``cuda:N``, ``mps``.

    A device this machine does not have is an :class:`InputError` here, before any model loads,
    rather than a driver error halfway through the first image.
    """
    if name != "auto":
        return _available(name)
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


@cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX), where torch's oneDNN
    kernels run bf16 about twice as fast as fp32. Elsewhere bf16 is emulated and slower.

    Read from the Linux kernel's CPU flags; other systems report False.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """``auto``: bf16 on CUDA GPUs that support it, fp16 on other CUDA GPUs, fp32 elsewhere.

    Half precision is never chosen on the CPU or MPS; asking for it explicitly is allowed. On
    CPUs with native bf16 (:func:`cpu_has_native_bf16`) ``bf16`` is the faster choice (see the
    README's Performance section for its speed and accuracy), but it stays opt-in.
    """
    if precision != "auto":
        if precision not in PRECISIONS:
            raise InputError(f"precision must be auto, {', '.join(PRECISIONS)}; got {precision!r}")
        return PRECISIONS[precision]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _available(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build of torch" if torch.version.cuda is None else "no usable CUDA GPU"
            raise InputError(f"device {name!r} asked for, but this machine has {build}; use --device cpu "
                             f"(or install the CUDA build of torch)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {name!r} asked for, but there are only {torch.cuda.device_count()} "
                             f"CUDA devices (cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise InputError(f"device {name!r} asked for, but Apple MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise InputError(f"device {name!r} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return device
