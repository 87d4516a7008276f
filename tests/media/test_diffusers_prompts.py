"""Text windows: a prompt longer than the text encoder reads is reported, and ``--long-prompt``
reads it whole (a longer T5 window for LTX, CLIP windows of 75 for SD 1.5 and AnimateDiff)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from media.helpers import TINY_FLAGS, finished_run
from popcorn.media.export import probe
from popcorn.script import Script

pytestmark = pytest.mark.slow

TINY = [*TINY_FLAGS, "--cover", "none"]

LONG = Script(
    "Kitten Shreds",
    "A kitten on a skateboard in a sunny park, " * 4,
    "The kitten rolls down the long ramp, lands an ollie and waves at the crowd. " * 12,
)


def test_a_video_prompt_longer_than_the_text_window_is_reported_and_can_be_read_whole(
    cli, tiny_ltx: Path, tmp_path: Path
):
    """LTX reads 128 T5 tokens: a longer prompt was cut silently; now the cut is a warning and
    a record, and --long-prompt raises the window (a new media key: the clip is made again)."""
    run = finished_run(tmp_path, "l", LONG)
    args = ["render", str(run), "--video", "ltx", "--video-model", str(tiny_ltx), *TINY]
    cut = cli(*args, "--json")
    assert cut.code == 0, cut.err
    window = json.loads(cut.out)["video"]["settings"]["prompt_window"]
    tokens = window["tokens"]
    assert tokens > 128 and window == {"tokens": tokens, "read": 128, "long_limit": 512}
    assert json.loads(cut.out)["warnings"] == [
        f"the video prompt is {tokens} tokens; ltx's text encoder read the first 128, the rest "
        "was cut (--long-prompt reads up to 512)"
    ]
    shown = cli(*args)  # cached now; the warning is kept with the stage and shown again
    assert "popcorn: warning: the video prompt is" in shown.err
    whole = cli(*args, "--long-prompt", "--json")
    assert whole.code == 0, whole.err
    stage = json.loads(whole.out)
    assert "cached_parts" not in stage  # another key: made again
    read = min(tokens, 512)
    video = stage["video"]
    assert video["settings"]["prompt_window"] == {"tokens": tokens, "read": read, "long": True}
    assert video["settings"]["long_prompt"] is True
    assert any("rest was cut" in w for w in stage["warnings"]) == (tokens > 512)


def test_a_short_prompt_records_no_window_and_warns_nothing(cli, tiny_ltx: Path, tmp_path: Path):
    run = finished_run(tmp_path, "s")
    args = ["render", str(run), "--video", "ltx", "--video-model", str(tiny_ltx), *TINY]
    result = cli(*args, "--long-prompt", "--json")
    assert result.code == 0, result.err
    stage = json.loads(result.out)
    assert "prompt_window" not in stage["video"]["settings"] and stage["warnings"] == []


def test_a_cover_prompt_past_clips_77_tokens_is_reported_and_read_whole_in_windows(
    cli, tmp_path: Path
):
    """CLIP reads 77 tokens; --long-prompt encodes the prompt in windows of 75 and hands the
    UNet their embeddings side by side (SD1.5 and AnimateDiff)."""
    from toys.sd import save_toy_sd15

    model = save_toy_sd15(tmp_path / "model")
    run = finished_run(tmp_path, "k", LONG)
    args = [
        "render", str(run), "--video", "none", "--cover", "sd15", "--cover-model", str(model),
        "--cover-size", "32", "--cover-steps", "2", "--json",
    ]  # fmt: skip
    result = cli(*args)
    assert result.code == 0, result.err
    stage = json.loads(result.out)
    window = stage["cover"]["settings"]["prompt_window"]
    tokens = window["tokens"]
    assert window == {"tokens": tokens, "read": 77, "long_limit": tokens} and tokens > 77
    assert stage["warnings"][-1] == (
        f"the cover prompt is {tokens} tokens; sd15's text encoder read the first 77, the rest "
        "was cut (--long-prompt reads all of it)"
    )
    before = (run / "cover.png").read_bytes()
    whole = cli(*args, "--long-prompt")
    assert whole.code == 0, whole.err
    stage = json.loads(whole.out)
    windows = -(-(tokens - 2) // 75)
    assert stage["cover"]["settings"]["prompt_window"] == {
        "tokens": tokens, "read": tokens, "long": True, "windows": windows,
    }  # fmt: skip
    assert stage["warnings"] == [] and windows > 1
    assert (run / "cover.png").read_bytes() != before  # the whole prompt steered the image


def test_chunked_embeddings_match_the_pipelines_own_for_a_prompt_that_fits(tmp_path: Path):
    """One window: the same embeddings diffusers makes itself; the negative keeps the shape."""
    import torch
    from diffusers import StableDiffusionPipeline

    from popcorn.media.diffusers.prompts import chunked_clip_embeds
    from toys.sd import save_toy_sd15

    pipe = StableDiffusionPipeline.from_pretrained(save_toy_sd15(tmp_path / "model"))
    embeds, negatives, windows = chunked_clip_embeds(pipe, "a cat", "blurry")
    own, own_negative = pipe.encode_prompt("a cat", "cpu", 1, True, "blurry")
    assert windows == 1 and embeds.shape == own.shape == negatives.shape
    assert torch.allclose(embeds, own, atol=1e-5)
    assert torch.allclose(negatives, own_negative, atol=1e-5)
    long = "a cat " * 60
    tokens = len(pipe.tokenizer(long, add_special_tokens=False)["input_ids"])
    long_embeds, long_negatives, many = chunked_clip_embeds(pipe, long, "blurry")
    assert many == -(-tokens // 75) > 1
    assert long_embeds.shape == long_negatives.shape == (1, 77 * many, own.shape[-1])


def test_animatediff_reads_a_long_video_prompt_in_windows(cli, tmp_path: Path):
    from toys.sd import save_toy_animatediff

    model = save_toy_animatediff(tmp_path / "model")
    run = finished_run(tmp_path, "w", LONG)
    size = "--steps 2 --width 48 --height 32 --frames 6 --fps 8 --cover none"
    result = cli(
        "render", str(run), "--video", "animatediff", "--video-model", str(model),
        *f"{size} --long-prompt --json".split(),
    )  # fmt: skip
    assert result.code == 0, result.err
    stage = json.loads(result.out)
    window = stage["video"]["settings"]["prompt_window"]
    assert window["long"] and window["read"] == window["tokens"] and window["windows"] > 1
    assert stage["warnings"] == [] and probe(run / "clip.mp4").frames == 6
