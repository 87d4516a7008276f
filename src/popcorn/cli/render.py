"""``popcorn render``: (re)render a run folder's cover and clip."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from popcorn.safety import one_line, plain, redact

_VIDEO_HELP = (
    "ltx, hunyuan, cogvideox, animatediff (the study's four), wan, hunyuan15 (diffusers), "
    "preview (an animatic, no model) or none. Presets follow the profile: paper runs the "
    "study's settings, popcorn Popcorn's ('popcorn generators' lists both)."
)
_COVER_HELP = (
    "sd15 (the study's cover model), sdxl (diffusers), preview (a title card, no model) or none."
)


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
        click.option(
            "--portrait", is_flag=True, default=None, help="9:16 output, the micro-video norm."
        ),
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
            help="Cover pixel count as a square side; Popcorn's presets keep the clip's aspect "
            "ratio, the study's sd15 cover is square [default: the model's native size].",
        ),
        click.option("--cover-steps", type=click.IntRange(1, 500), help="Cover denoising steps."),
        click.option("--cover-guidance", type=float, help="Cover guidance scale."),
        click.option(
            "--device",
            metavar="DEVICE",
            help="Where models run: auto, cpu, cuda, cuda:N or mps (the LLM, the media and the "
            "predictor).  [default: auto: a CUDA GPU when there is one]",
        ),
        click.option("--media-device", hidden=True, help="Deprecated: use --device."),
        click.option(
            "--media-dtype",
            type=click.Choice(["auto", "float32", "float16", "bfloat16"]),
            help="[default: auto]",
        ),
        click.option(
            "--offload",
            type=click.Choice(["none", "model", "sequential"]),
            help="CPU offload, for GPUs with less memory.  [default: none]",
        ),
        click.option(
            "--vae-tiling", is_flag=True, default=None, help="Decode in tiles (less GPU memory)."
        ),
        click.option("--vae-slicing", is_flag=True, default=None, help="Decode frame by frame."),
        click.option(
            "--quantize",
            type=click.Choice(["none", "4bit", "8bit"]),
            help="Quantise the denoiser with bitsandbytes (CUDA; "
            "pip install 'popcorn-video[quant]'); 4bit is fp4 under the paper profile, nf4 "
            "otherwise.  [default: none; the paper profile's hunyuan: 4bit, as in the study]",
        ),
        click.option(
            "--unload-stages",
            is_flag=True,
            default=None,
            help="Free each stage's models before the next loads (LLM, clips, covers), so all "
            "fit one GPU; a batch then runs stage by stage.",
        ),
        click.option(
            "--compile",
            "compile",
            is_flag=True,
            default=None,
            help="torch.compile the denoisers' repeated blocks: faster steps on a GPU after a "
            "compilation once per process (part of the media key).",
        ),
        click.option(
            "--long-prompt",
            is_flag=True,
            default=None,
            help="Let the text encoder read prompts longer than its window where the model "
            "allows (ltx: up to 512 T5 tokens instead of 128; sd15, animatediff: CLIP in windows "
            "of 75 tokens; part of the media key). A cut prompt is reported either way.",
        ),
        click.option(
            "--cache",
            type=click.Choice(["none", "first-block", "faster", "taylorseer"]),
            help="Reuse the clip denoiser's work between steps with a diffusers cache, at the "
            "settings diffusers recommends: faster, approximate (part of the media key; faster: "
            "cogvideox and hunyuan; none for animatediff).  [default: none]",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


# Flag name -> [media] setting, where they differ.
_MEDIA_RENAMED = {"media_device": "device", "media_dtype": "dtype"}
_MEDIA_FLAGS = (
    "video", "cover", "portrait", "width", "height", "frames", "fps", "steps", "guidance",
    "negative_prompt", "video_seed", "video_model", "motion_adapter", "cover_model", "cover_size",
    "cover_steps", "cover_guidance", "media_device", "media_dtype", "offload", "vae_tiling",
    "vae_slicing", "quantize", "unload_stages", "compile", "cache", "long_prompt",
)  # fmt: skip


_DEPRECATED = {"media_device": "--media-device", "device_map": "--device-map",
               "n_gpu_layers": "--n-gpu-layers"}  # fmt: skip


def deprecated_device_flags(flags: dict[str, Any]) -> None:
    """The old per-stage device flags still work, with a note naming --device."""
    for name, flag in _DEPRECATED.items():
        if flags.get(name) is not None:
            click.echo(
                f"popcorn: note: {flag} is deprecated; --device sets every stage's device", err=True
            )


def media_overrides(flags: dict[str, Any]) -> dict[str, Any]:
    """Take the media flags out of ``flags`` as overrides of the ``[media]`` settings (None:
    not given, so popcorn.toml, the environment or the default decides)."""
    return {_MEDIA_RENAMED.get(name, name): flags.pop(name) for name in _MEDIA_FLAGS}


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@media_options
@click.option("--force", is_flag=True, help="Render again even if nothing changed.")
@click.option("--json", "as_json", is_flag=True, help="Print the media record as JSON.")
@click.option(
    "--config",
    type=click.Path(path_type=Path),
    help="Settings file ([media] section).  [default: ./popcorn.toml if present]",
)
@click.option(
    "--profile",
    type=click.Choice(["paper", "popcorn"]),
    help="Whose generator presets to use.  [default: the run's own profile]",
)
def render(
    run_dir: Path,
    force: bool,
    as_json: bool,
    config: Path | None,
    profile: str | None,
    **flags: Any,
) -> None:
    """Render the cover and the 3-second clip of RUN_DIR's script, with other generators or
    settings if asked. Files: RUN_DIR/cover.png and RUN_DIR/clip.mp4 (H.264). A run written
    under the paper profile renders with the study's presets unless --profile says otherwise."""
    from popcorn.cli.watch import StageWatch
    from popcorn.config import load_settings
    from popcorn.pipeline import Pipeline
    from popcorn.runs.store import Run

    deprecated_device_flags(flags)
    profile = profile or Run.load(run_dir).manifest.profile
    device = flags.pop("device")
    overrides = {"media": media_overrides(flags), "run": {"profile": profile, "device": device}}
    pipeline = Pipeline(load_settings(config, overrides), score="never")
    pipeline.check()
    with StageWatch() as watch:
        watch.step("media", "running")
        media = pipeline.render(run_dir, force=force)
    if as_json:
        click.echo(json.dumps(media.record, ensure_ascii=False))
        return
    show_media(run_dir, media.record)


