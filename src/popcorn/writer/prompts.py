"""The prompts that turn a query into a script, read from a folder of template files.

Each profile has its folder under ``popcorn/writer/templates/`` (``paper``: the study's structure;
``popcorn``: Popcorn's wording), and ``[llm] prompts = "DIR"`` points to any other folder with
the same file names, e.g. one holding the study's exact text:

``system.txt``
    The system message.
``basic.txt``
    The request without references. With ``$example`` in it the example is shown inline;
    without, it is shown as an earlier exchange (the request for ``example.json``'s query, then
    its script as the answer).
``pe.txt``
    The request with references: ``$references`` (every reference in retrieval order), or the
    two blocks ``$popular`` and ``$unpopular``. A block with no reference is empty (the
    study's unpopular block stayed empty when it had none; no placeholder text stands in).
``pe_no_refs.txt`` (optional)
    The PE request when there are no references (``--refs 0``); without it, ``pe.txt`` is used
    with empty blocks.
``reference.txt``
    One reference: ``$n`` (retrieval rank), ``$label`` (POPULAR or UNPOPULAR), ``$comments``,
    ``$title``, ``$cover``, ``$caption``, ``$category``. A line whose fields are all empty is
    left out.
``example.json`` (optional)
    ``{"query": ..., "script": {"title", "cover_prompt", "video_prompt"}}``: the worked
    example; an answer that repeats it is rejected. Without it no example is shown (the
    ``popcorn`` wording: a schema makes the answer's form certain, and small models copied
    the example's subject into unrelated answers).
``small_examples.json`` (optional)
    ``[{"query": ..., "script": {...}}, ...]``: one to five worked examples shown to small
    models only (a backend whose ``size`` is ``small``), each as an earlier exchange before the
    request: a 135M model follows an example's form where it ignores an instruction (titles of
    their own, video prompts that describe a shot). An answer that repeats one is rejected and
    one that borrows its subject fails the gate's ``example`` rule, as with ``example.json``.
``pe_compact.txt``, ``pe_compact_no_refs.txt``, ``reference_compact.txt`` (optional)
    PE's compact form, for small models (see :meth:`PromptTemplates.pe`): at most
    :data:`COMPACT_REFS` references close to the query, each one line (the lines of
    ``reference_compact.txt`` with their empty ones left out, joined by spaces; ``$caption``
    holds the first few words of what the video shows), the records of a block joined by
    "; "; a line of ``pe_compact.txt`` whose blocks are all empty is left out.
    ``pe_compact_no_refs.txt`` is used when no reference is shown.

Every request also knows ``$query``, ``$title_max``, ``$example`` (the example script as
indented JSON) and ``$example_query`` (those two only with an ``example.json``). Templates are
rendered with :class:`string.Template`, so the query and the reference text are only ever
values, never template syntax; a literal dollar sign in a template is written ``$$``. A
placeholder a file does not know is an error when the folder is loaded.

The job key holds a hash of the files a mode uses (:meth:`PromptTemplates.version`), so new
wording never reuses runs made with the old one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any, Literal

from popcorn.errors import UsageError
from popcorn.llm.base import Message
from popcorn.script import TITLE_MAX_CHARS

if TYPE_CHECKING:
    from popcorn.retrieval.search import Reference

Mode = Literal["basic", "pe"]


TEMPLATES = Path(__file__).resolve().parent / "templates"
"""The packaged template folders, one per profile."""

Form = Literal["full", "fitted", "compact"]

_REQUEST = {"query", "title_max", "example", "example_query"}
_BLOCKS = {"references", "popular", "unpopular"}
_REFERENCE = {"n", "label", "comments", "title", "cover", "caption", "category"}
_PLACEHOLDERS: dict[str, set[str]] = {
    "system.txt": {"title_max"},
    "basic.txt": _REQUEST,
    "pe.txt": _REQUEST | _BLOCKS,
    "pe_no_refs.txt": _REQUEST,
    "reference.txt": _REFERENCE,
    "pe_compact.txt": _REQUEST | _BLOCKS,
    "pe_compact_no_refs.txt": _REQUEST,
    "reference_compact.txt": _REFERENCE,
}
REQUIRED = ("system.txt", "basic.txt", "pe.txt", "reference.txt")
OPTIONAL = (
    "pe_no_refs.txt",
    "example.json",
    "small_examples.json",
    "pe_compact.txt",
    "pe_compact_no_refs.txt",
    "reference_compact.txt",
)
_COMPACT = ("pe_compact.txt", "reference_compact.txt")
"""The files the compact form needs (``pe_compact_no_refs.txt`` is optional)."""
_USED: dict[Mode, tuple[str, ...]] = {
    "basic": ("system.txt", "basic.txt", "example.json"),
    "pe": (
        "system.txt",
        "pe.txt",
        "pe_no_refs.txt",
        "reference.txt",
        "example.json",
        "pe_compact.txt",
        "pe_compact_no_refs.txt",
        "reference_compact.txt",
    ),
}

_FIELD_CHARS = 300
"""A fitted reference's longest field."""

