"""The built-in clip and cover presets, as plain data (no torch or diffusers import).

A clip preset names the diffusers pipeline class, the model it loads by default (a hub id;
``--video-model`` takes a local folder or another id) and the sizes and frame counts the model
accepts (requests are rounded to the nearest valid value, with a warning). Clip and cover
presets hold their settings twice: the study's exact ones, which the ``paper`` profile runs,
and Popcorn's, which the ``popcorn`` profile runs, with the reason for each difference
(``popcorn generators`` prints both). A model the study did not use has Popcorn's settings
only, under both profiles.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from popcorn.errors import UsageError
from popcorn.media.base import VideoSpec

Presets = Literal["study", "popcorn"]
"""Which settings the presets run with: ``study`` (the paper profile) or ``popcorn``
(:attr:`popcorn.profiles.Profile.media`)."""
PRESET_CHOICES: tuple[Presets, ...] = ("study", "popcorn")

FOUR_BIT: dict[str, Literal["fp4", "nf4"]] = {"study": "fp4", "popcorn": "nf4"}
"""The 4-bit type of a quantised denoiser: bitsandbytes' default (fp4), which the study's
``BitsAndBytesConfig(load_in_4bit=True)`` got, or nf4, which loses less at the same size."""

LTX_NEGATIVE = "worst quality, inconsistent motion, blurry, jittery, distorted"
WAN_NEGATIVE = (
    "static frame, blurry details, overexposed, washed-out colours, subtitles, watermark, "
    "low quality, compression artifacts, deformed limbs, extra fingers, messy background"
)
LIGHTNING_ADAPTER = (
    "ByteDance/AnimateDiff-Lightning:animatediff_lightning_4step_diffusers.safetensors"
)


def check_presets(presets: str) -> Presets:
    """``presets`` as a :data:`Presets` value; ``UsageError`` for anything else."""
    if presets not in PRESET_CHOICES:
        raise UsageError(f"presets must be study or popcorn, not {presets!r}")
    return "study" if presets == "study" else "popcorn"


@dataclass(frozen=True)
class Difference:
    """One setting where Popcorn's preset departs from the study's, and why."""

    setting: str
    study: str
    popcorn: str
    why: str

    def line(self) -> str:
        return f"{self.popcorn} (the study: {self.study}): {self.why}"


def differences(
    study: Mapping[str, str], ours: Mapping[str, str], why: Mapping[str, str]
) -> list[Difference]:
    """The settings whose descriptions differ, each with its reason (``why`` must hold one
    for every difference and nothing else: a test keeps the two in step)."""
    unset = "the pipeline's default"
    found = []
    for key in dict.fromkeys([*study, *ours]):
        a, b = study.get(key, unset), ours.get(key, unset)
        if a != b:
            found.append(Difference(key, a, b, why.get(key, "")))
    return found


@dataclass(frozen=True)
class ClipSettings:
    """What a preset runs with under one profile, before the user's overrides."""

    spec: VideoSpec
    call: Mapping[str, Any] = field(default_factory=dict)
    """Extra arguments of the pipeline call."""
    quantize: Literal["none", "4bit"] = "none"
    """The denoiser's weights while ``--quantize`` is left at none."""
    dtype: Literal["float16", "bfloat16"] | None = None
    """The pipeline's dtype on a CUDA GPU while ``--media-dtype`` is left at auto (None:
    auto's bf16); a CPU keeps float32, in which half-precision kernels are missing or slow."""
    text_encoder_fp8: bool = False
    """Store the text encoder's weights in fp8 (e4m3), each layer cast up to the pipeline's
    dtype as it runs; on a CUDA GPU only, as the study ran it (elsewhere stored as loaded)."""

    def described(self, denoiser: str, presets: Presets) -> dict[str, str]:
        """Each setting in words, keyed as :attr:`DiffusionPreset.why` is."""
        s = self.spec
        words = {
            "size": f"{s.width}x{s.height}",
            "frames": f"{s.frames} frames",
            "fps": f"{s.fps} fps",
            "steps": f"{s.steps} steps",
            "guidance": f"guidance {s.guidance:g}",
            "negative_prompt": f'negative prompt "{s.negative_prompt}"'
            if s.negative_prompt
            else "no negative prompt",
        }
        for key, value in self.call.items():
            words[key] = _call_words(key, value)
        words["quantize"] = (
            f"{denoiser} in 4-bit ({FOUR_BIT[presets]})"
            if self.quantize == "4bit"
            else f"{denoiser} unquantised"
        )
        # Only where a preset sets them, so the other presets' descriptions stay as they were.
        if self.dtype is not None:
            words["dtype"] = f"pipeline in {self.dtype} on CUDA"
        if self.text_encoder_fp8:
            words["text_encoder"] = "text encoder stored in fp8 on CUDA"
        return words


def _call_words(key: str, value: Any) -> str:
    if key == "use_dynamic_cfg":
        return "dynamic guidance " + ("on" if value else "off")
    if key == "max_sequence_length":
        return f"prompt cut at {value} tokens"
    return f"{key}={value!r}"