def warn(warnings: Iterable[str]) -> None:
    """Each warning as one line on stderr; a warning can quote a corpus, a model or a server."""
    for warning in warnings:
        click.echo(f"popcorn: warning: {redact(one_line(warning))}", err=True)


def show_media(run_dir: Path, stage: dict[str, Any]) -> None:
    warn(stage.get("warnings", ()))
    video, cover = stage.get("video"), stage.get("cover")
    if video:
        label = " (PREVIEW animatic)" if video["preview"] else ""
        click.echo(
            plain(
                f"clip   {Path(run_dir) / video['file']}: {video['width']}x{video['height']}, "
                f"{video['frames']} frames at {video['fps']} fps{label}"
            )
        )
    if cover:
        label = " (PREVIEW card)" if cover["preview"] else ""
        if cover.get("flagged"):
            label += " (blanked by the model's safety checker)"
        click.echo(
            plain(
                f"cover  {Path(run_dir) / cover['file']}: {cover['width']}x{cover['height']}{label}"
            )
        )


@click.command()
def generators() -> None:
    """List the clip and cover generators, their default models and settings.

    Presets follow the profile: under paper each runs at the study's exact settings, under
    popcorn at Popcorn's. Under each preset: the study's settings, then every setting where
    Popcorn's differ and why (or that the study did not use the model)."""
    from popcorn.media.registry import listing as rows
    from popcorn.media.registry import preset_notes

    # Names, models and summaries of plugins are their own text: no control characters pass.
    for kind, name, model, summary in rows():
        click.echo(f"{kind:<6} {one_line(name):<12} {one_line(summary)}")
        if model != "-":
            click.echo(f"{'':<19} model: {one_line(model)}")
        if summary.startswith("broken: "):
            continue
        for note in preset_notes(kind, name):
            click.echo(f"{'':<19} {note}")
