"""The popularity predictor, end to end on generated MicroLens-format data with real video files
whose comment counts follow a known rule of brightness and title wording, and tiny random
encoders (ViT, BERT sentence embedder) saved and loaded back through the real loaders."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from popcorn.predictor.features import FeatureSet, label
from popcorn.predictor.metrics import regression_metrics, spearman

pytestmark = pytest.mark.slow

TRAIN = ["--hidden", "32", "--lr", "3e-3", "--batch-size", "32", "--epochs", "80"]


@dataclass(frozen=True)
class Lab:
    root: Path
    corpus: Path
    videos: Path
    vit: Path
    embedder: Path
    predictor: Path
    broken: dict[str, str]

    def options(self) -> list[str]:
        return ["--predictor", str(self.predictor)]

    def features(self, out: Path, videos: Path | None = None) -> list[str]:
        """``predictor features`` on this lab's corpus and toy encoders, into ``out``."""
        return [
            "predictor", "features", "--videos", str(videos or self.videos),
            "--corpus", str(self.corpus), "--visual", str(self.vit),
            "--embedder", str(self.embedder), "--predictor", str(out), "--json",
        ]  # fmt: skip


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    from popcorn.retrieval.importers import import_table
    from toys.corpus import generate_media_corpus
    from toys.predictor import save_toy_sentence_encoder, save_toy_vit

    root = tmp_path_factory.mktemp("predictor")
    data = generate_media_corpus(root / "data", videos=400, broken=True)
    corpus, report = import_table(data.table)
    corpus.save(root / "corpus", report)
    titles = [v.title for v in corpus.videos]
    return Lab(
        root,
        root / "corpus",
        data.videos,
        save_toy_vit(root / "vit"),
        save_toy_sentence_encoder(root / "embedder", titles + [v.caption for v in corpus.videos]),
        root / "model",
        data.broken,
    )