COMPACT_REFS = (2, 1)
"""The compact form's most references: popular, unpopular (the closest to the query)."""
COMPACT_MIN_SIMILARITY = 0.4
"""A reference less similar to the query than this is not shown in the compact form: a small
model copies whatever it is shown, and a video about something else pulls it off the query
(a parrot's trick, at 0.3-0.4, shown for a golden retriever learning to surf). At 0.4 instead
of 0.3, on the script-quality benchmark's generated corpus, 12 of 40 queries were shown a
reference instead of 24, and the video prompt's median relevance rose from 0.44 to 0.49."""
COMPACT_CAPTION_WORDS = 8
COMPACT_CAPTION_CHARS = 80
COMPACT_TITLE_CHARS = 80

# Only the title gets a maxLength: llama.cpp's schema-to-grammar conversion unrolls a length
# bound into one nested rule per character, and bounds in the thousands break its grammar
# parser (seen: a segfault in llama-cpp-python 0.3.36 with maxLength 2000).
SCRIPT_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 3, "maxLength": TITLE_MAX_CHARS},
        "cover_prompt": {"type": "string", "minLength": 20},
        "video_prompt": {"type": "string", "minLength": 20},
    },
    "required": ["title", "cover_prompt", "video_prompt"],
    "additionalProperties": False,
}
"""What a script looks like, for backends that can force their output into a schema."""

SHOT_OPENINGS = (
    "A close-up", "An extreme close-up", "A wide shot", "A medium shot", "A tracking shot",
    "An overhead shot", "A low-angle shot", "A handheld shot", "A slow-motion shot", "A time-lapse",
)  # fmt: skip
"""How a small model's video prompt opens (then "of ..."): a 135M model told to name the camera
mostly does not, and one that starts from a framing goes on to describe a shot (issue 25:
with the worked examples, 60% of its drafts were shots against 2% before). The grammar fixes
the opening only; subject, action and light are the model's, and the gate still measures
them."""

SMALL_FIELD_CHARS = 320
"""A small model's longest cover or video prompt (one to three sentences)."""

SMALL_SCRIPT_JSON_SCHEMA: dict[str, Any] = {
    **SCRIPT_JSON_SCHEMA,
    "properties": {
        **SCRIPT_JSON_SCHEMA["properties"],
        # A pattern, not an enum: llama.cpp's grammar keeps the rest free text. The class
        # leaves out the quote and the backslash, which would end or escape the JSON string.
        # Bounded, as a grammar cannot stop a string that never closes: a looping 135M model
        # otherwise writes until max_tokens.
        "cover_prompt": {"type": "string", "minLength": 20, "maxLength": SMALL_FIELD_CHARS},
        "video_prompt": {
            "type": "string",
            "pattern": "^(" + "|".join(SHOT_OPENINGS) + f') of [^"\\\\]{{10,{SMALL_FIELD_CHARS}}}$',
        },
    },
}
"""The script schema for small models shown the worked examples (:attr:`Prompt.schema`)."""

