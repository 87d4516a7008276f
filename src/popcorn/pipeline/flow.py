"""The whole flow in one object: query -> script -> media -> score.

Every entry point (``popcorn generate`` / ``render`` / ``score``, the web app, study stages,
best-of-N) builds a :class:`Pipeline` from one :class:`~popcorn.config.Settings` and calls its
steps, so a setting given in a flag, the environment or ``popcorn.toml`` reaches every one of
them the same way::

    >>> from popcorn import Pipeline, load_settings
    >>> pipeline = Pipeline(load_settings())                # popcorn.toml, env, defaults
    >>> result = pipeline.run("A cat learning to skateboard")
    >>> result.script.script.title, result.media.clip, result.score

Each step takes and returns plain, typed data and records what it did in the run folder, so any
step can be rerun alone from what the one before saved: :meth:`Pipeline.script` writes the run
folder, :meth:`Pipeline.render` its cover and clip, :meth:`Pipeline.score` its score.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from popcorn.config import PREDICTOR_META, Settings
from popcorn.errors import PopcornError, UsageError
from popcorn.generation import BatchReport, GenerateResult, Generator, QueryItem
from popcorn.progress import logged_load

if TYPE_CHECKING:
    from popcorn.llm.base import LLM
    from popcorn.media.render import MediaOptions
    from popcorn.pipeline.bestof import BestOf
    from popcorn.predictor.score import Predictor
    from popcorn.runs.store import Run

log = logging.getLogger(__name__)

ScriptResult = GenerateResult
"""What :meth:`Pipeline.script` returns: the script, its run folder, whether it was cached."""

StepCallback = Callable[[str, str], None]
"""``on_step(step, state)``: step is script, media or score; state running, done or skipped."""

ScoreWhen = Literal["auto", "always", "never"]


@dataclass(frozen=True)
class MediaResult:
    """The media stage of one run: what was written (or found already rendered)."""

    run_dir: Path
    record: dict[str, Any]
    """The manifest's ``media`` stage, as written."""

    @property
    def clip(self) -> Path | None:
        video = self.record.get("video")
        return None if not video else self.run_dir / video["file"]

    @property
    def cover(self) -> Path | None:
        cover = self.record.get("cover")
        return None if not cover else self.run_dir / cover["file"]

    @property
    def preview(self) -> bool:
        return bool((self.record.get("video") or {}).get("preview", False))

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(self.record.get("warnings", ()))

    def to_dict(self) -> dict[str, Any]:
        """The fields ``generate --json`` prints: file paths and whether each is a preview."""
        fields: dict[str, Any] = {}
        for role, key in (("video", "clip"), ("cover", "cover")):
            if self.record.get(role):
                fields[key] = str(self.run_dir / self.record[role]["file"])
                fields[f"{key}_preview"] = self.record[role]["preview"]
        return fields


@dataclass(frozen=True)
class Score:
    """The predictor's verdict on one run's clip."""

    score: float
    """Predicted log2(1 + comments)."""
    text_only: float | None
    percentile: float | None
    """Share of the held-out real videos scoring lower (None without a human reference)."""
    preview: bool
    """Scored on a preview animatic: the figure says little about a real clip."""
    record: dict[str, Any] = field(repr=False)
    """The manifest's ``score`` stage, as written."""

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Score:
        return cls(
            score=float(record["score"]),
            text_only=record.get("text_only"),
            percentile=record.get("percentile"),
            preview=bool(record.get("preview", False)),
            record=record,
        )


@dataclass(frozen=True)
class RunResult:
    """One query through every step that ran."""

    script: ScriptResult
    media: MediaResult | None = None
    score: Score | None = None

    @property
    def run_dir(self) -> Path:
        return self.script.run_dir

    def to_dict(self) -> dict[str, Any]:
        """One JSON object: the script's fields, the media files, and the score record."""
        data = self.script.to_dict()
        if self.media is not None:
            data.update(self.media.to_dict())
        if self.score is not None:
            data["score"] = self.score.record
        return data


@dataclass
class ManyReport:
    """What :meth:`Pipeline.run_many` did: each finished run, and every failure with its step."""

    scripts: BatchReport
    results: list[RunResult] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    """(query, message) for each query that failed at any step; the message names the step."""


RunCallback = Callable[[QueryItem, "RunResult | Exception"], None]


