"""A study file: which queries, LLMs, modes, generators and seeds to cross, and the predictor.

::

    [study]
    name = "pe-vs-basic"
    llms = ["embedded", "deepseek:deepseek-chat"]
    modes = ["basic", "pe:10", "pe:50", "pe:10:2"]   # pe:N[:K] = N references, K categories
    videos = ["preview"]                             # clip generators ("none" for no clip)
    covers = ["preview"]
    seeds = [42]
    candidates = 1                                   # > 1: best-of-N per job (needs predictor)
    predictor = "popcorn-predictor"                  # optional: score every clip
    corpus = "popcorn-corpus"                        # needed by pe modes
    concurrency = 8                                  # LLM calls at once (API backends)

    [queries]                                        # name = file (.txt, .csv, .jsonl) or
    abstract = "abstract.txt"                        #        "hf:DATASET_ID" (column prompt,
    concrete = "concrete.csv"                        #        optional type)

Paths are relative to the study file. Every combination is a job whose key hashes exactly what
changes its output; unknown keys and bad values are errors that name their line.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from popcorn.errors import UsageError
from popcorn.generation import QueryItem
from popcorn.runs.keys import job_key

_STUDY_KEYS = {
    "name",
    "llms",
    "modes",
    "videos",
    "covers",
    "seeds",
    "predictor",
    "corpus",
    "concurrency",
    "candidates",
}
_MODE = re.compile(r"^(basic|pe:(\d+)(?::(\d+))?)$")


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
        refs, categories = int(found.group(2)), int(found.group(3) or 1)
        if refs > 500 or not 1 <= categories <= 50:
            raise ValueError(f"mode {text!r}: N must be 0-500 and K 1-50")
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

    @property
    def folder(self) -> Path:
        """Where the study keeps its ledger, runs and report: beside the study file."""
        return self.path.parent / f"{self.path.stem}.study"

    def jobs(self) -> list[Job]:
        """Every combination, in a stable order (query sets and queries as in their files)."""
        items = [(name, item) for name, found in self.queries.items() for item in found]
        grid = itertools.product(items, self.llms, self.modes, self.videos, self.covers, self.seeds)
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
            )
            for (name, item), llm, mode, video, cover, seed in grid
        ]


def load_study(path: Path | str) -> Study:
    """Read and validate a study file; errors name the file and the line."""
    from popcorn.queries import read_queries

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"study file not found: {str(path)!r}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read study file {str(path)!r}: {err}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"{path.name}: {err}") from None

    def fail(key: str, message: str) -> UsageError:
        return UsageError(f"{path.name} line {_line_of(text, key)}: {message}")

    for section in data:
        if section not in ("study", "queries"):
            raise fail(section, f"unknown section or key {section!r} (expected [study], [queries])")
    study = data.get("study", {})
    for key in study:
        if key not in _STUDY_KEYS:
            known = ", ".join(sorted(_STUDY_KEYS))
            raise fail(key, f"unknown key {key!r} in [study] (known: {known})")

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
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and s >= 0 for s in seeds)
    ):
        raise fail("seeds", "seeds must be a non-empty list of integers >= 0")
    concurrency = study.get("concurrency", 4)
    if not isinstance(concurrency, int) or not 1 <= concurrency <= 64:
        raise fail("concurrency", "concurrency must be an integer from 1 to 64")

    base = path.parent
    predictor = study.get("predictor")
    if predictor is not None and not isinstance(predictor, str):
        raise fail("predictor", "predictor must be a folder path")
    candidates = study.get("candidates", 1)
    if not isinstance(candidates, int) or not 1 <= candidates <= 64:
        raise fail("candidates", "candidates must be an integer from 1 to 64")
    if candidates > 1 and (predictor is None or "none" in videos):
        raise fail("candidates", "best-of-N (candidates > 1) needs a predictor and clips")
    corpus = study.get("corpus", "popcorn-corpus")
    if not isinstance(corpus, str):
        raise fail("corpus", "corpus must be a folder path")
    sources = data.get("queries", {})
    if not sources:
        raise UsageError(f'{path.name}: no [queries] section (name = "file" lines)')
    queries: dict[str, list[QueryItem]] = {}
    for name, source in sources.items():
        if not isinstance(source, str):
            raise fail(name, f"query set {name!r} must be a file path or 'hf:DATASET_ID'")
        try:
            queries[name] = (
                _hub_queries(source[3:])
                if source.startswith("hf:")
                else read_queries(base / source)
            )
        except UsageError as err:
            raise fail(name, f"query set {name!r}: {err}") from None
    return Study(
        path=path.resolve(),
        name=str(study.get("name", path.stem)),
        llms=llms,
        modes=modes,
        videos=videos,
        covers=covers,
        seeds=tuple(dict.fromkeys(seeds)),
        queries=queries,
        predictor=(base / predictor).resolve() if predictor else None,
        corpus=(base / corpus).resolve(),
        concurrency=concurrency,
        candidates=candidates,
    )


def _check_llms(llms: tuple[str, ...], fail: Any) -> None:
    from popcorn.llm.registry import providers, valid_forms

    known = {p.name for p in providers()}
    for spec in llms:
        if spec.partition(":")[0].lower() not in known:
            raise fail("llms", f"unknown LLM {spec!r}; valid forms: {valid_forms()}")


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


def _hub_queries(dataset_id: str) -> list[QueryItem]:
    """The study's 200 queries (columns ``prompt``, ``type``) from the dataset hub."""
    from popcorn.generation import validate_query

    try:
        import datasets
    except ImportError:
        raise UsageError(
            "reading queries from the hub needs: pip install 'popcorn[data]'"
        ) from None
    try:
        table = datasets.load_dataset(dataset_id, split="train")
    except Exception as err:  # offline, unknown id, gated: all end the same way for the user
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"cannot load {dataset_id!r} from the hub: {first}") from None
    items = []
    for row in table:
        text = row.get("prompt") or row.get("query")
        if text:
            tags = {"type": str(row["type"])} if row.get("type") else {}
            items.append(QueryItem(validate_query(str(text)), tags))
    if not items:
        raise UsageError(f"{dataset_id!r} has no 'prompt' column with queries")
    return items