PE_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string", "minLength": 20},
        **SCRIPT_JSON_SCHEMA["properties"],
    },
    "required": ["reasoning", "title", "cover_prompt", "video_prompt"],
    "additionalProperties": False,
}
"""A script preceded by its reasoning chain, so schema-enforcing backends still think first."""


@dataclass(frozen=True)
class PromptTemplates:
    """One folder of prompt templates, read and checked once."""

    folder: Path
    texts: Mapping[str, str]
    """File name -> text (line ends normalised, one final newline removed)."""
    example_query: str | None
    example_script: Mapping[str, str] | None
    """The worked example (``example.json``), or None where the folder shows none."""

    @classmethod
    def load(cls, folder: Path | str) -> PromptTemplates:
        """Read ``folder``; ``UsageError`` (one line, naming it) if a file is missing,
        unreadable or uses a placeholder it cannot have."""
        folder = Path(folder).expanduser()
        where = f"prompt templates in {str(folder)!r}"
        if not folder.is_dir():
            raise UsageError(f"{where}: no such folder ([llm] prompts names a folder)")
        missing = [name for name in REQUIRED if not (folder / name).is_file()]
        if missing:
            raise UsageError(
                f"{where}: missing {', '.join(missing)} (a template folder holds "
                f"{', '.join(REQUIRED)}, optionally {', '.join(OPTIONAL)})"
            )
        texts = {
            name: _read(folder / name, where)
            for name in (*REQUIRED, *OPTIONAL)
            if (folder / name).is_file()
        }
        has_example = "example.json" in texts
        for name, allowed in _PLACEHOLDERS.items():
            if name in texts:
                known = allowed if has_example else allowed - {"example", "example_query"}
                _check_placeholders(texts[name], known, f"{where}: {name}")
        if "small_examples.json" in texts:
            _small_examples(texts["small_examples.json"], f"{where}: small_examples.json")
        if any(n in texts for n in _COMPACT) and not all(n in texts for n in _COMPACT):
            raise UsageError(f"{where}: the compact form needs both {' and '.join(_COMPACT)}")
        if not has_example:
            return cls(folder, texts, None, None)
        query, script = _example(texts["example.json"], f"{where}: example.json")
        return cls(folder, texts, query, script)

    @classmethod
    def packaged_for(cls, name: str) -> PromptTemplates:
        """The packaged folder of profile ``name``."""
        return _packaged(name)

    # --- identity -------------------------------------------------------------------------

    def digest(self, mode: Mode) -> str:
        """sha256 of the files ``mode`` uses, by name and content."""
        h = hashlib.sha256()
        for name in _USED[mode]:
            if name in self.texts:
                h.update(f"{name}\0{len(self.texts[name])}\0{self.texts[name]}".encode())
        return h.hexdigest()

    def version(self, mode: Mode) -> str:
        """What the job key and the manifest record as the prompt: the hash of the files.

        (The popcorn wording of before issue 17 was keyed ``basic-v3`` / ``pe-v1``; those
        runs were written with llama.cpp grammars whose fields came in alphabetical order, so
        the same wording, asked again, is keyed by its hash and written again.)"""
        return f"{mode}-{self.digest(mode)[:24]}"

    @property
    def has_compact(self) -> bool:
        """Whether the folder holds PE's compact form."""
        return all(name in self.texts for name in _COMPACT)

    @property
    def small_examples_digest(self) -> str:
        """sha256 of ``small_examples.json`` (empty without it): keyed only where the examples
        are shown, so that runs of other models keep their keys."""
        text = self.texts.get("small_examples.json")
        return "" if text is None else hashlib.sha256(text.encode()).hexdigest()[:24]

    @property
    def small_examples(self) -> list[tuple[str, dict[str, str]]]:
        """The worked examples for small models, (query, script) each; none without the file."""
        text = self.texts.get("small_examples.json")
        return [] if text is None else _small_examples(text, str(self.folder))

    # --- messages -------------------------------------------------------------------------

    def exchanges(self) -> list[Message]:
        """The small models' worked examples as earlier exchanges (request, then script)."""
        found: list[Message] = []
        for query, script in self.small_examples:
            found.append({"role": "user", "content": self._request("basic.txt", query)})
            found.append({"role": "assistant", "content": json.dumps(script, ensure_ascii=False)})
        return found

    def basic(self, query: str, *, examples: bool = False) -> list[Message]:
        """Messages for a query alone, no references; ``examples``: with the small models'
        worked examples before it (:meth:`exchanges`)."""
        system = {"role": "system", "content": self._render("system.txt", {})}
        if examples and self.small_examples:
            request = {"role": "user", "content": self._request("basic.txt", query)}
            return [system, *self.exchanges(), request]
        inline = "example" in Template(self.texts["basic.txt"]).get_identifiers()
        if self.example_script is None or self.example_query is None or inline:
            return [system, {"role": "user", "content": self._request("basic.txt", query)}]
        # Shown as an earlier exchange: small models copy an inline example verbatim far more
        # often than they imitate a previous turn.
        return [
            system,
            {"role": "user", "content": self._request("basic.txt", self.example_query)},
            {"role": "assistant", "content": json.dumps(self.example_script, ensure_ascii=False)},
            {"role": "user", "content": self._request("basic.txt", query)},
        ]

    def pe(
        self,
        query: str,
        references: Sequence[Reference],
        *,
        form: Form = "fitted",
        examples: bool = False,
    ) -> list[Message]:
        """Messages for a query with references (``Reference`` objects from retrieval).

        ``full`` gives every field whole; ``fitted`` cuts each at 300 characters; ``compact``
        (for small models, where the folder has the compact files; else ``fitted``) shows only
        :meth:`compact_references`, one short line each, with the compact wording, after the
        small models' worked examples with ``examples``."""
        if form == "compact" and self.has_compact:
            messages = self._pe_compact(query, self.compact_references(references))
            return [messages[0], *self.exchanges(), *messages[1:]] if examples else messages
        name = "pe.txt" if references or "pe_no_refs.txt" not in self.texts else "pe_no_refs.txt"
        limit = None if form == "full" else _FIELD_CHARS
        records = [(ref, self.reference(ref, limit)) for ref in references]
        blocks = {
            "references": _block([text for _, text in records]),
            "popular": _block([text for ref, text in records if ref.popular]),
            "unpopular": _block([text for ref, text in records if not ref.popular]),
        }
        return [
            {"role": "system", "content": self._render("system.txt", {})},
            {"role": "user", "content": self._request(name, query, blocks)},
        ]

    def compact_references(self, references: Sequence[Reference]) -> list[Reference]:
        """The references the compact form shows: the closest popular and unpopular ones
        (:data:`COMPACT_REFS`) at least :data:`COMPACT_MIN_SIMILARITY` similar to the query,
        in retrieval order."""
        close = [ref for ref in references if ref.similarity >= COMPACT_MIN_SIMILARITY]
        popular = [ref for ref in close if ref.popular][: COMPACT_REFS[0]]
        unpopular = [ref for ref in close if not ref.popular][: COMPACT_REFS[1]]
        return [ref for ref in close if ref in popular or ref in unpopular]

    def _pe_compact(self, query: str, shown: Sequence[Reference]) -> list[Message]:
        if shown or "pe_compact_no_refs.txt" not in self.texts:
            name = "pe_compact.txt"
        else:
            name = "pe_compact_no_refs.txt"
        records = [(ref, self.compact_reference(ref)) for ref in shown]
        blocks = {
            "references": "; ".join(text for _, text in records),
            "popular": "; ".join(text for ref, text in records if ref.popular),
            "unpopular": "; ".join(text for ref, text in records if not ref.popular),
        }
        # A line showing only empty blocks (no unpopular video close enough) is left out.
        kept = [
            line
            for line in self.texts[name].split("\n")
            if not (found := set(Template(line).get_identifiers()) & _BLOCKS)
            or any(blocks[b] for b in found)
        ]
        text = self._render_text("\n".join(kept), self._values(query, blocks))
        return [
            {"role": "system", "content": self._render("system.txt", {})},
            {"role": "user", "content": text},
        ]

    def compact_reference(self, ref: Reference) -> str:
        """One reference as one short line (``reference_compact.txt``): ``$caption`` holds the
        first few words of what the video shows (its caption, else its cover description,
        else its title); ``$title`` and ``$cover`` are cut short."""
        title = _clean(ref.title, COMPACT_TITLE_CHARS)
        caption = (_clean(ref.caption, None) or _clean(ref.cover_desc, None) or title).split()
        cut = caption[:COMPACT_CAPTION_WORDS]
        shown = _clean(" ".join(cut), COMPACT_CAPTION_CHARS).rstrip(".,;:")
        values = {
            "n": str(ref.rank),
            "label": "popular" if ref.popular else "unpopular",
            "comments": str(ref.comment_count),
            "title": title,
            "cover": _clean(ref.cover_desc, COMPACT_CAPTION_CHARS),
            "caption": shown + ("…" if len(caption) > len(cut) and shown[-1:] != "…" else ""),
            "category": _clean(ref.category, COMPACT_TITLE_CHARS),
        }
        return " ".join(_lines(self.texts["reference_compact.txt"], values))

    def reference(self, ref: Reference, limit: int | None = _FIELD_CHARS) -> str:
        """One reference as ``reference.txt`` shows it, its text flattened to one line and
        stripped of anything that could close a delimiter."""
        values = {
            "n": str(ref.rank),
            "label": "POPULAR" if ref.popular else "UNPOPULAR",
            "comments": str(ref.comment_count),
            "title": _clean(ref.title, limit),
            "cover": _clean(ref.cover_desc, limit),
            "caption": _clean(ref.caption, limit),
            "category": _clean(ref.category, limit),
        }
        return "\n".join(_lines(self.texts["reference.txt"], values))

    def _request(self, name: str, query: str, blocks: Mapping[str, str] | None = None) -> str:
        return self._render(name, self._values(query, blocks))

    def _values(self, query: str, blocks: Mapping[str, str] | None) -> dict[str, str]:
        values = {"query": query, **(blocks or {})}
        if self.example_script is not None and self.example_query is not None:
            values["example_query"] = self.example_query
            values["example"] = json.dumps(self.example_script, ensure_ascii=False, indent=2)
        return values

    def _render(self, name: str, values: Mapping[str, str]) -> str:
        return self._render_text(self.texts[name], values)

    @staticmethod
    def _render_text(text: str, values: Mapping[str, str]) -> str:
        return Template(text).substitute({"title_max": str(TITLE_MAX_CHARS), **values})


