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
    candidates = 1                                   # > 1: best-of-N per job (needs predictor;
                                                     # refused under paper: the judge would pick
                                                     # the winner it then scores)
    predictor = "popcorn-predictor"                  # optional: score every clip
    corpus = "popcorn-corpus"                        # needed by pe modes
    failures = "omit"                                # a script the LLM failed to give: left
                                                     # out of the means, or "blank": scored as
                                                     # a blank script, as the study did
    allow_judge = "popcorn"                          # optional: let a paper study score with a
                                                     # predictor of this recipe, not MMRA's
                                                     # (the report then says so)
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
belongs, ``study = 5`` where a section does) are errors that name their line: the file's shape
is :class:`StudyFile`, a strict pydantic model, and the grid it spans is
:mod:`popcorn.study.grid`. Only the plugins the study names are loaded: a broken plugin it does
not use cannot stop it.
"""

from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)
from pydantic_core import ErrorDetails

from popcorn.config import GateSettingsModel, Settings, parse_toml, read_settings_text
from popcorn.config_fields import output_settings
from popcorn.errors import PopcornError, UsageError
from popcorn.profiles import PROFILE_NAMES
from popcorn.registry import brief
from popcorn.runs.keys import job_key
from popcorn.safety import one_line
from popcorn.study.grid import SEED_MAX, Grid, Job, Mode
from popcorn.writer.queries import QueryItem, QueryList, RefusedQuery

log = logging.getLogger(__name__)

_SETTINGS_SECTIONS = ("llm", "decoding", "pe", "gate", "media", "predictor")


def _no_nul(value: str) -> str:
    if "\x00" in value:  # no path may hold one
        raise ValueError("a path holds no NUL")
    return value


_PathText = Annotated[
    str, StringConstraints(min_length=1, max_length=4096), AfterValidator(_no_nul)
]
"""A string that can name a file: not empty, no NUL, not huge."""
_Names = Annotated[list[str], Field(min_length=1)]
_Strict = ConfigDict(extra="forbid", strict=True, frozen=True)
"""Strict: TOML's ``true`` is no number and ``5`` no string; unknown keys are errors."""


class StudySection(BaseModel):
    """The ``[study]`` section: the grid's axes and what the whole study shares."""

    model_config = _Strict

    name: str | None = None
    """Shown in reports; the study file's stem when absent."""
    profile: str | None = None
    """``paper`` or ``popcorn`` (:data:`popcorn.profiles.PROFILE_NAMES`); absent: the
    environment's or popcorn.toml's, else ``paper``."""
    llms: _Names = ["embedded"]
    modes: _Names = ["basic"]
    videos: _Names = ["preview"]
    covers: _Names = ["preview"]
    seeds: Annotated[list[Annotated[int, Field(ge=0, le=SEED_MAX)]], Field(min_length=1)] = [42]
    predictor: _PathText | None = None
    corpus: _PathText = "popcorn-corpus"
    concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    gpus_per_actor: Annotated[float, Field(gt=0, le=64)] = 1.0
    candidates: Annotated[int, Field(ge=1, le=64)] = 1
    failures: Literal["omit", "blank"] = "omit"
    """How a query the LLM gave no usable script for counts: left out of the means (``omit``),
    or rendered and scored as a blank script (``blank``), as the study did."""
    allow_judge: str | None = None
    """A predictor recipe other than ``mmra`` a paper study may score with (the report says
    so); absent: a paper study refuses any judge but MMRA's recipe."""

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str | None) -> str | None:
        if value is not None and value not in PROFILE_NAMES:
            raise ValueError("unknown profile")
        return value


class StudyFile(BaseModel):
    """A study file's shape. The settings sections are checked by :class:`Settings` itself
    (:func:`_settings`), with popcorn.toml, the environment and the profile beneath them."""

    model_config = _Strict

    study: StudySection = StudySection()
    queries: dict[str, _PathText] = {}
    """Query set name -> a file (relative to the study file) or ``hf:DATASET_ID``."""
    llm: dict[str, Any] | None = None
    decoding: dict[str, Any] | None = None
    pe: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    media: dict[str, Any] | None = None
    predictor: dict[str, Any] | None = None


_CHECK_ORDER = (
    *StudyFile.model_fields,
    *(f"study.{key}" for key in StudySection.model_fields),
)
"""Which of several problems a user hears of first: the file's shape, then [study]'s keys in
the order they read, then the query sets."""


def _problem(error: ErrorDetails) -> tuple[str, str]:
    """(the key whose line to show, the one-line message) for one validation error."""
    loc = [str(part) for part in error["loc"]]
    value = error["input"]
    section = loc[0]
    if len(loc) == 1:
        if error["type"] == "extra_forbidden":
            known = ", ".join(f"[{name}]" for name in StudyFile.model_fields)
            return section, f"unknown section or key {section!r} (expected {known})"
        if section == "study":
            return section, "'study' must be a [study] section of settings"
        if section == "queries":
            return section, """'queries' must be a [queries] section of name = "file" lines"""
        return section, f"[{section}] must be a table of settings"
    key = loc[1]
    if section == "queries":
        return key, f"query set {key!r} must be a file path or 'hf:DATASET_ID'"
    if error["type"] == "extra_forbidden":
        known = ", ".join(sorted(StudySection.model_fields))
        return key, f"unknown key {key!r} in [study] (known: {known})"
    if key == "profile":
        choices = " or ".join(repr(p) for p in PROFILE_NAMES)
        return key, f"unknown profile {value!r} (choose {choices})"
    messages = {
        "name": "name must be a string",
        "seeds": f"seeds must be a non-empty list of integers from 0 to {SEED_MAX}",
        "concurrency": "concurrency must be an integer from 1 to 64",
        "candidates": "candidates must be an integer from 1 to 64",
        "failures": "failures must be 'omit' or 'blank'",
        "allow_judge": "allow_judge must be a predictor recipe name (e.g. 'popcorn')",
        "gpus_per_actor": "gpus_per_actor must be a number above 0 and at most 64",
        "predictor": "predictor must be a folder path",
        "corpus": "corpus must be a folder path",
    }
    return key, messages.get(key, f"{key} must be a non-empty list of strings")


