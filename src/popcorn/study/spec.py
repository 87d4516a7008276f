"""A study file: which queries, LLMs, modes, generators and seeds to cross, and the predictor.

::

    [study]
    name = "pe-vs-basic"
    profile = "paper"                                # the study's conditions (the default),
                                                     # or "popcorn" (popcorn.profiles)
    llms = ["embedded", "deepseek:deepseek-chat"]
    modes = ["basic", "pe:10", "pe:50", "pe:10:2"]   # pe:N[:K] = N references, K categories
    videos = ["preview"]                             # clip generators ("none" for no clip)
    covers = ["preview"]
    seeds = [42]                                     # integers from 0 to 2^32 - 1
    candidates = 1                                   # > 1: best-of-N per job (needs predictor)
    predictor = "popcorn-predictor"                  # optional: score every clip
    corpus = "popcorn-corpus"                        # needed by pe modes
    concurrency = 8                                  # LLM calls at once (API; hf:/vllm: batch)
    gpus_per_actor = 1                               # --executor ray: a model actor per GPU

    [queries]                                        # name = file (.txt, .csv, .jsonl) or
    abstract = "abstract.txt"                        #        "hf:DATASET_ID" (column prompt,
    concrete = "concrete.csv"                        #        optional type)

    [decoding]                                       # optional: any section of popcorn.toml
    max_tokens = 2048                                # ([llm], [decoding], [pe], [gate],
    [media]                                          # [media], [predictor]) for every job;
    portrait = true                                  # the grid's own values (llms, modes,
    offload = "model"                                # videos, ...) take precedence
    [llm]
    prompts = "my-prompts"                           # other prompt templates (a folder)

Paths are relative to the study file. Settings not in the study file come from popcorn.toml,
the POPCORN_* environment variables and the defaults, exactly as for ``popcorn generate``, and
the profile fills what none of them sets (e.g. ``max_tokens``): a value the study file (or
popcorn.toml, or the environment) gives explicitly wins over the profile's default. Without a
``profile`` line a study runs the ``paper`` profile, unless ``POPCORN_PROFILE`` or popcorn.toml's
``[run] profile`` names another.
Every combination is a job whose key hashes exactly what changes its output (the profile and
the prompt templates' hash included); unknown keys and bad values (``true`` where a number
belongs, ``study = 5`` where a section does) are errors that name their line. Only the plugins
the study names are loaded: a broken plugin it does not use cannot stop it.
"""

from __future__ import annotations

import itertools
import logging
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from popcorn.config import Settings, parse_toml, read_settings_text
from popcorn.errors import PopcornError, UsageError
from popcorn.generation import QueryItem
from popcorn.profiles import PROFILE_NAMES
from popcorn.queries import QueryList, RefusedQuery
from popcorn.registry import brief
from popcorn.runs.keys import job_key
from popcorn.safety import one_line

log = logging.getLogger(__name__)

_STUDY_KEYS = {
    "name",
    "profile",
    "llms",
    "modes",
    "videos",
    "covers",
    "seeds",
    "predictor",
    "corpus",
    "concurrency",
    "gpus_per_actor",
    "candidates",
}
_SETTINGS_SECTIONS = ("llm", "decoding", "pe", "gate", "media", "predictor")
_MODE = re.compile(r"^(basic|pe:(\d+)(?::(\d+))?)$")
SEED_MAX = 2**32 - 1
"""The largest seed: what llama.cpp and the ledger's integer columns hold alike."""


@dataclass(frozen=True)
class Mode:
    """``basic``, or ``pe`` with ``refs`` references from ``categories`` categories."""

    name: str
    refs: int = 0
    categories: int = 1

    @property
    def pe(self) -> bool:
        return self.name != "basic"

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.name, "refs": self.refs, "categories": self.categories}

    @classmethod
    def parse(cls, text: str) -> Mode:
        found = _MODE.match(text.strip())
        if not found:
            raise ValueError(f"mode {text!r} is not 'basic' or 'pe:N' or 'pe:N:K'")
        if found.group(1) == "basic":
            return cls("basic")
        from popcorn.config import PESettingsModel, int_limits

        refs, categories = int(found.group(2)), int(found.group(3) or 1)
        (n_low, n_high), (k_low, k_high) = (
            int_limits(PESettingsModel, "refs"),
            int_limits(PESettingsModel, "categories"),
        )
        if not n_low <= refs <= n_high or not k_low <= categories <= k_high:
            raise ValueError(f"mode {text!r}: N must be {n_low}-{n_high} and K {k_low}-{k_high}")
        return cls(text.strip(), refs, categories)


