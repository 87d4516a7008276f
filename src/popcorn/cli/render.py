"""``popcorn render``: (re)render a run folder's cover and clip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

_VIDEO_HELP = (
    "ltx, hunyuan, cogvideox, animatediff, wan, hunyuan15 (diffusers), preview (an animatic, "
    "no model) or none. See 'popcorn generators'."
)
_COVER_HELP = "sd15, sdxl (diffusers), preview (a title card, no model) or none."


def media_options(func: Any) -> Any:
    """The options shared by ``render`` and ``generate``."""
    options = [
        click.option(
            "--video",
            "video",
            metavar="NAME",
            help=f"Clip generator: {_VIDEO_HELP}  [default: preview]",
        ),
        click.option(
            "--cover",
            "cover",
            metavar="NAME",
            help=f"Cover generator: {_COVER_HELP}  [default: preview]",
        ),
        click.option("--portrait", is_flag=True, help="9:16 output, the micro-video norm."),
        click.option("--width", type=int, help="Override the preset's width."),
        click.option("--height", type=int, help="Override the preset's height."),
        click.option("--frames", type=int, help="Override the preset's frame count."),
        click.option("--fps", type=int, help="Override the preset's frame rate."),
        click.option("--steps", type=click.IntRange(1, 500), help="Override denoising steps."),
        click.option("--guidance", type=float, help="Override the guidance scale."),
        click.option("--negative-prompt", help="Override the preset's negative prompt."),
        click.option("--video-seed", type=click.IntRange(min=0), help="Seed of the clip."),
        click.option(
            "--video-model",
            metavar="PATH_OR_ID",
            help="Load the clip generator from this folder or hub id.",
        ),
        click.option(
            "--motion-adapter",
            metavar="SOURCE",
            help="animatediff: adapter folder, .safetensors file or REPO:FILE "
            "[default: the Lightning 4-step adapter].",
        ),
        click.option(
            "--cover-model",
            metavar="PATH_OR_ID",
            help="Load the cover generator from this folder or hub id.",
        ),
        click.option(
            "--cover-size",
            type=click.IntRange(16, 2048),
            metavar="PX",
            help="Cover pixel count as a square side; the clip's aspect ratio is kept "
            "[default: the model's native size].",
        ),
        click.option("--cover-steps", type=click.IntRange(1, 500), help="Cover denoising steps."),
        click.option("--cover-guidance", type=float, help="Cover guidance scale."),
        click.option(
            "--media-device", default="auto", show_default=True, help="cuda, cuda:1, cpu, or auto."
        ),
        click.option(
            "--media-dtype",
            default="auto",
            show_default=True,
            type=click.Choice(["auto", "float32", "float16", "bfloat16"]),
        ),
        click.option(
            "--offload",
            default="none",
            show_default=True,
            type=click.Choice(["none", "model", "sequential"]),
            help="CPU offload, for GPUs with less memory.",
        ),
        click.option("--vae-tiling", is_flag=True, help="Decode in tiles (less GPU memory)."),
        click.option("--vae-slicing", is_flag=True, help="Decode frame by frame."),
        click.option(
            "--quantize",
            default="none",
            show_default=True,
            type=click.Choice(["none", "4bit", "8bit"]),
            help="Quantise the denoiser with bitsandbytes (CUDA; pip install 'popcorn[quant]').",
        ),
        click.option(
            "--unload-stages",
            is_flag=True,
            help="Free each stage's models before the next loads (LLM, clips, covers), so all "
            "fit one GPU; a batch then runs stage by stage.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_media_options(flags: dict[str, Any]) -> Any:
    from popcorn.media.diffusion import MemoryOptions
    from popcorn.media.render import MediaOptions

    def generator(value: str | None) -> str | None:
        return None if value == "none" else (value or "preview")

    return MediaOptions(
        video=generator(flags.pop("video")),
        cover=generator(flags.pop("cover")),
        portrait=flags.pop("portrait"),
        width=flags.pop("width"),
        height=flags.pop("height"),
        frames=flags.pop("frames"),
        fps=flags.pop("fps"),
        steps=flags.pop("steps"),
        guidance=flags.pop("guidance"),
        negative_prompt=flags.pop("negative_prompt"),
        seed=flags.pop("video_seed"),
        video_model=flags.pop("video_model"),
        motion_adapter=flags.pop("motion_adapter"),
        cover_model=flags.pop("cover_model"),
        cover_size=flags.pop("cover_size"),
        cover_steps=flags.pop("cover_steps"),
        cover_guidance=flags.pop("cover_guidance"),
        memory=MemoryOptions(
            device=flags.pop("media_device"),
            dtype=flags.pop("media_dtype"),
            offload=flags.pop("offload"),
            vae_tiling=flags.pop("vae_tiling"),
            vae_slicing=flags.pop("vae_slicing"),
            quantize=flags.pop("quantize"),
            unload=flags.pop("unload_stages"),
        ),
    )


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@media_options
@click.option("--force", is_flag=True, help="Render again even if nothing changed.")
@click.option("--json", "as_json", is_flag=True, help="Print the media record as JSON.")
def render(run_dir: Path, force: bool, as_json: bool, **flags: Any) -> None:
    """Render the cover and the 3-second clip of RUN_DIR's script, with other generators or
    settings if asked. Files: RUN_DIR/cover.png and RUN_DIR/clip.mp4 (H.264)."""
    from popcorn.media.render import render as render_media

    options = build_media_options(flags)
    options.check()
    stage = render_media(run_dir, options, force=force)
    if as_json:
        click.echo(json.dumps(stage, ensure_ascii=False))
        return
    describe(run_dir, stage)


def describe(run_dir: Path, stage: dict[str, Any]) -> None:
    for warning in stage.get("warnings", ()):
        click.echo(f"popcorn: warning: {warning}", err=True)
    video, cover = stage.get("video"), stage.get("cover")
    if video:
        label = " (PREVIEW animatic)" if video["preview"] else ""
        click.echo(
            f"clip   {Path(run_dir) / video['file']}: {video['width']}x{video['height']}, "
            f"{video['frames']} frames at {video['fps']} fps{label}"
        )
    if cover:
        label = " (PREVIEW card)" if cover["preview"] else ""
        if cover.get("flagged"):
            label += " (blanked by the model's safety checker)"
        click.echo(
            f"cover  {Path(run_dir) / cover['file']}: {cover['width']}x{cover['height']}{label}"
        )


@click.command()
def generators() -> None:
    """List the clip and cover generators, their default models and settings."""
    from popcorn.media.registry import describe as rows

    for kind, name, model, summary in rows():
        click.echo(f"{kind:<6} {name:<12} {summary}")
        if model != "-":
            click.echo(f"{'':<19} model: {model}")
