"""Tiny random encoders built from configs and saved like real ones, for tests and benchmarks.

They load through the same code as the real ones (``VisualEncoder``, ``Embedder``,
``TextEncoder``, ``Captioner``), run in milliseconds on a CPU, and still carry signal: a random
projection of pixels or words keeps most of what distinguishes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# One layer, 32 wide, 8-pixel patches: shared by the toy ViT and the toy CLIP image tower.
_TINY_VISION: dict[str, Any] = {
    "patch_size": 8,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 37,
}


def save_toy_vit(folder: Path | str, image_size: int = 32, seed: int = 0) -> Path:
    """A one-layer ViT (hidden 32) with its image processor, as ``save_pretrained`` writes it."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(seed)
    folder = Path(folder)
    config = ViTConfig(image_size=image_size, **_TINY_VISION)
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


def save_toy_clip_vision(folder: Path | str, image_size: int = 32, seed: int = 0) -> Path:
    """A one-layer CLIP image tower with a 16-wide projection, and its image processor."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    folder = Path(folder)
    config = CLIPVisionConfig(image_size=image_size, projection_dim=16, **_TINY_VISION)
    CLIPVisionModelWithProjection(config).save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    ).save_pretrained(folder)
    return folder


def _toy_tokenizer(texts: Iterable[str], max_length: int = 64) -> Any:
    """A BERT WordPiece tokenizer whose vocabulary (at most 400 pieces) is made from
    ``texts``: every character, alone and as a continuation, then the commonest whole words.

    Made, not trained: the tokenizers trainer breaks ties between equally frequent pairs in
    hash order, so two processes learnt two vocabularies from the same texts, and every toy
    encoder and every figure built on one changed from run to run (benchmarks/pe_leak.py)."""
    import importlib
    from collections import Counter

    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordPiece

    bert_tokenizer: Any = importlib.import_module("transformers").BertTokenizerFast
    normaliser = normalizers.BertNormalizer(lowercase=True)
    splitter = pre_tokenizers.BertPreTokenizer()
    counts = Counter(
        word
        for text in texts
        for word, _ in splitter.pre_tokenize_str(normaliser.normalize_str(text))
    )
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted({c for word in counts for c in word})
    pieces = [*specials, *chars, *(f"##{c}" for c in chars)]
    taken = set(pieces)
    commonest = sorted((w for w in counts if w not in taken), key=lambda w: (-counts[w], w))
    pieces += commonest[: max(0, 400 - len(pieces))]
    raw = Tokenizer(WordPiece({p: i for i, p in enumerate(pieces)}, unk_token="[UNK]"))
    raw.normalizer = normaliser
    raw.pre_tokenizer = splitter
    return bert_tokenizer(
        tokenizer_object=raw,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )


def save_toy_bert(
    folder: Path | str, texts: Iterable[str], hidden: int = 32, seed: int = 0
) -> Path:
    """A one-layer BERT (``hidden`` wide) and its tokenizer learnt from ``texts``, as
    ``save_pretrained`` writes them: what :class:`~popcorn.predictor.encoders.TextEncoder`
    loads AnglE BERT or UAE-Large-V1 from, at toy size."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    folder = Path(folder)
    tokenizer = _toy_tokenizer(texts)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_toy_sentence_encoder(folder: Path | str, texts: Iterable[str], seed: int = 0) -> Path:
    """A one-layer BERT (hidden 32) with a WordPiece vocabulary learnt from ``texts``, mean
    pooled and normalised, saved as a sentence-transformers folder."""
    import importlib

    from sentence_transformers import SentenceTransformer

    # sentence-transformers 6 moved the modules; older releases only have the old place.
    try:
        models: Any = importlib.import_module("sentence_transformers.sentence_transformer.modules")
    except ImportError:
        models = importlib.import_module("sentence_transformers.models")

    folder = Path(folder)
    bert = save_toy_bert(folder / "bert", texts, hidden=32, seed=seed)
    word = models.Transformer(str(bert), max_seq_length=64)
    model = SentenceTransformer(
        modules=[word, models.Pooling(32, pooling_mode="mean"), models.Normalize()]
    )
    model.save(str(folder / "model"))
    return folder / "model"


