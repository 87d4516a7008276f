"""One query -> one script: prompt the LLM, parse robustly, retry within bounds, record all.

:class:`Generator` (the writer) holds one backend and its settings; :meth:`Generator.generate`
makes one query's attempts and :meth:`Generator.batch` hands many to
:func:`popcorn.writer.batch.write_batch`. :func:`write_script` is the one-call convenience. The
whole flow (script, media, score) is :class:`popcorn.pipeline.Pipeline`. Every call writes a run
folder (see :mod:`popcorn.runs`); a query already done with the same settings is returned from
its folder.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from popcorn.errors import GenerationError, ProviderError, ScriptParseError, UsageError
from popcorn.llm.base import LLM, Completion, Decoding, Message
from popcorn.llm.registry import LLMOptions, create_llm
from popcorn.llm.retry import RetryPolicy, call_with_retries
from popcorn.profiles import POPCORN, Profile
from popcorn.runs.keys import job_key
from popcorn.runs.store import SCHEMA_VERSION, Run, RunManifest, RunStore
from popcorn.safety import redact
from popcorn.script import TITLE_MAX_CHARS, Script
from popcorn.writer import drafts, titles
from popcorn.writer.batch import BatchCallback, BatchReport, write_batch
from popcorn.writer.gate import GateSettings, Verdict
from popcorn.writer.judge import GateTally, Judge
from popcorn.writer.keys import script_key_inputs
from popcorn.writer.parser import ParsedAnswer, parse_script, repeats_example
from popcorn.writer.prompts import (
    PE_JSON_SCHEMA,
    SCRIPT_JSON_SCHEMA,
    SMALL_SCRIPT_JSON_SCHEMA,
    Form,
    PromptTemplates,
)
from popcorn.writer.queries import QueryItem, validate_query
from popcorn.writer.result import GenerateResult
from popcorn.writer.titles import Call, Schema

if TYPE_CHECKING:
    from popcorn.retrieval.enhance import Enhancer, PESettings
    from popcorn.retrieval.search import References

DEFAULT_OUT = Path("popcorn-runs")
CRAFT_ATTEMPTS = 2
"""Attempts that may go to a restated title or a video prompt that is no shot, for a writer
that makes one draft an attempt: one more try gains most of what more would. A writer that
makes several keeps the best of its drafts instead (they are the second chances)."""


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


class Generator:
    """One LLM backend plus generation settings; ``pe`` turns on prompt enhancement.

    ``profile`` sets the conditions (see :mod:`popcorn.profiles`): its prompt templates, whether
    a JSON schema is sent, what an API request carries, the 4-bit type, how references are
    shown, whether the quality gate acts, how many attempts a query gets (``attempts`` None),
    whether an echoed example or a copied reference is rejected and whether an over-long
    title is asked again and cut (else each is only flagged on the script, as the study kept
    them), and how many drafts and what temperature a small local model gets: ``temperature``
    wins over ``decoding``'s; None leaves ``decoding``'s, except that a small local model gets
    the profile's ``small_temperature`` (popcorn 0.3). ``prompts`` replaces the profile's
    template folder with another one. A backend passed in already built is used as it was
    built (its request and 4-bit type included).

    Every parsed answer goes through the quality gate (:mod:`popcorn.writer.gate`): its verdict
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
        attempts: int | None = None,
        retry: RetryPolicy | None = None,
        options: LLMOptions | None = None,
        pe: PESettings | None = None,
        profile: Profile = POPCORN,
        prompts: Path | str | None = None,
        gate: GateSettings | None = None,
        failures: Literal["fail", "blank"] = "fail",
        drafts: int | None = None,
        draft_seconds: float | None = None,
        temperature: float | None = None,
    ) -> None:
        if attempts is None:
            attempts = profile.attempts
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
        small = model_size(self.llm) == "small"
        if temperature is None and small:
            temperature = profile.small_temperature
        if temperature is not None:
            self.decoding = replace(self.decoding, temperature=temperature)
        self.attempts = attempts
        self.retry = retry or RetryPolicy()
        self.gate = gate if gate is not None else GateSettings(enabled=profile.gate)
        self.judge = Judge(self.gate, self.templates, self.enhancer)
        self.drafts = drafts if drafts is not None else (profile.drafts if small else 1)
        """Drafts sampled per attempt, the best kept (:mod:`popcorn.writer.drafts`): the
        profile's for a small model (popcorn 4, paper 1), else 1."""
        if self.drafts < 1:
            raise UsageError("drafts must be at least 1")
        self.draft_seconds = draft_seconds
        self.examples = small and bool(self.templates.small_examples)
        """Whether requests show the templates' worked examples for small models."""
        self.failures = failures
        """What a query with no usable answer after every attempt ends as: a failed run
        (``fail``), or a finished one whose script is blank and flagged ``blank`` (``blank``:
        a study that scores such queries as the LLMPopcorn study did)."""

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
        inputs = script_key_inputs(
            query,
            mode=self.mode,
            templates=self.templates,
            llm=self.llm,
            decoding=self.decoding,
            pe=None if self.enhancer is None else self.enhancer.identity(),
            form=self.form,
            gate=self.gate,
            profile=self.profile,
        )
        if self.failures == "blank":
            # A blank script is this run's output where the other policy leaves none.
            inputs["failures"] = "blank"
        if self.drafts > 1:
            inputs["drafts"] = self.drafts
            if self.draft_seconds is not None:
                inputs["draft_seconds"] = self.draft_seconds
        if self.examples:
            inputs["small_examples"] = self.templates.small_examples_digest
        return inputs

    def prompt(self, query: str) -> Prompt:
        """The messages for ``query``; with PE this retrieves the references."""
        script_schema = SMALL_SCRIPT_JSON_SCHEMA if self.examples else SCRIPT_JSON_SCHEMA
        if self.enhancer is None:
            schema = script_schema if self.profile.schema else None
            return Prompt(self.templates.basic(query, examples=self.examples), schema)
        references = self.enhancer.references(query)
        form = self.form
        messages = self.templates.pe(query, references.items, form=form, examples=self.examples)
        shown = len(references.items)
        schema = PE_JSON_SCHEMA
        if form == "compact":
            shown = len(self.templates.compact_references(references.items))
            # The compact form asks for no written reasoning: a small model's reasoning drifts
            # off the query and takes the title with it.
            schema = script_schema
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
        self.judge.prefetch()
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
        spend = drafts.Spend(started)
        tally = GateTally()
        last_error: ScriptParseError | None = None

        def call(
            messages: list[Message], decoding: Decoding, schema: Schema = prompt.schema
        ) -> tuple[Completion, float]:
            t = time.perf_counter()
            completion = call_with_retries(
                lambda: self.llm.complete(messages, decoding, schema),
                self.retry,
                stop=stop,
            )
            seconds = time.perf_counter() - t
            spend.add(completion, seconds)
            return completion, seconds

        def keep_transcript() -> None:
            run.write_json("transcript", "transcript.json", transcript)

        fallback: drafts.Draft | None = None

        @drafts.Once
        def look(completion: Completion) -> tuple[ParsedAnswer, Verdict] | ScriptParseError:
            """The parsed draft and the gate's verdict, or why it does not parse."""
            try:
                parsed = self._parse(completion.text, prompt.references)
            except ScriptParseError as err:
                return err
            return parsed, self.judge.timed(parsed.script, query, prompt.messages, tally)

        def enough(completion: Completion) -> bool:
            found = look(completion)
            return not isinstance(found, ScriptParseError) and drafts.clean(found[1])

        for attempt in range(1, self.attempts + 1):
            # Each attempt is a fresh conversation with its own seed: reproducible, and a bad
            # first answer does not steer the next one.
            decoding = self.decoding.with_seed(self.decoding.seed + attempt - 1)
            messages = prompt.messages
            made: list[drafts.Draft] = []
            for completion, seconds, used in self._sample(
                messages, decoding, prompt.schema, call, spend, stop, enough
            ):
                entry = drafts.entry(attempt, used.seed, messages, completion, seconds)
                if self.drafts > 1:
                    entry["draft"] = len(made) + 1
                transcript["attempts"].append(entry)
                found = look(completion)
                if isinstance(found, ScriptParseError):
                    entry["outcome"] = {"ok": False, "reason": found.reason, "detail": found.detail}
                    last_error = found
                    continue
                parsed, verdict = found
                entry["gate"] = verdict.to_dict()
                made.append(drafts.Draft(parsed, verdict, entry, completion, used))
            chosen = drafts.best(made)
            for other in made:
                if other is not chosen:
                    other.entry["outcome"] = {"ok": False, "reason": "draft_not_kept"}
            if chosen is None:
                keep_transcript()
                continue
            title = chosen.parsed.script.title
            if len(title) > TITLE_MAX_CHARS or (
                self.profile.fix_titles and titles.cut_off(title, prompt.schema)
            ):
                if self.profile.fix_titles:
                    chosen.parsed = titles.shorter(
                        chosen, messages, call, prompt.schema, self.templates.example_script
                    )
                    chosen.verdict = self.judge.timed(chosen.parsed.script, query, messages, tally)
                    chosen.entry["gate"] = chosen.verdict.to_dict()
                else:
                    chosen.parsed = _flagged(chosen.parsed, "title_over_limit")
            verdict = chosen.verdict
            gate = self.judge.record(verdict, tally)
            if not verdict.ok and self.gate.enabled:
                chosen.entry["outcome"] = {
                    "ok": False, "reason": verdict.reason, "detail": verdict.detail
                }  # fmt: skip
                last_error = ScriptParseError(str(verdict.reason), verdict.detail)
                keep_transcript()
                run.save(stages={**run.manifest.stages, "gate": gate})
                continue
            if verdict.craft and self.gate.enabled and self.gate.craft:
                # A restated title or a video prompt that is no shot is asked again (by one
                # more attempt when drafts are one an attempt: several are their own second
                # chances); the best such answer is kept when none has neither.
                if fallback is None or verdict.rank() > fallback.verdict.rank():
                    fallback = chosen
                if self.drafts == 1 and attempt < min(self.attempts, CRAFT_ATTEMPTS):
                    chosen.entry["outcome"] = {"ok": False, "reason": verdict.craft[0]}
                    keep_transcript()
                    continue
                chosen = fallback
            if self.drafts > 1 and self.gate.craft and titles.FINDINGS & set(chosen.verdict.craft):
                titles.own(
                    chosen,
                    prompt.messages,
                    query,
                    lambda m, d, s, e: self._sample(m, d, s, call, spend, stop, e),
                    lambda script: self.judge.timed(script, query, prompt.messages, tally),
                )
            return self._finish(run, chosen, attempt, transcript, spend, tally, warnings)
        if fallback is not None:
            return self._finish(run, fallback, self.attempts, transcript, spend, tally, warnings)

        assert last_error is not None
        error = {"reason": last_error.reason, "message": redact(last_error.detail)}
        timings = spend.timings(tally)
        if self.failures == "blank":
            blank = Script("", "", "", flags=("blank", f"failed:{last_error.reason}"))
            run.write_json(
                "script",
                "script.json",
                {"schema_version": SCHEMA_VERSION, "script": blank.to_dict(), "reasoning": ""},
            )
            # Done, so that it is rendered and scored; the error stays on record.
            run.save(
                status="done",
                attempts=self.attempts,
                usage=spend.usage(),
                timings=timings,
                error=error,
            )
            return self._result(run, blank, cached=False, warnings=warnings)
        usage = spend.usage()
        run.save(status="failed", attempts=self.attempts, usage=usage, timings=timings, error=error)
        raise GenerationError(
            f"no usable script after {self.attempts} attempt(s): {last_error.detail} "
            f"(raw output in {run.path / 'transcript.json'})",
            run_dir=str(run.path),
            reason=last_error.reason,
        )

    def _finish(
        self,
        run: Run,
        chosen: drafts.Draft,
        attempt: int,
        transcript: dict[str, Any],
        spend: drafts.Spend,
        tally: GateTally,
        warnings: tuple[str, ...],
    ) -> GenerateResult:
        """Save ``chosen`` as the run's script and mark the run done."""
        script = chosen.parsed.script
        if chosen.verdict.craft and self.gate.enabled and self.gate.craft:
            # Kept as the best there was: what it lacks stays on the script.
            script = replace(script, flags=(*script.flags, *chosen.verdict.craft))
        flags = list(script.flags)
        chosen.entry["outcome"] = {"ok": True, **({"flags": flags} if flags else {})}
        run.write_json("transcript", "transcript.json", transcript)
        run.write_json(
            "script",
            "script.json",
            {
                "schema_version": SCHEMA_VERSION,
                "script": script.to_dict(),
                "reasoning": chosen.parsed.reasoning,
            },
        )
        run.save(
            status="done",
            attempts=attempt,
            usage=spend.usage(),
            timings=spend.timings(tally),
            llm={**run.manifest.llm, "notes": chosen.completion.notes},
            error=None,
            # What the profile noticed but left as it came (echo, copy, long title).
            stages={
                **run.manifest.stages,
                "gate": self.judge.record(chosen.verdict, tally),
                **({"answer": {"flags": flags}} if flags else {}),
            },
        )
        return self._result(run, script, cached=False, warnings=warnings)

    def _sample(
        self,
        messages: list[Message],
        decoding: Decoding,
        schema: Schema,
        call: Call,
        spend: drafts.Spend,
        stop: threading.Event | None,
        enough: Callable[[Completion], bool],
    ) -> list[tuple[Completion, float, Decoding]]:
        """This attempt's drafts, made one after another until one is ``enough``: in one call
        where the backend samples drafts itself (the prompt evaluated once), else one
        ``call`` each."""
        wanted = drafts.decodings(decoding, self.drafts)
        until = drafts.deadline(self.draft_seconds)
        many = getattr(self.llm, "complete_drafts", None)
        if many is None or len(wanted) == 1:
            return drafts.sample_each(
                lambda m, d: call(m, d, schema), messages, wanted, until, enough
            )
        t = time.perf_counter()
        completions: list[Completion] = call_with_retries(
            lambda: many(messages, wanted, schema, deadline=until, enough=enough),
            self.retry,
            stop=stop,
        )
        each = (time.perf_counter() - t) / max(1, len(completions))
        for completion in completions:
            spend.add(completion, each)
        return [(c, each, d) for c, d in zip(completions, wanted, strict=False)]

    def _parse(self, text: str, references: References | None) -> ParsedAnswer:
        """``text`` as a script; an echoed example or a copied reference title is a
        :class:`ScriptParseError` under a profile that rejects copies, else a flag."""
        example = self.templates.example_script
        try:
            parsed = parse_script(text, example)
            shown = self.templates.small_examples if self.examples else []
            if any(repeats_example(parsed.script, e) for _, e in shown):
                raise ScriptParseError("echoed_example", "the model repeated a worked example")
        except ScriptParseError as err:
            if self.profile.reject_copies or err.reason != "echoed_example":
                raise
            parsed = _flagged(parse_script(text), "echoed_example")
        if references is not None:
            from popcorn.retrieval.enhance import check_original

            try:
                check_original(parsed.script, references)
            except ScriptParseError:
                if self.profile.reject_copies:
                    raise
                parsed = _flagged(parsed, "copied_reference")
        return parsed

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

    def batch(
        self,
        items: Iterable[QueryItem],
        *,
        concurrency: int = 1,
        force: bool = False,
        on_result: BatchCallback | None = None,
    ) -> BatchReport:
        """Generate every query; done ones are skipped, failures recorded and the rest go on
        (see :func:`~popcorn.writer.batch.write_batch`). A backend that runs in this process
        takes one query at a time whatever ``concurrency`` says."""
        workers = max(1, concurrency) if self.llm.concurrent else 1
        return write_batch(self.generate, items, workers=workers, force=force, on_result=on_result)


def model_size(llm: LLM) -> Literal["small", "large"]:
    """What the backend says of its model's size (``size``: ``small`` gets PE's compact form);
    ``large`` when it says nothing."""
    size = getattr(llm, "size", "large")
    return "small" if size == "small" else "large"


def _flagged(parsed: ParsedAnswer, flag: str) -> ParsedAnswer:
    """``parsed`` with ``flag`` noted on its script: what a profile that keeps the answer as it
    came records instead of acting."""
    return ParsedAnswer(
        replace(parsed.script, flags=(*parsed.script.flags, flag)), parsed.reasoning
    )


def write_script(query: str, llm: LLM | str = "embedded", **settings: Any) -> GenerateResult:
    """The script step alone for one query; ``settings`` are :class:`Generator`'s keyword
    arguments. :func:`popcorn.generate` runs every step, as ``popcorn generate`` does."""
    return Generator(llm, **settings).generate(query)
