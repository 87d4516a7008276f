"""The quality gate: a parsed script must be a script *for this query*, not the prompt talking
back.

Parsing proves an answer is well-formed; small models also give well-formed answers that are
useless: a title that repeats the instructions ("Learn from what works and copy nothing"), meta
text about the task ("This answer has been provided for your reference"), template brackets
("[category] - [variable]"), the worked example's title for an unrelated query, or a script
about something else. :func:`judge` scores an answer on each rule and says which one failed:

- ``echo``: the share of the answer's word trigrams found in the prompt's own text (the
  instructions, the requirements, the worked example), the query's words excepted;
- ``meta``: talk about the task instead of a video (the answer, the title, your idea,
  placeholders, template brackets);
- ``off_topic``: cosine similarity of the query with title + video prompt, with the packaged
  sentence embedder, below a threshold (skipped, with a note, where no embedder is installed);
- ``example``: the worked example's distinctive words in an answer whose query is not the
  example's.

Thresholds are :class:`GateSettings` (``[gate]`` in popcorn.toml); their defaults were chosen on
answers of the embedded model measured with ``benchmarks/script_quality.py`` (docs/benchmarks.md,
Benchmarks): each sits in the gap between the answers read as good and those read as bad.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from popcorn.errors import PopcornError
from popcorn.script import Script
from popcorn.writer.prompts import SHOT_OPENINGS

_WORD = re.compile(r"[a-z0-9']+")
_META = re.compile(
    r"\b(?:(?:the|this|your|my|an?) (?:answer|response|reply|title|query|prompt|task|template|"
    r"json|idea|draft|reference|references|instructions?|requirements?))\b"
    r"|\bfor your reference\b|\bas an ai\b|\b(?:step|steps) \d\b|\bjson\b"
    r"|\bplaceholder\b|\binsert (?:a |the )?\w+ here\b|\btbd\b|\bn/a\b",
    re.IGNORECASE,
)
# Template brackets: [category], {title}, <video prompt>, (insert ...), a lone '...' field.
_TEMPLATE = re.compile(r"\[[^\]]{1,40}\]|\{[^}]{1,40}\}|<[^>]{1,40}>|^\s*\.\.\.\s*$|\*\s*:")
_STOP = frozenset(
    {"a", "an", "the", "of", "to", "in", "on", "at", "for", "and", "or", "but", "with", "from",
     "by", "as", "is", "are", "be", "this", "that", "it", "its", "your", "you", "we", "our",
     "their", "his", "her", "they", "them", "he", "she", "i", "me", "my", "one", "two", "three",
     "second", "seconds"}
)  # fmt: skip
# Words any video prompt may use: finding them in an answer says nothing about an example.
_GENERIC = frozenset(
    {"cinematic", "detailed", "highly", "dramatic", "lighting", "light", "lights", "warm",
     "cold", "deep", "blue", "night", "close", "slow", "push", "palette", "moody", "soft",
     "bright", "dark", "camera", "shot", "frame", "style", "clip", "video", "image", "cover",
     "scene", "background", "golden", "hour", "sunset", "sunrise", "morning", "evening",
     "last", "time", "first", "face", "hand", "hands", "young", "colors", "colours", "color",
     "colour", "gentle", "film", "grain", "glow", "depth", "field", "shallow", "around",
     "slowly", "level", "only", "then", "leaving", "against", "below", "above", "into",
     "across", "over", "under", "while", "after", "before",
     # How a shot is taken (the small-model grammar opens every video prompt with a framing,
     # the examples use them too) and who is in one: any shot of any subject has these.
     *(w for opening in SHOT_OPENINGS for w in _WORD.findall(opening.lower())),
     "static", "side", "grey", "gray", "pan", "pans", "zoom", "dolly", "aerial", "lens",
     "focus", "macro", "woman", "women", "man", "men", "person", "people", "head", "down"}
)  # fmt: skip


@dataclass(frozen=True)
class GateSettings:
    """Thresholds of the gate; ``enabled`` False records verdicts but never retries."""

    enabled: bool = True
    echo_max: float = 0.25
    """Highest share of a field's word trigrams that may come from the prompt's own text. In
    the answers measured for issue 17, none that read as a script passed 0.10 and every one
    that repeated the prompt reached 0.31."""
    relevance_min: float = 0.3
    """Lowest cosine of the query with title + video prompt (packaged all-MiniLM-L6-v2). In
    the answers measured for issue 17, every one that read as off the query scored 0.25 or
    less and every one on it 0.34 or more."""
    example_max: float = 0.0
    """Highest :func:`contamination` an answer to another query may have: 0 fails any answer
    holding two of the worked example's distinctive words, or its title's."""
    craft: bool = True
    """Ask again for a title that restates the query or a video prompt that is no shot
    (:mod:`popcorn.writer.craft`): one more attempt, or the other drafts and a title step
    where a small model makes several (:class:`~popcorn.writer.writer.Generator`); the best
    answer is kept, flagged, when none has neither. False: both are only recorded."""

    def thresholds(self) -> dict[str, float]:
        """The thresholds alone (what a job key and a manifest record); ``craft`` only where
        it is off, so that keys made before it existed stay valid."""
        found = {
            "echo_max": self.echo_max,
            "relevance_min": self.relevance_min,
            "example_max": self.example_max,
        }
        if not self.craft:
            found["craft"] = 0.0
        return found


@dataclass(frozen=True)
class Verdict:
    """What the gate found: ``reason`` is None when the answer passes."""

    reason: str | None
    detail: str
    scores: dict[str, float | None] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    craft: tuple[str, ...] = ()
    """What a creator would not keep, though the answer passes: ``restated_title``,
    ``not_a_shot`` (:mod:`popcorn.writer.craft`), ``title_off_query``."""

    @property
    def ok(self) -> bool:
        return self.reason is None

    def rank(self) -> tuple[bool, int, float]:
        """Higher is better: passing, fewer craft findings, relevance. How the best of several
        drafts is chosen."""
        return (self.ok, -len(self.craft), self.scores.get("relevance") or 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reason": self.reason,
            "detail": self.detail,
            "scores": self.scores,
            "notes": list(self.notes),
            "craft": list(self.craft),
        }


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _trigrams(tokens: list[str]) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + 3]) for i in range(len(tokens) - 2)}


def prompt_text(messages: Iterable[Mapping[str, str]], query: str) -> str:
    """What an answer must not repeat: the text of the messages sent, less the query."""
    text = "\n".join(str(m.get("content", "")) for m in messages)
    return text.replace(query, " ") if query else text


def echo_share(answer: str, prompt_text: str, query: str) -> float:
    """Share of ``answer``'s word trigrams that occur in ``prompt_text`` but not in ``query``."""
    mine = _trigrams(words(answer))
    if not mine:
        return 0.0
    theirs = _trigrams(words(prompt_text)) - _trigrams(words(query))
    return len(mine & theirs) / len(mine)


