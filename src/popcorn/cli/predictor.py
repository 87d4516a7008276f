"""``popcorn predictor``: extract features, train and evaluate the popularity predictor;
``popcorn score``: score a run, a video file, titles, or the held-out real videos."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from popcorn.cli.corpus import _config_option, _corpus_option, _progress

if TYPE_CHECKING:
    from popcorn.config import Settings
    from popcorn.predictor.score import Predictor

_predictor_option = click.option(
    "--predictor",
    "predictor_dir",
    type=click.Path(path_type=Path),
    help="Predictor folder (also POPCORN_PREDICTOR).  [default: popcorn-predictor]",
)
_device_option = click.option("--device", help="torch device, e.g. cuda.  [default: cpu]")
_json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def _settings(config: Path | None, **predictor: Any) -> Settings:
    from popcorn.config import load_settings

    return load_settings(config, {"predictor": predictor})


def _err() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _print(text: str) -> None:
    from rich.console import Console

    Console().print(text, highlight=False)


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
    "--embedder", help="Title embedder: minilm-l6 (default, offline), a hub id or folder."
)
@click.option("--frames", type=click.IntRange(1, 64), default=10, show_default=True)
@_device_option
@_predictor_option
@_corpus_option
@_config_option
@_json_option
def features(
    videos: Path,
    visual: str | None,
    embedder: str | None,
    frames: int,
    device: str | None,
    predictor_dir: Path | None,
    corpus_dir: Path | None,
    config: Path | None,
    as_json: bool,
) -> None:
    """Sample frames from every corpus video, encode them and the titles, into the predictor
    folder. Frame features are cached by content hash, so reruns only encode new videos."""
    from popcorn.config import load_settings
    from popcorn.predictor.encoders import VisualEncoder
    from popcorn.predictor.features import extract
    from popcorn.retrieval.embedders import DEFAULT_EMBEDDER, Embedder

    settings = load_settings(
        config,
        {
            "pe": {"corpus": corpus_dir},
            "predictor": {
                "path": predictor_dir,
                "visual": visual,
                "embedder": embedder,
                "device": device,
            },
        },
    )
    p = settings.predictor
    encoder = VisualEncoder(p.visual, device=p.device)
    text = Embedder(p.embedder or DEFAULT_EMBEDDER, device=p.device)
    with _progress(_err(), "encoding videos") as advance:
        _, report = extract(settings.pe.corpus, videos, p.path, encoder, text, frames, advance)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    rate = report.kept / max(report.seconds, 1e-9)
    _print(
        f"features for {report.kept:,} of {report.videos:,} videos ({report.cached:,} from cache) "
        f"in {report.seconds:.1f} s ({rate:,.1f} videos/s) -> {p.path / 'features.npz'}"
    )
    for reason, count in sorted(report.skipped.items()):
        examples = "; ".join(report.examples.get(reason, [])[:3])
        _print(f"  skipped {count:,} {reason}: {examples}")


@predictor.command()
@click.option(
    "--epochs",
    type=click.IntRange(1, 100_000),
    default=200,
    show_default=True,
    help="At most this many epochs; early stopping usually ends sooner.",
)
@click.option(
    "--patience",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Stop after this many epochs without a better validation loss.",
)
@click.option(
    "--lr",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=1e-5,
    show_default=True,
    help="Adam's learning rate (the study's 1e-5).",
)
@click.option("--batch-size", type=click.IntRange(1, 65_536), default=64, show_default=True)
@click.option("--hidden", type=click.IntRange(1, 8192), default=768, show_default=True)
@click.option(
    "--alpha",
    type=float,
    default=0.6,
    show_default=True,
    help="Weight of the negated attention branch.",
)
@click.option(
    "--retrieved",
    type=click.IntRange(1, 100),
    default=10,
    show_default=True,
    help="Training videos retrieved per video.",
)
@click.option("--seed", type=int, default=42, show_default=True, help="Split and init seed.")
@_device_option
@_predictor_option
@_config_option
@_json_option
def train(
    epochs: int,
    patience: int,
    lr: float,
    batch_size: int,
    hidden: int,
    alpha: float,
    retrieved: int,
    seed: int,
    device: str | None,
    predictor_dir: Path | None,
    config: Path | None,
    as_json: bool,
) -> None:
    """Train the retrieval-augmented regressor on the extracted features (seeded 80/10/10
    split, MSE, Adam, early stopping), and the fast text-only model beside it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from popcorn.predictor.features import FeatureSet
    from popcorn.predictor.train import Epoch, TrainSettings
    from popcorn.predictor.train import train as run_training

    p = _settings(config, path=predictor_dir, device=device).predictor
    data = FeatureSet.load(p.path)
    options = TrainSettings(
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
    task = bar.add_task("training", total=epochs, losses="")

    def on_epoch(e: Epoch) -> None:
        mark = " *" if e.best else ""
        bar.update(
            task, completed=e.epoch, losses=f"train {e.train_loss:.4f} val {e.val_loss:.4f}{mark}"
        )

    with bar:
        meta = run_training(data, p.path, options, on_epoch)
    if as_json:
        click.echo(json.dumps({k: v for k, v in meta.items() if k not in ("split", "history")}))
        return
    val = meta["val"]
    _print(
        f"trained on {len(meta['split']['train']):,} videos: best epoch {meta['best_epoch']} of "
        f"{meta['epochs_run']}, validation nMSE {val['nmse']:.3f}, SRC {val['src']:.3f}, "
        f"MAE {val['mae']:.3f} ({meta['samples_per_second']:,.0f} samples/s) -> {p.path}"
    )


@predictor.command("eval")
@_predictor_option
@_device_option
@_config_option
@_json_option
def evaluate(
    predictor_dir: Path | None, device: str | None, config: Path | None, as_json: bool
) -> None:
    """nMSE, Spearman (SRC) and MAE on the held-out split, beside the training-mean and
    text-only baselines computed in the same run. Saved as eval.json in the predictor folder."""
    from popcorn.predictor.evaluate import evaluate as run_eval

    p = _settings(config, path=predictor_dir, device=device).predictor
    report = run_eval(_load(p.path, p.device))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"held-out split: {report['videos']:,} videos")
    for column in ("model", "nMSE", "SRC", "MAE"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, m in report["models"].items():
        table.add_row(name, f"{m['nmse']:.3f}", f"{m['src']:.3f}", f"{m['mae']:.3f}")
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
    (--human). Scores are predicted log2(1 + comments).

    \b
    Examples:
      popcorn score popcorn-runs/a-cat-learning-to-skateboard-1a2b3c4d
      popcorn score clip.mp4 --title "Kitten Shreds"
      popcorn score --text-only --title "Kitten Shreds" --title "My cat, skating"
      popcorn score --human
    """
    from popcorn.errors import UsageError

    p = _settings(config, path=predictor_dir, device=device).predictor
    model = _load(p.path, p.device)
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
        from popcorn.predictor.score import score_run

        _show(score_run(target, model), as_json)
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
