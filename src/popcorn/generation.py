"""Query -> script: prompt the LLM, parse robustly, retry within bounds, record everything.

:class:`Generator` holds one backend and its settings and serves single queries and batches;
:func:`write_script` is the one-call convenience. The whole flow (script, media, score) is
:class:`popcorn.pipeline.Pipeline`. Every call writes a run folder (see
:mod:`popcorn.runs`); a query already done with the same settings is returned from its folder.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from popcorn.errors import (
    GenerationError,
    PopcornError,
    ProviderError,
    ScriptParseError,
    UsageError,
)
from popcorn.llm.base import LLM, Completion, Decoding, Message
from popcorn.llm.parser import ParsedAnswer, parse_script
from popcorn.llm.prompts import (
    PE_JSON_SCHEMA,
    SCRIPT_JSON_SCHEMA,
    Form,
    PromptTemplates,
    shorter_title_request,
)
from popcorn.llm.quality import GateSettings, Verdict, gate_embedder, judge, prompt_text
from popcorn.llm.registry import LLMOptions, create_llm
from popcorn.llm.retry import RetryPolicy, call_with_retries
from popcorn.profiles import POPCORN, Profile
from popcorn.runs.keys import job_key
from popcorn.runs.lock import LockedError
from popcorn.runs.store import SCHEMA_VERSION, Run, RunManifest, RunStore
from popcorn.safety import redact
from popcorn.script import TITLE_MAX_CHARS, Script, shorten_title

if TYPE_CHECKING:
    from popcorn.retrieval.enhance import Enhancer, PESettings
    from popcorn.retrieval.search import References

MAX_QUERY_CHARS = 2000
DEFAULT_OUT = Path("popcorn-runs")


def validate_query(query: object) -> str:
    """The query, its whitespace folded; ``UsageError`` if it is not text, is empty or too
    long, or is not valid Unicode text (a lone surrogate: ``\\xff`` in a command line, which
    Python keeps as an escape, or half of a pair escaped in JSON). Such text could be written
    to no manifest and shown on no terminal, so it is refused here, before anything runs."""
    if not isinstance(query, str):
        raise UsageError(f"the query is {_kind(query)}, not text")
    cleaned = " ".join(query.split())
    if not cleaned:
        raise UsageError(
            "the query is empty: describe the video you want, e.g. 'A cat learning to skateboard'"
        )
    if len(cleaned) > MAX_QUERY_CHARS:
        raise UsageError(
            f"the query has {len(cleaned):,} characters; the limit is {MAX_QUERY_CHARS:,}"
        )
    try:
        cleaned.encode("utf-8")
    except UnicodeEncodeError as err:
        raise UsageError(
            f"the query is not valid text: character {err.start + 1} is a byte that is not "
            "UTF-8 or half of a surrogate pair; write the query in UTF-8"
        ) from None
    return cleaned


def printable_query(query: object, limit: int = 80) -> str:
    """``query`` as one safe line to show or record, whatever it holds: lone surrogates
    escaped (they cannot be encoded), control characters dropped, cut to ``limit``."""
    from popcorn.safety import one_line

    if not isinstance(query, str):
        return f"<{_kind(query)}>"
    text = one_line(query.encode("utf-8", "backslashreplace").decode("utf-8"))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value: object) -> str:
    """What a JSON value is, in words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