@pytest.fixture(scope="module")
def trained(lab: Lab) -> dict[str, object]:
    """Features extracted and a model trained through the CLI, as a user would."""
    from click.testing import CliRunner

    from popcorn.cli.main import cli

    runner = CliRunner()
    features = runner.invoke(cli, lab.features(lab.predictor))
    assert features.exit_code == 0, features.output
    trained = runner.invoke(cli, ["predictor", "train", *TRAIN, *lab.options(), "--json"])
    assert trained.exit_code == 0, trained.output
    evaluated = runner.invoke(cli, ["predictor", "eval", *lab.options(), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    return {
        "features": json.loads(features.stdout),
        "train": json.loads(trained.stdout),
        "eval": json.loads(evaluated.stdout),
    }


def test_the_model_learns_the_rule_and_beats_the_mean(trained: dict[str, dict]):
    models = trained["eval"]["models"]
    assert trained["eval"]["videos"] == 40
    assert models["mmra"]["src"] >= 0.6, models
    assert models["mmra"]["nmse"] < models["train-mean"]["nmse"], models
    assert models["train-mean"]["src"] == 0.0  # a constant carries no ranking


def test_broken_videos_are_skipped_counted_and_named(lab: Lab, trained: dict[str, dict]):
    report = trained["features"]
    assert report["kept"] == 400 and report["videos"] == 403
    assert report["skipped"] == {"missing": 1, "undecodable": 1, "too_short": 1}
    for reason, vid in ((r, v) for v, r in lab.broken.items()):
        assert any(line.startswith(vid) for line in report["examples"][reason])
    assert "has 3 frames, needs at least 10" in report["examples"]["too_short"][0]


def test_a_second_extraction_reads_frames_from_the_cache(cli, lab: Lab, trained: dict):
    out = lab.root / "again"
    result = cli(*lab.features(out))
    assert result.code == 0, result.err
    assert json.loads(result.out)["cached"] == 0  # another folder has its own cache
    again = cli(*lab.features(out))
    assert json.loads(again.out)["cached"] == 400
    first, second = FeatureSet.load(lab.predictor), FeatureSet.load(out)
    assert first.ids == second.ids
    np.testing.assert_allclose(first.frames, second.frames, atol=1e-2)


def test_shuffled_labels_teach_nothing(lab: Lab, trained: dict, tmp_path: Path):
    from popcorn.predictor.evaluate import evaluate
    from popcorn.predictor.score import Predictor
    from popcorn.predictor.train import TrainSettings, train

    data = FeatureSet.load(lab.predictor)
    data.comments = np.random.default_rng(1).permutation(data.comments)
    data.save(tmp_path)
    train(data, tmp_path, TrainSettings(hidden=32, lr=3e-3, batch_size=32, epochs=80))
    models = evaluate(Predictor.load(tmp_path))["models"]
    assert abs(models["mmra"]["src"]) < 0.35, models
    assert models["mmra"]["nmse"] > 0.8, models


def test_the_checkpoint_records_what_loading_checks(lab: Lab, trained: dict):
    meta = json.loads((lab.predictor / "predictor.json").read_text())
    assert meta["model"]["hidden"] == 32 and meta["model"]["alpha"] == 0.6
    assert meta["model"]["retrieved"] == 10 and meta["model"]["mlp"] == [800, 200]
    assert meta["frames"] == 10
    assert sorted(map(len, meta["split"].values())) == [40, 40, 320]
    assert meta["best_epoch"] <= meta["epochs_run"]
    assert (lab.predictor / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["model"].update(hidden=64), "another model config"),
        (lambda m: m.update(schema_version=99), "format 99"),
        (lambda m: m.update(kind="other"), "'other' predictor"),
    ],
)
def test_a_checkpoint_from_another_config_or_version_is_refused(
    cli, lab: Lab, trained: dict, tmp_path: Path, change, message: str
):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(lab.predictor, folder, ignore=shutil.ignore_patterns("cache"))
    meta = json.loads((folder / "predictor.json").read_text())
    change(meta)
    (folder / "predictor.json").write_text(json.dumps(meta))
    result = cli("predictor", "eval", "--predictor", str(folder))
    assert result.code == 1
    assert message in result.err and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_a_video_file_scores_with_its_title(cli, lab: Lab, trained: dict):
    video = lab.videos / "20000.mp4"
    result = cli("score", str(video), "--title", "watch this cat at home", *lab.options(), "--json")
    assert result.code == 0, result.err
    record = json.loads(result.out)
    assert 0 < record["score"] < 20 and record["comments"] == pytest.approx(
        2 ** record["score"] - 1, rel=1e-2, abs=0.1
    )


def test_human_reference_gives_percentiles(cli, lab: Lab, trained: dict):
    human = cli("score", "--human", *lab.options(), "--json")
    assert human.code == 0, human.err
    assert json.loads(human.out)["videos"] == 40
    scored = cli(
        "score",
        str(lab.videos / "20001.mp4"),
        "--title",
        "notes on a cat",
        *lab.options(),
        "--json",
    )
    assert 0 <= json.loads(scored.out)["percentile"] <= 100


def test_text_only_ranks_titles_by_their_hook(cli, lab: Lab, trained: dict):
    titles = ["slow footage of a cat at home", "you will not believe this cat at home"]
    result = cli(
        "score",
        "--text-only",
        *[a for t in titles for a in ("--title", t)],
        *lab.options(),
        "--json",
    )
    assert result.code == 0, result.err
    dull, hooked = (row["text_only"] for row in json.loads(result.out))
    assert hooked > dull + 1.0  # the rule gives strong hooks 4 more log2-comments


def test_a_rendered_run_is_scored_into_its_manifest(cli, lab: Lab, trained: dict, tmp_path: Path):
    from popcorn.runs.store import Run, RunManifest, RunStore
    from popcorn.script import Script

    run = RunStore(tmp_path).start(RunManifest(key="k" * 64, query="q", mode="basic"))
    script = Script("Skater cat", "a cat on a board", "The cat rolls down a ramp at dusk")
    run.write_json("script", "script.json", {"schema_version": 1, "script": script.to_dict()})
    run.save(status="done")
    assert cli("score", str(run.path), *lab.options()).code == 1  # nothing rendered yet
    ranked = cli("score", "--text-only", str(run.path), *lab.options(), "--json")
    assert ranked.code == 0 and json.loads(ranked.out)[0]["title"] == "Skater cat"
    rendered = cli("render", str(run.path), "--video", "preview", "--cover", "none")
    assert rendered.code == 0, rendered.err
    result = cli("score", str(run.path), *lab.options(), "--json")
    assert result.code == 0, result.err
    manifest = Run.load(run.path).manifest
    assert manifest.stages["score"]["score"] == json.loads(result.out)["score"]
    assert manifest.stages["score"]["preview"] is True
    assert manifest.files["score"] == "score.json"