@dataclass(frozen=True)
class DiffusionPreset:
    name: str
    pipeline: str
    """The diffusers pipeline class."""
    model: str
    summary: str
    ours: ClipSettings
    """Popcorn's settings (the ``popcorn`` profile's)."""
    size_multiple: int
    frames_step: int
    """Valid frame counts are ``frames_step * k + 1``."""
    study: ClipSettings | None = None
    """The study's exact settings (the ``paper`` profile's); None for a model it did not use."""
    why: Mapping[str, str] = field(default_factory=dict)
    """Why Popcorn's settings differ from the study's, per setting that does."""
    denoiser: str = "transformer"
    """The component ``--quantize`` applies to."""
    portrait: bool = True
    """False when the model was trained at one landscape size only."""
    max_frames: int | None = None
    adapter: str | None = None
    """A motion adapter loaded into the pipeline: folder, .safetensors file, or REPO:FILE."""
    caches: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """The ``--cache`` methods that work on this denoiser, each with what it needs to know of
    the model (see :func:`~popcorn.media.diffusers.acceleration.cache_settings`)."""

    @property
    def spec(self) -> VideoSpec:
        """Popcorn's clip settings."""
        return self.ours.spec

    def settings(self, presets: Presets) -> ClipSettings:
        return self.study if presets == "study" and self.study is not None else self.ours

    def differences(self) -> list[Difference]:
        """Where Popcorn's settings depart from the study's ([] for a model not in it)."""
        if self.study is None:
            return []
        study = self.study.described(self.denoiser, "study")
        ours = self.ours.described(self.denoiser, "popcorn")
        return differences(study, ours, self.why)


# The settings of the study's generation script, call by call: what it passed, and the
# pipeline's defaults for what it left out (written out, so a diffusers release that changes
# a default does not change the study's settings).
_LTX = ClipSettings(
    VideoSpec(704, 480, 161, 15, 50, 3.0, LTX_NEGATIVE), {"max_sequence_length": 128}
)
_HUNYUAN = VideoSpec(512, 320, 61, 15, 30, 6.0)  # guidance: the model's embedded guidance
_COGVIDEOX = VideoSpec(720, 480, 49, 8, 50, 6.0)
# AnimateDiff: 512x512 and 16 frames are the pipeline's defaults for an SD 1.5 base; the study
# wrote the frames with export_to_video's default rate, 10 fps.
_ANIMATEDIFF = VideoSpec(512, 512, 16, 10, 4, 1.0)
# Every transformer denoiser takes these two (AnimateDiff's UNet takes no cache at all).
_BLOCK_CACHES: dict[str, Mapping[str, Any]] = {"first-block": {}, "taylorseer": {}}

PRESETS: dict[str, DiffusionPreset] = {
    preset.name: preset
    for preset in (
        DiffusionPreset(
            name="ltx",
            pipeline="LTXPipeline",
            model="Lightricks/LTX-Video",
            summary="LTX-Video",
            ours=_LTX,
            study=_LTX,
            size_multiple=32,
            frames_step=8,
            caches=_BLOCK_CACHES,
        ),
        DiffusionPreset(
            name="hunyuan",
            pipeline="HunyuanVideoPipeline",
            model="hunyuanvideo-community/HunyuanVideo",
            summary="HunyuanVideo",
            ours=ClipSettings(_HUNYUAN),
            # The study loaded the pipeline in fp16 with its text encoder stored in fp8.
            study=ClipSettings(_HUNYUAN, quantize="4bit", dtype="float16", text_encoder_fp8=True),
            why={
                "quantize": "unquantised weights lose nothing where the GPU has room (the 13B "
                "transformer takes about 26 GB in bf16); --quantize 4bit gives the study's "
                "memory use, as nf4",
                "dtype": "bf16 has fp32's range, so no activation overflows; the study's fp16 "
                "is the paper profile's",
                "text_encoder": "the 8B Llama text encoder in bf16 keeps the prompt's embedding "
                "exact; fp8 storage saves about 8 GB of GPU memory",
            },
            size_multiple=16,
            frames_step=4,
            # Its guidance is embedded (one pass per step): FasterCache has no branch to skip.
            caches={
                **_BLOCK_CACHES,
                "faster": {"tensor_format": "BCFHW", "is_guidance_distilled": True},
            },
        ),
        DiffusionPreset(
            name="cogvideox",
            pipeline="CogVideoXPipeline",
            model="THUDM/CogVideoX-5b",
            summary="CogVideoX-5B",
            ours=ClipSettings(_COGVIDEOX, {"use_dynamic_cfg": True}),
            study=ClipSettings(_COGVIDEOX, {"use_dynamic_cfg": False}),
            why={
                "use_dynamic_cfg": "the model authors' reference script turns it on with the "
                "5B model's DPM scheduler"
            },
            size_multiple=16,
            # The VAE decodes latent frames in pairs after a first group of one: only an odd
            # latent count (8k+1 frames) comes back at the length asked for.
            frames_step=8,
            portrait=False,
            max_frames=49,
            caches={**_BLOCK_CACHES, "faster": {"tensor_format": "BFCHW"}},
        ),
        DiffusionPreset(
            name="animatediff",
            pipeline="AnimateDiffPipeline",
            model="emilianJR/epiCRealism",
            summary="AnimateDiff-Lightning 4-step on a Stable Diffusion 1.5 base",
            ours=ClipSettings(replace(_ANIMATEDIFF, fps=8)),
            study=ClipSettings(_ANIMATEDIFF),
            why={
                "fps": "16 frames at 8 fps last 2 s, nearer the 3-second clip a script "
                "describes than 1.6 s at 10 fps"
            },
            size_multiple=8,
            frames_step=1,
            denoiser="unet",
            max_frames=32,
            adapter=LIGHTNING_ADAPTER,
        ),
        DiffusionPreset(
            name="wan",
            pipeline="WanPipeline",
            model="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
            summary="Wan 2.1 T2V 1.3B (49 frames = 3 s at 16 fps)",
            ours=ClipSettings(VideoSpec(832, 480, 49, 16, 50, 5.0, WAN_NEGATIVE)),
            size_multiple=16,
            frames_step=4,
            caches=_BLOCK_CACHES,  # FasterCache wants both guidance branches in one batch
        ),
        DiffusionPreset(
            name="hunyuan15",
            pipeline="HunyuanVideo15Pipeline",
            model="hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v",
            summary="HunyuanVideo-1.5 480p T2V (73 frames = 3 s at 24 fps, the rate of "
            "Tencent's reference script; guidance set through its guider)",
            ours=ClipSettings(VideoSpec(848, 480, 73, 24, 50, 6.0)),
            size_multiple=16,
            frames_step=4,
            # diffusers does not know the layout of its blocks (no first-block), and FasterCache
            # wants both guidance branches in one batch.
            caches={"taylorseer": {}},
        ),
    )
}