@dataclass(frozen=True)
class QueryItem:
    """One query of a batch, with labels carried into its manifest (e.g. ``type``)."""

    query: str
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GenerateResult:
    query: str
    script: Script
    run_dir: Path
    mode: str
    llm: str
    cached: bool
    """True when the script came from an earlier run with the same settings."""
    warnings: tuple[str, ...] = ()
    """Things the user should know, e.g. a category with fewer videos than --refs."""
    gate: dict[str, Any] | None = None
    """The quality gate's record of the script (the manifest's ``gate`` stage)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "title": self.script.title,
            "cover_prompt": self.script.cover_prompt,
            "video_prompt": self.script.video_prompt,
            "flags": list(self.script.flags),
            "mode": self.mode,
            "llm": self.llm,
            "run_dir": str(self.run_dir),
            "cached": self.cached,
            "warnings": list(self.warnings),
            "gate": self.gate,
        }


@dataclass
class BatchReport:
    results: list[GenerateResult] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    """(query, message) for each query that ended without a script."""
    duplicates: int = 0
    stopped: str | None = None
    """Why the batch stopped early, if it did."""

    @property
    def cached(self) -> int:
        return sum(r.cached for r in self.results)


BatchCallback = Callable[[QueryItem, "GenerateResult | Exception"], None]


@dataclass(frozen=True)
class Prompt:
    """What is sent for one query: messages, the schema to enforce (None: none is sent), and
    PE's references."""

    messages: list[Message]
    schema: dict[str, Any] | None
    references: References | None = None
    form: Form | None = None
    """PE's form: ``full``, ``fitted`` or ``compact`` (None in basic mode)."""
    shown: int | None = None
    """How many references the messages show (the compact form shows fewer)."""


# What a profile changes in a script's output; popcorn's values leave the job key as it was.
_KEYED_CONDITIONS = ("schema", "api_sampling", "four_bit", "reference_form")