def _rank(error: ErrorDetails) -> int:
    loc = [str(part) for part in error["loc"]]
    if error["type"] == "extra_forbidden":  # first: the other errors may come from a typo in it
        return -2 if len(loc) == 1 else -1
    if len(loc) == 1:
        return _CHECK_ORDER.index(loc[0])
    where = f"study.{loc[1]}" if loc[0] == "study" else ""
    return _CHECK_ORDER.index(where) if where in _CHECK_ORDER else len(_CHECK_ORDER)


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
    failures: Literal["omit", "blank"] = "omit"
    """How a query without a usable script counts: left out, or scored as a blank script."""
    allow_judge: str | None = None
    """The predictor recipe a paper study may score with besides ``mmra`` (the study file's
    ``allow_judge``; checked by :func:`popcorn.study.run.check_judge`)."""
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
        grid = Grid(
            self.llms,
            self.modes,
            self.videos,
            self.covers,
            self.seeds,
            self.candidates,
            settings_digest(self.settings),
            self.profile,
            self.prompts,
        )
        return grid.jobs(self.queries)


_GRID_SETTINGS = {"llm": {"spec"}, "decoding": {"seed"}, "media": {"video", "cover"}}
"""Settings a study's grid sets job by job: each is in the job's inputs by itself."""


def settings_digest(settings: Settings) -> str:
    """A hash of the settings that change a job's outputs beyond its grid cell; "" when they
    are the defaults (so studies written before settings existed keep their keys). Which
    settings change outputs is declared on their fields (:func:`popcorn.config_fields.setting`)."""

    def relevant(s: Settings) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for section in ("llm", "decoding", "media"):
            values = output_settings(type(getattr(s, section)), getattr(s, section))
            found[section] = {
                k: v for k, v in values.items() if k not in _GRID_SETTINGS.get(section, ())
            }
        return {**found, "embedder": s.pe.embedder}

    found = relevant(settings)
    if settings.gate != Settings().gate:  # a later section: at its defaults, keys stay
        found["gate"] = output_settings(GateSettingsModel, settings.gate)
    return "" if found == relevant(Settings()) else job_key(found)


def load_study(path: Path | str) -> Study:
    """Read and validate a study file; errors name the file and the line."""
    from popcorn.writer.queries import read_queries

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

    try:
        shape = StudyFile.model_validate(data)
    except ValidationError as err:
        raise fail(*_problem(min(err.errors(), key=_rank))) from None
    study = shape.study
    settings = _settings(data, fail, study.profile, path.parent)
    try:
        prompts = prompt_versions(settings)
    except UsageError as err:
        raise fail("prompts", str(err)) from None
    llms = tuple(dict.fromkeys(study.llms))
    _check_llms(llms, fail)
    try:
        modes = tuple(Mode.parse(m) for m in dict.fromkeys(study.modes))
    except ValueError as err:
        raise fail("modes", str(err)) from None
    videos, covers = tuple(dict.fromkeys(study.videos)), tuple(dict.fromkeys(study.covers))
    _check_generators(videos, covers, fail)
    if study.candidates > 1 and not settings.profile.best_of_n:
        raise fail(
            "candidates",
            f"best-of-N (candidates > 1) is refused under profile {settings.profile.name!r}: "
            'the predictor would pick the winner it then scores; use profile = "popcorn" or '
            "candidates = 1",
        )
    if study.candidates > 1 and (study.predictor is None or "none" in videos):
        raise fail("candidates", "best-of-N (candidates > 1) needs a predictor and clips")
    if study.candidates > 1 and len(videos) * len(covers) > 1:
        # Best-of-N renders its candidates inside the script stage, in the candidates' own run
        # folders, which every (clip, cover) pair of the job would share and overwrite.
        raise fail(
            "candidates",
            "best-of-N (candidates > 1) takes one clip and one cover generator: split the "
            "study into one file per generator pair",
        )
    base = path.parent
    sources = shape.queries
    if not sources:
        raise UsageError(f'{path.name}: no [queries] section (name = "file" lines)')
    queries: dict[str, list[QueryItem]] = {}
    for set_name, source in sources.items():
        if one_line(set_name) != set_name or not set_name:
            # Query set names head the report's tables: they must read as written.
            raise fail(set_name, f"query set name {set_name!r} must be plain text on one line")
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
        name=brief(study.name if study.name is not None else path.stem, 200) or path.stem,
        llms=llms,
        modes=modes,
        videos=videos,
        covers=covers,
        seeds=tuple(dict.fromkeys(study.seeds)),
        queries=queries,
        predictor=(base / study.predictor).resolve() if study.predictor else None,
        corpus=(base / study.corpus).resolve(),
        concurrency=study.concurrency,
        gpus_per_actor=study.gpus_per_actor,
        candidates=study.candidates,
        failures=study.failures,
        allow_judge=study.allow_judge,
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
    from popcorn.writer.prompts import PromptTemplates

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
    from popcorn.writer.queries import printable_query, validate_query

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
