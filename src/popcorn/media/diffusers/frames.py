"""A pipeline's output as the bytes the writers take."""

from __future__ import annotations

from typing import Any

import numpy as np

_SLICE = 16
"""Frames scaled at a time on the device: bounds the float32 copy a bf16 clip needs."""


def to_uint8(frames: Any) -> np.ndarray:
    """A pipeline's frames (or one image) in [0, 1] as uint8, channels last, on the host.

    A tensor (``output_type="pt"``: frames x channels x height x width, or channels x height x
    width, on the pipeline's device) is scaled, rounded and cast where it is, a slice of frames
    at a time, and copied to the host once, as bytes: a quarter of the float32 copy, with no
    conversion left for the CPU. Arrays and images are converted on the CPU. Both give the same
    bytes (float32 arithmetic, rounding half to even)."""
    import torch

    if not torch.is_tensor(frames):
        array = np.asarray(frames)
        if array.dtype == np.uint8:
            return array
        scaled = np.clip(array.astype(np.float32), 0.0, 1.0) * 255
        return np.asarray(scaled.round().astype(np.uint8))
    if frames.ndim == 3:
        return np.asarray(to_uint8(frames.unsqueeze(0))[0])
    count, channels, height, width = frames.shape
    out = torch.empty((count, height, width, channels), dtype=torch.uint8, device=frames.device)
    for start in range(0, count, _SLICE):
        part = frames[start : start + _SLICE].float().clamp(0.0, 1.0).mul(255).round()
        out[start : start + _SLICE] = part.permute(0, 2, 3, 1).to(torch.uint8)
    return np.asarray(out.cpu().numpy())