class Generator:
    """One LLM backend plus generation settings; ``pe`` turns on prompt enhancement.

    ``profile`` sets the conditions (see :mod:`popcorn.profiles`): its prompt templates, whether
    a JSON schema is sent, what an API request carries, the 4-bit type, how references are
    shown, whether the quality gate acts. ``prompts`` replaces the profile's template folder
    with another one. A backend passed in already built is used as it was built (its request
    and 4-bit type included).

    Every parsed answer goes through the quality gate (:mod:`popcorn.llm.quality`): its verdict
    is recorded in the transcript (each attempt) and the manifest (``stages["gate"]``); with
    ``gate.enabled`` (the popcorn profile's default) a rejected answer is asked again with the
    next seed, and the last rejection is the run's failure.
    """

    def __init__(
        self,
        llm: LLM | str = "embedded",
        *,
        out: Path | str = DEFAULT_OUT,
        decoding: Decoding | None = None,
        attempts: int = 3,
        retry: RetryPolicy | None = None,
        options: LLMOptions | None = None,
        pe: PESettings | None = None,
        profile: Profile = POPCORN,
        prompts: Path | str | None = None,
        gate: GateSettings | None = None,
    ) -> None:
        if attempts < 1:
            raise UsageError("attempts must be at least 1")
        self.profile = profile
        self.templates = (
            PromptTemplates.packaged_for(profile.prompts)
            if prompts is None
            else PromptTemplates.load(prompts)
        )
        self.enhancer: Enhancer | None = None
        if pe is not None:
            from popcorn.retrieval.enhance import Enhancer

            self.enhancer = Enhancer(pe)  # fails now, not mid-batch, if the index is missing
        self.mode: Literal["basic", "pe"] = "basic" if pe is None else "pe"
        if isinstance(llm, str):
            options = replace(
                options or LLMOptions(), four_bit=profile.four_bit, sampling=profile.api_sampling
            )
            self.llm = create_llm(llm, options)
        else:
            self.llm = llm
        self.store = RunStore(out)
        self.decoding = decoding or Decoding(max_tokens=profile.max_tokens)
        self.attempts = attempts
        self.retry = retry or RetryPolicy()
        self.gate = gate if gate is not None else GateSettings(enabled=profile.gate)
        self._embedder: Any = None
        self._embedder_checked = False
        self._embedder_loaded = False
        self._embedder_lock = threading.Lock()

    @property
    def form(self) -> Form:
        """How PE shows references: the profile's ``full``, or, ``fitted`` to the model, the
        compact form for a small model (the backend's ``size``; see the templates)."""
        if self.profile.reference_form == "full":
            return "full"
        if model_size(self.llm) == "small" and self.templates.has_compact:
            return "compact"
        return "fitted"

    # --- one query ------------------------------------------------------------------------

    def key_inputs(self, query: str) -> dict[str, Any]:
        """Exactly what changes the output; hashed into the run's key."""
        inputs = {
            "schema": SCHEMA_VERSION,
            "query": query,
            "mode": self.mode,
            "prompt": self.templates.version(self.mode),
            "llm": {"spec": self.llm.spec, **self.llm.identity()},
            "decoding": self.decoding.to_dict(),
        }
        if self.enhancer is not None:
            inputs["pe"] = self.enhancer.identity()
            if self.form == "compact":
                inputs["pe_form"] = "compact"
        if self.gate.enabled:
            # An enforcing gate changes which answer is kept; a recording one changes nothing.
            inputs["gate"] = {**self.gate.thresholds(), "relevance": gate_checks_relevance()}
        conditions = _conditions(self.profile)
        if conditions != _conditions(POPCORN):
            # Only other profiles add this, so popcorn runs keep the keys they always had.
            inputs["profile"] = conditions
        return inputs

    def prompt(self, query: str) -> Prompt:
        """The messages for ``query``; with PE this retrieves the references."""
        if self.enhancer is None:
            schema = SCRIPT_JSON_SCHEMA if self.profile.schema else None
            return Prompt(self.templates.basic(query), schema)
        references = self.enhancer.references(query)
        form = self.form
        messages = self.templates.pe(query, references.items, form=form)
        shown = len(references.items)
        schema = PE_JSON_SCHEMA
        if form == "compact":
            shown = len(self.templates.compact_references(references.items))
            # The compact form asks for no written reasoning: a small model's reasoning drifts
            # off the query and takes the title with it.
            schema = SCRIPT_JSON_SCHEMA
        return Prompt(messages, schema if self.profile.schema else None, references, form, shown)

    def generate(
        self,
        query: str,
        *,
        force: bool = False,
        tags: dict[str, str] | None = None,
        stop: threading.Event | None = None,
    ) -> GenerateResult:
        """Write a script for ``query``, or return the one already made with these settings.

        A finished run is returned without writing anything (a read-only store serves it).
        Otherwise the run folder is locked while the script is written; a process that finds
        it locked waits for the holder and then returns the holder's script as cached.
        """
        query = validate_query(query)
        key = job_key(self.key_inputs(query))
        cached = None if force else self._cached(query, key)
        if cached is not None:
            return cached
        with self.store.lock(query, key, stop=stop):
            cached = None if force else self._cached(query, key)
            if cached is not None:
                return cached
            run = self.store.start(
                RunManifest(
                    key=key,
                    query=query,
                    mode=self.mode,
                    llm={"spec": self.llm.spec, **self.llm.identity()},
                    decoding=self.decoding.to_dict(),
                    seed=self.decoding.seed,
                    prompt_version=self.templates.version(self.mode),
                    profile=self.profile.name,
                    tags=dict(tags or {}),
                )
            )
            try:
                return self._generate(run, query, stop)
            except ProviderError as err:
                run.save(status="failed", error={"reason": "provider", "message": redact(err)})
                raise

    def _cached(self, query: str, key: str) -> GenerateResult | None:
        """The finished run for ``key``, read without writing anything; None if there is none
        (or if its script was damaged, so that it is written again)."""
        existing = self.store.get(query, key)
        if existing is None or existing.status != "done":
            return None
        try:
            script = existing.script()
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        return None if script is None else self._result(existing, script, cached=True)

    def _generate(self, run: Run, query: str, stop: threading.Event | None) -> GenerateResult:
        started = time.perf_counter()
        prompt = self.prompt(query)
        warnings: tuple[str, ...] = ()
        if prompt.references is not None:
            refs = prompt.references
            warnings = tuple(refs.warnings)
            run.write_json("references", "references.json", refs.to_dict())
            assert self.enhancer is not None
            run.save(
                stages={
                    **run.manifest.stages,
                    "pe": {
                        **self.enhancer.identity(),
                        "used": len(refs.items),
                        "popular": sum(r.popular for r in refs.items),
                        "routed": [name for name, _ in refs.categories],
                        "form": prompt.form,
                        "shown": prompt.shown,
                        "retrieval_seconds": round(time.perf_counter() - started, 4),
                        "warnings": list(warnings),
                    },
                }
            )
        transcript: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "attempts": []}
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "calls": 0}
        llm_seconds = 0.0
        tally = _GateTally()
        last_error: ScriptParseError | None = None

        def call(messages: list[Message], decoding: Decoding) -> tuple[Completion, float]:
            nonlocal llm_seconds
            t = time.perf_counter()
            completion = call_with_retries(
                lambda: self.llm.complete(messages, decoding, prompt.schema),
                self.retry,
                stop=stop,
            )
            seconds = time.perf_counter() - t
            llm_seconds += seconds
            usage["calls"] += 1
            usage["prompt_tokens"] += completion.prompt_tokens or 0
            usage["completion_tokens"] += completion.completion_tokens or 0
            return completion, seconds

        for attempt in range(1, self.attempts + 1):
            # Each attempt is a fresh conversation with its own seed: reproducible, and a bad
            # first answer does not steer the next one.
            decoding = self.decoding.with_seed(self.decoding.seed + attempt - 1)
            messages = prompt.messages
            completion, seconds = call(messages, decoding)
            entry: dict[str, Any] = _entry(attempt, decoding.seed, messages, completion, seconds)
            transcript["attempts"].append(entry)
            try:
                parsed = parse_script(completion.text, self.templates.example_script)
                if prompt.references is not None:
                    from popcorn.retrieval.enhance import check_original

                    check_original(parsed.script, prompt.references)
            except ScriptParseError as err:
                entry["outcome"] = {"ok": False, "reason": err.reason, "detail": err.detail}
                last_error = err
                run.write_json("transcript", "transcript.json", transcript)
                continue
            if len(parsed.script.title) > TITLE_MAX_CHARS:
                parsed = self._shorter_title(parsed, messages, completion, decoding, call, entry)
            verdict = self._judged(parsed.script, query, messages, tally)
            entry["gate"] = verdict.to_dict()
            gate = self._gate_record(verdict, tally)
            if not verdict.ok and self.gate.enabled:
                entry["outcome"] = {"ok": False, "reason": verdict.reason, "detail": verdict.detail}
                last_error = ScriptParseError(str(verdict.reason), verdict.detail)
                run.write_json("transcript", "transcript.json", transcript)
                run.save(stages={**run.manifest.stages, "gate": gate})
                continue
            entry["outcome"] = {"ok": True}
            run.write_json("transcript", "transcript.json", transcript)
            run.write_json(
                "script",
                "script.json",
                {
                    "schema_version": SCHEMA_VERSION,
                    "script": parsed.script.to_dict(),
                    "reasoning": parsed.reasoning,
                },
            )
            run.save(
                status="done",
                attempts=attempt,
                usage=usage,
                timings={
                    "llm_seconds": round(llm_seconds, 4),
                    **tally.timings(),
                    "total_seconds": round(time.perf_counter() - started, 4),
                },
                llm={**run.manifest.llm, "notes": completion.notes},
                error=None,
                stages={**run.manifest.stages, "gate": gate},
            )
            return self._result(run, parsed.script, cached=False, warnings=warnings)

        assert last_error is not None
        run.save(
            status="failed",
            attempts=self.attempts,
            usage=usage,
            timings={
                "llm_seconds": round(llm_seconds, 4),
                **tally.timings(),
                "total_seconds": round(time.perf_counter() - started, 4),
            },
            error={"reason": last_error.reason, "message": redact(last_error.detail)},
        )
        raise GenerationError(
            f"no usable script after {self.attempts} attempt(s): {last_error.detail} "
            f"(raw output in {run.path / 'transcript.json'})",
            run_dir=str(run.path),
            reason=last_error.reason,
        )

    # --- the quality gate -----------------------------------------------------------------

    def verdict(self, script: Script, query: str, messages: list[Message]) -> Verdict:
        """The quality gate's verdict on ``script``, written for ``query`` from ``messages``."""
        example = self.templates.example_script
        text = prompt_text(messages, query)
        shown = example is not None and example["title"] in text
        return judge(
            script,
            query,
            text,
            self.gate,
            example if shown else None,
            self.templates.example_query or "",
            self.embedder(),
        )

    def embedder(self) -> Any:
        """The gate's sentence embedder, once per generator and shared: PE's own when PE
        already embeds with the packaged model, else :func:`~popcorn.llm.quality.gate_embedder`
        (loaded once per process); None without the pe extra."""
        with self._embedder_lock:
            if not self._embedder_checked:
                retriever = self.enhancer.retriever if self.enhancer is not None else None
                mine = getattr(retriever, "embedder", None)
                from popcorn.retrieval.embedders import DEFAULT_EMBEDDER

                if mine is not None and getattr(mine, "name", None) == DEFAULT_EMBEDDER:
                    self._embedder = mine
                else:
                    self._embedder = gate_embedder()
                self._embedder_checked = True
            return self._embedder

    def _judged(
        self, script: Script, query: str, messages: list[Message], tally: _GateTally
    ) -> Verdict:
        """:meth:`verdict`, timed into ``tally``; loading the embedder (once per process) is
        timed apart, as it is no cost of this script."""
        if not self._embedder_loaded:
            t = time.perf_counter()
            embedder = self.embedder()
            if embedder is not None:
                # The packaged Embedder loads on first use; a failure is noted by the verdict.
                with contextlib.suppress(PopcornError):
                    getattr(embedder, "model", None)
            self._embedder_loaded = True
            tally.load_seconds += time.perf_counter() - t
        t = time.perf_counter()
        verdict = self.verdict(script, query, messages)
        tally.seconds += time.perf_counter() - t
        tally.verdicts.append(verdict.reason or "ok")
        return verdict

    def _gate_record(self, verdict: Verdict, tally: _GateTally) -> dict[str, Any]:
        """The manifest's ``gate`` stage: the last verdict, each parsed answer's, what acted."""
        return {
            "enforced": self.gate.enabled,
            "thresholds": self.gate.thresholds(),
            **verdict.to_dict(),
            "attempts": list(tally.verdicts),
            "seconds": round(tally.seconds, 4),
        }

    def _shorter_title(
        self,
        parsed: ParsedAnswer,
        messages: list[Message],
        completion: Completion,
        decoding: Decoding,
        call: Callable[[list[Message], Decoding], tuple[Completion, float]],
        entry: dict[str, Any],
    ) -> ParsedAnswer:
        """Ask once for a shorter title; failing that, cut it at a word boundary and flag it."""
        follow_up = [
            *messages,
            {"role": "assistant", "content": completion.text},
            {"role": "user", "content": shorter_title_request(parsed.script.title)},
        ]
        retry, seconds = call(follow_up, decoding)
        entry["title_retry"] = {
            "messages": follow_up[-2:],
            "raw": retry.text,
            "seconds": round(seconds, 4),
            "usage": {
                "prompt_tokens": retry.prompt_tokens,
                "completion_tokens": retry.completion_tokens,
            },
        }
        try:
            again = parse_script(retry.text, self.templates.example_script)
        except ScriptParseError:
            again = None
        if again is not None and len(again.script.title) <= TITLE_MAX_CHARS:
            script = replace(parsed.script, title=again.script.title)
            return ParsedAnswer(script, parsed.reasoning)
        script = replace(
            parsed.script,
            title=shorten_title(parsed.script.title),
            flags=(*parsed.script.flags, "title_shortened"),
        )
        return ParsedAnswer(script, parsed.reasoning)

    def _result(
        self, run: Run, script: Script, cached: bool, warnings: tuple[str, ...] | None = None
    ) -> GenerateResult:
        if warnings is None:
            warnings = tuple(run.manifest.stages.get("pe", {}).get("warnings", ()))
        return GenerateResult(
            query=run.manifest.query,
            script=script,
            run_dir=run.path,
            mode=run.manifest.mode,
            llm=self.llm.spec,
            cached=cached,
            warnings=warnings,
            gate=run.manifest.stages.get("gate"),
        )

    # --- batches --------------------------------------------------------------------------

    def batch(
        self,
        items: Iterable[QueryItem],
        *,
        concurrency: int = 1,
        force: bool = False,
        on_result: BatchCallback | None = None,
    ) -> BatchReport:
        """Generate every query; done ones are skipped, failures recorded and the rest go on.

        A backend failure that retries could not fix (bad key, unreachable server) stops the
        batch: the remaining queries would fail the same way. Ctrl-C stops it too; finished
        runs are kept and the next call resumes.
        """
        report = BatchReport()
        unique: list[QueryItem] = []
        refused: list[tuple[QueryItem, UsageError]] = []
        seen: set[str] = set()
        for item in items:
            try:
                query = validate_query(item.query)
            except UsageError as err:
                refused.append((item, err))  # refused alone: the other queries still run
                continue
            if query in seen:
                report.duplicates += 1
                continue
            seen.add(query)
            unique.append(QueryItem(query, item.tags))
        workers = max(1, concurrency) if self.llm.concurrent else 1
        stop = threading.Event()

        def settle(item: QueryItem, outcome: GenerateResult | Exception) -> None:
            if isinstance(outcome, GenerateResult):
                report.results.append(outcome)
            else:
                report.failures.append((item.query, str(outcome)))
                if isinstance(outcome, ProviderError) and report.stopped is None:
                    report.stopped = str(outcome)
                    stop.set()
            if on_result is not None:
                on_result(item, outcome)

        def one(item: QueryItem) -> GenerateResult | Exception:
            try:
                return self.generate(item.query, force=force, tags=item.tags, stop=stop)
            except (GenerationError, ProviderError, LockedError) as err:
                return err

        for item, error in refused:
            settle(QueryItem(printable_query(item.query), item.tags), error)
        if workers == 1:
            for item in unique:
                if stop.is_set():
                    break
                settle(item, one(item))
            return report

        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="popcorn")
        pending: dict[Future[GenerateResult | Exception], QueryItem] = {}
        queue = iter(unique)
        try:
            for item in queue:
                pending[pool.submit(one, item)] = item
                if len(pending) >= workers:
                    break
            while pending:
                # A short timeout keeps the main thread responsive to Ctrl-C.
                done, _ = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                for future in done:
                    settle(pending.pop(future), future.result())
                    if not stop.is_set():
                        nxt = next(queue, None)
                        if nxt is not None:
                            pending[pool.submit(one, nxt)] = nxt
        except BaseException:
            stop.set()
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return report


