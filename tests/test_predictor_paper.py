"""The paper profile's predictor: MMRA's configuration, condition by condition.

Titles through an AnglE-style CLS+mean pooled BERT fed without a projection, retrieval text from
a CLS pooled encoder with UAE's prompt over the title and BLIP captions of the frames, bank =
training + validation, target log2(comments) without the videos that have none, MMRA's
two-stage seeded split, batches in split order, selection by validation MAE + nMSE with MMRA's
stopping rule, and test metrics per batch of 256. Encoders are tiny random models (ViT, BERT,
BLIP) built from configs, saved and loaded back through the real loaders."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from popcorn.predictor.features import FeatureSet, feature_recipe, label
from popcorn.predictor.metrics import batched_metrics, mae_plus_nmse, spearman
from popcorn.predictor.train import (
    EarlyStop,
    TrainSettings,
    criterion,
    epoch_order,
    mmra_split,
)

# --- the configuration ----------------------------------------------------------------------


def test_the_paper_profile_trains_mmras_configuration_and_popcorn_keeps_its_own():
    from popcorn.config import load_settings

    assert load_settings(environ={}, profile="paper").profile.predictor == "mmra"
    assert load_settings(environ={}).profile.predictor == "popcorn"
    paper = TrainSettings.for_recipe("mmra")
    assert (paper.epochs, paper.patience, paper.lr, paper.batch_size) == (100, 20, 1e-5, 64)
    assert (paper.retrieved, paper.alpha) == (10, 0.6)
    assert paper.target == "log2(c)" and paper.selection == "mae+nmse"
    assert not paper.project and not paper.shuffle and not paper.init_mean
    assert paper.split == "mmra" and paper.bank == "train+val"
    ours = TrainSettings.for_recipe("popcorn")
    assert ours == TrainSettings()
    assert (ours.target, ours.patience, ours.shuffle, ours.project) == ("log2(1+c)", 10, True, True)
    assert ours.split == "random" and ours.bank == "train" and ours.selection == "mse"
    assert TrainSettings.for_recipe("mmra", epochs=3, lr=None).epochs == 3  # None keeps MMRA's


def test_the_paper_features_are_mmras_encoders():
    recipe = feature_recipe("mmra")
    assert recipe.title.name == "SeanLee97/angle-bert-base-uncased-nli-en-v1"
    assert recipe.title.pooling == "cls_avg" and recipe.title.prompt == ""
    assert recipe.retrieval is not None and recipe.retrieval.name == "WhereIsAI/UAE-Large-V1"
    assert recipe.retrieval.pooling == "cls"
    assert recipe.retrieval.prompt == (
        "Represent this sentence for searching relevant passages: {text}"
    )
    assert recipe.captioner == "Salesforce/blip-image-captioning-base"
    ours = feature_recipe("popcorn")
    assert ours.title.name == "minilm-l6" and ours.title.pooling is None
    assert ours.retrieval is None and ours.captioner is None


def test_cls_avg_pooling_averages_the_first_token_and_the_mean_of_real_tokens():
    import torch

    from popcorn.predictor.encoders import pool

    hidden = torch.tensor([[[1.0, 0.0], [3.0, 4.0], [100.0, 100.0]]])  # last token is padding
    mask = torch.tensor([[1, 1, 0]])
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 0.0]]
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 2.0]]
    assert pool(hidden, mask, "cls_avg").tolist() == [[1.5, 1.0]]


# --- the split ------------------------------------------------------------------------------


def test_the_two_stage_split_of_1000_videos_is_800_100_100_and_fixed():
    parts = mmra_split(1000)
    assert {k: len(v) for k, v in parts.items()} == {"train": 800, "val": 100, "test": 100}
    together = np.concatenate(list(parts.values()))
    assert sorted(together.tolist()) == list(range(1000))
    again = mmra_split(1000)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    # The rows scikit-learn's train_test_split gives (seed 9, then 18), in its order, so this
    # holds without scikit-learn too.
    assert parts["train"][:5].tolist() == [981, 829, 634, 97, 836]
    assert parts["test"][:5].tolist() == [989, 914, 228, 576, 40]
    assert parts["val"][:5].tolist() == [60, 489, 251, 519, 657]


@pytest.mark.parametrize("n", [10, 37, 1000, 1001, 19738])
def test_the_two_stage_split_equals_scikit_learns(n: int):
    sklearn = pytest.importorskip("sklearn.model_selection")
    ids = np.arange(n)
    train, held_out = sklearn.train_test_split(ids, test_size=0.2, random_state=9)
    # MMRA's dataset_split.py: the first part of the second split is its test set.
    test, val = sklearn.train_test_split(held_out, test_size=0.5, random_state=18)
    parts = mmra_split(n)
    assert parts["train"].tolist() == train.tolist()
    assert parts["val"].tolist() == val.tolist()
    assert parts["test"].tolist() == test.tolist()


def test_paper_batches_follow_the_split_order_every_epoch():
    rng = np.random.default_rng(0)
    paper = TrainSettings.for_recipe("mmra")
    assert [epoch_order(7, paper, rng).tolist() for _ in range(3)] == [list(range(7))] * 3
    ours = TrainSettings.for_recipe("popcorn")
    first, second = epoch_order(50, ours, rng), epoch_order(50, ours, rng)
    assert sorted(first.tolist()) == list(range(50)) and first.tolist() != second.tolist()


# --- selection, stopping, metrics -----------------------------------------------------------


def test_mae_plus_nmse_picks_another_epoch_than_mse():
    truth = np.array([0.0, 1.0, 2.0, 3.0])  # variance 1.25
    spread = truth + 0.9  # every error 0.9: MSE 0.81, MAE 0.9, MAE + nMSE 1.548
    one_miss = truth + np.array([0.0, 0.0, 0.0, 2.0])  # MSE 1.0, MAE 0.5, MAE + nMSE 1.3
    paper, ours = TrainSettings.for_recipe("mmra"), TrainSettings.for_recipe("popcorn")
    assert criterion(spread, truth, paper) == pytest.approx(0.9 + 0.81 / 1.25)
    assert criterion(one_miss, truth, paper) == pytest.approx(0.5 + 1.0 / 1.25)
    best = {}
    for name, settings in (("paper", paper), ("popcorn", ours)):
        stop = EarlyStop(settings.patience)
        for epoch, pred in enumerate((spread, one_miss), 1):
            stop.update(epoch, criterion(pred, truth, settings))
        best[name] = stop.best_epoch
    assert best == {"paper": 2, "popcorn": 1}


def test_mae_plus_nmse_sums_over_batches_of_the_training_batch_size():
    rng = np.random.default_rng(3)
    truth, pred = rng.normal(4, 2, 130), rng.normal(4, 2, 130)
    expected = 0.0
    for start in (0, 64, 128):  # batches of 64, 64 and 2
        t, p = truth[start : start + 64], pred[start : start + 64]
        expected += np.mean(np.abs(p - t)) + np.mean((p - t) ** 2) / t.std() ** 2
    assert mae_plus_nmse(pred, truth, 64) == pytest.approx(expected)


def test_training_stops_at_the_first_epoch_more_than_patience_after_the_best():
    values = [5.0, 4.0, 3.0, 3.5] + [3.2] * 40  # best at epoch 3
    stop, ran = EarlyStop(20), 0
    for epoch, value in enumerate(values, 1):
        stop.update(epoch, value)
        ran = epoch
        if stop.stop(epoch):
            break
    assert stop.best_epoch == 3 and ran == 24  # MMRA: break once epoch - best > 20


def test_test_metrics_are_also_averaged_per_batch_of_256():
    rng = np.random.default_rng(7)
    truth = rng.normal(5, 2, 600)
    pred = truth + rng.normal(0, 1, 600)
    chunks = [slice(0, 256), slice(256, 512), slice(512, 600)]
    nmse = [np.mean((pred[s] - truth[s]) ** 2) / np.var(truth[s]) for s in chunks]
    mae = [np.mean(np.abs(pred[s] - truth[s])) for s in chunks]
    src = [spearman(pred[s], truth[s]) for s in chunks]
    got = batched_metrics(pred, truth)
    assert got["batches"] == 3
    assert got["nmse"] == pytest.approx(np.mean(nmse))
    assert got["mae"] == pytest.approx(np.mean(mae))
    assert got["src"] == pytest.approx(np.mean(src))
    # Equal weight per batch, not per video: the short last batch counts as much as the others.
    assert got["mae"] != pytest.approx(np.mean(np.abs(pred - truth)), abs=1e-9)


def test_log2_comments_has_no_label_for_videos_without_comments():
    assert label(np.array([1, 2, 1024]), "log2(c)").tolist() == [0.0, 1.0, 10.0]
    assert label(np.array([0, 1, 3]), "log2(1+c)").tolist() == [0.0, 1.0, 2.0]
    from popcorn.errors import UsageError

    with pytest.raises(UsageError, match="at least one comment"):
        label(np.array([3, 0]), "log2(c)")


# --- the model ------------------------------------------------------------------------------


def test_without_a_projection_the_title_features_reach_the_attention_unchanged():
    import torch

    from popcorn.predictor.model import MMRA, ModelConfig

    model = MMRA(ModelConfig(visual_dim=32, text_dim=32, hidden=32, frames=4, project=False))
    assert isinstance(model.text_in, torch.nn.Identity)
    assert isinstance(model.visual_in, torch.nn.Identity)
    seen: dict[str, torch.Tensor] = {}
    model.target.register_forward_hook(
        lambda _m, args, _out: seen.update(frames=args[0], title=args[1])
    )
    frames, title = torch.randn(2, 4, 32), torch.randn(2, 32)
    model(frames, title, torch.randn(2, 3), torch.randn(2, 3, 4, 32), torch.randn(2, 3, 32),
          torch.randn(2, 3))  # fmt: skip
    assert torch.equal(seen["title"][:, 0], title) and torch.equal(seen["frames"], frames)
    projected = MMRA(ModelConfig(visual_dim=32, text_dim=16, hidden=8, frames=4))
    assert isinstance(projected.text_in, torch.nn.Linear)


def test_unprojected_training_needs_frame_and_title_features_of_one_width():
    from popcorn.errors import UsageError
    from popcorn.predictor.train import model_config

    n = 12
    features = FeatureSet(
        [str(i) for i in range(n)],
        ["t"] * n,
        np.ones(n, np.int64),
        np.zeros((n, 10, 32), np.float32),
        np.zeros((n, 16), np.float32),
        np.zeros((n, 8), np.float32),
        {"recipe": "mmra"},
    )
    with pytest.raises(UsageError, match=r"frame features \(32-d\) and title features \(16-d\)"):
        model_config(features, TrainSettings.for_recipe("mmra"), 10)
    assert model_config(features, TrainSettings.for_recipe("popcorn", hidden=24), 10).hidden == 24


# --- end to end on generated videos ---------------------------------------------------------

ZERO = ("20003", "20011", "20024")


@dataclass(frozen=True)
class Lab:
    root: Path
    corpus: Path
    videos: Path
    encoders: dict[str, Path]
    features: Path
    labelled: list[str]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """40 generated videos, three of them without comments, and the paper profile's features
    extracted with toy encoders (BLIP captions capped at 4 tokens to stay fast)."""
    from popcorn.predictor.features import extract
    from popcorn.retrieval.importers import import_table
    from toys.corpus import generate_media_corpus
    from toys.predictor import toy_encoders

    root = tmp_path_factory.mktemp("paper")
    data = generate_media_corpus(root / "data", videos=40, seed=5)
    rows = [json.loads(line) for line in data.table.read_text().splitlines()]
    for row in rows:
        if row["video_id"] in ZERO:
            row["comment_count"] = 0
    data.table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    corpus, report = import_table(data.table)
    corpus.save(root / "corpus", report)
    texts = [v.title for v in corpus.videos] + [v.caption for v in corpus.videos]
    enc = toy_encoders(root / "encoders", texts, "mmra")
    features = root / "features"
    extract(
        root / "corpus",
        data.videos,
        features,
        enc.visual,
        enc.title,
        retrieval=enc.retrieval,
        captioner=enc.captioner,
        recipe="mmra",
    )
    return Lab(
        root,
        root / "corpus",
        data.videos,
        {name: root / "encoders" / name for name in ("vit", "angle", "uae", "blip")},
        features,
        [v.video_id for v in corpus.videos if v.video_id not in ZERO],
    )


def _copy_features(lab: Lab, folder: Path) -> Path:
    shutil.copytree(lab.features, folder, ignore=shutil.ignore_patterns("cache"))
    return folder


@pytest.fixture(scope="module")
def trained(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``predictor train --profile paper`` and ``predictor eval`` through the CLI."""
    from click.testing import CliRunner

    from popcorn.cli.main import cli

    folder = _copy_features(lab, tmp_path_factory.mktemp("trained") / "predictor")
    options = ["--predictor", str(folder)]
    runner = CliRunner()
    result = runner.invoke(
        cli, ["predictor", "train", "--profile", "paper", "--epochs", "4", "--lr", "3e-3",
              *options, "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    shown = runner.invoke(cli, ["predictor", "eval", *options])
    assert shown.exit_code == 0, shown.output
    evaluated = runner.invoke(cli, ["predictor", "eval", *options, "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    return {
        "folder": folder,
        "meta": json.loads((folder / "predictor.json").read_text()),
        "eval": json.loads(evaluated.stdout),
        "eval_table": shown.stdout,
    }


@pytest.mark.slow
def test_paper_features_are_angle_titles_and_uae_over_title_and_frame_captions(lab: Lab):
    meta = json.loads((lab.features / "features.json").read_text())
    assert meta["recipe"] == "mmra" and meta["zero_comments"] == 3
    assert meta["text"]["pooling"] == "cls_avg" and meta["text"]["dim"] == 32  # = the ViT's
    assert meta["retrieval"]["pooling"] == "cls" and meta["retrieval"]["dim"] == 16
    assert meta["retrieval"]["prompt"].startswith("Represent this sentence")
    assert meta["captioner"]["name"].endswith("blip")
    data = FeatureSet.load(lab.features)
    assert data.text.shape == (40, 32) and data.retrieval.shape == (40, 16)
    assert not np.allclose(np.linalg.norm(data.text, axis=1), 1.0)  # AnglE's vectors, as is
    np.testing.assert_allclose(np.linalg.norm(data.retrieval, axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_frame_captions_are_cached_by_file_content_and_captioner(lab: Lab, tmp_path: Path):
    from popcorn.predictor.captions import Captioner
    from popcorn.predictor.encoders import VisualEncoder
    from popcorn.predictor.features import FrameFeatures
    from popcorn.predictor.frames import sample_frames
    from toys.predictor import save_toy_blip

    visual = VisualEncoder(str(lab.encoders["vit"]))
    blip = Captioner(str(lab.encoders["blip"]), max_new_tokens=4)
    encode = FrameFeatures(visual, 10, tmp_path / "cache", blip)
    video = lab.videos / "20001.mp4"
    _, captions, cached = encode.read(video)
    assert not cached and captions is not None and len(captions) == 10
    assert captions == blip.caption(sample_frames(video, 10))
    copy = tmp_path / "same-content.mp4"
    shutil.copy(video, copy)
    again = encode.read(copy)
    assert again[2] and again[1] == captions  # keyed by the content, not the name
    other = Captioner(str(save_toy_blip(tmp_path / "blip2", ["x y"], seed=1)), max_new_tokens=4)
    assert not FrameFeatures(visual, 10, tmp_path / "cache", other).read(video)[2]
    folders = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert [f for f in folders if f.startswith("captions-")] == sorted(
        [f"captions-{blip.tag()}-10", f"captions-{other.tag()}-10"]
    )


@pytest.mark.slow
def test_zero_comment_videos_are_left_out_counted_and_the_split_is_mmras(lab: Lab, trained):
    meta = trained["meta"]
    assert meta["recipe"] == "mmra" and meta["target"] == "log2(c)"
    assert meta["excluded"] == {"zero_comments": 3}
    split = meta["split"]
    everyone = split["train"] + split["val"] + split["test"]
    assert not set(ZERO) & set(everyone) and sorted(everyone) == sorted(lab.labelled)
    expected = mmra_split(len(lab.labelled))
    for name in ("train", "val", "test"):
        assert split[name] == [lab.labelled[i] for i in expected[name]]
    assert {k: len(v) for k, v in split.items()} == {"train": 29, "val": 4, "test": 4}
    data = FeatureSet.load(trained["folder"])
    index = {vid: i for i, vid in enumerate(data.ids)}
    comments = data.comments[[index[v] for v in split["train"]]]
    assert meta["train_mean"] == pytest.approx(float(np.mean(np.log2(comments))), rel=1e-5)


@pytest.mark.slow
def test_the_paper_bank_is_training_plus_validation(trained):
    meta = trained["meta"]
    assert meta["bank"] == ["train", "val"]
    bank = FeatureSet.load(trained["folder"], "bank")
    assert bank.ids == meta["split"]["train"] + meta["split"]["val"]
    assert meta["model"]["project"] is False and meta["model"]["hidden"] == 32
    assert meta["settings"]["shuffle"] is False and meta["settings"]["patience"] == 20


@pytest.mark.slow
def test_the_best_epoch_is_the_lowest_validation_mae_plus_nmse(trained):
    history = trained["meta"]["history"]
    values = [h["criterion"] for h in history]
    assert trained["meta"]["best_epoch"] == 1 + int(np.argmin(values))
    assert all(h["criterion"] != h["val_loss"] for h in history)


@pytest.mark.slow
def test_paper_training_stops_more_than_patience_epochs_after_its_best(lab: Lab, tmp_path: Path):
    from popcorn.predictor.train import train

    features = FeatureSet.load(lab.features)
    settings = TrainSettings.for_recipe("mmra", epochs=40, patience=2, lr=0.05, batch_size=32)
    meta = train(features, tmp_path, settings)
    assert meta["epochs_run"] == min(40, meta["best_epoch"] + 3)


@pytest.mark.slow
def test_eval_reports_whole_split_and_per_256_batch_figures(trained):
    report = trained["eval"]
    assert report["videos"] == 4 and report["target"] == "log2(c)"
    batched = report["batched"]
    assert batched["size"] == 256 and batched["models"]["mmra"]["batches"] == 1
    # One batch holds the whole split: its average is the whole-split figure.
    for key in ("nmse", "src", "mae"):
        assert batched["models"]["mmra"][key] == pytest.approx(report["models"]["mmra"][key])
    assert "MAE/b" in trained["eval_table"]


@pytest.mark.slow
def test_a_paper_predictor_scores_a_clip_by_its_frame_captions(lab: Lab, trained):
    from popcorn.predictor.score import Predictor

    predictor = Predictor.load(trained["folder"])
    test_video = lab.videos / f"{trained['meta']['split']['test'][0]}.mp4"
    # The clip's frames are captioned (the toy captioner's own limit is recorded and reused).
    enc = predictor.encoders()
    assert enc.captioner is not None and enc.retrieval is not enc.title
    one = predictor.score_video(test_video, "watch this cat at home", "a cat on a skateboard")
    two = predictor.score_video(test_video, "watch this cat at home", "nothing like it at all")
    assert one.score == two.score  # the given caption is not what retrieval reads
    assert one.target == "log2(c)" and one.comments == pytest.approx(2**one.score)


@pytest.mark.slow
def test_the_profile_comes_from_settings_and_the_flag_overrides_it(cli, lab: Lab, tmp_path: Path):
    """``[run] profile = "paper"`` makes ``predictor features`` extract MMRA's features with the
    configured encoders; ``--profile popcorn`` on train then refuses them, saying why."""
    config = tmp_path / "popcorn.toml"
    enc = lab.encoders
    config.write_text(
        f'[run]\nprofile = "paper"\n[pe]\ncorpus = "{lab.corpus}"\n[predictor]\n'
        f'visual = "{enc["vit"]}"\nembedder = "{enc["angle"]}"\n'
        f'retrieval_embedder = "{enc["uae"]}"\ncaptioner = "{enc["blip"]}"\n'
    )
    videos = tmp_path / "videos"  # a few of the videos: the others are skipped as missing
    videos.mkdir()
    for vid in lab.labelled[:10]:
        shutil.copy(lab.videos / f"{vid}.mp4", videos)
    out = tmp_path / "predictor"
    result = cli("predictor", "features", "--videos", str(videos), "--config", str(config),
                 "--predictor", str(out), "--json")  # fmt: skip
    assert result.code == 0, result.err
    meta = json.loads((out / "features.json").read_text())
    assert meta["recipe"] == "mmra" and meta["retrieval"]["pooling"] == "cls"
    assert meta["captioner"]["name"] == str(enc["blip"]) and meta["text"]["dim"] == 32
    refused = cli("predictor", "train", "--profile", "popcorn", "--config", str(config),
                  "--predictor", str(out))  # fmt: skip
    assert refused.code == 1 and len(refused.err.strip().splitlines()) == 1
    assert "extracted for the 'mmra' predictor configuration" in refused.err
    assert "--profile popcorn" in refused.err
    hidden = cli("predictor", "train", "--hidden", "64", "--config", str(config),
                 "--predictor", str(out))  # fmt: skip
    assert hidden.code == 1 and "--hidden does not apply to the paper profile" in hidden.err
