"""``popcorn pull``: download (or check) the weights that presets, encoders and LLMs need."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from popcorn import hub
from popcorn.errors import MissingDependencyError, PopcornError, ProviderError, UsageError
from popcorn.safety import one_line, plain, redact
from popcorn.weights import model_files, pipeline_files

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
    if not _HUB_ID.fullmatch(repo) or ".." in repo or "--" in repo:
        raise UsageError(
            f"{_shown(name)!r} is not a preset, frame encoder, embedder, hf:/vllm: LLM spec, "
            "folder or hub id (owner/name, letters, digits, '.', '_' and '-')"
        )


@dataclass(frozen=True)
class Target:
    """What ``pull`` fetches for a name: the files of ``repo`` its model loads, or the one
    ``file`` of it (a motion adapter)."""

    repo: str
    file: str | None = None

    def label(self) -> str:
        return f"{self.repo}:{self.file}" if self.file else self.repo


def targets_for(name: str) -> list[Target]:
    """What ``name`` needs from the hub: a clip or cover preset, a frame encoder alias, a PE
    embedder alias, an ``hf:``/``vllm:`` LLM spec, or a hub id (``owner/name``). A bare word
    that is none of these is refused (a typo of a preset must not be taken for a hub id)."""
    from popcorn.media.presets import COVER_PRESETS, PRESETS
    from popcorn.predictor.encoders import VISUAL_ALIASES
    from popcorn.retrieval.embedders import DEFAULT_EMBEDDER, resolve

    if name in ("embedded", DEFAULT_EMBEDDER, "preview"):
        return []  # shipped inside a package: nothing to download
    if name in PRESETS:
        preset = PRESETS[name]
        targets = [Target(preset.model)]
        if preset.adapter and ":" in preset.adapter:
            repo, file = preset.adapter.split(":", 1)
            targets.append(Target(repo, file))
        return targets
    if name in COVER_PRESETS:
        return [Target(COVER_PRESETS[name].model)]
    if name.lower() in VISUAL_ALIASES:
        return [Target(VISUAL_ALIASES[name.lower()])]
    provider, _, rest = name.partition(":")
    if provider in ("hf", "vllm") and rest:
        return [Target(rest)]
    if provider in ("openai", "deepseek", "ollama", "gguf", "llm"):
        return []  # served elsewhere, or a local file
    try:
        resolved = resolve(name)  # an embedder alias becomes its hub id; a folder stays a folder
        folder = Path(resolved).is_dir()
    except (OSError, RuntimeError):  # too long for a path, or ~user of no user: no folder
        return [Target(name)]
    if folder:
        return []
    if resolved == name and "/" not in name:
        raise UsageError(unknown_name(name))
    return [Target(resolved)]


def repos_for(name: str) -> list[str]:
    """The hub repositories behind ``name`` (:func:`targets_for`)."""
    return [target.repo for target in targets_for(name)]


def unknown_name(name: str) -> str:
    """The one line refusing ``name``, with what is known (and the nearest, for a typo)."""
    from difflib import get_close_matches

    from popcorn.media.presets import COVER_PRESETS, PRESETS
    from popcorn.predictor.encoders import VISUAL_ALIASES

    known = [*PRESETS, *COVER_PRESETS, *VISUAL_ALIASES, "minilm-l12"]
    near = get_close_matches(name.lower(), known, n=1)
    hint = f"did you mean {near[0]!r}? " if near else ""
    return (
        f"{_shown(name)!r} is not a preset: {hint}clip presets {', '.join(PRESETS)}; cover "
        f"presets {', '.join(COVER_PRESETS)}; frame encoders {', '.join(VISUAL_ALIASES)}; "
        "embedder minilm-l12; or a hub id as owner/name or hf:owner/name"
    )


MARKERS = ("model_index.json", "config.json")
"""Files every pipeline (the first) or model (the second) has: in the cache, they say that it
was pulled (the hub's own check wants every file of the repository, not just those loaded)."""


def _cached_path(target: Target) -> str | None:
    """Where ``target`` is in the hub's cache (None: not there), without the network."""
    from huggingface_hub import try_to_load_from_cache

    if target.file is not None:
        found = try_to_load_from_cache(target.repo, target.file)
        return found if isinstance(found, str) else None
    for marker in MARKERS:
        found = try_to_load_from_cache(target.repo, marker)
        if isinstance(found, str):
            return str(Path(found).parent)
    return None


def files_to_fetch(target: Target, listing: list[str], model_index: Any) -> list[str]:
    """The files of ``target``'s repository (``listing``) its model loads: a pipeline's (it has
    a ``model_index.json``, given parsed as ``model_index``) or a model's."""
    if target.file is not None:
        return [target.file] if target.file in listing else []
    if model_index is not None:
        return pipeline_files(listing, model_index)
    return model_files(listing)


def size_text(size: int) -> str:
    """Bytes in GiB, or MiB under one GiB."""
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.2f} MiB"


