"""The models of benchmarks/gpu_check.py: each preset's pipeline and an LLM from their published
configurations (/work/shared/GPU-CONFIGS.md) with random weights, or at toy size for
``--cpu-smoke``, built straight on the device in the run's dtype. Speed does not depend on
weight values; tokenizers are small ones trained here, since the models only need ids inside
their vocabulary.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from popcorn.script import Script
from popcorn.writer.prompts import basic_messages

SCRIPT = Script(
    "Kitten Shreds",
    "A kitten on a skateboard in a sunny park",
    "Close-up of a fluffy kitten rolling down a skate ramp at golden hour, slow motion, "
    "handheld camera, shallow depth of field",
)
TEXT = f"{SCRIPT.title} {SCRIPT.cover_prompt} {SCRIPT.video_prompt} " + " ".join(
    m["content"] for m in basic_messages("A cat learning to skateboard")
)
LLAMA_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def cfg(**values: Any) -> dict[str, Any]:
    """Keyword arguments of a model's config, typed loosely like the constructors they go to."""
    return values


def lib(name: str) -> Any:
    """``name`` imported, typed loosely: diffusers' and transformers' constructors carry no
    annotations."""
    return importlib.import_module(name)


@dataclass(frozen=True)
class Build:
    """Where models are built, in which dtype, and whether at toy size."""

    device: str
    dtype: torch.dtype
    tiny: bool


@contextmanager
def on_device(run: Build) -> Iterator[None]:
    """Build modules straight on the device in the run's dtype (schedulers and tokenizers are
    built outside: their numpy tables fail inside a CUDA device context)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(run.dtype)
    try:
        with torch.device(run.device):
            yield
    finally:
        torch.set_default_dtype(before)


# --- tokenizers and text encoders ---------------------------------------------------------


def unigram_tokenizer(specials: tuple[str, ...] = ()) -> Any:
    """A T5-style tokenizer trained on this script's texts (ids in every encoder's range)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    t = lib("transformers")

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    names = ["<pad>", "</s>", "<unk>", *specials]
    tok.train_from_iterator(
        [TEXT] * 3, trainers.UnigramTrainer(vocab_size=300, special_tokens=names, unk_token="<unk>")
    )
    return t.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        bos_token=specials[0] if specials else None,
        additional_special_tokens=list(specials[1:]),
    )


