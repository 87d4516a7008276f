"""Popularity predictor throughput on the CPU with the test encoders (tiny random ViT and BERT
sentence embedder, the real loaders), on generated 32x32 videos.

Run: ``.venv/bin/python benchmarks/predictor_throughput.py [--videos 300] [--repeats 20]``

1. Feature extraction (videos/s): ``popcorn.predictor.features.extract`` over the corpus,
   against the same videos' bare decode (``sample_frames`` only) in the same run: the ratio
   shows what encoding, hashing and caching add. A second extraction shows the cache.
2. Training (samples/s): ``train`` (MMRA, hidden 32, K 10) against a plain two-layer MLP on the
   concatenated frame and title features with the same batches, epochs and optimiser.
3. Scoring one new video with warm encoders (``Predictor.score_video``), median latency, against
   decoding its frames alone.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import _toys  # noqa: F401  (tests/toys on the path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()

    import torch

    from popcorn.predictor.encoders import VisualEncoder
    from popcorn.predictor.features import extract
    from popcorn.predictor.frames import sample_frames
    from popcorn.predictor.score import Predictor
    from popcorn.predictor.train import TrainSettings, train
    from popcorn.retrieval.embedders import Embedder
    from popcorn.retrieval.importers import import_table
    from toys.corpus import generate_media_corpus
    from toys.predictor import save_toy_sentence_encoder, save_toy_vit

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = generate_media_corpus(root / "data", videos=args.videos)
        corpus, report = import_table(data.table)
        corpus.save(root / "corpus", report)
        texts = [v.title for v in corpus.videos] + [v.caption for v in corpus.videos]
        visual = VisualEncoder(str(save_toy_vit(root / "vit")))
        text = Embedder(str(save_toy_sentence_encoder(root / "st", texts)))
        visual.encode(np.zeros((1, 32, 32, 3), np.uint8))  # load both before timing
        text.encode(["warm up"])

        paths = sorted(data.videos.glob("*.mp4"))
        t0 = time.perf_counter()
        for path in paths:
            sample_frames(path)
        decode = time.perf_counter() - t0
        t0 = time.perf_counter()
        features, _ = extract(root / "corpus", data.videos, root / "p", visual, text)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        extract(root / "corpus", data.videos, root / "p", visual, text)
        warm = time.perf_counter() - t0
        n = len(paths)
        print(f"extraction, {n} videos of 12 frames at 32x32, 10 sampled:")
        print(f"  bare decode (baseline)  {n / decode:8.1f} videos/s")
        print(f"  extract, cold           {n / cold:8.1f} videos/s  ({cold / decode:.2f}x decode)")
        print(f"  extract, cached         {n / warm:8.1f} videos/s  ({warm / decode:.2f}x decode)")

        settings = TrainSettings(
            hidden=32, lr=3e-3, batch_size=32, epochs=args.epochs, patience=args.epochs
        )
        t0 = time.perf_counter()
        meta = train(features, root / "p", settings)
        mmra_s = time.perf_counter() - t0
        samples = meta["epochs_run"] * len(meta["split"]["train"])
        mlp_s = _plain_mlp(features, len(meta["split"]["train"]), settings)
        print(f"training, {len(meta['split']['train'])} videos x {meta['epochs_run']} epochs:")
        print(f"  plain MLP (baseline)    {samples / mlp_s:8.0f} samples/s")
        print(
            f"  MMRA train()            {samples / mmra_s:8.0f} samples/s  "
            f"({mmra_s / mlp_s:.1f}x the MLP's time)"
        )

        model = Predictor.load(root / "p")
        video = paths[0]
        model.score_video(video, "watch this cat at home")  # warm
        bare, scored = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            sample_frames(video)
            bare.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            model.score_video(video, "watch this cat at home")
            scored.append(time.perf_counter() - t0)
        b, s = statistics.median(bare) * 1e3, statistics.median(scored) * 1e3
        print(f"scoring one video, warm encoders, median of {args.repeats}:")
        print(f"  decode frames only      {b:8.1f} ms")
        print(f"  score_video             {s:8.1f} ms  ({s / b:.2f}x decode)")


def _plain_mlp(features: object, n_train: int, settings: object) -> float:
    """Seconds to train a two-layer MLP on flattened features, same batches and epochs."""
    import torch

    from popcorn.predictor.features import FeatureSet
    from popcorn.predictor.train import TrainSettings

    assert isinstance(features, FeatureSet) and isinstance(settings, TrainSettings)
    x = np.concatenate([features.frames.reshape(len(features), -1), features.text], axis=1)
    x_t = torch.from_numpy(x[:n_train].astype(np.float32))
    y_t = torch.from_numpy(features.labels()[:n_train])
    model = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], 800), torch.nn.ReLU(), torch.nn.Linear(800, 1)
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr)
    t0 = time.perf_counter()
    for _ in range(settings.epochs):
        order = torch.randperm(n_train)
        for start in range(0, n_train, settings.batch_size):
            rows = order[start : start + settings.batch_size]
            loss = torch.nn.functional.mse_loss(model(x_t[rows]).squeeze(1), y_t[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
