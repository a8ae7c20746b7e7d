"""Device and dtype are decided here and nowhere else."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch


def pick_device(requested: str | torch.device | None = None) -> torch.device:
    """The requested device, else CUDA when present, else CPU."""
    if requested is not None:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def frozen_dtype(device: torch.device, requested: str | torch.dtype | None = None) -> torch.dtype:
    """Precision of the UNet and VAE: bfloat16 on GPUs that support it (Ampere and newer), else
    float16 (the inversion then scales its loss, `inversion.LossScale`), float32 on the CPU
    (CPU half precision is slow). The text encoder and the learned rows stay float32 (models.py)."""
    if requested is not None:
        if isinstance(requested, str) and requested not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {requested!r}")
        return DTYPES[requested] if isinstance(requested, str) else requested
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# Where an NVIDIA driver shows itself on Linux, whether or not torch can use it.
NVIDIA_DRIVER_FILE = Path("/proc/driver/nvidia/version")


def gpu_problem() -> str | None:
    """A sentence when an NVIDIA driver is present but torch cannot use the GPU, else None.

    Typical cause: a torch build for a newer CUDA than the driver supports, or a CPU-only
    torch. Without this, such a machine silently runs as if it had no GPU.
    """
    if torch.cuda.is_available():
        return None
    driver = None
    if NVIDIA_DRIVER_FILE.is_file():
        try:
            driver = NVIDIA_DRIVER_FILE.read_text().splitlines()[0].strip()
        except (OSError, IndexError):
            driver = "an NVIDIA driver"
    elif shutil.which("nvidia-smi"):
        driver = "nvidia-smi"
    if driver is None:
        return None
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return (f"an NVIDIA GPU driver is present ({driver}) but torch {torch.__version__} ({build}) cannot use "
            "the GPU (torch.cuda.is_available() is False), so everything runs on the CPU. Install a torch "
            "build that matches the driver (see `nvidia-smi` for the CUDA version it supports).")


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
# Learned embeddings always stay float32, whatever the frozen modules use.
LEARNED_DTYPE = torch.float32
