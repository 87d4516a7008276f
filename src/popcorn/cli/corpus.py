"""``popcorn corpus``: import reference videos, index them, and search them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from popcorn.cli.output import console
from popcorn.cli.render import warn
from popcorn.profiles import PROFILE_NAMES
from popcorn.safety import plain, shown

if TYPE_CHECKING:
    from popcorn.retrieval.corpus import Corpus, ImportReport
    from popcorn.retrieval.search import References

_corpus_option = click.option(
    "--corpus",
    "corpus_dir",
    type=click.Path(path_type=Path),
    help="Corpus folder (also POPCORN_CORPUS).  [default: popcorn-corpus]",
)
_config_option = click.option("--config", type=click.Path(path_type=Path), help="Settings file.")
_only_ids_option = click.option(
    "--only-ids",
    type=click.Path(path_type=Path),
    help="Keep only the videos whose id is listed in this file (one id a line), e.g. a "
    "predictor's held-out test split, so no reference is in its retrieval bank.",
)


def _corpus_folder(corpus_dir: Path | None, config: Path | None) -> Path:
    from popcorn.config import load_settings

    return load_settings(config, {"pe": {"corpus": corpus_dir}}).pe.corpus


@click.group()
def corpus() -> None:
    """Reference micro-videos for prompt enhancement (PE).

    \b
    Typical use:
      popcorn corpus import microlens ~/data/MicroLens-100k
      popcorn corpus index
      popcorn corpus search "How to cook ramen at home"
      popcorn generate "How to cook ramen at home" --pe
    """


@corpus.group("import")
def import_() -> None:
    """Import a corpus (replaces the one in --corpus)."""


def _id_list(only_ids: Path | None) -> set[str] | None:
    """The ids of ``--only-ids`` (read before the import, so a bad list fails at once)."""
    if only_ids is None:
        return None
    from popcorn.retrieval.importers import read_id_list

    return read_id_list(only_ids)


def _save(
    corpus_: Corpus,
    report: ImportReport,
    folder: Path,
    as_json: bool,
    only: tuple[Path | None, set[str] | None],
) -> None:
    listed_in, ids = only
    if ids is not None:
        from popcorn.retrieval.importers import keep_only

        corpus_ = keep_only(corpus_, report, ids, f"--only-ids {listed_in}")
    corpus_.save(folder, report)
    if as_json:
        click.echo(
            json.dumps(
                {**report.to_dict(), "corpus": str(folder), "version": corpus_.version},
                ensure_ascii=False,
            )
        )
        return
    from rich.table import Table

    out = console()
    categories = len(corpus_.categories())
    out.print(
        shown(
            f"kept {report.kept:,} videos in {categories} categories -> {folder} "
            f"(version {corpus_.version})"
        )
    )
    if report.skipped:
        # Reasons and examples quote the imported files.
        table = Table("skipped", "lines", "e.g.", box=None, header_style="bold")
        for reason, count in report.skipped.most_common():
            examples = ", ".join(report.examples.get(reason, []))
            table.add_row(shown(reason), f"{count:,}", shown(examples))
        out.print(table)
    for note in report.notes:
        out.print(shown(f"note: {note}"))
    out.print(shown(f"next: popcorn corpus index --corpus {folder}"))


@import_.command("microlens")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option(
    "--captions",
    type=click.Path(path_type=Path),
    help="English caption file (tab: video_id, caption).  [default: found in FOLDER]",
)
@click.option(
    "--cover-captions",
    type=click.Path(path_type=Path),
    help="LLaVA cover captions (video_id, description; comma or tab), read as the cover "
    "descriptions.  [default: llava-v1.5_caption.txt or a *llava* / *cover*caption* file "
    "in FOLDER]",
)
@_only_ids_option
@_corpus_option
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print the import report as JSON.")
def import_microlens(
    folder: Path,
    captions: Path | None,
    cover_captions: Path | None,
    only_ids: Path | None,
    corpus_dir: Path | None,
    config: Path | None,
    as_json: bool,
) -> None:
    """Read MicroLens-100k's raw files from FOLDER (likes/views, titles, comments, categories,
    and the optional captions and cover captions). Popularity is each video's comment count."""
    from popcorn.retrieval.importers import import_microlens as read

    only = (only_ids, _id_list(only_ids))
    corpus_, report = read(folder, captions, cover_captions)
    _save(corpus_, report, _corpus_folder(corpus_dir, config), as_json, only)


