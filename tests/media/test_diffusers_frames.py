"""Frames leave the device as bytes: the same bytes diffusers' numpy output gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from media.helpers import SCRIPT, clip_options

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_frames_become_the_same_bytes_on_the_device_as_on_the_cpu():
    import torch

    from popcorn.media.diffusers.frames import to_uint8

    torch.manual_seed(0)
    frames = torch.rand(20, 3, 6, 10) * 1.2 - 0.1  # out of range on both sides; > one slice
    frames[0, 0, 0, :4] = torch.tensor([0.5 / 255, 1.5 / 255, 254.5 / 255, 1.0])  # ties
    on_device = to_uint8(frames)
    on_cpu = to_uint8(frames.permute(0, 2, 3, 1).numpy())  # what the "np" output gave
    assert on_device.dtype == np.uint8 and on_device.shape == (20, 6, 10, 3)
    assert np.array_equal(on_device, on_cpu)
    assert np.array_equal(to_uint8(frames[0]), on_cpu[0])  # one image, channels first


def test_a_clip_from_pt_frames_matches_diffusers_numpy_output(toys: dict[str, Path]):
    from popcorn.media.diffusers.frames import to_uint8

    backend = clip_options(toys["ltx"]).backend()
    spec, _ = clip_options(toys["ltx"]).spec(backend)
    kwargs = backend.call_kwargs(SCRIPT, spec)
    assert kwargs["output_type"] == "pt"
    pipe = backend.pipeline()
    ours = to_uint8(pipe(**kwargs).frames[0])
    bare = pipe(**{**backend.call_kwargs(SCRIPT, spec), "output_type": "np"}).frames[0]
    assert np.array_equal(ours, (np.clip(bare, 0, 1) * 255).round().astype(np.uint8))