def clip_tokenizer() -> Any:
    """A CLIP tokenizer over the byte alphabet with no merges (every word splits into letters)."""
    from transformers import CLIPTokenizer

    bytes_to_unicode = lib("transformers.convert_slow_tokenizer").bytes_to_unicode
    letters = list(bytes_to_unicode().values())
    words = [*letters, *(c + "</w>" for c in letters), "<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={w: i for i, w in enumerate(words)}, merges=[], model_max_length=77)


def t5_encoder(run: Build, umt5: bool = False) -> Any:
    """T5 v1.1 XXL's encoder (UMT5-XXL's for Wan), or one 32-wide layer at toy size."""
    transformers = lib("transformers")

    size = (
        cfg(d_model=32, d_ff=37, num_layers=1, num_heads=4, d_kv=8)
        if run.tiny
        else cfg(d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64)
    )
    kind = "UMT5" if umt5 else "T5"
    config = getattr(transformers, f"{kind}Config")(
        vocab_size=256384 if umt5 else 32128,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        **size,
    )
    return getattr(transformers, f"{kind}EncoderModel")(config)


def clip_text(run: Build, tokenizer: Any, big_g: bool = False) -> Any:
    """CLIP-L's text encoder (OpenCLIP bigG's with projection for SDXL's second), or toy size."""
    t = lib("transformers")

    if run.tiny:
        size = cfg(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
        size["projection_dim"] = 32
    elif big_g:
        size = cfg(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32)
        size.update(num_attention_heads=20, projection_dim=1280)
    else:
        size = cfg(hidden_size=768, intermediate_size=3072, num_hidden_layers=12)
        size.update(num_attention_heads=12, projection_dim=768)
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = t.CLIPTextConfig(
        vocab_size=49408,
        max_position_embeddings=77,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"),
        eos_token_id=eos,
        pad_token_id=eos,
        **size,
    )
    return (t.CLIPTextModelWithProjection if big_g else t.CLIPTextModel)(config)


# --- pipelines at their published sizes (or toy sizes) -------------------------------------


def build_clip(run: Build, name: str) -> Any:
    d = lib("diffusers")

    if name in ("ltx", "cogvideox", "wan"):
        tokenizer = unigram_tokenizer()
    if name == "ltx":
        scheduler = d.FlowMatchEulerDiscreteScheduler()
        tiny_vae = cfg(
            latent_channels=8,
            block_out_channels=(8,) * 4,
            decoder_block_out_channels=(8,) * 4,
            spatio_temporal_scaling=(True, True, False, False),
            decoder_spatio_temporal_scaling=(True, True, False, False),
            layers_per_block=(1,) * 5,
            decoder_layers_per_block=(1,) * 5,
            patch_size=1,
            patch_size_t=1,
            encoder_causal=True,
            decoder_causal=False,
        )
        tiny = cfg(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1)
        tiny.update(num_attention_heads=4, attention_head_dim=8, cross_attention_dim=32)
        tiny.update(num_layers=2, caption_channels=32)
        with on_device(run):
            return d.LTXPipeline(
                transformer=d.LTXVideoTransformer3DModel(**(tiny if run.tiny else {})),
                vae=d.AutoencoderKLLTXVideo(**(tiny_vae if run.tiny else {})),
                scheduler=scheduler,
                text_encoder=t5_encoder(run),
                tokenizer=tokenizer,
            )
    if name == "wan":
        scheduler = d.UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
        )
        full = cfg(num_attention_heads=12, attention_head_dim=128, in_channels=16)
        full.update(out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30)
        full.update(cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6)
        tiny = cfg(num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4)
        tiny.update(text_dim=32, freq_dim=16, ffn_dim=32, num_layers=2)
        tiny_vae = cfg(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1)
        tiny_vae.update(temperal_downsample=[False, True, True], latents_mean=[0.0] * 4)
        tiny_vae["latents_std"] = [1.0] * 4
        with on_device(run):
            return d.WanPipeline(
                tokenizer=tokenizer,
                text_encoder=t5_encoder(run, umt5=True),
                vae=d.AutoencoderKLWan(**(tiny_vae if run.tiny else {})),
                transformer=d.WanTransformer3DModel(
                    patch_size=(1, 2, 2), **(tiny if run.tiny else full)
                ),
                scheduler=scheduler,
            )
    if name == "cogvideox":
        scheduler = d.CogVideoXDPMScheduler(timestep_spacing="trailing")
        full = cfg(num_attention_heads=48, attention_head_dim=64, num_layers=42, in_channels=16)
        full.update(out_channels=16, text_embed_dim=4096, time_embed_dim=512, sample_width=90)
        full.update(sample_height=60, sample_frames=49)
        tiny = cfg(num_attention_heads=2, attention_head_dim=16, num_layers=2, in_channels=4)
        tiny.update(out_channels=4, text_embed_dim=32, time_embed_dim=8, sample_width=4)
        tiny.update(sample_height=4, sample_frames=9, patch_size=2, max_text_seq_length=226)
        tiny_vae = cfg(block_out_channels=(8,) * 4, latent_channels=4, layers_per_block=1)
        tiny_vae.update(norm_num_groups=2, sample_width=32, sample_height=32)
        with on_device(run):
            return d.CogVideoXPipeline(
                tokenizer=tokenizer,
                text_encoder=t5_encoder(run),
                vae=d.AutoencoderKLCogVideoX(scaling_factor=0.7, **(tiny_vae if run.tiny else {})),
                transformer=d.CogVideoXTransformer3DModel(
                    use_rotary_positional_embeddings=True, **(tiny if run.tiny else full)
                ),
                scheduler=scheduler,
            )
    if name == "hunyuan":
        return build_hunyuan(run)
    if name == "animatediff":
        return build_sd(run, "AnimateDiffPipeline")
    raise ValueError(f"no builder for {name!r}")


def build_hunyuan(run: Build) -> Any:
    d = lib("diffusers")
    t = lib("transformers")

    tokenizer, tokenizer_2 = unigram_tokenizer(tuple(LLAMA_SPECIALS)), clip_tokenizer()
    scheduler = d.FlowMatchEulerDiscreteScheduler(shift=7.0)
    llama = cfg(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32)
    llama.update(num_attention_heads=32, num_key_value_heads=8)
    transformer: dict[str, Any] = {}
    vae: dict[str, Any] = {}
    if run.tiny:  # two Llama layers: the pipeline reads the hidden states two below the top
        llama = cfg(hidden_size=16, intermediate_size=32, num_hidden_layers=2)
        llama.update(num_attention_heads=2, num_key_value_heads=2)
        transformer = cfg(in_channels=4, out_channels=4, num_attention_heads=2)
        transformer.update(attention_head_dim=8, num_layers=1, num_single_layers=1)
        transformer.update(num_refiner_layers=1, patch_size=2, patch_size_t=1)
        transformer.update(text_embed_dim=16, pooled_projection_dim=32, rope_axes_dim=(2, 2, 4))
        vae = cfg(latent_channels=4, block_out_channels=(8,) * 4, layers_per_block=1)
        vae.update(down_block_types=("HunyuanVideoDownBlock3D",) * 4, norm_num_groups=4)
        vae["up_block_types"] = ("HunyuanVideoUpBlock3D",) * 4
    config = t.LlamaConfig(vocab_size=128256, pad_token_id=tokenizer.pad_token_id, **llama)
    with on_device(run):
        return d.HunyuanVideoPipeline(
            text_encoder=t.LlamaModel(config),
            tokenizer=tokenizer,
            transformer=d.HunyuanVideoTransformer3DModel(**transformer),
            vae=d.AutoencoderKLHunyuanVideo(**vae),
            scheduler=scheduler,
            text_encoder_2=clip_text(run, tokenizer_2),
            tokenizer_2=tokenizer_2,
        )


def build_sd(run: Build, pipeline: str) -> Any:
    """SD 1.5 (cover or AnimateDiff's base with its motion adapter) or SDXL."""
    d = lib("diffusers")

    tokenizer = clip_tokenizer()
    euler = cfg(beta_start=0.00085, beta_end=0.012, steps_offset=1)
    if pipeline == "AnimateDiffPipeline":
        scheduler = d.EulerDiscreteScheduler(
            beta_schedule="linear", timestep_spacing="trailing", **euler
        )
    else:
        scheduler = d.EulerDiscreteScheduler(beta_schedule="scaled_linear", **euler)
    tiny_unet = cfg(sample_size=16, block_out_channels=(16, 32), layers_per_block=1)
    tiny_unet.update(norm_num_groups=4, cross_attention_dim=32, attention_head_dim=4)
    tiny_unet.update(
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )
    sd15_unet = cfg(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    vae = cfg(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4)
    vae.update(
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4
    )
    if run.tiny:
        vae = cfg(block_out_channels=(8, 16), layers_per_block=1, latent_channels=4)
        vae.update(norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 2)
        vae["up_block_types"] = ("UpDecoderBlock2D",) * 2
    with on_device(run):
        common = cfg(
            vae=d.AutoencoderKL(**vae),
            text_encoder=clip_text(run, tokenizer),
            tokenizer=tokenizer,
            scheduler=scheduler,
            feature_extractor=None,
        )
        if pipeline == "AnimateDiffPipeline":
            adapter = (
                d.MotionAdapter(
                    block_out_channels=(16, 32),
                    motion_layers_per_block=1,
                    motion_num_attention_heads=2,
                    motion_norm_num_groups=4,
                    motion_max_seq_length=32,
                )
                if run.tiny
                else d.MotionAdapter()
            )
            unet = d.UNet2DConditionModel(**(tiny_unet if run.tiny else sd15_unet))
            return d.AnimateDiffPipeline(
                unet=unet, motion_adapter=adapter, image_encoder=None, **common
            )
        if pipeline == "StableDiffusionPipeline":
            unet = d.UNet2DConditionModel(**(tiny_unet if run.tiny else sd15_unet))
            return d.StableDiffusionPipeline(
                unet=unet, safety_checker=None, requires_safety_checker=False, **common
            )
        tokenizer_2 = clip_tokenizer()
        xl = cfg(
            sample_size=128,
            cross_attention_dim=2048,
            block_out_channels=(320, 640, 1280),
            layers_per_block=2,
            transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(5, 10, 20),
            projection_class_embeddings_input_dim=2816,
            addition_time_embed_dim=256,
        )
        if run.tiny:  # the toy text widths: 32 + 32, pooled 32, six size numbers of 8
            xl = cfg(sample_size=16, cross_attention_dim=64, block_out_channels=(16, 32))
            xl.update(layers_per_block=1, transformer_layers_per_block=(1, 1), norm_num_groups=4)
            xl.update(attention_head_dim=(2, 4), projection_class_embeddings_input_dim=32 + 6 * 8)
            xl["addition_time_embed_dim"] = 8
        blocks = len(xl["block_out_channels"])
        unet = d.UNet2DConditionModel(
            addition_embed_type="text_time",
            use_linear_projection=True,
            down_block_types=("DownBlock2D", *("CrossAttnDownBlock2D",) * (blocks - 1)),
            up_block_types=(*("CrossAttnUpBlock2D",) * (blocks - 1), "UpBlock2D"),
            **xl,
        )
        return d.StableDiffusionXLPipeline(
            unet=unet,
            text_encoder_2=clip_text(run, tokenizer_2, big_g=True),
            tokenizer_2=tokenizer_2,
            image_encoder=None,
            force_zeros_for_empty_prompt=True,
            add_watermarker=False,
            **common,
        )


def placed(run: Build, pipe: Any) -> Any:
    # Modules a pipeline makes itself (AnimateDiff's UNetMotionModel) may be built in float32.
    pipe.to(run.device, run.dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


QUERIES = [
    "A cat learning to skateboard",
    "Street food in Bangkok at night",
    "Sunrise yoga on a cliff",
    "A golden retriever surfing at dawn",
    "Grandma reviews energy drinks",
    "Lego city timelapse",
    "Tiny house tour in the forest",
    "Speed painting a galaxy",
]


def llm_folder(run: Build, tmp: Path) -> Path:
    """Qwen2.5-1.5B's layer sizes (toy: two layers 64 wide) with random weights, saved once."""
    folder = tmp / "llm"
    if folder.is_dir():
        return folder
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    t = lib("transformers")

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    texts = [m["content"] for q in QUERIES for m in basic_messages(q)]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(vocab_size=2000, special_tokens=specials, initial_alphabet=alphabet),
    )
    tokenizer = t.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=specials[1:],
    )
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    size = (
        cfg(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
        if run.tiny
        else cfg(
            hidden_size=1536,
            intermediate_size=8960,
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
        )
    )
    config = t.Qwen2Config(vocab_size=len(tokenizer), max_position_embeddings=4096, **size)
    with on_device(run):
        model = t.Qwen2ForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
