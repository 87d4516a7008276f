"""``popcorn predictor``: extract features, train and evaluate the popularity predictor;
``popcorn score``: score a run, a video file, titles, or the held-out real videos."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from popcorn.cli.corpus import _config_option, _corpus_option
from popcorn.safety import shown

if TYPE_CHECKING:
    from popcorn.config import Settings
    from popcorn.predictor.score import Predictor

_predictor_option = click.option(
    "--predictor",
    "predictor_dir",
    type=click.Path(path_type=Path),
    help="Predictor folder (also POPCORN_PREDICTOR).  [default: popcorn-predictor]",
)
_device_option = click.option(
    "--device", help="auto, cpu, cuda, cuda:N or mps.  [default: auto: a CUDA GPU if there is one]"
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
_profile_option = click.option(
    "--profile",
    type=click.Choice(["paper", "popcorn"]),
    help="paper: MMRA's configuration, as the LLMPopcorn study trained its judge; popcorn: "
    "Popcorn's (see docs/profiles.md).  [default: [run] profile, else popcorn]",
)


def _settings(config: Path | None, profile: str | None = None, **predictor: Any) -> Settings:
    from popcorn.config import load_settings
    from popcorn.pipeline import torch_device

    settings = load_settings(config, {"run": {"profile": profile}, "predictor": predictor})
    # "auto" is decided here, once: a CUDA GPU when torch sees one, else the CPU.
    device = torch_device(settings.predictor.device)
    return settings.model_copy(
        update={"predictor": settings.predictor.model_copy(update={"device": device})}
    )


def _err() -> Any:
    from popcorn.cli.output import console

    return console(stderr=True)


def _print(text: str) -> None:
    """Print literally: lines quote titles, file names and paths (never Rich markup); piped,
    a long line stays whole."""
    from popcorn.cli.output import console

    console().print(shown(text))


@click.group()
def predictor() -> None:
    """The popularity predictor (MMRA): features, training, evaluation.

    \b
    Typical use, on a corpus and its video files (MicroLens' raw videos folder):
      popcorn corpus import microlens ~/data/MicroLens-100k
      popcorn predictor features --videos ~/data/MicroLens-100k/videos
      popcorn predictor train
      popcorn predictor eval
      popcorn score popcorn-runs/<run>      # or: popcorn generate ... (scores automatically)
    """


@predictor.command()
@click.option(
    "--videos",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder of the corpus's videos, named <video_id>.mp4.",
)
@click.option(
    "--visual", help="Frame encoder: vit (the study's ViT-base in21k), clip, a hub id or folder."
)
@click.option(
    "--embedder",
    help="Title encoder, a hub id or folder.  [default: popcorn: minilm-l6 (packaged); paper: "
    "AnglE BERT-base, CLS+mean pooled]",
)
@click.option(
    "--retrieval-embedder",
    help="Encoder of the retrieval text.  [default: popcorn: the title encoder; paper: "
    "UAE-Large-V1, CLS pooled, with its retrieval prompt]",
)
@click.option(
    "--captioner",
    help="Image-to-text model captioning the frames for the retrieval text, or 'none' for the "
    "corpus's caption.  [default: popcorn: none; paper: blip]",
)
@click.option("--frames", type=click.IntRange(1, 64), default=10, show_default=True)
@_profile_option
@_device_option
@_predictor_option
@_corpus_option
@_config_option
@_json_option
def features(
    videos: Path,
    visual: str | None,
    embedder: str | None,
    retrieval_embedder: str | None,
    captioner: str | None,
    frames: int,
    profile: str | None,
    device: str | None,
    predictor_dir: Path | None,
    corpus_dir: Path | None,
    config: Path | None,
    as_json: bool,
) -> None:
    """Sample frames from every corpus video, encode them and the titles, into the predictor
    folder. Frame features (and captions) are cached by content hash, so reruns only encode
    new videos. --profile paper extracts what MMRA's configuration reads."""
    from popcorn.config import load_settings
    from popcorn.predictor.encoders import visual_encoder
    from popcorn.predictor.features import extract

    settings = load_settings(
        config,
        {
            "run": {"profile": profile},
            "pe": {"corpus": corpus_dir},
            "predictor": {
                "path": predictor_dir,
                "visual": visual,
                "embedder": embedder,
                "retrieval_embedder": retrieval_embedder,
                "captioner": captioner,
                "device": device,
            },
        },
    )
    p = settings.predictor
    recipe = settings.profile.predictor
    title, search, frame_captioner = _feature_encoders(settings)
    encoder = visual_encoder(p.visual, device=p.device)
    from popcorn.progress import Counts

    # A bar on a terminal; in a log, a line per 5% of the videos with the time left.
    with Counts(_err()) as counts:
        _, report = extract(
            settings.pe.corpus,
            videos,
            p.path,
            encoder,
            title,
            frames,
            lambda done, total: counts.update("encoding videos", done, total),
            retrieval=search,
            captioner=frame_captioner,
            recipe=recipe,
        )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    rate = report.kept / max(report.seconds, 1e-9)
    _print(
        f"features for {report.kept:,} of {report.videos:,} videos ({report.cached:,} from cache) "
        f"in {report.seconds:.1f} s ({rate:,.1f} videos/s), {recipe} configuration -> "
        f"{p.path / 'features.npz'}"
    )
    for reason, count in sorted(report.skipped.items()):
        examples = "; ".join(report.examples.get(reason, [])[:3])
        _print(f"  skipped {count:,} {reason}: {examples}")


def _feature_encoders(settings: Settings) -> tuple[Any, Any, Any]:
    """(title encoder, retrieval encoder or None, captioner or None): the profile's predictor
    configuration, with the names the settings give instead of its own."""
    from popcorn.predictor.captions import Captioner
    from popcorn.predictor.encoders import text_encoder
    from popcorn.predictor.features import feature_recipe

    p = settings.predictor
    recipe = feature_recipe(settings.profile.predictor)
    title_spec = recipe.title
    title = text_encoder(
        {**title_spec.identity_hint(), "name": p.embedder or title_spec.name}, device=p.device
    )
    search = None
    if recipe.retrieval is not None or p.retrieval_embedder:
        spec = recipe.retrieval or title_spec
        hint = {**spec.identity_hint(), "name": p.retrieval_embedder or spec.name}
        search = text_encoder(hint, device=p.device)
    name = p.captioner or recipe.captioner
    captioner = None if name in (None, "none") else Captioner(name, device=p.device)
    return title, search, captioner


@predictor.command()
@click.option(
    "--epochs",
    type=click.IntRange(1, 100_000),
    help="At most this many epochs; early stopping usually ends sooner.  [default: popcorn "
    "200, paper 100]",
)
@click.option(
    "--patience",
    type=click.IntRange(0, 1000),
    help="Stop at the first epoch more than this many epochs after the best one.  [default: "
    "popcorn 10, paper 20]",
)
@click.option(
    "--lr",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Adam's learning rate.  [default: 1e-5, the study's]",
)
@click.option("--batch-size", type=click.IntRange(1, 65_536), help="[default: 64]")
@click.option(
    "--hidden",
    type=click.IntRange(1, 8192),
    help="Width features are projected to (popcorn only; paper feeds them unprojected).  "
    "[default: 768]",
)
@click.option("--alpha", type=float, help="Weight of the negated attention branch.  [default: 0.6]")
@click.option(
    "--retrieved",
    type=click.IntRange(1, 100),
    help="Bank videos retrieved per video.  [default: 10]",
)
@click.option(
    "--seed",
    type=int,
    help="Initialisation and shuffling seed, and popcorn's split seed (paper's split has "
    "MMRA's seeds, 9 and 18).  [default: popcorn 42, paper 2024]",
)
@click.option(
    "--test-ids",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Pin the test part to these ids (the study's test_id.csv: one id per line, or a CSV "
    "with a video_id column); validation is drawn from the rest by id, not by row order.",
)
@click.option(
    "--split-ids",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='Pin the whole split: a JSON object {"train": [...], "val": [...], "test": [...]}.',
)
@_profile_option
@_device_option
@_predictor_option
@_config_option
@_json_option
def train(
    epochs: int | None,
    patience: int | None,
    lr: float | None,
    batch_size: int | None,
    hidden: int | None,
    alpha: float | None,
    retrieved: int | None,
    seed: int | None,
    test_ids: Path | None,
    split_ids: Path | None,
    profile: str | None,
    device: str | None,
    predictor_dir: Path | None,
    config: Path | None,
    as_json: bool,
) -> None:
    """Train the retrieval-augmented regressor on the extracted features, and the fast
    text-only model beside it. --profile popcorn (Popcorn's): log2(1 + comments), seeded
    80/10/10 split, training bank, projected features, shuffled batches, best by validation
    MSE. --profile paper (MMRA's): log2(comments) without the videos that have none, MMRA's
    two-stage split, bank = training + validation, unprojected features, batches in order,
    best by validation MAE + nMSE, patience 20 of up to 100 epochs. --test-ids or --split-ids
    pin the split by video id; predictor.json records the split's hash either way."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from popcorn.errors import UsageError
    from popcorn.predictor.features import FeatureSet
    from popcorn.predictor.pinned import read_split_ids, read_test_ids
    from popcorn.predictor.train import Epoch, TrainSettings
    from popcorn.predictor.train import train as run_training

    settings = _settings(config, profile, path=predictor_dir, device=device)
    p, recipe = settings.predictor, settings.profile.predictor
    if recipe == "mmra" and hidden is not None:
        raise UsageError(
            "--hidden does not apply to the paper profile: MMRA feeds features unprojected, as "
            "wide as the encoders make them"
        )
    if test_ids is not None and split_ids is not None:
        raise UsageError("choose one of --test-ids and --split-ids")
    pinned = (
        read_test_ids(test_ids)
        if test_ids is not None
        else read_split_ids(split_ids)
        if split_ids is not None
        else None
    )
    data = FeatureSet.load(p.path)
    options = TrainSettings.for_recipe(
        recipe,
        hidden=hidden,
        alpha=alpha,
        retrieved=retrieved,
        lr=lr,
        batch_size=batch_size,
        epochs=epochs,
        patience=patience,
        seed=seed,
        device=p.device,
    )
    err = _err()
    bar = Progress(
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[losses]}"),
        console=err,
        disable=not err.is_terminal,
    )
    task = bar.add_task("training", total=options.epochs, losses="")

    def on_epoch(e: Epoch) -> None:
        mark = " *" if e.best else ""
        bar.update(
            task,
            completed=e.epoch,
            losses=f"train {e.train_loss:.4f} val {e.val_loss:.4f} "
            f"{options.selection} {e.criterion:.4f}{mark}",
        )

    with bar:
        meta = run_training(data, p.path, options, on_epoch, pinned)
    if as_json:
        click.echo(json.dumps({k: v for k, v in meta.items() if k not in ("split", "history")}))
        return
    val, sizes = meta["val"], {k: len(v) for k, v in meta["split"].items()}
    left_out = meta["excluded"]["zero_comments"]
    _print(
        f"trained the {recipe} configuration on {sizes['train']:,} videos (validation "
        f"{sizes['val']:,}, test {sizes['test']:,}; bank {' + '.join(meta['bank'])}"
        + (f"; {left_out:,} without comments left out" if left_out else "")
        + _pinned_note(meta["split_source"])
        + f"; split {meta['split_sha256'][:16]}"
        + f"): best epoch {meta['best_epoch']} of {meta['epochs_run']}, validation nMSE "
        f"{val['nmse']:.3f}, SRC {val['src']:.3f}, MAE {val['mae']:.3f} "
        f"({meta['samples_per_second']:,.0f} samples/s) -> {p.path}"
    )


def _pinned_note(source: dict[str, Any]) -> str:
    if "file" not in source:
        return ""
    missing = source["missing"]
    lacking = f", {missing:,} of its ids without features" if missing else ""
    return f"; split pinned by {source['file']}{lacking}"


@predictor.command("eval")
@_predictor_option
@_device_option
@_config_option
@_json_option
def evaluate(
    predictor_dir: Path | None, device: str | None, config: Path | None, as_json: bool
) -> None:
    """nMSE, Spearman (SRC) and MAE on the held-out split, beside the training-mean and
    text-only baselines computed in the same run, over the whole split and averaged over
    batches of 256 test videos (MMRA's figures). Saved as eval.json in the predictor folder."""
    from popcorn.predictor.evaluate import evaluate as run_eval

    p = _settings(config, path=predictor_dir, device=device).predictor
    report = run_eval(_load(p.path, p.device))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    batched = report["batched"]
    table = Table(
        title=f"held-out split: {report['videos']:,} videos, target {report['target']} "
        f"(whole split | mean of {batched['size']}-video batches, as MMRA reports)"
    )
    for column in ("model", "nMSE", "SRC", "MAE", "nMSE/b", "SRC/b", "MAE/b"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, m in report["models"].items():
        b = batched["models"][name]
        figures = [m["nmse"], m["src"], m["mae"], b["nmse"], b["src"], b["mae"]]
        table.add_row(name, *(f"{x:.3f}" for x in figures))
    Console().print(table)


def _load(folder: Path, device: str) -> Predictor:
    from popcorn.predictor.score import Predictor

    return Predictor.load(folder, device=device)


@click.command()
@click.argument("target", required=False, type=click.Path(path_type=Path))
@click.option("--title", multiple=True, help="The video's title (repeat with --text-only).")
@click.option("--caption", default="", help="What the video shows, for retrieval (optional).")
@click.option("--human", is_flag=True, help="Score the held-out real videos (the reference).")
@click.option("--text-only", is_flag=True, help="Score titles alone with the fast text model.")
@_predictor_option
@_device_option
@_config_option
@_json_option
def score(
    target: Path | None,
    title: tuple[str, ...],
    caption: str,
    human: bool,
    text_only: bool,
    predictor_dir: Path | None,
    device: str | None,
    config: Path | None,
    as_json: bool,
) -> None:
    """Predict the popularity of a run's clip (TARGET is a run folder; the score is written
    into it), of a video file (TARGET with --title), of titles alone (--text-only, with
    --title and/or a run folder, nothing rendered needed), or of the held-out real videos
    (--human). Scores are the predicted label: log2(1 + comments), or log2(comments) for a
    predictor trained with the paper profile.

    \b
    Examples:
      popcorn score popcorn-runs/a-cat-learning-to-skateboard-1a2b3c4d
      popcorn score clip.mp4 --title "Kitten Shreds"
      popcorn score --text-only --title "Kitten Shreds" --title "My cat, skating"
      popcorn score --human
    """
    from popcorn.errors import UsageError
    from popcorn.pipeline import Pipeline

    settings = _settings(config, path=predictor_dir, device=device)
    p = settings.predictor
    pipeline = Pipeline(settings, score="always")
    model = pipeline.predictor
    assert model is not None  # "always": a folder without a trained model is an error
    if human:
        _score_human(model, p.path, as_json)
    elif text_only:
        if target is not None:
            title = (*title, _run_title(target))
        if not title:
            raise UsageError("give a run folder or at least one --title to score with --text-only")
        scores = model.score_titles(list(title))
        rows = [
            {"title": t, "text_only": round(float(s), 4)}
            for t, s in zip(title, scores, strict=True)
        ]
        if as_json:
            click.echo(json.dumps(rows))
        else:
            for row in sorted(rows, key=lambda r: -float(r["text_only"])):  # type: ignore[arg-type]
                _print(f"{row['text_only']:7.3f}  {row['title']}")
    elif target is None:
        raise UsageError("give a run folder or video file to score, or --human / --text-only")
    elif target.is_dir():
        found = pipeline.score(target)
        if found is None:
            raise UsageError(
                f"{str(target)!r} has no clip to score yet: run 'popcorn render {target}' first"
            )
        _show(found.record, as_json)
    elif target.is_file():
        if len(title) != 1:
            raise UsageError("scoring a video file needs its title: --title '...' (once)")
        _show(model.score_video(target, title[0], caption).to_dict(), as_json)
    else:
        raise UsageError(f"not found: {str(target)!r} (a run folder or a video file)")


def _run_title(run_dir: Path) -> str:
    """The title of a run's script (a run with no clip yet can be ranked by its title)."""
    from popcorn.errors import RunStoreError
    from popcorn.runs.store import Run

    script = Run.load(run_dir).script()
    if script is None:
        raise RunStoreError(f"{str(run_dir)!r} has no script yet")
    return script.title


def _show(record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(record))
        return
    where = (
        f", above {record['percentile']:.0f}% of held-out real videos"
        if record.get("percentile") is not None
        else " (run 'popcorn score --human' to compare with real videos)"
    )
    _print(
        f"predicted popularity {record['score']:.3f} (about {record['comments']:,.0f} comments)"
        f"{where}; text-only {record['text_only']:.3f}"
    )


def _score_human(model: Predictor, folder: Path, as_json: bool) -> None:
    import numpy as np

    from popcorn.predictor.features import FeatureSet

    reference = model.human(FeatureSet.load(folder))
    scores = np.array(reference["scores"])
    summary: dict[str, Any] = {
        "videos": len(scores),
        "mean": round(float(scores.mean()), 4),
        "quartiles": [round(float(q), 4) for q in np.percentile(scores, [25, 50, 75])],
        "file": str(folder / "human.json"),
    }
    if as_json:
        click.echo(json.dumps(summary))
    else:
        q1, q2, q3 = summary["quartiles"]
        _print(
            f"scored {summary['videos']:,} held-out real videos: mean {summary['mean']:.3f}, "
            f"quartiles {q1:.3f} / {q2:.3f} / {q3:.3f} -> {summary['file']}"
        )
