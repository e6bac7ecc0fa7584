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
    """``auto``: CUDA, then Apple MPS, then the CPU; or any name torch understands."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


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
