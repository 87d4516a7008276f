"""Toy-size video diffusion pipelines (LTX, CogVideoX, Wan, HunyuanVideo 1 and 1.5) built from
configs with random weights and saved like a real model, with the tokenizers they need.

The same diffusers classes as the real models, one layer and a few channels wide, with a
tokenizer trained on a sentence, so the whole loading and rendering path runs in seconds on a CPU
with nothing downloaded. The clips are noise. The Stable Diffusion family is in :mod:`toys.sd`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_TEXT = "a kitten rolls down a skate ramp and lands an ollie in slow motion at golden hour"


def t5_tokenizer() -> Any:
    """A T5-style (unigram) tokenizer trained on one sentence."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(
        [_TEXT] * 5,
        trainers.UnigramTrainer(
            vocab_size=60, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"
        ),
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def clip_tokenizer() -> Any:
    """A CLIP tokenizer over the byte alphabet with no merges: every word splits into letters."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    letters = list(bytes_to_unicode().values())
    words = [*letters, *(c + "</w>" for c in letters), "<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={w: i for i, w in enumerate(words)}, merges=[], model_max_length=77)


TEXT_WIDTH = 32
"""Hidden size of every toy CLIP text encoder."""


def clip_text_encoder(tokenizer: Any, projection_dim: int | None = None) -> Any:
    """A two-layer CLIP text encoder over ``tokenizer``'s vocabulary; with ``projection_dim``,
    the SDXL second encoder (``CLIPTextModelWithProjection``) that also gives a pooled vector."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_WIDTH,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        projection_dim=projection_dim or TEXT_WIDTH,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"),
        eos_token_id=eos,
        pad_token_id=eos,
    )
    if projection_dim is None:
        return CLIPTextModel(config)
    return CLIPTextModelWithProjection(config)


def _t5_encoder(
    kind: str, vocab_size: int, d_model: int = 32, d_ff: int = 37, heads: int = 4
) -> Any:
    """A one-layer encoder of the T5 family (``T5`` or ``UMT5``), heads 8 wide."""
    import transformers

    config = getattr(transformers, f"{kind}Config")(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=8,
        d_ff=d_ff,
        num_layers=1,
        num_heads=heads,
        relative_attention_num_buckets=8,
    )
    return getattr(transformers, f"{kind}EncoderModel")(config)


def _t5_parts() -> tuple[Any, Any]:
    tokenizer = t5_tokenizer()
    return tokenizer, _t5_encoder("T5", len(tokenizer))


def save_toy_ltx(folder: Path | str, seed: int = 0) -> Path:
    """A toy ``LTXPipeline`` in ``folder`` (32x32 clips of 8k+1 frames)."""
    import torch
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )

    torch.manual_seed(seed)
    tokenizer, encoder = _t5_parts()
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=1,
        caption_channels=32,
    )
    # The decoder mirrors the encoder's two scaling levels, so a clip comes back at the size
    # and length asked for.
    vae = AutoencoderKLLTXVideo(
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        patch_size=1,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )
    folder = Path(folder)
    pipe: Any = LTXPipeline(
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=encoder,
        tokenizer=tokenizer,
    )
    pipe.save_pretrained(folder)
    return folder


def save_toy_cogvideox(folder: Path | str, seed: int = 0) -> Path:
    """A toy ``CogVideoXPipeline`` in ``folder``, shaped like CogVideoX-5b (rotary positions,
    v-prediction with the DPM scheduler), for clips of 8k+1 frames in multiples of 16 pixels.

    As with the real VAE, which decodes latent frames in pairs after an odd first group, a
    request for 8k+5 frames comes back 3 frames longer (5 -> 8, 13 -> 16)."""
    import torch
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDPMScheduler,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )

    torch.manual_seed(seed)
    tokenizer, encoder = _t5_parts()
    # Rotary positions (as in the 5b model) are computed for any latent grid, so the sample
    # sizes below are only the base grid they are cropped from: a 32x32 clip, 9 frames.
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16,  # the 3D rotary embedding splits a head 4/6/6 over t/h/w
        in_channels=4,
        out_channels=4,
        time_embed_dim=8,
        text_embed_dim=encoder.config.d_model,
        num_layers=1,
        sample_width=4,
        sample_height=4,
        sample_frames=9,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=226,
        use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=False,
    )
    # Four blocks halve the size three times (8x); the first two also halve time (4x).
    vae = AutoencoderKLCogVideoX(
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
        sample_width=32,
        sample_height=32,
    )
    scheduler = CogVideoXDPMScheduler(
        beta_schedule="scaled_linear",
        clip_sample=False,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        set_alpha_to_one=True,
        snr_shift_scale=1.0,
        timestep_spacing="trailing",
    )
    folder = Path(folder)
    pipe: Any = CogVideoXPipeline(
        tokenizer=tokenizer,
        text_encoder=encoder,
        vae=vae,
        transformer=transformer,
        scheduler=scheduler,
    )
    pipe.save_pretrained(folder)
    return folder