@dataclass(frozen=True)
class Job:
    """One cell of the grid for one query: everything that decides its outputs."""

    query_set: str
    query: str
    tags: tuple[tuple[str, str], ...]
    llm: str
    mode: Mode
    video: str
    cover: str
    seed: int
    candidates: int = 1
    settings: str = ""
    """A digest of the study's settings that change outputs, when they are not the defaults."""
    profile: str = "popcorn"
    """The profile the job runs under (:mod:`popcorn.profiles`)."""
    prompts: str = ""
    """The version (hash) of the prompt templates the job's mode uses; "" for the wording
    Popcorn's prompts had before templates were files."""

    @property
    def key(self) -> str:
        return job_key(self.inputs())

    def inputs(self) -> dict[str, Any]:
        inputs = {
            "query": self.query,
            "llm": self.llm,
            **self.mode.to_dict(),
            "video": self.video,
            "cover": self.cover,
            "seed": self.seed,
        }
        if self.candidates > 1:  # absent at 1, so studies without best-of-N keep their keys
            inputs["candidates"] = self.candidates
        if self.settings:  # likewise absent with default settings
            inputs["settings"] = self.settings
        # Absent for ``popcorn``: the conditions every study ran under before profiles existed,
        # so a study file that says ``profile = "popcorn"`` keeps the keys it had. A study that
        # now runs the paper profile gets new keys, as it should: its outputs differ.
        if self.profile != "popcorn":
            inputs["profile"] = self.profile
        if self.prompts:  # other wording (a profile's, a study's own folder): other outputs
            inputs["prompts"] = self.prompts
        return inputs

    @property
    def config(self) -> str:
        """The configuration this job belongs to, for tables: everything but query and seed."""
        return f"{self.llm} | {self.mode.name} | {self.video} | {self.cover}"


@dataclass(frozen=True)
class Study:
    path: Path
    name: str
    llms: tuple[str, ...]
    modes: tuple[Mode, ...]
    videos: tuple[str, ...]
    covers: tuple[str, ...]
    seeds: tuple[int, ...]
    queries: dict[str, list[QueryItem]]
    predictor: Path | None
    corpus: Path
    concurrency: int
    candidates: int = 1
    gpus_per_actor: float = 1.0
    """``--executor ray``: GPUs per model actor (0.5: two actors share a GPU)."""
    settings: Settings = field(default_factory=Settings)
    """Everything else every job runs with (LLM options, decoding, PE embedder, media), under
    the study's profile (``settings.run.profile``)."""
    prompts: dict[str, str] = field(default_factory=dict)
    """Mode (basic, pe) -> the version of its prompt templates, "" for the legacy wording
    (:func:`prompt_versions`)."""

    @property
    def profile(self) -> str:
        """``paper`` (the LLMPopcorn study's conditions) or ``popcorn`` (ours)."""
        return self.settings.run.profile

    @property
    def folder(self) -> Path:
        """Where the study keeps its ledger, runs and report: beside the study file."""
        return self.path.parent / f"{self.path.stem}.study"

    def jobs(self) -> list[Job]:
        """Every combination, in a stable order (query sets and queries as in their files)."""
        items = [(name, item) for name, found in self.queries.items() for item in found]
        grid = itertools.product(items, self.llms, self.modes, self.videos, self.covers, self.seeds)
        digest = settings_digest(self.settings)
        return [
            Job(
                name,
                item.query,
                tuple(sorted(item.tags.items())),
                llm,
                mode,
                video,
                cover,
                seed,
                self.candidates,
                digest,
                self.profile,
                self.prompts.get("pe" if mode.pe else "basic", ""),
            )
            for (name, item), llm, mode, video, cover, seed in grid
        ]


