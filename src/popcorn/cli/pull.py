"""``popcorn pull``: download (or check) the weights that presets, encoders and LLMs need."""

from __future__ import annotations

import json
import re
from typing import Any

import click

from popcorn.safety import one_line, plain

MAX_NAME_CHARS = 500
"""Far above any preset, spec or hub id (at most 96 + 1 + 96 characters); a folder's path
can be longer, but not by this much in practice."""
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _shown(name: str) -> str:
    """``name`` cut short and made safe to print (lone surrogates escaped)."""
    text = one_line(name.encode("utf-8", "backslashreplace").decode("utf-8"))
    return text if len(text) <= 60 else text[:57] + "..."


def check_name(name: str) -> None:
    """Refuse a name no preset, spec, hub id or folder can have, with one line."""
    from popcorn.errors import UsageError

    if not name.strip():
        raise UsageError("an empty name: give a preset (ltx, sd15, ...), an LLM spec or a hub id")
    if len(name) > MAX_NAME_CHARS:
        raise UsageError(
            f"the name {_shown(name)!r} is {len(name):,} characters long; names of presets, "
            f"LLM specs, hub ids and folders are at most {MAX_NAME_CHARS}"
        )
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"the name {_shown(name)!r} is not valid UTF-8 text") from None
    if _CONTROL.search(name):
        raise UsageError(f"the name {_shown(name)!r} holds control characters")


def check_repo(repo: str, name: str) -> None:
    """Refuse a repository id the hub cannot hold, naming what it came from."""
    from popcorn.errors import UsageError

    if not _HUB_ID.fullmatch(repo) or ".." in repo or "--" in repo:
        raise UsageError(
            f"{_shown(name)!r} is not a preset, frame encoder, embedder, hf:/vllm: LLM spec, "
            "folder or hub id (owner/name, letters, digits, '.', '_' and '-')"
        )


def repos_for(name: str) -> list[str]:
    """The hub repositories behind ``name``: a clip or cover preset, a frame encoder alias, a
    PE embedder alias, an ``hf:``/``vllm:`` LLM spec, or a hub id as it is."""
    from popcorn.media.presets import COVER_PRESETS, PRESETS
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

    try:
        resolved = resolve(name)  # an embedder alias becomes its hub id; a folder stays a folder
        folder = Path(resolved).is_dir()
    except (OSError, RuntimeError):  # too long for a path, or ~user of no user: no folder
        return [name]
    return [] if folder else [resolved]


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
    found: dict[str, None] = {}
    for name in names:
        check_name(name)
        for repo in repos_for(name):
            check_repo(repo, name)
            found[repo] = None
    repos = list(found)
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