def save_toy_wan(folder: Path | str, seed: int = 0) -> Path:
    """A toy Wan 2.1 ``WanPipeline`` in ``folder`` (UMT5 text encoder, flow-matching UniPC
    scheduler), for clips of 4k+1 frames in multiples of 16 pixels."""
    import torch
    from diffusers import (
        AutoencoderKLWan,
        UniPCMultistepScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )

    torch.manual_seed(seed)
    tokenizer = t5_tokenizer()
    encoder = _t5_encoder("UMT5", len(tokenizer))
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,  # the rotary embedding splits a head 4/4/4 over t/h/w
        in_channels=4,
        out_channels=4,
        text_dim=encoder.config.d_model,
        freq_dim=16,
        ffn_dim=32,
        num_layers=1,
    )
    # Three of the four levels halve the size (8x); the last two halve time as well (4x).
    z_dim = 4
    vae = AutoencoderKLWan(
        base_dim=8,
        z_dim=z_dim,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,
    )
    # Wan 2.1's own scheduler: UniPC on flow-matching sigmas shifted by 3.
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=3.0,
    )
    folder = Path(folder)
    pipe: Any = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=encoder,
        vae=vae,
        transformer=transformer,
        scheduler=scheduler,
    )
    pipe.save_pretrained(folder)
    return folder


# The decoder-only text encoders (Llama, Qwen2.5-VL): two layers, because both pipelines read
# the hidden states two layers below the top.
_DECODER: dict[str, Any] = {
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
}

# The special tokens that HunyuanVideo's default prompt template writes around the prompt.
_LLAMA_HEADERS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
_QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# A ChatML template like Qwen's, enough for HunyuanVideo-1.5's system + user messages.
_CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _diffusers() -> Any:
    """The diffusers module, typed loosely: its constructors carry no annotations."""
    import diffusers

    return diffusers


def _bpe_parts(tokenizer: Any) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The vocabulary and merges (pairs, as the transformers tokenizers take them) of a trained
    ``tokenizers`` BPE model."""
    model = json.loads(tokenizer.to_str())["model"]
    pairs = [m if isinstance(m, list) else m.split(" ") for m in model["merges"]]
    return dict(model["vocab"]), [(a, b) for a, b in pairs]


def hunyuan_template_head() -> str:
    """The part of HunyuanVideo's default prompt template before the prompt."""
    from diffusers.pipelines.hunyuan_video import pipeline_hunyuan_video

    template = str(pipeline_hunyuan_video.DEFAULT_PROMPT_TEMPLATE["template"])
    return template.split("{}")[0]


def hunyuan15_system_message() -> str:
    """The system message HunyuanVideo-1.5's pipeline puts before every prompt."""
    import inspect

    encode = _diffusers().HunyuanVideo15Pipeline._get_mllm_prompt_embeds
    return str(inspect.signature(encode).parameters["system_message"].default)


def llama_tokenizer() -> Any:
    """A Llama tokenizer (BPE with byte fallback) for HunyuanVideo, trained on one sentence and
    the pipeline's prompt template.

    ``LlamaTokenizerFast``, the class the pipeline names, rebuilds itself from vocab and merges
    on load with a SentencePiece-style pre-tokenizer, so the toy is trained that way too; the
    256 ``<0xNN>`` pieces make any text encodable without an unknown token. The vocabulary size
    is chosen so the template's head comes to 95 tokens, the pipeline's fixed ``crop_start``
    (counted with the real Llama-3 tokenizer): the crop then cuts the template off and keeps the
    prompt whole.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizerFast

    head = hunyuan_template_head()
    for token in _LLAMA_HEADERS:
        head = head.replace(token, " ")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator([head, _TEXT], trainers.BpeTrainer(vocab_size=251, show_progress=False))
    learned, merges = _bpe_parts(tok)
    specials = ["<unk>", "<|begin_of_text|>", "<|end_of_text|>", *_LLAMA_HEADERS]
    by_id = sorted(learned, key=lambda piece: learned[piece])
    pieces = [*specials, *(f"<0x{b:02X}>" for b in range(256)), *by_id]
    bpe: dict[str, Any] = {
        "vocab": {piece: i for i, piece in enumerate(dict.fromkeys(pieces))},
        "merges": merges,
    }
    return LlamaTokenizerFast(
        **bpe,
        unk_token="<unk>",
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        pad_token="<|end_of_text|>",
        additional_special_tokens=_LLAMA_HEADERS,
        add_bos_token=True,
        # The pipeline crops the template off the front of the sequence: pad at the back.
        padding_side="right",
    )


def qwen_tokenizer() -> Any:
    """A Qwen2 tokenizer (byte-level BPE) for HunyuanVideo-1.5, trained on one sentence and the
    pipeline's system message, with a ChatML template.

    Every word of the system message becomes a token, so the chat text before the prompt comes
    to 113 tokens, a little over the pipeline's fixed ``crop_start`` (108, counted with the real
    Qwen2.5-VL tokenizer): the crop keeps the prompt whole, after a few template tokens.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=_QWEN_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([hunyuan15_system_message(), _TEXT], trainer)
    vocab, merges = _bpe_parts(tok)
    bpe: dict[str, Any] = {"vocab": vocab, "merges": merges}
    return Qwen2Tokenizer(
        **bpe,
        additional_special_tokens=_QWEN_SPECIALS[1:],
        chat_template=_CHATML,
    )