@import_.command("table")
@click.argument("file", type=click.Path(path_type=Path))
@_only_ids_option
@_corpus_option
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print the import report as JSON.")
def import_table(
    file: Path, only_ids: Path | None, corpus_dir: Path | None, config: Path | None, as_json: bool
) -> None:
    """Read the pre-joined table (parquet, CSV or JSONL; columns video_id, title_en, cover_desc,
    caption_en, partition or category, likes, views, comment_count)."""
    from popcorn.retrieval.importers import import_table as read

    only = (only_ids, _id_list(only_ids))
    corpus_, report = read(file)
    _save(corpus_, report, _corpus_folder(corpus_dir, config), as_json, only)


@import_.command("hf")
@click.argument("dataset_id")
@click.option("--split", default="train", show_default=True)
@_only_ids_option
@_corpus_option
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print the import report as JSON.")
def import_hf(
    dataset_id: str,
    split: str,
    only_ids: Path | None,
    corpus_dir: Path | None,
    config: Path | None,
    as_json: bool,
) -> None:
    """Load the pre-joined table from the dataset hub (needs network and 'popcorn-video[data]')."""
    from popcorn.retrieval.importers import import_hf as read

    only = (only_ids, _id_list(only_ids))
    corpus_, report = read(dataset_id, split)
    _save(corpus_, report, _corpus_folder(corpus_dir, config), as_json, only)


@corpus.command()
@click.option(
    "--embedder",
    help="minilm-l6 (default, offline), minilm-l12 (the study's), or a "
    "sentence-transformers hub id or folder.",
)
@click.option("--batch-size", type=click.IntRange(1, 4096), default=64, show_default=True)
@_corpus_option
@_config_option
def index(
    embedder: str | None, batch_size: int, corpus_dir: Path | None, config: Path | None
) -> None:
    """Embed every video (title + cover description + caption) and category once, into a
    persistent index inside the corpus folder. Rebuilding replaces it atomically."""
    from popcorn.config import load_settings
    from popcorn.progress import Counts
    from popcorn.retrieval.embedders import DEFAULT_EMBEDDER, Embedder
    from popcorn.retrieval.index import build_index

    settings = load_settings(config, {"pe": {"corpus": corpus_dir, "embedder": embedder}})
    folder = settings.pe.corpus
    model = Embedder(settings.pe.embedder or DEFAULT_EMBEDDER)
    # A bar on a terminal; in a log, a line per 5% of the videos with the time left.
    with Counts(console(stderr=True)) as counts:
        meta = build_index(
            folder,
            model,
            batch_size=batch_size,
            progress=lambda done, total: counts.update("embedding", done, total),
        )
    rate = meta["videos"] / max(meta["build_seconds"], 1e-9)
    console().print(
        shown(
            f"indexed {meta['videos']:,} videos and {len(meta['categories'])} categories "
            f"with {meta['embedder']['name']} in {meta['build_seconds']:.1f} s "
            f"({rate:,.0f} videos/s) -> {folder / 'index'}"
        )
    )


@corpus.command()
@click.argument("query")
@click.option("--refs", type=click.IntRange(0, 500), help="References to retrieve.  [default: 10]")
@click.option(
    "--categories", type=click.IntRange(1, 50), help="Nearest categories to search.  [default: 1]"
)
@click.option(
    "--profile",
    type=click.Choice(PROFILE_NAMES),
    help="Whose reference pool and routing: paper (the predictor's test split, complete "
    "videos, routing by name) or popcorn (the whole corpus, routing by content).  "
    "[default: popcorn]",
)
@click.option(
    "--predictor",
    type=click.Path(path_type=Path),
    help="The predictor whose test split is the paper profile's pool.  "
    "[default: popcorn-predictor]",
)
@click.option("--json", "as_json", is_flag=True, help="Print the references as JSON.")
@_corpus_option
@_config_option
def search(
    query: str,
    refs: int | None,
    categories: int | None,
    profile: str | None,
    predictor: Path | None,
    as_json: bool,
    corpus_dir: Path | None,
    config: Path | None,
) -> None:
    """Show the categories QUERY routes to and the references PE would give the LLM."""
    from popcorn.config import load_settings
    from popcorn.retrieval.enhance import PESettings, open_pool
    from popcorn.writer.queries import validate_query

    settings = load_settings(
        config,
        {
            "pe": {"corpus": corpus_dir, "refs": refs, "categories": categories},
            "predictor": {"path": predictor},
            "run": {"profile": profile},
        },
    )
    query = validate_query(query)
    pe = PESettings.from_settings(settings)
    retriever, pool = open_pool(pe)
    found = retriever.search(query, pe.refs, pe.categories, pool=pool, routing=pe.routing)
    if as_json:
        click.echo(json.dumps(found.to_dict(), ensure_ascii=False))
    else:
        _show_references(found)
    warn(found.warnings)