@cache
def _packaged(name: str) -> PromptTemplates:
    return PromptTemplates.load(TEMPLATES / name)


def _read(path: Path, where: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{where}: {path.name} is not UTF-8 text") from None
    except OSError as err:
        raise UsageError(f"{where}: cannot read {path.name} ({err.strerror})") from None
    text = text.replace("\r\n", "\n")
    return text[:-1] if text.endswith("\n") else text


def _check_placeholders(text: str, allowed: set[str], where: str) -> None:
    template = Template(text)
    if not template.is_valid():
        raise UsageError(f"{where}: a '$' that starts no placeholder (write a dollar as $$)")
    unknown = sorted(set(template.get_identifiers()) - allowed)
    if unknown and unknown[0] in ("example", "example_query"):
        raise UsageError(f"{where}: ${unknown[0]} needs an example.json in the folder")
    if unknown:
        known = ", ".join(f"${n}" for n in sorted(allowed))
        raise UsageError(f"{where}: unknown placeholder ${unknown[0]} (it knows {known})")


def _example(text: str, where: str) -> tuple[str, dict[str, str]]:
    try:
        data = json.loads(text)
    except ValueError as err:
        raise UsageError(f"{where}: not valid JSON ({err})") from None
    script = data.get("script") if isinstance(data, dict) else None
    fields = ("title", "cover_prompt", "video_prompt")
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("query"), str)
        or not isinstance(script, dict)
        or not all(isinstance(script.get(f), str) and script[f].strip() for f in fields)
    ):
        raise UsageError(
            f"{where}: needs a query and a script with title, cover_prompt and video_prompt"
        )
    return data["query"], {f: script[f] for f in fields}