def save_toy_hunyuan(folder: Path | str, seed: int = 0) -> Path:
    """A toy ``HunyuanVideoPipeline`` in ``folder``: sizes in multiples of 16, 4k+1 frames.

    The VAE compresses 8x in space and 4x in time and the transformer takes 2x2 patches, as in
    the real model. It runs with the pipeline's default prompt template (see ``llama_tokenizer``).
    """
    import torch
    from transformers import LlamaConfig, LlamaModel

    diffusers = _diffusers()
    torch.manual_seed(seed)
    tokenizer = llama_tokenizer()
    text_encoder = LlamaModel(
        LlamaConfig(
            vocab_size=len(tokenizer),
            **_DECODER,
            max_position_embeddings=512,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    tokenizer_2 = clip_tokenizer()
    text_encoder_2 = clip_text_encoder(tokenizer_2)
    transformer = diffusers.HunyuanVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        patch_size=2,
        patch_size_t=1,
        text_embed_dim=16,
        pooled_projection_dim=TEXT_WIDTH,  # CLIP's pooled vector
        rope_axes_dim=(2, 2, 4),
    )
    vae = diffusers.AutoencoderKLHunyuanVideo(
        latent_channels=4,
        down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        norm_num_groups=4,
        spatial_compression_ratio=8,
        temporal_compression_ratio=4,
    )
    folder = Path(folder)
    pipe = diffusers.HunyuanVideoPipeline(
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        vae=vae,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
    )
    pipe.save_pretrained(folder)
    return folder


def save_toy_hunyuan15(folder: Path | str, seed: int = 0) -> Path:
    """A toy ``HunyuanVideo15Pipeline`` in ``folder``: sizes in multiples of 16, 4k+1 frames.

    The VAE compresses 16x in space and 4x in time, as in the real model. Guidance comes from
    the saved ``guider`` (classifier-free, scale 6 as in the 480p checkpoint), not a call
    argument. The chat template and its crop work as in the real model (see ``qwen_tokenizer``).
    """
    import torch
    from transformers import ByT5Tokenizer, Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel

    diffusers = _diffusers()
    torch.manual_seed(seed)
    tokenizer = qwen_tokenizer()
    text_encoder = Qwen2_5_VLTextModel(
        Qwen2_5_VLTextConfig(
            vocab_size=len(tokenizer),
            **_DECODER,
            max_position_embeddings=2048,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [1, 1, 2]},
            bos_token_id=None,
            eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    # ByT5 reads bytes: its vocabulary is fixed and needs no files.
    tokenizer_2 = ByT5Tokenizer()
    text_encoder_2 = _t5_encoder("T5", len(tokenizer_2), d_model=16, d_ff=32, heads=2)
    latent_channels = 4
    transformer = diffusers.HunyuanVideo15Transformer3DModel(
        # The noisy latents, the (empty) condition latents and a mask channel.
        in_channels=2 * latent_channels + 1,
        out_channels=latent_channels,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=1,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=1,
        patch_size_t=1,
        text_embed_dim=16,
        text_embed_2_dim=16,
        image_embed_dim=8,
        rope_axes_dim=(2, 2, 4),
        task_type="t2v",
    )
    vae = diffusers.AutoencoderKLHunyuanVideo15(
        latent_channels=latent_channels,
        block_out_channels=(16, 16, 16, 16, 16),
        layers_per_block=1,
        spatial_compression_ratio=16,
        temporal_compression_ratio=4,
        downsample_match_channel=False,
        upsample_match_channel=False,
    )
    folder = Path(folder)
    pipe = diffusers.HunyuanVideo15Pipeline(
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        vae=vae,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=5.0),
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        guider=diffusers.ClassifierFreeGuidance(guidance_scale=6.0),
    )
    pipe.save_pretrained(folder)
    return folder