def _show_references(found: References) -> None:
    from rich.table import Table

    out = console()
    # Category names, titles and captions are the corpus's text: shown literally.
    routed = ", ".join(f"{name} ({score:.2f})" for name, score in found.categories)
    out.print(shown(f"categories: {routed}"))
    table = Table("#", "tier", "comments", "sim", "title", "caption", header_style="bold")
    for ref in found.items:
        table.add_row(
            str(ref.rank),
            shown(ref.tier, "green" if ref.popular and ref.comment_count else ""),
            f"{ref.comment_count:,}",
            f"{ref.similarity:.2f}",
            shown(ref.title),
            shown(plain(ref.caption)[:60]),
        )
    out.print(table)
    if found.items:
        # The study's split is relative: say what the tiers are, and what PE calls them.
        out.print(
            shown(
                "tier: rank by comment count among the routed categories' videos; PE gives the "
                "LLM the top 90% as its popular examples and the bottom 10% as unpopular ones"
            )
        )


@corpus.command()
@_corpus_option
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print the same as one JSON object.")
def info(corpus_dir: Path | None, config: Path | None, as_json: bool) -> None:
    """Show the corpus and whether its index is current."""
    folder = _corpus_folder(corpus_dir, config)
    found = _corpus_info(folder)
    if as_json:
        click.echo(json.dumps(found, ensure_ascii=False))
        return
    # The folder, the source and the embedder name come from the user or the corpus files.
    click.echo(plain(f"corpus   {folder} (version {found['version']}, from {found['source']})"))
    click.echo(f"videos   {found['videos']:,} in {found['categories']} categories")
    index = found["index"]
    if index["usable"]:
        click.echo(
            plain(
                f"index    {index['videos']:,} videos, embedder {index['embedder']}, "
                f"built {index['built_at']}"
            )
        )
    else:
        click.echo(plain(f"index    not usable: {index['problem']}"))


def _corpus_info(folder: Path) -> dict[str, Any]:
    """What ``corpus info`` reports: the corpus, and its index or why it cannot be used."""
    from popcorn.errors import UsageError
    from popcorn.retrieval.corpus import Corpus
    from popcorn.retrieval.index import load_index

    corpus_ = Corpus.load(folder)
    found: dict[str, Any] = {
        "corpus": str(folder),
        "version": corpus_.version,
        "source": corpus_.meta["import"]["source"],
        "videos": len(corpus_.videos),
        "categories": len(corpus_.categories()),
    }
    try:
        idx = load_index(folder)
    except UsageError as err:
        found["index"] = {"usable": False, "problem": str(err)}
        return found
    found["index"] = {
        "usable": True,
        "videos": idx.meta["videos"],
        "embedder": idx.embedder_name,
        "built_at": idx.meta["built_at"],
    }
    return found


@corpus.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--videos", type=click.IntRange(1, 1_000_000), default=500, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--names",
    type=click.Choice(["plain", "microlens", "codes"]),
    default="plain",
    show_default=True,
    help="What categories are called: plain ('food'), MicroLens-style platform labels "
    "('Delicacy'), or opaque codes ('C01'), to see routing where names say little.",
)
def synth(folder: Path, videos: int, seed: int, names: str) -> None:
    """Write a generated corpus in MicroLens' file formats (likes/views, titles, comments,
    categories, captions, LLaVA-style cover captions, and a pre-joined table.jsonl) to FOLDER,
    for trying PE without the real data. Not MicroLens data."""
    from popcorn.retrieval.synthetic import CategoryNames, generate_microlens

    chosen = cast("CategoryNames", names)  # click.Choice has checked it
    report = generate_microlens(folder, videos=videos, seed=seed, names=chosen)
    click.echo(
        plain(
            f"wrote {report.videos:,} generated videos in {report.categories} categories to "
            f"{folder}: {', '.join(report.files)}"
        )
    )
