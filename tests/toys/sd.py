"""Toy-size Stable Diffusion pipelines (SD 1.5 and SDXL covers, AnimateDiff clips and its motion
adapter) built from configs with random weights and saved like a real model.

The same diffusers classes as the real models, two UNet levels a few channels wide, with CLIP
tokenizers trained on a sentence (:func:`toys.video.clip_tokenizer`): loading and rendering run
in seconds on a CPU with nothing downloaded. The images are noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toys.video import TEXT_WIDTH, clip_text_encoder, clip_tokenizer

_UNET_CHANNELS = (16, 32)
"""Channels of the two UNet levels; a motion adapter must repeat them."""
_MAX_FRAMES = 32
"""Frames the motion modules' position table covers (the AnimateDiff preset's maximum)."""


def _vae() -> Any:
    """Two levels: latents at half the image's size, so ``vae_scale_factor`` is 2."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )


def _sd15_unet() -> Any:
    """The SD 1.5 layout in miniature: cross-attention above, a plain block below."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=_UNET_CHANNELS,
        layers_per_block=1,
        norm_num_groups=4,
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=4,
    )


def _toy_motion_adapter() -> Any:
    """Motion modules shaped for ``_sd15_unet`` (same levels and layers per level)."""
    from diffusers import MotionAdapter

    return MotionAdapter(
        block_out_channels=_UNET_CHANNELS,
        motion_layers_per_block=1,
        motion_num_attention_heads=2,
        motion_norm_num_groups=4,
        motion_max_seq_length=_MAX_FRAMES,
        use_motion_mid_block=True,
    )


def save_toy_motion_adapter(folder: Path | str, seed: int = 0) -> Path:
    """A toy ``MotionAdapter`` in ``folder``, for ``--motion-adapter`` on the SD 1.5 toy."""
    import torch

    torch.manual_seed(seed)
    folder = Path(folder)
    _toy_motion_adapter().save_pretrained(folder)
    return folder


def save_toy_animatediff(folder: Path | str, seed: int = 0) -> Path:
    """A toy ``AnimateDiffPipeline`` in ``folder`` with its motion adapter saved inside, on
    AnimateDiff-Lightning's scheduler (Euler, trailing timesteps, linear betas). Clips of any
    size that is a multiple of 8, up to 32 frames."""
    import torch
    from diffusers import AnimateDiffPipeline, EulerDiscreteScheduler

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer()
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="linear",
        timestep_spacing="trailing",
        steps_offset=1,
    )
    folder = Path(folder)
    # The pipeline turns the 2D UNet and the adapter into one UNetMotionModel; both are saved.
    pipe: Any = AnimateDiffPipeline(
        vae=_vae(),
        text_encoder=clip_text_encoder(tokenizer),
        tokenizer=tokenizer,
        unet=_sd15_unet(),
        motion_adapter=_toy_motion_adapter(),
        scheduler=scheduler,
        feature_extractor=None,
        image_encoder=None,
    )
    pipe.save_pretrained(folder)
    return folder


def save_toy_sd15(folder: Path | str, seed: int = 0) -> Path:
    """A toy ``StableDiffusionPipeline`` in ``folder`` (no safety checker), on SD 1.5's PNDM
    scheduler. Its UNet takes the toy motion adapter (``save_toy_motion_adapter``)."""
    import torch
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer()
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    folder = Path(folder)
    pipe: Any = StableDiffusionPipeline(
        vae=_vae(),
        text_encoder=clip_text_encoder(tokenizer),
        tokenizer=tokenizer,
        unet=_sd15_unet(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def save_toy_sdxl(folder: Path | str, seed: int = 0) -> Path:
    """A toy ``StableDiffusionXLPipeline`` in ``folder``: two CLIP encoders (the second with a
    projection for the pooled vector), a UNet conditioned on text and the size ("text_time"),
    SDXL's Euler scheduler, and no watermarker."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = clip_tokenizer(), clip_tokenizer()
    pooled = TEXT_WIDTH
    time_embed = 8
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=_UNET_CHANNELS,
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        transformer_layers_per_block=(1, 2),
        # The two encoders' hidden states side by side.
        cross_attention_dim=2 * TEXT_WIDTH,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed,
        # Six size numbers (original size, crop corner, target size) and the pooled text.
        projection_class_embeddings_input_dim=6 * time_embed + pooled,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
        steps_offset=1,
    )
    folder = Path(folder)
    pipe: Any = StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=clip_text_encoder(tokenizer),
        text_encoder_2=clip_text_encoder(tokenizer_2, projection_dim=pooled),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )
    pipe.save_pretrained(folder)
    return folder