def download(target: Target) -> str:
    """Fetch the files ``target`` loads that the cache lacks, saying how much first (the hub's
    progress bars follow; a download cut short resumes where it stopped). Returns the path."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download, try_to_load_from_cache
    from huggingface_hub.errors import RepositoryNotFoundError

    repo = target.repo
    try:
        info = HfApi().model_info(repo, files_metadata=True)
    except RepositoryNotFoundError:  # gated and private ones too, without a token for them
        raise UsageError(
            f"cannot download {repo!r}: no such repository on the hub, or it is gated or "
            "private (check the name; accept its terms on the hub and set HF_TOKEN)"
        ) from None
    sizes = {s.rfilename: s.size or 0 for s in info.siblings or ()}
    index = None
    if target.file is None and "model_index.json" in sizes:
        with open(hf_hub_download(repo, "model_index.json")) as handle:
            index = json.load(handle)
    files = files_to_fetch(target, list(sizes), index)
    if not files:
        raise UsageError(f"cannot download {target.label()!r}: no such file in {repo}")
    missing = [
        f for f in files if not isinstance(try_to_load_from_cache(repo, f, revision=info.sha), str)
    ]
    todo = sum(sizes[f] for f in missing)
    click.echo(
        plain(
            f"downloading {target.label()}: {len(missing)} of {len(files)} files, "
            f"{size_text(todo)} (the model loads {size_text(sum(sizes[f] for f in files))})"
        ),
        err=True,
    )
    # The main branch, as the loaders ask for it (its ref is what they find in the cache).
    folder = snapshot_download(repo, allow_patterns=files)
    return str(Path(folder) / target.file) if target.file else str(folder)


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--check", is_flag=True, help="Only say what is cached; download nothing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a repository.")
def pull(names: tuple[str, ...], check: bool, as_json: bool) -> None:
    """Download the weights NAMES need, and only those (the files the model loads, not every
    format and variant its repository holds), with the size first and progress bars, so a
    study never stalls on a first download. NAMES are clip or cover presets (ltx, sd15, ...),
    frame encoders (vit, clip), PE embedders (minilm-l12), hf:/vllm: LLM specs, or hub ids
    (owner/name). Downloads go to the hub's cache (HF_HOME) and resume where a cut one
    stopped; gated models need HF_TOKEN.

    \b
    Examples:
      popcorn pull ltx sd15 vit           # what a study with LTX clips and SD covers needs
      popcorn pull hf:Qwen/Qwen2.5-7B-Instruct --check
    """
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise MissingDependencyError("huggingface_hub", "hf", "popcorn pull") from None
    found: dict[Target, None] = {}
    for name in names:
        check_name(name)
        for target in targets_for(name):
            check_repo(target.repo, name)
            found[target] = None
    targets = list(found)
    if not targets:
        click.echo(plain(f"nothing to download for {', '.join(names)}"), err=True)
        return
    missing = []
    for target in targets:
        where = _cached_path(target)
        # Offline, what is cached is reported as it is; online, a download cut short is
        # completed (what is there already is not fetched again).
        if not check and (where is None or hub.reachable()):
            where = _fetched(target)
        if where is None:
            missing.append(target.label())
        _report(target, where, as_json)
    if missing:
        raise UsageError(f"not cached: {', '.join(missing)} (run 'popcorn pull' without --check)")


def _fetched(target: Target) -> str:
    """:func:`download`, its failures (no network, the network lost midway, a full disk) in
    one line."""
    if not hub.reachable():
        if hub.offline_by_setting():
            fix = "unset it to download"
        else:
            fix = "run it where the hub can be reached, or set HF_HOME to a cache that holds it"
        raise ProviderError(
            f"cannot download {target.label()!r}: offline: {hub.offline_reason()} ({fix})"
        )
    try:
        return download(target)
    except PopcornError:
        raise
    except Exception as err:  # the hub client's many errors: the first line says which
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ProviderError(redact(f"cannot download {target.label()!r}: {first}")) from None


def _report(target: Target, where: str | None, as_json: bool) -> None:
    record: dict[str, Any] = {"repo": target.repo, "cached": where is not None, "path": where}
    if target.file:
        record["file"] = target.file
    if as_json:
        click.echo(json.dumps(record))
        return
    state = "cached" if where else "not cached"
    click.echo(plain(f"{target.label():<50} {state}{'  ' + where if where else ''}"))
