"""Query -> script: prompt the LLM, parse robustly, retry within bounds, record everything.

:class:`Generator` holds one backend and its settings and serves single queries and batches;
:func:`generate` is the one-call convenience. Every call writes a run folder (see
:mod:`popcorn.runs`); a query already done with the same settings is returned from its folder.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from popcorn.errors import GenerationError, ProviderError, ScriptParseError, UsageError
from popcorn.llm.base import LLM, Completion, Decoding, Message
from popcorn.llm.parser import ParsedAnswer, parse_script
from popcorn.llm.prompts import (
    EXAMPLE_SCRIPT,
    PE_JSON_SCHEMA,
    PE_PROMPT_VERSION,
    PROMPT_VERSION,
    SCRIPT_JSON_SCHEMA,
    basic_messages,
    pe_messages,
    shorter_title_request,
)
from popcorn.llm.registry import LLMOptions, create_llm
from popcorn.llm.retry import RetryPolicy, call_with_retries
from popcorn.runs.keys import job_key
from popcorn.runs.store import SCHEMA_VERSION, Run, RunManifest, RunStore
from popcorn.script import TITLE_MAX_CHARS, Script, shorten_title

if TYPE_CHECKING:
    from popcorn.retrieval.enhance import Enhancer, PESettings
    from popcorn.retrieval.search import References

MAX_QUERY_CHARS = 2000
DEFAULT_OUT = Path("popcorn-runs")


def validate_query(query: str) -> str:
    """The query, stripped; ``UsageError`` if it is empty or too long."""
    cleaned = " ".join(str(query).split())
    if not cleaned:
        raise UsageError(
            "the query is empty: describe the video you want, e.g. 'A cat learning to skateboard'"
        )
    if len(cleaned) > MAX_QUERY_CHARS:
        raise UsageError(
            f"the query has {len(cleaned):,} characters; the limit is {MAX_QUERY_CHARS:,}"
        )
    return cleaned


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
    """What is sent for one query: messages, the schema to enforce, and PE's references."""

    messages: list[Message]
    schema: dict[str, Any]
    references: References | None = None


class Generator:
    """One LLM backend plus generation settings; ``pe`` turns on prompt enhancement."""

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
    ) -> None:
        if attempts < 1:
            raise UsageError("attempts must be at least 1")
        self.enhancer: Enhancer | None = None
        if pe is not None:
            from popcorn.retrieval.enhance import Enhancer

            self.enhancer = Enhancer(pe)  # fails now, not mid-batch, if the index is missing
        self.mode = "basic" if pe is None else "pe"
        self.llm = create_llm(llm, options) if isinstance(llm, str) else llm
        self.store = RunStore(out)
        self.decoding = decoding or Decoding()
        self.attempts = attempts
        self.retry = retry or RetryPolicy()

    # --- one query ------------------------------------------------------------------------

    def key_inputs(self, query: str) -> dict[str, Any]:
        """Exactly what changes the output; hashed into the run's key."""
        inputs = {
            "schema": SCHEMA_VERSION,
            "query": query,
            "mode": self.mode,
            "prompt": self._prompt_version(),
            "llm": {"spec": self.llm.spec, **self.llm.identity()},
            "decoding": self.decoding.to_dict(),
        }
        if self.enhancer is not None:
            inputs["pe"] = self.enhancer.identity()
        return inputs

    def _prompt_version(self) -> str:
        return PROMPT_VERSION if self.enhancer is None else PE_PROMPT_VERSION

    def prompt(self, query: str) -> Prompt:
        """The messages for ``query``; with PE this retrieves the references."""
        if self.enhancer is None:
            return Prompt(basic_messages(query), SCRIPT_JSON_SCHEMA)
        references = self.enhancer.references(query)
        return Prompt(pe_messages(query, references.items), PE_JSON_SCHEMA, references)

    def generate(
        self,
        query: str,
        *,
        force: bool = False,
        tags: dict[str, str] | None = None,
        stop: threading.Event | None = None,
    ) -> GenerateResult:
        """Write a script for ``query``, or return the one already made with these settings."""
        query = validate_query(query)
        key = job_key(self.key_inputs(query))
        existing = self.store.get(query, key)
        if existing is not None and existing.status == "done" and not force:
            script = existing.script()
            if script is not None:
                return self._result(existing, script, cached=True)

        run = self.store.start(
            RunManifest(
                key=key,
                query=query,
                mode=self.mode,
                llm={"spec": self.llm.spec, **self.llm.identity()},
                decoding=self.decoding.to_dict(),
                seed=self.decoding.seed,
                prompt_version=self._prompt_version(),
                tags=dict(tags or {}),
            )
        )
        try:
            return self._generate(run, query, stop)
        except ProviderError as err:
            run.save(status="failed", error={"reason": "provider", "message": str(err)})
            raise

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
                        "retrieval_seconds": round(time.perf_counter() - started, 4),
                        "warnings": list(warnings),
                    },
                }
            )
        transcript: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "attempts": []}
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "calls": 0}
        llm_seconds = 0.0
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
                parsed = parse_script(completion.text, EXAMPLE_SCRIPT)
                if prompt.references is not None:
                    from popcorn.retrieval.enhance import check_original

                    check_original(parsed.script, prompt.references)
            except ScriptParseError as err:
                entry["outcome"] = {"ok": False, "reason": err.reason, "detail": err.detail}
                last_error = err
                run.write_json("transcript", "transcript.json", transcript)
                continue
            entry["outcome"] = {"ok": True}
            if len(parsed.script.title) > TITLE_MAX_CHARS:
                parsed = self._shorter_title(parsed, messages, completion, decoding, call, entry)
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
                    "total_seconds": round(time.perf_counter() - started, 4),
                },
                llm={**run.manifest.llm, "notes": completion.notes},
                error=None,
            )
            return self._result(run, parsed.script, cached=False, warnings=warnings)

        assert last_error is not None
        run.save(
            status="failed",
            attempts=self.attempts,
            usage=usage,
            timings={
                "llm_seconds": round(llm_seconds, 4),
                "total_seconds": round(time.perf_counter() - started, 4),
            },
            error={"reason": last_error.reason, "message": last_error.detail},
        )
        raise GenerationError(
            f"no usable script after {self.attempts} attempt(s): {last_error.detail} "
            f"(raw output in {run.path / 'transcript.json'})",
            run_dir=str(run.path),
            reason=last_error.reason,
        )

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
            again = parse_script(retry.text, EXAMPLE_SCRIPT)
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
        seen: set[str] = set()
        for item in items:
            query = validate_query(item.query)
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
            except (GenerationError, ProviderError) as err:
                return err

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


def generate(query: str, llm: LLM | str = "embedded", **settings: Any) -> GenerateResult:
    """Write a script for one query; ``settings`` are :class:`Generator`'s keyword arguments."""
    return Generator(llm, **settings).generate(query)