def _small_examples(text: str, where: str) -> list[tuple[str, dict[str, str]]]:
    """``small_examples.json`` read and checked: one to five (query, script) pairs."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(f"{where}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(data, list) or not 1 <= len(data) <= 5:
        raise UsageError(f"{where}: must hold a list of one to five examples")
    return [_example(json.dumps(item), where) for item in data]


def _clean(text: str, limit: int | None) -> str:
    """Reference text as inert data: one line, no markup that could close our delimiters."""
    flat = " ".join(str(text or "").replace("<", " ").replace(">", " ").split())
    if limit is None or len(flat) <= limit:
        return flat
    return flat[: limit - 1] + "…"


def _block(records: list[str]) -> str:
    return "\n".join(records)


def _lines(template: str, values: Mapping[str, str]) -> list[str]:
    """The template's lines filled in, less those whose fields are all empty (e.g. no caption:
    no "caption:" line)."""
    lines = []
    for line in template.split("\n"):
        names = Template(line).get_identifiers()
        if names and all(not values[n] for n in names):
            continue
        lines.append(Template(line).substitute(values))
    return lines


# --- the packaged popcorn wording, as functions (benchmarks and tests use them) -------------

_POPCORN = PromptTemplates.packaged_for("popcorn")
_STUDY_EXAMPLE = PromptTemplates.packaged_for("paper")
assert _STUDY_EXAMPLE.example_query is not None and _STUDY_EXAMPLE.example_script is not None
EXAMPLE_QUERY: str = _STUDY_EXAMPLE.example_query
EXAMPLE_SCRIPT: dict[str, str] = dict(_STUDY_EXAMPLE.example_script)
"""The paper profile's worked example (an answer that repeats it is rejected); the popcorn
wording shows none."""


def basic_messages(query: str) -> list[Message]:
    """Popcorn's basic request: the query alone, no references."""
    return _POPCORN.basic(query)