CACHES = ("none", "first-block", "faster", "taylorseer")
"""``--cache``: diffusers' own hooks that reuse the denoiser's work from one step to the next
(approximate: the output changes a little)."""


@dataclass(frozen=True)
class CoverSettings:
    """What a cover preset runs with under one profile, before the user's overrides."""

    steps: int
    guidance: float
    negative_prompt: str
    shape: Literal["square", "clip"]
    """``square``: side x side, the pipeline's default; ``clip``: the clip's aspect ratio at
    the same pixel count."""

    def described(self, side: int) -> dict[str, str]:
        """Each setting in words, keyed as :attr:`CoverPreset.why` is."""
        return {
            "shape": f"{side}x{side}"
            if self.shape == "square"
            else f"{side}x{side} pixels' worth in the clip's aspect ratio",
            "steps": f"{self.steps} steps",
            "guidance": f"guidance {self.guidance:g}",
            "negative_prompt": f'negative prompt "{self.negative_prompt}"'
            if self.negative_prompt
            else "no negative prompt",
        }


@dataclass(frozen=True)
class CoverPreset:
    name: str
    pipeline: str
    model: str
    native: int
    """The side of the square the model was trained on; covers keep its pixel count."""
    summary: str
    ours: CoverSettings
    """Popcorn's settings (the ``popcorn`` profile's)."""
    study: CoverSettings | None = None
    """The study's exact settings (the ``paper`` profile's); None for a model it did not use."""
    why: Mapping[str, str] = field(default_factory=dict)
    """Why Popcorn's settings differ from the study's, per setting that does."""

    def settings(self, presets: Presets) -> CoverSettings:
        return self.study if presets == "study" and self.study is not None else self.ours

    def differences(self) -> list[Difference]:
        """Where Popcorn's settings depart from the study's ([] for a model not in it)."""
        if self.study is None:
            return []
        study, ours = self.study.described(self.native), self.ours.described(self.native)
        return differences(study, ours, self.why)


COVER_NEGATIVE = "blurry, low quality, watermark, text, deformed, cropped"

COVER_PRESETS: dict[str, CoverPreset] = {
    preset.name: preset
    for preset in (
        CoverPreset(
            name="sd15",
            pipeline="StableDiffusionPipeline",
            model="stable-diffusion-v1-5/stable-diffusion-v1-5",
            native=512,
            summary="Stable Diffusion 1.5 (the study's cover model)",
            ours=CoverSettings(50, 7.5, COVER_NEGATIVE, "clip"),
            # The study called the pipeline with the prompt alone: its defaults.
            study=CoverSettings(50, 7.5, "", "square"),
            why={
                "shape": "a cover stands for its clip in a feed, so it takes the clip's shape "
                "(9:16 with --portrait) rather than a square to be cropped",
                "negative_prompt": "steers SD 1.5 away from the failures that spoil a cover "
                "(blur, watermarks, stray text, cropped subjects)",
            },
        ),
        CoverPreset(
            name="sdxl",
            pipeline="StableDiffusionXLPipeline",
            model="stabilityai/stable-diffusion-xl-base-1.0",
            native=1024,
            summary="Stable Diffusion XL base 1.0",
            ours=CoverSettings(30, 5.0, COVER_NEGATIVE, "clip"),
        ),
    )
}
