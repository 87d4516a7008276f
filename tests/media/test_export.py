"""Writing media files: atomically (a failed write leaves the previous file), clips with
frame-threaded x264 at the configured preset, covers as PNGs at a fast zlib level."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

from media.helpers import SCRIPT, finished_run
from popcorn.media.diffusers.loader import MemoryOptions
from popcorn.media.export import Encoding, probe
from popcorn.media.render import MediaOptions, render


def test_full_disk_mid_write_leaves_the_previous_clip(cli, run_dir: Path, monkeypatch):
    cli("render", str(run_dir))
    before = (run_dir / "clip.mp4").read_bytes()
    import av.container

    def full_disk(self, packet):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(av.container.OutputContainer, "mux", full_disk)
    result = cli("render", str(run_dir), "--fps", "12")
    assert result.code == 1 and "No space left on device" in result.err
    assert (run_dir / "clip.mp4").read_bytes() == before
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]


@pytest.mark.usefixtures("torch_one_thread")
def test_x264_runs_frame_threads_at_the_chosen_preset(tmp_path: Path):
    from popcorn.config import load_settings
    from popcorn.media.export import write_mp4

    settings = load_settings(flags={"media": {"x264_preset": "ultrafast", "x264_threads": 2}})
    encoding = settings.media.options(settings.profile).encoding
    assert encoding == Encoding(preset="ultrafast", threads=2)
    frames = [np.full((32, 48, 3), i * 20, dtype=np.uint8) for i in range(6)]
    for name, chosen in (("default", Encoding()), ("fast", encoding)):
        write_mp4(iter(frames), tmp_path / f"{name}.mp4", 8, chosen)
    # x264 writes its settings into the stream.
    default, fast = ((tmp_path / f"{n}.mp4").read_bytes() for n in ("default", "fast"))
    assert b"sliced_threads=0" in default and b"cabac=1" in default  # frame threads, veryfast
    assert b"sliced_threads=0" in fast and b"cabac=0" in fast and b" threads=2 " in fast


@pytest.mark.usefixtures("torch_one_thread")
def test_a_bad_x264_preset_is_a_one_line_config_error(cli, tmp_path: Path):
    (tmp_path / "popcorn.toml").write_text('[media]\nx264_preset = "warp"\n')
    run = finished_run(tmp_path, "h")
    result = cli("render", str(run))
    assert result.code == 1 and "x264_preset" in result.err and "Traceback" not in result.err


def _zlib_level(png: bytes) -> int:
    """The compression level class zlib recorded in a PNG's first IDAT chunk (0: fastest)."""
    start = png.index(b"IDAT") + 4
    return png[start + 1] >> 6


@pytest.mark.usefixtures("torch_one_thread")
def test_covers_are_written_at_a_fast_png_level_with_diffusers_pixels(
    toys: dict[str, Path], tmp_path: Path
):
    from PIL import Image

    options = MediaOptions(
        video="preview",
        cover="sd15",
        cover_model=str(toys["sd15"]),
        cover_size=32,
        cover_steps=2,
        width=48,
        height=32,
        frames=3,
        fps=3,
        memory=MemoryOptions(device="cpu", dtype="float32"),
    )
    run = finished_run(tmp_path, "i")
    stage = render(run, options)
    assert _zlib_level((run / "cover.png").read_bytes()) == 0  # Pillow's default: 2
    covers = options.cover_backend()
    kwargs = covers.call_kwargs(SCRIPT, 48, 32, seed=stage["video"]["spec"]["seed"])
    bare = covers.pipeline()(**{**kwargs, "output_type": "pil"}).images[0]
    with Image.open(run / "cover.png") as written:
        assert np.array_equal(np.asarray(written.convert("RGB")), np.asarray(bare))
    assert probe(run / "clip.mp4").frames == 3  # the preview clip, encoded meanwhile
