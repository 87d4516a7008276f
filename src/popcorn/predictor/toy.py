"""Tiny random encoders built from configs and saved like real ones, for tests and benchmarks.

They load through the same code as the study's (``VisualEncoder``, ``Embedder``), run in
milliseconds on a CPU, and still carry signal: a random projection of pixels or words keeps
most of what distinguishes them.
"""

from __future__ import annotations

from collections.abc import Iterable
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


def save_toy_sentence_encoder(folder: Path | str, texts: Iterable[str], seed: int = 0) -> Path:
    """A one-layer BERT (hidden 32) with a WordPiece vocabulary learnt from ``texts``, mean
    pooled and normalised, saved as a sentence-transformers folder."""
    import importlib

    import torch
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, trainers
    from tokenizers.models import WordPiece
    from transformers import BertConfig, BertModel

    # sentence-transformers 6 moved the modules; older releases only have the old place.
    try:
        models: Any = importlib.import_module("sentence_transformers.sentence_transformer.modules")
    except ImportError:
        models = importlib.import_module("sentence_transformers.models")
    bert_tokenizer: Any = importlib.import_module("transformers").BertTokenizerFast

    torch.manual_seed(seed)
    folder = Path(folder)
    raw = Tokenizer(WordPiece(unk_token="[UNK]"))
    raw.normalizer = normalizers.BertNormalizer(lowercase=True)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    raw.train_from_iterator(
        list(texts), trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials)
    )
    tokenizer = bert_tokenizer(
        tokenizer_object=raw,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )
    bert = folder / "bert"
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(bert)
    tokenizer.save_pretrained(bert)
    word = models.Transformer(str(bert), max_seq_length=64)
    model = SentenceTransformer(
        modules=[word, models.Pooling(32, pooling_mode="mean"), models.Normalize()]
    )
    model.save(str(folder / "model"))
    return folder / "model"


def build_toy_predictor(
    root: Path | str, videos: int = 120, seed: int = 0, epochs: int = 15, hidden: int = 16
) -> Path:
    """A predictor trained briefly on ``videos`` generated videos with the toy encoders, with
    its human reference scored: enough to score clips end to end, not to be good. Everything
    it needs (data, corpus, encoders) is written under ``root``; returns the predictor folder."""
    from popcorn.predictor.encoders import VisualEncoder
    from popcorn.predictor.features import extract
    from popcorn.predictor.score import Predictor
    from popcorn.predictor.synthetic import generate_media_corpus
    from popcorn.predictor.train import TrainSettings, train
    from popcorn.retrieval.corpus import import_table
    from popcorn.retrieval.embedders import Embedder

    root = Path(root)
    data = generate_media_corpus(root / "data", videos=videos, seed=seed)
    corpus, report = import_table(data.table)
    corpus.save(root / "corpus", report)
    texts = [v.title for v in corpus.videos] + [v.caption for v in corpus.videos]
    visual = VisualEncoder(str(save_toy_vit(root / "vit")))
    text = Embedder(str(save_toy_sentence_encoder(root / "st", texts)))
    folder = root / "predictor"
    features, _ = extract(root / "corpus", data.videos, folder, visual, text)
    train(features, folder, TrainSettings(hidden=hidden, lr=3e-3, batch_size=32, epochs=epochs))
    Predictor.load(folder).human(features)
    return folder