def settings_digest(settings: Settings) -> str:
    """A hash of the settings that change a job's outputs beyond its grid cell; "" when they
    are the defaults (so studies written before settings existed keep their keys)."""

    def relevant(s: Settings) -> dict[str, Any]:
        llm = s.llm.model_dump(
            mode="json", exclude={"spec", "timeout", "retries", "n_gpu_layers", "device_map"}
        )
        if llm.get("prompts") is None:  # a later setting: unset, it leaves digests as they were
            llm.pop("prompts", None)
        media = s.media.model_dump(
            mode="json",
            exclude={
                "video",
                "cover",
                "device",
                "offload",
                "unload_stages",
                "vae_tiling",
                "vae_slicing",
            },
        )
        decoding = s.decoding.model_dump(mode="json", exclude={"seed"})
        return {"llm": llm, "decoding": decoding, "media": media, "embedder": s.pe.embedder}

    found = relevant(settings)
    if settings.gate != Settings().gate:  # a later section: at its defaults, keys stay
        found["gate"] = settings.gate.model_dump(mode="json")
    return "" if found == relevant(Settings()) else job_key(found)


def load_study(path: Path | str) -> Study:
    """Read and validate a study file; errors name the file and the line."""
    from popcorn.queries import read_queries

    path = Path(path)
    try:
        text = read_settings_text(path)
    except FileNotFoundError:
        raise UsageError(f"study file not found: {str(path)!r}") from None
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UsageError(f"cannot read study file {str(path)!r}: {reason}") from None
    except ValueError as err:
        raise UsageError(f"cannot read study file {str(path)!r}: {err}") from None
    try:
        data = parse_toml(text)
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"{path.name}: {err}") from None

    def fail(key: str, message: str) -> UsageError:
        return UsageError(f"{path.name} line {_line_of(text, key)}: {message}")

    for section in data:
        if section not in ("study", "queries", *_SETTINGS_SECTIONS):
            known = ", ".join(f"[{name}]" for name in ("study", "queries", *_SETTINGS_SECTIONS))
            raise fail(section, f"unknown section or key {section!r} (expected {known})")
    # A key set at the top (study = 5, queries = "q.txt") where a section belongs.
    for section in ("study", "queries"):
        if not isinstance(data.get(section, {}), dict):
            raise fail(
                section,
                f"{section!r} must be a [{section}] section "
                + ("of settings" if section == "study" else 'of name = "file" lines'),
            )
    study = data.get("study", {})
    for key in study:
        if key not in _STUDY_KEYS:
            known = ", ".join(sorted(_STUDY_KEYS))
            raise fail(key, f"unknown key {key!r} in [study] (known: {known})")
    profile = study.get("profile")
    if profile is not None and profile not in PROFILE_NAMES:
        choices = " or ".join(repr(p) for p in PROFILE_NAMES)
        raise fail("profile", f"unknown profile {profile!r} (choose {choices})")
    settings = _settings(data, fail, profile, path.parent)
    try:
        prompts = prompt_versions(settings)
    except UsageError as err:
        raise fail("prompts", str(err)) from None

    def strings(key: str, default: list[str]) -> tuple[str, ...]:
        value = study.get(key, default)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise fail(key, f"{key} must be a non-empty list of strings")
        return tuple(dict.fromkeys(value))

    llms = strings("llms", ["embedded"])
    _check_llms(llms, fail)
    try:
        modes = tuple(Mode.parse(m) for m in strings("modes", ["basic"]))
    except ValueError as err:
        raise fail("modes", str(err)) from None
    videos, covers = strings("videos", ["preview"]), strings("covers", ["preview"])
    _check_generators(videos, covers, fail)
    seeds = study.get("seeds", [42])
    if not isinstance(seeds, list) or not seeds or not all(_integer(s, 0, SEED_MAX) for s in seeds):
        raise fail("seeds", f"seeds must be a non-empty list of integers from 0 to {SEED_MAX}")
    concurrency = study.get("concurrency", 4)
    if not _integer(concurrency, 1, 64):
        raise fail("concurrency", "concurrency must be an integer from 1 to 64")

    gpus_per_actor = study.get("gpus_per_actor", 1)
    if (
        isinstance(gpus_per_actor, bool)
        or not isinstance(gpus_per_actor, int | float)
        or not 0 < gpus_per_actor <= 64
    ):
        raise fail("gpus_per_actor", "gpus_per_actor must be a number above 0 and at most 64")

    base = path.parent
    predictor = study.get("predictor")
    if predictor is not None and not _path_text(predictor):
        raise fail("predictor", "predictor must be a folder path")
    candidates = study.get("candidates", 1)
    if not _integer(candidates, 1, 64):
        raise fail("candidates", "candidates must be an integer from 1 to 64")
    if candidates > 1 and (predictor is None or "none" in videos):
        raise fail("candidates", "best-of-N (candidates > 1) needs a predictor and clips")
    if candidates > 1 and len(videos) * len(covers) > 1:
        # Best-of-N renders its candidates inside the script stage, in the candidates' own run
        # folders, which every (clip, cover) pair of the job would share and overwrite.
        raise fail(
            "candidates",
            "best-of-N (candidates > 1) takes one clip and one cover generator: split the "
            "study into one file per generator pair",
        )
    corpus = study.get("corpus", "popcorn-corpus")
    if not _path_text(corpus):
        raise fail("corpus", "corpus must be a folder path")
    name = study.get("name", path.stem)
    if not isinstance(name, str):
        raise fail("name", "name must be a string")
    sources = data.get("queries", {})
    if not sources:
        raise UsageError(f'{path.name}: no [queries] section (name = "file" lines)')
    queries: dict[str, list[QueryItem]] = {}
    for set_name, source in sources.items():
        if one_line(set_name) != set_name or not set_name:
            # Query set names head the report's tables: they must read as written.
            raise fail(set_name, f"query set name {set_name!r} must be plain text on one line")
        if not _path_text(source):
            raise fail(set_name, f"query set {set_name!r} must be a file path or 'hf:DATASET_ID'")
        try:
            found = (
                _hub_queries(source[3:])
                if source.startswith("hf:")
                else read_queries(base / source)
            )
        except UsageError as err:
            raise fail(set_name, f"query set {set_name!r}: {err}") from None
        refused = getattr(found, "refused", ())
        if refused:
            # The study runs the other queries; the rows it leaves out are said, not dropped.
            log.warning(
                "%s: query set %r leaves out %d refused row(s), e.g. %s",
                path.name,
                set_name,
                len(refused),
                refused[0],
            )
        queries[set_name] = list(found)
    return Study(
        path=path.resolve(),
        # Shown in reports, page titles and messages: no control sequence of it survives.
        name=brief(name, 200) or path.stem,
        llms=llms,
        modes=modes,
        videos=videos,
        covers=covers,
        seeds=tuple(dict.fromkeys(seeds)),
        queries=queries,
        predictor=(base / predictor).resolve() if predictor else None,
        corpus=(base / corpus).resolve(),
        concurrency=concurrency,
        gpus_per_actor=float(gpus_per_actor),
        candidates=candidates,
        settings=settings,
        prompts=prompts,
    )


