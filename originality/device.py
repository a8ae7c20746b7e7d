"""Device and dtype are decided here and nowhere else."""

from __future__ import annotations

import torch


def pick_device(requested: str | torch.device | None = None) -> torch.device:
    """The requested device, else CUDA when present, else CPU."""
    if requested is not None:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def frozen_dtype(device: torch.device, requested: str | torch.dtype | None = None) -> torch.dtype:
    """Precision of the frozen modules: half on GPU, float32 on CPU (CPU half is slow)."""
    if requested is not None:
        return DTYPES[requested] if isinstance(requested, str) else requested
    return torch.float16 if device.type == "cuda" else torch.float32


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
# Learned embeddings always stay float32, whatever the frozen modules use.
LEARNED_DTYPE = torch.float32