def echo(script: Script, prompt_text: str, query: str) -> float:
    """The highest echo share of the title, the cover prompt or the video prompt: one field
    copied from the prompt is an echo however original the others are."""
    return max(
        echo_share(text, prompt_text, query)
        for text in (script.title, script.cover_prompt, script.video_prompt)
    )


def distinctive(text: str, common: Iterable[str] = ()) -> set[str]:
    """The content words of ``text`` (no stop words, no words of ``common``)."""
    skip = _STOP | {_base(w) for c in common for w in words(c)}
    found = {_base(w) for w in words(text)}
    return {w for w in found if len(w) > 3 and w not in skip}


def _base(word: str) -> str:
    """``word`` less a possessive ending ("chef's" is "chef")."""
    return word.removesuffix("'s")


def example_marks(example: Mapping[str, str], example_query: str, query: str) -> set[str]:
    """The words that give the worked example away: the content words of the example and its
    query, less the words any video prompt uses (light, camera, cinematic, ...) and the
    query's own."""
    text = " ".join([example_query, *example.values()])
    return distinctive(text, common=[query]) - _GENERIC


def contamination(
    script: Script, query: str, example: Mapping[str, str], example_query: str = ""
) -> float:
    """How much of the worked example an answer to another query holds (0.0 for the example's
    own query): 1.0 when its title holds every distinctive word of the example's title, or
    three words in a row of the example's title or query ("A Sailor's Last Night on Duty"
    after a lighthouse keeper's last night on duty); else the share of the example's
    distinctive words found in the answer, when there are two or more."""
    if _same(query, example_query):
        return 0.0
    title_marks = distinctive(example.get("title", ""), common=[query]) - _GENERIC
    if title_marks and title_marks <= distinctive(script.title):
        return 1.0
    theirs = _trigrams(words(example.get("title", ""))) | _trigrams(words(example_query))
    if (_trigrams(words(script.title)) & theirs) - _trigrams(words(query)):
        return 1.0
    marks = example_marks(example, example_query, query)
    found = marks & distinctive(_answer(script))
    # One shared word is chance (a "storm" in a weather video); two or more are the example.
    return round(len(found) / len(marks), 3) if len(found) >= 2 else 0.0