@dataclass
class _GateTally:
    """What the gate did for one run: each parsed answer's verdict, and its time."""

    verdicts: list[str] = field(default_factory=list)
    seconds: float = 0.0
    load_seconds: float = 0.0

    def timings(self) -> dict[str, float]:
        return {
            "gate_seconds": round(self.seconds, 4),
            "gate_load_seconds": round(self.load_seconds, 4),
        }


def model_size(llm: LLM) -> Literal["small", "large"]:
    """What the backend says of its model's size (``size``: ``small`` gets PE's compact form);
    ``large`` when it says nothing."""
    size = getattr(llm, "size", "large")
    return "small" if size == "small" else "large"


def gate_checks_relevance() -> str | None:
    """The embedder the gate scores relevance with, or None where it is not installed."""
    from importlib.util import find_spec

    if find_spec("sentence_transformers") is None:
        return None
    from popcorn.retrieval.embedders import DEFAULT_EMBEDDER

    return DEFAULT_EMBEDDER


def _conditions(profile: Profile) -> dict[str, Any]:
    """The profile's conditions that change a script (its prompts are keyed by their hash)."""
    return {"name": profile.name, **{c: getattr(profile, c) for c in _KEYED_CONDITIONS}}


def _entry(
    attempt: int, seed: int, messages: list[Message], completion: Completion, seconds: float
) -> dict[str, Any]:
    return {
        "attempt": attempt,
        "seed": seed,
        "messages": messages,
        "raw": completion.text,
        "finish_reason": completion.finish_reason,
        "usage": {
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
        },
        "seconds": round(seconds, 4),
        "notes": completion.notes,
    }


def write_script(query: str, llm: LLM | str = "embedded", **settings: Any) -> GenerateResult:
    """The script step alone for one query; ``settings`` are :class:`Generator`'s keyword
    arguments. :func:`popcorn.generate` runs every step, as ``popcorn generate`` does."""
    return Generator(llm, **settings).generate(query)