def save_toy_blip(
    folder: Path | str, texts: Iterable[str], image_size: int = 32, seed: int = 0
) -> Path:
    """A BLIP captioner (one-layer vision and text towers, 32 wide) with its image processor
    and a tokenizer learnt from ``texts``: what :class:`~popcorn.predictor.captions.Captioner`
    loads BLIP from, at toy size (caption with a small ``max_new_tokens``: a random decoder
    rarely stops by itself)."""
    import importlib

    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration

    hf: Any = importlib.import_module("transformers")
    # Without torchvision, transformers 5 offers the PIL-based image processor under its own
    # name (the plain name warns and falls back to it); older releases have only the plain one.
    images_class = getattr(hf, "BlipImageProcessorPil", None) or hf.BlipImageProcessor

    torch.manual_seed(seed)
    folder = Path(folder)
    tokenizer = _toy_tokenizer(texts)
    text = {
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 64,
        "bos_token_id": tokenizer.cls_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "eos_token_id": tokenizer.sep_token_id,
        "encoder_hidden_size": _TINY_VISION["hidden_size"],
        **{k: v for k, v in _TINY_VISION.items() if k != "patch_size"},
    }
    config = BlipConfig(
        text_config=text,
        vision_config={"image_size": image_size, **_TINY_VISION},
        projection_dim=16,
    )
    BlipForConditionalGeneration(config).save_pretrained(folder)
    images = images_class(size={"height": image_size, "width": image_size})
    hf.BlipProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@dataclass(frozen=True)
class ToyEncoders:
    """Encoders for one predictor configuration, built at toy size under one folder."""

    visual: Any
    title: Any
    retrieval: Any
    captioner: Any


def toy_encoders(root: Path | str, texts: list[str], recipe: str = "popcorn") -> ToyEncoders:
    """Toy stand-ins for the configuration's encoders, loaded through the real loaders:
    ``popcorn``: ViT and a sentence-transformers embedder for both texts; ``mmra``: ViT, a
    BERT pooled CLS+mean for titles (as wide as the ViT, since MMRA does not project), a
    narrower BERT pooled CLS with UAE's prompt for the retrieval text, and BLIP."""
    from popcorn.predictor.captions import Captioner
    from popcorn.predictor.encoders import UAE_PROMPT, TextEncoder, VisualEncoder
    from popcorn.retrieval.embedders import Embedder

    root = Path(root)
    visual = VisualEncoder(str(save_toy_vit(root / "vit")))
    if recipe == "popcorn":
        text = Embedder(str(save_toy_sentence_encoder(root / "st", texts)))
        return ToyEncoders(visual, text, None, None)
    width = _TINY_VISION["hidden_size"]
    title = TextEncoder(str(save_toy_bert(root / "angle", texts, hidden=width)), "cls_avg")
    search = TextEncoder(
        str(save_toy_bert(root / "uae", texts, hidden=16, seed=1)), "cls", UAE_PROMPT
    )
    captioner = Captioner(str(save_toy_blip(root / "blip", texts)), max_new_tokens=4)
    return ToyEncoders(visual, title, search, captioner)


def build_toy_predictor(
    root: Path | str,
    videos: int = 120,
    seed: int = 0,
    epochs: int = 15,
    hidden: int = 16,
    recipe: str = "popcorn",
) -> Path:
    """A predictor trained briefly on ``videos`` generated videos with the toy encoders, in
    configuration ``recipe`` (``popcorn``, or ``mmra`` for the paper profile), with its human
    reference scored: enough to score clips end to end, not to be good. Everything it needs
    (data, corpus, encoders) is written under ``root``; returns the predictor folder."""
    from popcorn.predictor.features import extract
    from popcorn.predictor.score import Predictor
    from popcorn.predictor.train import TrainSettings, train
    from popcorn.retrieval.importers import import_table
    from toys.corpus import generate_media_corpus

    root = Path(root)
    data = generate_media_corpus(root / "data", videos=videos, seed=seed)
    corpus, report = import_table(data.table)
    corpus.save(root / "corpus", report)
    texts = [v.title for v in corpus.videos] + [v.caption for v in corpus.videos]
    enc = toy_encoders(root, texts, recipe)
    folder = root / "predictor"
    features, _ = extract(
        root / "corpus",
        data.videos,
        folder,
        enc.visual,
        enc.title,
        retrieval=enc.retrieval,
        captioner=enc.captioner,
        recipe="mmra" if recipe == "mmra" else "popcorn",
    )
    size = {} if recipe == "mmra" else {"hidden": hidden}
    options = TrainSettings.for_recipe(recipe, lr=3e-3, batch_size=32, epochs=epochs, **size)
    train(features, folder, options)
    Predictor.load(folder).human(features)
    return folder