def test_a_corpus_without_media_says_which_files_are_missing(cli, lab: Lab, tmp_path: Path):
    empty = tmp_path / "no-videos"
    empty.mkdir()
    result = cli(*lab.features(tmp_path / "p", videos=empty))
    assert result.code == 1
    assert "no usable video among 403" in result.err and "all 403 missing" in result.err


def test_no_trained_predictor_is_a_one_line_error(cli, tmp_path: Path):
    result = cli("score", "--human", "--predictor", str(tmp_path / "nothing"))
    assert result.code == 1 and "no trained predictor" in result.err


def test_zero_comments_label_zero_and_metrics_are_the_studys():
    assert label(np.array([0, 1, 3, 1023])).tolist() == [0.0, 1.0, 2.0, 10.0]
    truth = np.array([1.0, 2.0, 3.0, 4.0])
    m = regression_metrics(truth + 1.0, truth)
    assert m["mae"] == 1.0 and m["nmse"] == pytest.approx(1.0 / 1.25) and m["src"] == 1.0
    assert spearman(np.array([1, 1, 2]), np.array([3, 2, 1])) == pytest.approx(-0.8660254)


def generate(cli, lab: Lab, out: Path, *extra: str):
    """``popcorn generate`` on the embedded LLM and the preview clip, scored by the lab's model."""
    query = "A cat learning to skateboard"
    options = ["--predictor", str(lab.predictor), "--cover", "none", "--json"]
    return cli("generate", query, "--out", str(out), *options, *extra)


def test_generate_scores_its_clip_when_a_predictor_is_configured(
    cli, lab: Lab, trained: dict, tmp_path: Path
):
    result = generate(cli, lab, tmp_path)
    assert result.code == 0, result.err
    line = json.loads(result.out)
    assert line["score"]["preview"] is True and line["score"]["score"] > 0
    saved = json.loads((Path(line["run_dir"]) / "score.json").read_text())
    assert saved["score"] == line["score"]["score"]


def test_best_of_n_keeps_the_top_scored_candidate(cli, lab: Lab, trained: dict, tmp_path: Path):
    result = generate(cli, lab, tmp_path, "--candidates", "3", "--render-top", "2")
    assert result.code == 0, result.err
    outcome = json.loads(result.out)
    candidates = outcome["candidates"]
    assert [c["seed"] for c in sorted(candidates, key=lambda c: c["seed"])] == [42, 43, 44]
    text_scores = [c["text_only"] for c in candidates]
    assert text_scores == sorted(text_scores, reverse=True)  # ranked by the text-only model
    rendered = [c for c in candidates if c["rendered"]]
    assert rendered == candidates[:2]
    best = max(rendered, key=lambda c: c["score"])
    assert outcome["winner"] == best["run_dir"]
    saved = json.loads((Path(best["run_dir"]) / "candidates.json").read_text())
    assert saved == outcome


def test_clip_image_towers_load_through_the_same_encoder(tmp_path: Path):
    from popcorn.predictor.encoders import VisualEncoder
    from toys.predictor import save_toy_clip_vision

    encoder = VisualEncoder(str(save_toy_clip_vision(tmp_path / "clip")))
    frames = np.random.default_rng(0).integers(0, 255, (3, 40, 48, 3), dtype=np.uint8)
    vectors = encoder.encode(frames)
    assert vectors.shape == (3, 16) and encoder.dim == 16  # the projection, not the hidden size
    assert not np.allclose(vectors[0], vectors[1])
