"""``popcorn pull``: download (or check) the weights that presets, encoders and LLMs need."""

from __future__ import annotations

import json
from typing import Any

import click

from popcorn.safety import plain


def repos_for(name: str) -> list[str]:
    """The hub repositories behind ``name``: a clip or cover preset, a frame encoder alias, a
    PE embedder alias, an ``hf:``/``vllm:`` LLM spec, or a hub id as it is."""
    from popcorn.media.cover import COVER_PRESETS
    from popcorn.media.diffusion import PRESETS
    from popcorn.predictor.encoders import VISUAL_ALIASES
    from popcorn.retrieval.embedders import DEFAULT_EMBEDDER, resolve

    if name in ("embedded", DEFAULT_EMBEDDER, "preview"):
        return []  # shipped inside a package: nothing to download
    if name in PRESETS:
        preset = PRESETS[name]
        repos = [preset.model]
        if preset.adapter and ":" in preset.adapter:
            repos.append(preset.adapter.split(":", 1)[0])
        return repos
    if name in COVER_PRESETS:
        return [COVER_PRESETS[name].model]
    if name.lower() in VISUAL_ALIASES:
        return [VISUAL_ALIASES[name.lower()]]
    provider, _, rest = name.partition(":")
    if provider in ("hf", "vllm") and rest:
        return [rest]
    if provider in ("openai", "deepseek", "ollama", "gguf"):
        return []  # served elsewhere, or a local file
    from pathlib import Path

    resolved = resolve(name)  # an embedder alias becomes its hub id; a folder stays a folder
    return [] if Path(resolved).is_dir() else [resolved]


def _cached_path(repo: str) -> str | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return str(snapshot_download(repo, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def _size(repo: str) -> int | None:
    """The repository's size in bytes, from the hub (None offline)."""
    try:
        from huggingface_hub import HfApi

        info = HfApi().model_info(repo, files_metadata=True)
    except Exception:  # offline, gated, unknown: the download says which
        return None
    return sum((s.size or 0) for s in info.siblings or ())


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--check", is_flag=True, help="Only say what is cached; download nothing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a repository.")
def pull(names: tuple[str, ...], check: bool, as_json: bool) -> None:
    """Download the weights NAMES need, with sizes and progress, so a study never stalls on a
    first download. NAMES are clip or cover presets (ltx, sd15, ...), frame encoders (vit,
    clip), PE embedders (minilm-l12), hf:/vllm: LLM specs, or hub ids. Downloads go to the
    hub's cache (HF_HOME); gated models need HF_TOKEN.

    \b
    Examples:
      popcorn pull ltx sd15 vit           # what a study with LTX clips and SD covers needs
      popcorn pull hf:Qwen/Qwen2.5-7B-Instruct --check
    """
    from popcorn.errors import ProviderError, UsageError

    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        from popcorn.errors import MissingDependencyError

        raise MissingDependencyError("huggingface_hub", "hf", "popcorn pull") from None
    repos = list(dict.fromkeys(r for name in names for r in repos_for(name)))
    if not repos:
        click.echo(plain(f"nothing to download for {', '.join(names)}"), err=True)
        return
    missing = []
    for repo in repos:
        where = _cached_path(repo)
        record: dict[str, Any] = {"repo": repo, "cached": where is not None, "path": where}
        if where is None and not check:
            size = _size(repo)
            shown = "size unknown" if size is None else f"{size / 2**30:.2f} GiB"
            click.echo(plain(f"downloading {repo} ({shown})"), err=True)
            try:
                record["path"] = str(snapshot_download(repo))  # the hub's own progress bars
            except Exception as err:  # offline, gated, unknown id
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise ProviderError(f"cannot download {repo!r}: {first}") from None
            record["cached"] = True
        if not record["cached"]:
            missing.append(repo)
        if as_json:
            click.echo(json.dumps(record))
        else:
            state = "cached" if record["cached"] else "not cached"
            click.echo(
                plain(f"{repo:<50} {state}{'  ' + record['path'] if record['path'] else ''}")
            )
    if missing:
        raise UsageError(f"not cached: {', '.join(missing)} (run 'popcorn pull' without --check)")
