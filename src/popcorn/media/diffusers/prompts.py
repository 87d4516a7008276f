"""How much of a prompt a pipeline's text encoder reads, and ``--long-prompt``'s ways of
making it read more."""

from __future__ import annotations

import inspect
import math
from typing import Any

LONG_PROMPT = {"LTXPipeline": 512}
"""Pipelines whose text window (``max_sequence_length``) ``--long-prompt`` may raise, up to
this many tokens: LTX-Video's T5 attends over any length with its mask. Others are left as
their models were trained (CogVideoX's transformer takes exactly 226 text tokens; Wan reads
512 already)."""

CHUNKED_CLIP = frozenset({"StableDiffusionPipeline", "AnimateDiffPipeline"})
"""Pipelines with one CLIP text encoder, whose 77-token window (fixed by its position table)
``--long-prompt`` works around by encoding the prompt in windows of 75 tokens and handing the
UNet their embeddings side by side (its cross-attention takes any length):
:func:`chunked_clip_embeds`. SDXL's two encoders and pooled embedding are left as they are."""


def reads_long_prompts(pipeline_class: str) -> bool:
    """Whether ``--long-prompt`` changes what this pipeline class reads."""
    return pipeline_class in LONG_PROMPT or pipeline_class in CHUNKED_CLIP


def prompt_window(pipe: Any, prompt: str, kwargs: dict[str, Any]) -> dict[str, int] | None:
    """How much of ``prompt`` the pipeline's (first) text encoder reads with ``kwargs``:
    ``{"tokens": N, "read": W}`` when it is cut (N > W), None when it reads all of it."""
    tokenizer = getattr(pipe, "tokenizer", None)
    if tokenizer is None or not prompt:
        return None
    tokens = len(tokenizer(prompt, truncation=False)["input_ids"])
    params = inspect.signature(type(pipe).__call__).parameters
    if "max_sequence_length" in params:
        window = int(kwargs.get("max_sequence_length") or params["max_sequence_length"].default)
    else:
        window = int(tokenizer.model_max_length)
    return {"tokens": tokens, "read": window} if tokens > window else None


def chunked_clip_embeds(pipe: Any, prompt: str, negative: str) -> tuple[Any, Any, int]:
    """(prompt embeddings, negative prompt embeddings, windows) for a prompt longer than the
    CLIP encoder's window: each window of 75 tokens gets its own start and end tokens and is
    encoded alone; the windows' embeddings are laid end to end. The negative prompt is cut
    into as many windows (padded), so both have the shape classifier-free guidance needs."""
    import torch

    tokenizer, encoder = pipe.tokenizer, pipe.text_encoder
    window = int(tokenizer.model_max_length)
    body = window - 2
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = [
        tokenizer(text, truncation=False, add_special_tokens=False)["input_ids"]
        for text in (prompt, negative)
    ]
    count = max(1, *(math.ceil(len(row) / body) for row in ids))

    def embed(row: list[int]) -> Any:
        pieces = []
        for i in range(count):
            piece = [tokenizer.bos_token_id, *row[i * body : (i + 1) * body]]
            piece.append(tokenizer.eos_token_id)
            pieces.append(piece + [pad] * (window - len(piece)))
        tokens = torch.tensor(pieces, device=pipe._execution_device)
        with torch.no_grad():
            hidden = encoder(tokens)[0]  # (windows, 77, width)
        return hidden.reshape(1, count * window, hidden.shape[-1])

    return embed(ids[0]), embed(ids[1]), count


def fit_prompt(
    pipe: Any, pipeline_class: str, long_prompt: bool, prompt: str, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Check how much of ``prompt`` the text encoder reads; with ``long_prompt``
    (``--long-prompt``), raise the window where the pipeline allows (``kwargs`` changed in
    place). What is recorded with the output: ``{}``, or ``{"tokens": N, "read": W}`` with
    ``"long": True`` when the window was raised, or ``"long_limit": L`` when ``--long-prompt``
    would read L; the media stage warns when W < N."""
    cut = prompt_window(pipe, prompt, kwargs)
    if cut is None:
        return {}
    if pipeline_class in CHUNKED_CLIP:
        if not long_prompt:
            return {**cut, "long_limit": cut["tokens"]}  # what --long-prompt would read
        negative = kwargs.pop("negative_prompt", None) or ""
        del kwargs["prompt"]
        embeds, negatives, windows = chunked_clip_embeds(pipe, prompt, negative)
        kwargs["prompt_embeds"], kwargs["negative_prompt_embeds"] = embeds, negatives
        return {**cut, "read": cut["tokens"], "long": True, "windows": windows}
    limit = LONG_PROMPT.get(pipeline_class)
    if not (limit and "max_sequence_length" in kwargs):
        return cut
    if not long_prompt:
        return {**cut, "long_limit": limit}  # what --long-prompt would read
    kwargs["max_sequence_length"] = min(cut["tokens"], limit)
    return {"tokens": cut["tokens"], "read": kwargs["max_sequence_length"], "long": True}