class Pipeline:
    """The flow for one set of :class:`Settings`; models load on first use and stay loaded.

    ``pe`` turns prompt enhancement on (its settings are ``settings.pe``); ``score`` says when
    clips are scored: ``auto`` when ``settings.predictor.path`` holds a trained model,
    ``always`` (an error if it holds none) or ``never``. ``llm`` replaces the backend named by
    ``settings.llm.spec`` with one built by the caller.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        pe: bool = False,
        score: ScoreWhen = "auto",
        llm: LLM | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.pe = pe
        self.score_when: ScoreWhen = score
        self._llm = llm
        self._parts = _Parts()

    def with_media(self, **changes: Any) -> Pipeline:
        """This pipeline with other ``[media]`` settings (e.g. ``video="ltx"``), sharing its
        loaded LLM, PE index and predictor."""
        media = self.settings.media
        if all(getattr(media, name) == value for name, value in changes.items()):
            return self
        other = copy.copy(self)
        other.settings = self.settings.model_copy(
            update={"media": type(media).model_validate({**media.model_dump(), **changes})}
        )
        return other

    # --- the parts, built once ------------------------------------------------------------

    @property
    def media_options(self) -> MediaOptions:
        return self.settings.media.options(self.settings.profile)

    @property
    def generator(self) -> Generator:
        """The script stage (LLM, decoding, PE); built on first use."""
        with self._parts.lock:
            if self._parts.generator is None:
                self._parts.generator = self._build_generator()
            return self._parts.generator

    def _build_generator(self) -> Generator:
        from popcorn.llm.retry import RetryPolicy

        s = self.settings
        pe = None
        if self.pe:
            from popcorn.retrieval.enhance import PESettings

            # N, K, corpus and embedder from [pe]; pool, completeness and routing from the
            # profile; a test-split pool reads the split of the predictor in [predictor] path.
            pe = PESettings.from_settings(s)
        return Generator(
            self._llm or s.llm.spec,
            out=s.run.out,
            decoding=s.decoding.decoding(),
            attempts=s.llm.attempts,
            retry=RetryPolicy(attempts=s.llm.retries),
            options=s.llm.options(),
            pe=pe,
            profile=s.profile,
            prompts=s.llm.prompts,
            gate=s.gate.settings(),
        )

    @property
    def predictor(self) -> Predictor | None:
        """The trained predictor, or None when clips are not scored (see ``score``)."""
        with self._parts.lock:
            if not self._parts.predictor_checked:
                self._parts.predictor = self._load_predictor()
                self._parts.predictor_checked = True
            return self._parts.predictor

    def _load_predictor(self) -> Predictor | None:
        folder = self.settings.predictor.path
        if self.score_when == "never":
            return None
        # Checked before importing the predictor (torch): an install without the predictor
        # extra still generates when no predictor is asked for.
        if self.score_when == "auto" and not (folder / PREDICTOR_META).is_file():
            return None
        from popcorn.predictor.score import Predictor

        with logged_load(f"the predictor in {folder}"):
            return Predictor.load(folder, device=torch_device(self.settings.predictor.device))

    def check(self) -> None:
        """Fail now, before any model runs, on an unknown generator or invalid media settings."""
        self.media_options.check()

    # --- steps ----------------------------------------------------------------------------

    def script(
        self, query: str, *, force: bool = False, tags: dict[str, str] | None = None
    ) -> ScriptResult:
        """Write the script for ``query`` (or return the one already made with these settings)."""
        started = time.perf_counter()
        result = self.generator.generate(query, force=force, tags=tags)
        how = "found (cached)" if result.cached else "written"
        log.info("script %s in %.2f s: %s", how, _since(started), result.run_dir.name)
        return result

    def render(self, run: Path | str | Run, *, force: bool = False) -> MediaResult:
        """Render ``run``'s cover and clip with ``settings.media``; cached by their own keys."""
        from popcorn.media.render import render, render_stage_by_stage
        from popcorn.runs.store import Run

        path = run.path if isinstance(run, Run) else Path(run)
        options = self.media_options
        started = time.perf_counter()
        if not options.memory.unload:
            record = render(path, options, force=force)
            log.info("media %s in %.2f s: %s", _how(record), _since(started), path.name)
            return MediaResult(path, record)
        from popcorn.llm.registry import release_models

        release_models()
        outcome = render_stage_by_stage([path], options, force=force)[path]
        if isinstance(outcome, Exception):
            raise outcome
        return MediaResult(path, outcome)

    def score(self, run: Path | str | Run) -> Score | None:
        """Score ``run``'s clip; None when there is no predictor (see ``score``) or no clip."""
        from popcorn.runs.store import Run

        path = run.path if isinstance(run, Run) else Path(run)
        predictor = self.predictor
        if predictor is None:
            return None
        loaded = Run.load(path)
        if not loaded.manifest.files.get("clip"):
            return None
        from popcorn.predictor.score import score_run

        started = time.perf_counter()
        found = Score.from_record(score_run(path, predictor))
        log.info("score %.3f in %.2f s: %s", found.score, _since(started), path.name)
        return found

    def run(
        self,
        query: str,
        *,
        force: bool = False,
        tags: dict[str, str] | None = None,
        on_step: StepCallback | None = None,
    ) -> RunResult:
        """Every step for one query: script, then media (unless both generators are none),
        then score (when there is a predictor and a clip)."""
        step = on_step or _no_step
        step("script", "running")
        script = self.script(query, force=force, tags=tags)
        step("script", "done")
        media = None
        options = self.media_options
        if options.video is None and options.cover is None:
            step("media", "skipped")
        else:
            step("media", "running")
            media = self.render(script.run_dir, force=force)
            step("media", "done")
        score = None
        if media is not None and media.clip is not None and self.predictor is not None:
            step("score", "running")
            score = self.score(script.run_dir)
            step("score", "done")
        else:
            step("score", "skipped")
        return RunResult(script, media, score)

    def run_many(
        self,
        items: Iterable[QueryItem],
        *,
        concurrency: int | None = None,
        staged: bool | None = None,
        force: bool = False,
        on_result: RunCallback | None = None,
    ) -> ManyReport:
        """Every step for many queries. Scripts run up to ``concurrency`` at once (API
        backends); media render one at a time as scripts finish, or, ``staged``, after all
        scripts, one model at a time (the default when ``settings.media.unload_stages``).
        A failure at any step is recorded and the rest go on; ``on_result`` sees each query's
        :class:`RunResult` or exception as it ends."""
        from popcorn.media.render import render_stage_by_stage

        options = self.media_options
        staged = options.memory.unload if staged is None else staged
        rendering = options.video is not None or options.cover is not None
        concurrency = concurrency or self.settings.run.concurrency
        finished: list[RunResult] = []
        failures: list[tuple[str, str]] = []
        waiting: list[tuple[QueryItem, ScriptResult]] = []

        def settle(item: QueryItem, outcome: RunResult | Exception) -> None:
            if isinstance(outcome, RunResult):
                finished.append(outcome)
            if on_result is not None:
                on_result(item, outcome)

        def after_script(item: QueryItem, outcome: ScriptResult | Exception) -> None:
            if isinstance(outcome, Exception):
                settle(item, outcome)
            elif staged and rendering:
                waiting.append((item, outcome))
            else:
                media = None
                if rendering:
                    try:
                        media = self.render(outcome.run_dir, force=force)
                    except PopcornError as error:
                        failures.append((outcome.query, f"media: {error}"))
                        settle(item, error)
                        return
                settle(item, self._scored(outcome, media, failures))

        report = self.generator.batch(
            items, concurrency=concurrency, force=force, on_result=after_script
        )
        if waiting:
            from popcorn.llm.registry import release_models

            release_models()
            stages = render_stage_by_stage([r.run_dir for _, r in waiting], options, force=force)
            for item, outcome in waiting:
                record = stages[outcome.run_dir]
                if isinstance(record, PopcornError):
                    failures.append((outcome.query, f"media: {record}"))
                    settle(item, record)
                else:
                    media = MediaResult(outcome.run_dir, record)
                    settle(item, self._scored(outcome, media, failures))
        return ManyReport(report, finished, [*report.failures, *failures])

    def _scored(
        self, script: ScriptResult, media: MediaResult | None, failures: list[tuple[str, str]]
    ) -> RunResult:
        if media is None or media.clip is None or self.predictor is None:
            return RunResult(script, media)
        try:
            return RunResult(script, media, self.score(script.run_dir))
        except PopcornError as error:
            failures.append((script.query, f"score: {error}"))
            return RunResult(script, media)

    def best_of(
        self,
        query: str,
        k: int,
        top: int = 2,
        *,
        force: bool = False,
        on_step: Callable[[str], None] | None = None,
    ) -> BestOf:
        """Best-of-N: ``k`` scripts (seeds S, S+1, ...), ranked by the text-only predictor, the
        ``top`` best rendered and scored, the best full score kept (see
        :mod:`popcorn.pipeline.bestof`)."""
        from popcorn.pipeline.bestof import best_of

        predictor = self.predictor
        if predictor is None:
            raise UsageError(
                "best-of-N ranks candidates with a trained predictor: give --predictor DIR"
            )
        return best_of(
            self.generator, query, k, min(top, k), predictor, self.media_options, force, on_step
        )


@dataclass
class _Parts:
    """What a pipeline loads once, shared by the copies :meth:`Pipeline.with_media` makes."""

    generator: Generator | None = None
    predictor: Predictor | None = None
    predictor_checked: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


def torch_device(device: str) -> str:
    """``device`` for torch: ``auto`` becomes ``cuda`` when a CUDA GPU is there, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _since(started: float) -> float:
    return time.perf_counter() - started


def _how(record: dict[str, Any]) -> str:
    return "found (cached)" if record.get("cached") else "rendered"


def _no_step(step: str, state: str) -> None:
    return None


def generate(query: str, settings: Settings | None = None, *, pe: bool = False) -> RunResult:
    """Everything ``popcorn generate QUERY`` does: the script, the cover and clip, and the
    score when a predictor is trained; ``settings`` default to popcorn.toml, the environment
    and the defaults (:func:`popcorn.load_settings`)."""
    from popcorn.config import load_settings

    return Pipeline(settings or load_settings(), pe=pe).run(query)
