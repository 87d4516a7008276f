"""Diffusion generators through diffusers' real pipeline classes, built at toy size here (one
layer, random weights, a tokenizer trained on a sentence), saved with ``save_pretrained`` and
loaded back through popcorn's loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from popcorn.media.export import probe
from popcorn.runs.store import RunManifest, RunStore
from popcorn.script import Script

pytestmark = pytest.mark.slow

SCRIPT = Script("Kitten Shreds", "A kitten on a skateboard, sunny park",
                "The kitten rolls down the ramp and lands an ollie in slow motion")


def _t5(folder: Path) -> tuple[object, object]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator([SCRIPT.video_prompt] * 5, trainers.UnigramTrainer(
        vocab_size=60, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>",
                                        eos_token="</s>", unk_token="<unk>")
    encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=37,
                                      num_layers=1, num_heads=4,
                                      relative_attention_num_buckets=8))
    return tokenizer, encoder


@pytest.fixture(scope="module")
def tiny_ltx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )

    folder = tmp_path_factory.mktemp("tiny-ltx")
    torch.manual_seed(0)
    tokenizer, encoder = _t5(folder)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4,
        attention_head_dim=8, cross_attention_dim=32, num_layers=1, caption_channels=32)
    vae = AutoencoderKLLTXVideo(
        latent_channels=8, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1),
        patch_size=1, patch_size_t=1, encoder_causal=True, decoder_causal=False)
    LTXPipeline(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(),
                text_encoder=encoder, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def finished_run(root: Path, name: str) -> Path:
    run = RunStore(root).start(RunManifest(key=name * 64, query=name, mode="basic"))
    run.write_json("script", "script.json", {"schema_version": 1, "script": SCRIPT.to_dict()})
    run.save(status="done")
    return run.path


TINY = ["--steps", "2", "--width", "32", "--height", "32", "--frames", "9", "--fps", "8",
        "--cover", "none"]


def test_ltx_renders_the_requested_clip(cli, tiny_ltx: Path, tmp_path: Path):
    run = finished_run(tmp_path, "a")
    result = cli("render", str(run), "--video", "ltx", "--video-model", str(tiny_ltx), *TINY,
                 "--json")
    assert result.code == 0, result.err
    stage = json.loads(result.out)
    assert stage["video"]["preview"] is False and stage["video"]["backend"] == "ltx"
    assert stage["video"]["spec"]["steps"] == 2
    assert stage["video"]["spec"]["negative_prompt"].startswith("worst quality")
    info = probe(run / "clip.mp4")
    assert (info.codec, info.width, info.height, info.frames, info.fps) == ("h264", 32, 32, 9, 8)


def test_sizes_and_frames_are_rounded_with_a_warning(cli, tiny_ltx: Path, tmp_path: Path):
    run = finished_run(tmp_path, "b")
    args = ["render", str(run), "--video", "ltx", "--video-model", str(tiny_ltx), "--steps", "2",
            "--width", "40", "--height", "30", "--frames", "12", "--cover", "none"]
    result = cli(*args)
    assert result.code == 0, result.err
    assert "multiples of 32: 40x30 -> 32x32" in result.err
    assert "8k+1 frames: 12 -> 9" in result.err
    assert probe(run / "clip.mp4").frames == 9


def test_a_batch_loads_the_model_once(tiny_ltx: Path, tmp_path: Path):
    from popcorn.media import diffusion
    from popcorn.media.render import MediaOptions, render

    options = MediaOptions(video="ltx", cover=None, video_model=str(tiny_ltx), steps=2, width=32,
                           height=32, frames=9, fps=8)
    before = diffusion.loads[str(tiny_ltx)]
    for name in "cde":
        render(finished_run(tmp_path, name), options)
    assert diffusion.loads[str(tiny_ltx)] - before <= 1
    assert diffusion.loads[str(tiny_ltx)] == 1


def test_missing_model_folder_is_a_one_line_error(cli, tmp_path: Path):
    run = finished_run(tmp_path, "f")
    result = cli("render", str(run), "--video", "ltx", "--video-model", "./no-such-model")
    assert result.code == 1 and "video model folder not found" in result.err
    assert "Traceback" not in result.err