def meta_text(script: Script, query: str = "") -> str | None:
    """The first phrase that talks about the task rather than a video, if any (a phrase the
    query itself uses, e.g. "the answer" in a query about answers, does not count)."""
    asked = " ".join(words(query))
    for name, text in (("title", script.title), ("video_prompt", script.video_prompt)):
        for found in (*_META.finditer(text), *_TEMPLATE.finditer(text)):
            phrase = " ".join(words(found.group(0)))
            if phrase and phrase.split()[-1] in asked.split():
                continue
            return f"{name} says {found.group(0)!r}"
    return None


def relevance(query: str, script: Script, embedder: Any) -> float:
    """Cosine of the query with title + video prompt (vectors come normalised)."""
    return similarities(query, script, embedder)[0]


def similarities(query: str, script: Script, embedder: Any) -> tuple[float, float, float]:
    """Cosines of the query with title + video prompt, the title alone and the video prompt
    alone, from one call to the embedder (vectors come normalised)."""
    texts = [query, f"{script.title}. {script.video_prompt}", script.title, script.video_prompt]
    with _one_thread():
        vectors = embedder.encode(texts)
    both, title, video = (float(vectors[0] @ vectors[i]) for i in (1, 2, 3))
    return both, title, video


_threads_lock = threading.Lock()


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread for a moment: two short sentences gain nothing from a second,
    and on a busy machine OpenMP's waiting threads made the encode 15 times slower (1.2 s
    against 82 ms with the load average at 7 on 2 cores). torch's thread count is the
    process's, so a torch call in another thread runs on one thread for these milliseconds."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    with _threads_lock:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def judge(
    script: Script,
    query: str,
    prompt_text: str,
    settings: GateSettings,
    example: Mapping[str, str] | None = None,
    example_query: str = "",
    embedder: Any = None,
    examples: Sequence[tuple[str, Mapping[str, str]]] = (),
) -> Verdict:
    """Score ``script`` on every rule; the first failing rule is the verdict's reason.

    ``prompt_text`` is what the model was shown, less the query (:func:`prompt_text`);
    ``example`` the worked example it was shown, if any, and ``examples`` more of them, as
    (query, script) pairs."""
    scores: dict[str, float | None] = {}
    notes: list[str] = []
    failures: list[tuple[str, str]] = []

    shown = [(example_query, example)] if example else []
    shown += [(q, e) for q, e in examples if e]
    if shown:
        share, (ex_query, ex) = max(
            ((contamination(script, query, e, q), (q, e)) for q, e in shown),
            key=lambda found: found[0],
        )
        scores["example"] = share
        if share > settings.example_max:
            found = example_marks(ex, ex_query, query) & distinctive(_answer(script))
            failures.append(
                ("example", f"it reuses the worked example ({', '.join(sorted(found))})")
            )
    repeated = round(echo(script, prompt_text, query), 3)
    scores["echo"] = repeated
    if repeated > settings.echo_max:
        failures.append(("echo", f"{repeated:.0%} of a field repeats the prompt's own text"))
    meta = meta_text(script, query)
    scores["meta"] = 1.0 if meta else 0.0
    if meta:
        failures.append(("meta", f"it talks about the task, not a video: {meta}"))
    cosine = title_cosine = None
    if embedder is None:
        notes.append(RELEVANCE_OFF)
    else:
        try:
            cosine, title_cosine, video_cosine = (
                round(c, 3) for c in similarities(query, script, embedder)
            )
            scores["title_relevance"] = title_cosine
            scores["video_relevance"] = video_cosine
        except PopcornError as err:  # e.g. the packaged model's files are damaged
            notes.append(f"relevance not checked: {err}")
    scores["relevance"] = cosine
    craft = craft_findings(script, query, title_cosine, scores)
    if title_cosine is not None and title_cosine < RELEVANCE_FLOOR:
        # A title of its own must still be a title for this query.
        craft = (*craft, "title_off_query")
    if cosine is not None and cosine < settings.relevance_min:
        failures.append(
            ("off_topic", f"title and video prompt score {cosine:.2f} against the query "
             f"(minimum {settings.relevance_min})")
        )  # fmt: skip
    if failures:
        reason, detail = failures[0]
        return Verdict(reason, detail, scores, tuple(notes), craft)
    return Verdict(None, "", scores, tuple(notes), craft)