def _settings(data: dict[str, Any], fail: Any, profile: str | None, base: Path) -> Settings:
    """popcorn.toml, the environment and defaults, under the study file's own sections; the
    study's ``profile`` (else the ``paper`` profile, unless popcorn.toml or the environment name
    one) fills what none of them sets. A prompt folder is relative to the study file."""
    from popcorn.config import load_settings
    from popcorn.errors import ConfigError

    sections: dict[str, Any] = {name: data[name] for name in _SETTINGS_SECTIONS if name in data}
    for name, values in sections.items():
        if not isinstance(values, dict):
            raise fail(name, f"[{name}] must be a table of settings")
    prompts = sections.get("llm", {}).get("prompts")
    if isinstance(prompts, str):
        sections["llm"] = {**sections["llm"], "prompts": str(base / Path(prompts).expanduser())}
    flags = {**sections, "run": {"profile": profile}}  # the study file's own word wins
    try:
        return load_settings(None, flags, profile="paper")
    except ConfigError as err:
        where = next(iter(sections), "study")
        raise fail(where, str(err).removeprefix("command line: ")) from None


def prompt_versions(settings: Settings) -> dict[str, str]:
    """Mode -> the version of the prompt templates its jobs send (``[llm] prompts``, else the
    profile's packaged folder): a hash of the files, so other wording gives other job keys;
    "" for the wording studies ran with before templates were files (their keys stay)."""
    from popcorn.llm.prompts import PromptTemplates

    folder = settings.llm.prompts
    templates = (
        PromptTemplates.load(folder)
        if folder is not None
        else PromptTemplates.packaged_for(settings.profile.prompts)
    )
    versions = {}
    for mode in ("basic", "pe"):
        version = templates.version(mode)
        versions[mode] = version if version == f"{mode}-{templates.digest(mode)[:24]}" else ""
    return versions


