"""The media stage with the ``preview`` backend: real H.264 files, decoded and checked."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest

from popcorn.media.export import probe
from popcorn.media.preview import PreviewBackend
from popcorn.runs.store import RunManifest, RunStore
from popcorn.script import Script

SCRIPT = Script(
    "Kitten Shreds the Half-Pipe",
    "A fluffy orange kitten on a tiny skateboard in a sunny skate park, wide angle",
    "The kitten pushes off, rolls down the ramp and lands a wobbly ollie, slow motion",
)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A finished run folder, as ``popcorn generate`` leaves it (no LLM needed here)."""
    run = RunStore(tmp_path / "runs").start(RunManifest(key="k" * 64, query="q", mode="basic"))
    run.write_json("script", "script.json", {"schema_version": 1, "script": SCRIPT.to_dict()})
    run.save(status="done")
    return run.path


def decoded(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.mark.parametrize(("portrait", "size"), [(False, (640, 360)), (True, (360, 640))])
def test_preview_is_a_three_second_h264_clip_that_moves(tmp_path: Path, portrait, size):
    backend = PreviewBackend()
    spec = backend.default_spec().portrait() if portrait else backend.default_spec()
    clip = backend.render(SCRIPT, spec, tmp_path / "clip.mp4")
    info = probe(clip.file)
    assert (info.codec, info.width, info.height) == ("h264", *size)
    assert info.frames == 45 and info.fps == 15 and info.seconds == 3.0
    frames = decoded(clip.file)
    assert frames[0].shape == (size[1], size[0], 3)
    assert np.abs(frames[0].astype(int) - frames[22].astype(int)).mean() > 2  # not a still
    assert clip.preview and clip.to_dict()["seconds"] == 3.0


def test_render_writes_cover_and_clip_and_records_them(cli, run_dir: Path):
    result = cli("render", str(run_dir), "--json")
    assert result.code == 0, result.err
    stage = json.loads(result.out)
    assert stage["video"]["preview"] is True and stage["video"]["frames"] == 45
    assert probe(run_dir / "clip.mp4").frames == 45
    from PIL import Image

    with Image.open(run_dir / "cover.png") as cover:
        assert cover.size == (640, 360)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["files"]["clip"] == "clip.mp4" and manifest["files"]["cover"] == "cover.png"
    assert manifest["stages"]["media"]["video"]["spec"]["fps"] == 15


def test_rerender_only_when_something_changed(cli, run_dir: Path):
    cli("render", str(run_dir))
    again = json.loads(cli("render", str(run_dir), "--json").out)
    assert again["cached"] is True
    changed = json.loads(
        cli("render", str(run_dir), "--json", "--portrait", "--fps", "10", "--frames", "30").out
    )
    assert "cached" not in changed
    info = probe(run_dir / "clip.mp4")
    assert (info.width, info.height, info.frames, info.fps) == (360, 640, 30, 10)
    forced = json.loads(
        cli(
            "render",
            str(run_dir),
            "--json",
            "--portrait",
            "--fps",
            "10",
            "--frames",
            "30",
            "--force",
        ).out
    )
    assert "cached" not in forced


def test_video_none_skips_the_clip(cli, run_dir: Path):
    stage = json.loads(cli("render", str(run_dir), "--video", "none", "--json").out)
    assert "video" not in stage and (run_dir / "cover.png").is_file()
    assert not (run_dir / "clip.mp4").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--video", "sora"],
            "unknown video generator 'sora'; available: preview, ltx, hunyuan, cogvideox, "
            "animatediff, wan, hunyuan15, none",
        ),
        (["--cover", "dalle"], "unknown cover generator 'dalle'; available: preview, sd15, sdxl"),
        (["--video", "ltx", "--quantize", "4bit", "--device", "cpu"], "needs a CUDA GPU"),
        (["--cover", "sd15", "--cover-model", "./no-such"], "cover model folder not found"),
        (["--video", "animatediff", "--motion-adapter", "./nope"], "motion adapter not found"),
        (["--width", "641"], "--width must be an even number"),
        (["--frames", "0"], "--frames must be from 1 to 2000"),
        (["--fps", "500"], "--fps must be from 1 to 120"),
    ],
)
def test_bad_media_options_are_one_line_errors(cli, run_dir: Path, args, message):
    result = cli("render", str(run_dir), *args)
    assert result.code == 1 and "Traceback" not in result.err
    assert message in result.err and result.err.strip().count("\n") == 0


def test_run_folder_without_a_script(cli, tmp_path: Path):
    run = RunStore(tmp_path).start(RunManifest(key="k" * 64, query="q", mode="basic"))
    result = cli("render", str(run.path))
    assert result.code == 1 and "has no script yet" in result.err
    assert "not a run folder" in cli("render", str(tmp_path / "nowhere")).err


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


def test_generate_checks_media_options_before_asking_the_llm(cli, fault_proxy):
    result = cli(
        "generate", "a cat", "--llm", "openai:m", "--base-url", fault_proxy.url, "--width", "641"
    )
    assert result.code == 1 and "--width must be an even number" in result.err
    assert fault_proxy.requests == []