def craft_findings(
    script: Script, query: str, title_cosine: float | None, scores: dict[str, float | None]
) -> tuple[str, ...]:
    """Record the :mod:`~popcorn.writer.craft` measures in ``scores`` (``restated``, ``shot``:
    1.0 or 0.0) and return what a creator would not keep."""
    from popcorn.writer.craft import check_shot, restates

    restated = restates(query, script.title, title_cosine)
    shot = check_shot(script.video_prompt)
    scores["restated"] = 1.0 if restated else 0.0
    scores["shot"] = 1.0 if shot.ok else 0.0
    found = []
    if restated:
        found.append("restated_title")
    if not shot.ok:
        found.append("not_a_shot")
    return tuple(found)


def _answer(script: Script) -> str:
    return f"{script.title}. {script.cover_prompt}. {script.video_prompt}"


def _same(a: str, b: str) -> bool:
    return " ".join(words(a)) == " ".join(words(b))


RELEVANCE_FLOOR = 0.3
"""A title scoring below this against the query alone is a craft finding, ``title_off_query``
(the gate's default ``relevance_min``): a title of its own must still fit the query."""
RELEVANCE_OFF = (
    "relevance not checked: no sentence embedder installed "
    "(pip install 'popcorn-video[pe]' turns it on)"
)


@cache
def gate_embedder() -> Any:
    """The packaged sentence embedder, or None where the pe extra is not installed; one per
    process (its model loads on first use)."""
    from importlib.util import find_spec

    if find_spec("sentence_transformers") is None:
        return None
    from popcorn.retrieval.embedders import Embedder

    try:
        return Embedder()
    except PopcornError:
        return None


def gate_checks_relevance() -> str | None:
    """The embedder the gate scores relevance with, or None where it is not installed."""
    from importlib.util import find_spec

    if find_spec("sentence_transformers") is None:
        return None
    from popcorn.retrieval.embedders import DEFAULT_EMBEDDER

    return DEFAULT_EMBEDDER
