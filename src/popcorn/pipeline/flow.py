"""The whole flow in one object: query -> script -> media -> score.

Every entry point (``popcorn generate`` / ``render`` / ``score``, the web app, study stages,
best-of-N) builds a :class:`Pipeline` from one :class:`~popcorn.config.Settings` and calls its
steps, so a setting given in a flag, the environment or ``popcorn.toml`` reaches every one of
them the same way::

    >>> from popcorn import Pipeline, load_settings
    >>> pipeline = Pipeline(load_settings())                # popcorn.toml, env, defaults
    >>> result = pipeline.run("A cat learning to skateboard")
    >>> result.script.script.title, result.media.clip, result.score

Each step takes a batch (a list; one item is a convenience that raises instead of returning
its error) and returns plain, typed data, and records what it did in the run folder, so any
step can be rerun alone from what the one before saved: :meth:`Pipeline.script` writes the run
folders, :meth:`Pipeline.render` their covers and clips, :meth:`Pipeline.score` their scores.
``run`` (one query), ``run_many`` and best-of-N are built from these three steps.

A pipeline is cheap: it loads no model itself. Every model is held by
:data:`~popcorn.residency.MODELS`, shared by all pipelines of the process; the unload policy
(``settings.media.unload_stages``) is the pipeline's: it lets the LLMs go before a batch of
renders, and each generator once its part of the batch is done.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from popcorn.config import Settings
from popcorn.errors import GenerationError, PopcornError, UsageError
from popcorn.pipeline.results import ManyReport, MediaResult, RunResult, Score, ScriptResult
from popcorn.predictor.folder import is_trained
from popcorn.writer.batch import BatchReport
from popcorn.writer.queries import QueryItem, validate_query
from popcorn.writer.result import GenerateResult
from popcorn.writer.writer import Generator

if TYPE_CHECKING:
    from popcorn.llm.base import LLM
    from popcorn.media.render import MediaOptions
    from popcorn.pipeline.bestof import BestOf
    from popcorn.predictor.score import Predictor
    from popcorn.runs.store import Run

log = logging.getLogger(__name__)

StepCallback = Callable[[str, str], None]
"""``on_step(step, state)``: step is script, media or score; state running, done or skipped."""

ScoreWhen = Literal["auto", "always", "never"]

RunCallback = Callable[[QueryItem, "RunResult | Exception"], None]


class Pipeline:
    """The flow for one set of :class:`Settings`. Cheap to build: models load on first use
    into :data:`~popcorn.residency.MODELS`, shared by every pipeline of the process.

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
        script stage (the LLM's client and its batcher)."""
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
        """The script stage (decoding, PE, the LLM's client); built on first use. It loads no
        model itself: in-process LLMs load through :data:`~popcorn.residency.MODELS`."""
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
            drafts=s.llm.drafts,
            draft_seconds=s.llm.draft_seconds,
            temperature=s.decoding.temperature,
        )

    @property
    def predictor(self) -> Predictor | None:
        """The trained predictor, or None when clips are not scored (see ``score``); shared
        by every pipeline of this process (:data:`~popcorn.residency.MODELS`)."""
        folder = self.settings.predictor.path
        if self.score_when == "never":
            return None
        # Checked before importing the predictor (torch): an install without the predictor
        # extra still generates when no predictor is asked for.
        if self.score_when == "auto" and not is_trained(folder):
            return None
        from popcorn.predictor.score import Predictor

        return Predictor.shared(folder, device=torch_device(self.settings.predictor.device))

    def check(self) -> None:
        """Fail now, before any model runs, on an unknown generator or invalid media settings."""
        self.media_options.check()

    # --- steps: each takes a batch (a list) or, for convenience, one item -------------------

    @overload
    def script(
        self, queries: str, *, force: bool = ..., tags: dict[str, str] | None = ...
    ) -> ScriptResult: ...

    @overload
    def script(
        self,
        queries: list[str] | list[QueryItem] | list[str | QueryItem],
        *,
        force: bool = ...,
        concurrency: int | None = ...,
    ) -> list[ScriptResult | PopcornError]: ...

    def script(
        self,
        queries: str | list[str] | list[QueryItem] | list[str | QueryItem],
        *,
        force: bool = False,
        tags: dict[str, str] | None = None,
        concurrency: int | None = None,
    ) -> ScriptResult | list[ScriptResult | PopcornError]:
        """Write the script of each query (a run store hit is returned without calling the
        LLM). A list gives one outcome per query, in order, a failure as its error (up to
        ``concurrency`` at once for backends that take several calls); one query gives its
        result, or raises."""
        if isinstance(queries, str):
            started = time.perf_counter()
            result = self.generator.generate(queries, force=force, tags=tags)
            how = "found (cached)" if result.cached else "written"
            log.info("script %s in %.2f s: %s", how, _since(started), result.run_dir.name)
            return result
        items = [q if isinstance(q, QueryItem) else QueryItem(q) for q in queries]
        found: dict[str, ScriptResult | Exception] = {}
        report = self._scripts(
            items, concurrency, force, lambda item, outcome: found.setdefault(item.query, outcome)
        )
        return [_script_outcome(item, found, report) for item in items]

    def _scripts(
        self,
        items: list[QueryItem],
        concurrency: int | None,
        force: bool,
        on_result: Callable[[QueryItem, ScriptResult | Exception], Any],
    ) -> BatchReport:
        return self.generator.batch(
            items,
            concurrency=concurrency or self.settings.run.concurrency,
            force=force,
            on_result=on_result,
        )

    @overload
    def render(self, runs: Path | str | Run, *, force: bool = ...) -> MediaResult: ...

    @overload
    def render(
        self,
        runs: list[Path] | list[str] | list[Run] | list[Path | str | Run],
        *,
        force: bool = ...,
    ) -> list[MediaResult | PopcornError]: ...

    def render(
        self,
        runs: Path | str | Run | list[Path] | list[str] | list[Run] | list[Path | str | Run],
        *,
        force: bool = False,
    ) -> MediaResult | list[MediaResult | PopcornError]:
        """Render each run's cover and clip with ``settings.media`` (cached by their own keys).

        The whole list is one batch: with ``settings.media.unload_stages`` the LLMs are let go
        before it, every clip is made, the clip model let go, then every cover, so each model
        is loaded once per batch; otherwise every model stays loaded and clip k+1 is made
        while clip k is encoded. A list gives one outcome per run, in order, a failure as its
        error; one run gives its result, or raises."""
        if not isinstance(runs, list):
            return _raised(self.render([_path(runs)], force=force)[0])
        from popcorn.media.render import render_many, render_stage_by_stage
        from popcorn.residency import MODELS

        paths = [_path(run) for run in runs]
        options = self.media_options
        started = time.perf_counter()
        if options.memory.unload:
            MODELS.release("llm")
            records = render_stage_by_stage(paths, options, force=force)
        else:
            records = render_many(paths, options, force=force)
        outcomes: list[MediaResult | PopcornError] = []
        for path in paths:
            record = records[path]
            if isinstance(record, PopcornError):
                outcomes.append(record)
            else:
                outcomes.append(MediaResult(path, record))
                log.info("media %s: %s", _how(record), path.name)
        log.info("media of %d run(s) in %.2f s", len(paths), _since(started))
        return outcomes

    @overload
    def score(self, runs: Path | str | Run) -> Score | None: ...

    @overload
    def score(
        self, runs: list[Path] | list[str] | list[Run] | list[Path | str | Run]
    ) -> list[Score | PopcornError | None]: ...

    def score(
        self, runs: Path | str | Run | list[Path] | list[str] | list[Run] | list[Path | str | Run]
    ) -> Score | list[Score | PopcornError | None] | None:
        """Score each run's clip with the predictor; None for a run without a clip, or for
        every run when there is no predictor (see ``score``). A list gives one outcome per
        run, in order, a failure as its error; one run gives its score, or raises."""
        if not isinstance(runs, list):
            return _raised(self.score([_path(runs)])[0])
        from popcorn.runs.store import Run

        paths = [_path(run) for run in runs]
        predictor = self.predictor  # a missing predictor fails the batch, not each run
        if predictor is None:
            return [None for _ in paths]
        from popcorn.predictor.score import score_run

        outcomes: list[Score | PopcornError | None] = []
        for path in paths:
            started = time.perf_counter()
            try:
                if not Run.load(path).manifest.files.get("clip"):
                    outcomes.append(None)
                    continue
                found = Score.from_record(score_run(path, predictor))
            except PopcornError as error:
                outcomes.append(error)
                continue
            log.info("score %.3f in %.2f s: %s", found.score, _since(started), path.name)
            outcomes.append(found)
        return outcomes

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
        backends); media render one run at a time as scripts finish, or, ``staged``, as one
        batch after all scripts (see :meth:`render`; the default when
        ``settings.media.unload_stages``), then the batch is scored. A failure at any step is
        recorded and the rest go on; ``on_result`` sees each query's :class:`RunResult` or
        exception as it ends."""
        options = self.media_options
        staged = options.memory.unload if staged is None else staged
        rendering = options.video is not None or options.cover is not None
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
            elif not rendering:
                settle(item, RunResult(outcome))
            else:
                self._finish([(item, outcome)], force, failures, settle)

        report = self._scripts(list(items), concurrency, force, after_script)
        if waiting:
            self._finish(waiting, force, failures, settle)
        return ManyReport(report, finished, [*report.failures, *failures])

    def _finish(
        self,
        scripts: list[tuple[QueryItem, ScriptResult]],
        force: bool,
        failures: list[tuple[str, str]],
        settle: Callable[[QueryItem, RunResult | Exception], None],
    ) -> None:
        """Render ``scripts`` as one batch, score the clips as another, and settle each."""
        media = self.render([s.run_dir for _, s in scripts], force=force)
        clips = [m.run_dir for m in media if isinstance(m, MediaResult) and m.clip is not None]
        scores: dict[Path, Score | PopcornError | None] = {}
        if clips and self.predictor is not None:
            scores = dict(zip(clips, self.score(clips), strict=True))
        for (item, script), rendered in zip(scripts, media, strict=True):
            if isinstance(rendered, PopcornError):
                failures.append((script.query, f"media: {rendered}"))
                settle(item, rendered)
                continue
            score = scores.get(script.run_dir)
            if isinstance(score, PopcornError):
                failures.append((script.query, f"score: {score}"))
                score = None
            settle(item, RunResult(script, rendered, score))

    def with_seed(self, seed: int) -> Pipeline:
        """This pipeline with another decoding seed, whose scripts are runs of their own (the
        loaded models are shared through :data:`~popcorn.residency.MODELS`)."""
        if self.settings.decoding.seed == seed:
            return self
        decoding = self.settings.decoding.model_copy(update={"seed": seed})
        settings = self.settings.model_copy(update={"decoding": decoding})
        return Pipeline(settings, pe=self.pe, score=self.score_when, llm=self._llm)

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

        return best_of(self, query, k, min(top, k), force=force, on_step=on_step)


@dataclass
class _Parts:
    """What a pipeline builds once, shared by the copies :meth:`Pipeline.with_media` makes."""

    generator: Generator | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _script_outcome(
    item: QueryItem, found: dict[str, ScriptResult | Exception], report: BatchReport
) -> ScriptResult | PopcornError:
    """The outcome of ``item`` in a script batch: refused, written (or found), failed, or not
    reached because the batch stopped."""
    try:
        query = validate_query(item.query)
    except UsageError as error:
        return error
    outcome = found.get(query)
    if isinstance(outcome, GenerateResult | PopcornError):
        return outcome
    if outcome is not None:
        raise outcome  # not one of ours: a bug, not a failed query
    return GenerationError(f"no script for {query!r}: the batch stopped ({report.stopped})")


def _path(run: Path | str | Run) -> Path:
    from popcorn.runs.store import Run

    return run.path if isinstance(run, Run) else Path(run)


R = TypeVar("R")


def _raised(outcome: R | PopcornError) -> R:
    if isinstance(outcome, PopcornError):
        raise outcome
    return outcome


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