def pe_messages(
    query: str, references: Sequence[Reference], *, form: Form = "fitted"
) -> list[Message]:
    """Popcorn's prompt enhancement: labelled references plus a reasoning chain (``compact``:
    the form for small models, a few short references and the steps in one sentence).

    With no references (``--refs 0``) the model still reasons step by step, from what it knows.
    """
    return _POPCORN.pe(query, references, form=form)


def format_references(references: Sequence[Reference]) -> str:
    """References as Popcorn's delimited, labelled records."""
    return (
        "<references>\n" + "\n".join(_POPCORN.reference(r) for r in references) + "\n</references>"
    )


TITLE_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"title": SCRIPT_JSON_SCHEMA["properties"]["title"]},
    "required": ["title"],
    "additionalProperties": False,
}
"""A title-only answer (the writer's title step)."""


def own_title_request(query: str) -> str:
    """The title step's request (:func:`popcorn.writer.titles.own`): a title alone, for a
    script whose title restated the query or missed it."""
    return (
        f"Write only a title for a 3-second micro-video about: {query}\n"
        "A title of its own, two to five words a viewer would click, not the idea's own "
        "words. Answer with a JSON object: title."
    )


def shorter_title_request(title: str, *, cut: bool = False) -> str:
    """The follow-up sent once when a title is over the limit, or was cut off at it."""
    said = (
        f"The title {title!r} was cut off at the limit of {TITLE_MAX_CHARS} characters."
        if cut
        else f"The title {title!r} has {len(title)} characters; the limit is {TITLE_MAX_CHARS}."
    )
    return f"{said} Reply with the same JSON object, with a shorter title."