def _check_llms(llms: tuple[str, ...], fail: Any) -> None:
    """Each spec names an installed backend in its form; only the plugins the study names are
    loaded, so a broken plugin it does not use cannot stop it."""
    from popcorn.llm.registry import check_spec

    for spec in llms:
        try:
            check_spec(spec)
        except PopcornError as err:
            raise fail("llms", str(err)) from None


def _integer(value: Any, low: int, high: int) -> bool:
    """An integer from ``low`` to ``high``; TOML's ``true`` is a bool, which Python would
    otherwise take for the integer 1."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _path_text(value: Any) -> bool:
    """A string that can name a file: not empty, no NUL (which no path may hold), not huge."""
    return isinstance(value, str) and 0 < len(value) <= 4096 and "\x00" not in value


def _check_generators(videos: tuple[str, ...], covers: tuple[str, ...], fail: Any) -> None:
    from popcorn.media.registry import cover_names, video_names

    for key, names, known in (("videos", videos, video_names()), ("covers", covers, cover_names())):
        for name in names:
            if name != "none" and name not in known:
                raise fail(
                    key, f"unknown generator {name!r} in {key} (known: {', '.join(known)}, none)"
                )


def _line_of(text: str, key: str) -> int:
    """The first line that defines ``key`` (as ``key =`` or ``[key]``), else 1."""
    pattern = re.compile(rf"^\s*(\[{re.escape(key)}\]|\"?{re.escape(key)}\"?\s*=)")
    for n, line in enumerate(text.splitlines(), 1):
        if pattern.match(line):
            return n
    return 1


def _hub_queries(dataset_id: str) -> QueryList:
    """The study's 200 queries (columns ``prompt``, ``type``) from the dataset hub; rows that
    are not queries are left out and listed in ``refused``."""
    from popcorn.generation import printable_query, validate_query

    try:
        import datasets
    except ImportError:
        raise UsageError(
            "reading queries from the hub needs: pip install 'popcorn-video[data]'"
        ) from None
    try:
        table = datasets.load_dataset(dataset_id, split="train")
    except Exception as err:  # offline, unknown id, gated: all end the same way for the user
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"cannot load {dataset_id!r} from the hub: {first}") from None
    items = QueryList()
    for number, row in enumerate(table, 1):
        text = row.get("prompt") or row.get("query")
        if not text:
            continue
        tags = {"type": str(row["type"])} if row.get("type") else {}
        try:
            items.append(QueryItem(validate_query(text), tags))
        except UsageError as err:  # one bad row is left out (and said), not the whole set
            shown = printable_query(str(text), 80)
            items.refused.append(RefusedQuery(number, shown, f"{dataset_id} row {number}: {err}"))
    if not items:
        raise UsageError(f"{dataset_id!r} has no 'prompt' column with queries")
    return items
