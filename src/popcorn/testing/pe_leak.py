"""The PE leak, measured on generated data: a stand-in LLM that echoes its most commented
reference, and a predictor whose retrieval bank holds the corpus PE draws from.

Scoring retrieves the bank videos nearest to a script's title and video prompt, with their
labels. When PE may show the LLM a video of that bank, a script that echoes it (a near-copy
title, the reference's caption as its video prompt) retrieves that very video, label included,
into its own score. The study drew references from the predictor's held-out test split only,
which the bank never holds; this module builds both situations so they can be compared:

- :func:`build_leak_setup`: a generated corpus of short videos, a toy predictor trained on it
  (:func:`~popcorn.testing.toy_predictor.build_toy_predictor`: its bank is that corpus's
  training split, so corpus and bank share ids), the corpus indexed for PE, a second corpus
  holding only the predictor's test split (as ``corpus import --only-ids`` makes it), and
  queries on the corpus's topics;
- :class:`EchoLLM` (``echo:NAME``): reads the references out of its prompt (either profile's
  wording) and copies the most commented one; without references it writes a plain script
  from the query;
- :func:`write_leak_study`, :func:`pe_minus_basic` and :func:`scoring_neighbours` run and
  measure a study, as ``benchmarks/pe_leak.py`` and tests/test_profile_study.py do.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from popcorn.llm.base import Completion, Decoding, LLMOptions, Message

if TYPE_CHECKING:
    from popcorn.predictor.score import Predictor

# --- the stand-in LLM --------------------------------------------------------------------------

# The paper templates list a reference as "- Title: ...", "Cover: ...", "Caption: ...",
# "Comments: N"; popcorn's as <video ... comments="N"> with "title:", "cover:", "caption:" lines.
_PAPER_REFERENCE = re.compile(
    r"^\s*-\s*Title:[ \t]*(?P<title>.*)\n"
    r"(?:\s*Cover:[ \t]*(?P<cover>.*)\n)?"
    r"(?:\s*Caption:[ \t]*(?P<caption>.*)\n)?"
    r"\s*Comments:[ \t]*(?P<comments>[\d,]+)",
    re.MULTILINE,
)
_POPCORN_REFERENCE = re.compile(
    r"<video\b[^>]*\bcomments=\"(?P<comments>[\d,]+)\"[^>]*>\s*\n"
    r"\s*title:[ \t]*(?P<title>.*)\n"
    r"(?:\s*cover:[ \t]*(?P<cover>.*)\n)?"
    r"(?:\s*caption:[ \t]*(?P<caption>.*)\n)?"
    r"\s*</video>",
)
_QUERY = (
    re.compile(r"<query>\s*(.+?)\s*</query>", re.DOTALL),
    re.compile(r"on this idea:\s*\n(.+)"),
)


@dataclass(frozen=True)
class ShownReference:
    """A reference as the LLM saw it in its prompt."""

    title: str
    cover: str
    caption: str
    comments: int


def parse_references(prompt: str) -> list[ShownReference]:
    """The references in a PE prompt, in the order shown (none in a basic prompt)."""
    found = []
    for pattern in (_PAPER_REFERENCE, _POPCORN_REFERENCE):
        for m in pattern.finditer(prompt):
            found.append(
                ShownReference(
                    title=m["title"].strip(),
                    cover=(m["cover"] or "").strip(),
                    caption=(m["caption"] or "").strip(),
                    comments=int(m["comments"].replace(",", "")),
                )
            )
        if found:
            break
    return found


def near_copy(title: str) -> str:
    """A title that says what ``title`` says, reworded just enough to pass the originality
    check (:func:`popcorn.script.similar`), as a model that copies would."""
    from popcorn.script import TITLE_MAX_CHARS, similar

    words: list[str] = []
    for word in title.split():  # room for the rewording within the title limit
        if len(" ".join([*words, word])) > TITLE_MAX_CHARS - 6:
            break
        words.append(word)
    base = " ".join(words) or title[: TITLE_MAX_CHARS - 6]
    candidates = [" ".join(words[k:] + words[:k]) for k in range(1, len(words))]
    candidates += [f"{base} redux", f"redux {base}"]
    for candidate in candidates:
        if len(candidate) <= TITLE_MAX_CHARS and not similar(candidate, title):
            return candidate
    return f"{base} redux"


class EchoLLM:
    """``echo:NAME``: copies the most commented reference of its prompt (a near-copy title, the
    reference's caption as the video prompt, its cover description as the cover prompt);
    with no references, a plain script about the query."""

    concurrent = True

    def __init__(self, spec: str) -> None:
        self.spec = spec

    def identity(self) -> dict[str, Any]:
        return {"provider": "echo", "version": 1}

    def complete(
        self,
        messages: list[Message],
        decoding: Decoding,
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        prompt = messages[-1]["content"]
        references = parse_references(prompt)
        if references:
            best = max(references, key=lambda r: r.comments)
            script = {
                "title": near_copy(best.title),
                "cover_prompt": best.cover or f"A bright still of {best.title}",
                "video_prompt": best.caption or best.title,
            }
        else:
            query = _query(prompt)
            script = {
                "title": query[:50],
                "cover_prompt": f"A bright poster of {query}",
                "video_prompt": f"A short clip of {query}",
            }
        return Completion(text=json.dumps(script), prompt_tokens=0, completion_tokens=0)


def _query(prompt: str) -> str:
    for pattern in _QUERY:
        m = pattern.search(prompt)
        if m:
            return " ".join(m.group(1).split())
    return " ".join(prompt.split()[:8])


def echo_llm(argument: str, options: LLMOptions) -> EchoLLM:
    """A stand-in LLM that copies its most commented PE reference (popcorn.testing.pe_leak)."""
    return EchoLLM(f"echo:{argument}")


echo_llm.form = "echo:NAME"  # type: ignore[attr-defined]


def register_echo() -> None:
    """Make ``echo:NAME`` available in this process (tests install it as a plugin instead)."""
    from popcorn.llm.registry import LLMS

    LLMS.add("echo", echo_llm, "copies its most commented PE reference", form="echo:NAME")


# --- data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeakSetup:
    """Everything a leak study needs, under one folder."""

    predictor: Path
    corpus: Path
    """The whole generated corpus, indexed: its training ids are the predictor's bank."""
    test_corpus: Path
    """Only the predictor's test split, indexed (``corpus import --only-ids``)."""
    queries: Path
    bank: frozenset[str]
    test: frozenset[str]


def build_leak_setup(
    root: Path | str,
    videos: int = 240,
    seed: int = 11,
    queries: int = 16,
    predictor: Path | None = None,
) -> LeakSetup:
    """Build the corpus, the predictor, both indexed PE corpora and the queries under ``root``.

    ``predictor``: a folder :func:`~popcorn.testing.toy_predictor.build_toy_predictor` made
    (with its generated data beside it), used as it is instead of training a new one."""
    import shutil

    from popcorn.retrieval.corpus import import_table, keep_only
    from popcorn.retrieval.embedders import Embedder
    from popcorn.retrieval.index import build_index
    from popcorn.testing.synthetic_media import _PLACES, _SUBJECTS
    from popcorn.testing.toy_predictor import build_toy_predictor

    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if predictor is None:
        predictor = build_toy_predictor(root, videos=videos, seed=seed)
    predictor = Path(predictor).resolve()
    # build_toy_predictor imports its generated table as data/ -> corpus/ beside the predictor
    # and trains on that corpus: PE over it draws from the predictor's own bank.
    made = predictor.parent
    corpus = root / "corpus"
    if made != root:
        shutil.copytree(made / "corpus", corpus, ignore=shutil.ignore_patterns("index"))
    build_index(corpus, Embedder())
    split = json.loads((predictor / "predictor.json").read_text(encoding="utf-8"))["split"]
    bank = frozenset(split["train"]) | frozenset(split["val"])
    test = frozenset(split["test"]) - bank
    table, report = import_table(made / "data" / "table.jsonl")
    keep_only(table, report, set(test), "the predictor's test split").save(
        root / "test-corpus", report
    )
    build_index(root / "test-corpus", Embedder())
    rng = random.Random(seed)
    pairs = [(s, p) for s in _SUBJECTS for p in _PLACES]
    chosen = rng.sample(pairs, min(queries, len(pairs)))
    lines = ["prompt,type", *(f"A {s} {p},concrete" for s, p in chosen)]
    (root / "queries.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return LeakSetup(predictor, corpus, root / "test-corpus", root / "queries.csv", bank, test)


Pool = Literal["overlapping", "test-split", "paper"]


def write_leak_study(
    folder: Path, setup: LeakSetup, pool: Pool, modes: str = '"basic", "pe:5"'
) -> Path:
    """A study of the echo LLM, basic against PE, scored by the setup's predictor, whose PE
    references come from the whole corpus (``overlapping``: popcorn profile), the test-split
    corpus (``test-split``: popcorn profile, as ``corpus import --only-ids`` leaves it) or the
    paper profile's own test-split pool over the whole corpus (``paper``)."""
    folder.mkdir(parents=True, exist_ok=True)
    corpus = setup.test_corpus if pool == "test-split" else setup.corpus
    profile = "paper" if pool == "paper" else "popcorn"
    path = folder / "study.toml"
    path.write_text(
        f"""[study]
name = "pe-leak-{pool}"
profile = "{profile}"
llms = ["echo:stand-in"]
modes = [{modes}]
videos = ["preview"]
covers = ["none"]
seeds = [42]
predictor = "{setup.predictor}"
corpus = "{corpus}"

[pe]
embedder = "minilm-l6"   # the embedder the generated corpus was indexed with

[gate]
enabled = false          # the stand-in copies on purpose: what would a copy that got through score?

[queries]
leak = "{setup.queries}"
""",
        encoding="utf-8",
    )
    return path


# --- measuring --------------------------------------------------------------------------------


def scoring_neighbours(predictor: Predictor, title: str, video_prompt: str) -> list[str]:
    """The ids of the bank videos that scoring a clip with this title and video prompt
    retrieves (with their labels), nearest first: what
    :meth:`~popcorn.predictor.score.Predictor.score_video` feeds the model."""
    from popcorn.predictor.features import normalised, retrieval_text
    from popcorn.predictor.train import neighbours

    encoders = predictor.encoders()
    if encoders.captioner is not None:
        raise ValueError("this predictor captions frames: its retrieval text is not the script's")
    vector = normalised(encoders.retrieval.encode([retrieval_text(title, video_prompt)]))
    rows, _ = neighbours(vector, predictor.bank.retrieval, predictor.meta["model"]["retrieved"])
    return [predictor.bank.ids[i] for i in rows[0]]


@dataclass(frozen=True)
class LeakFigures:
    pairs: int
    pe_minus_basic: float
    low: float
    high: float
    """95% bootstrap interval of the mean difference."""
    leaked: float
    """Share of PE clips whose scoring retrieved a video shown to their LLM as a reference."""
    failed: int


def pe_minus_basic(study_file: Path) -> LeakFigures:
    """Paired PE - basic over a finished study's clips, and how often scoring retrieved one of
    the run's own references."""
    import numpy as np

    from popcorn.predictor.score import Predictor
    from popcorn.runs.store import Run
    from popcorn.study.report import distinct_clips, results
    from popcorn.study.spec import load_study
    from popcorn.study.stats import bootstrap_mean

    study = load_study(study_file)
    assert study.predictor is not None
    rows = results(study)
    clips = distinct_clips([r for r in rows if r["status"] == "done" and r["score"] is not None])
    basic = {r["query"]: float(r["score"]) for r in clips if r["mode"] == "basic"}
    pe = [r for r in clips if r["mode"] != "basic"]
    diffs = [float(r["score"]) - basic[r["query"]] for r in pe if r["query"] in basic]
    predictor = Predictor.load(study.predictor)
    leaked = 0
    for r in pe:
        run = Run.load(Path(r["run_dir"]))
        shown = {ref["video_id"] for ref in run.read_json("references.json")["references"]}
        script = run.script()
        assert script is not None
        if shown & set(scoring_neighbours(predictor, script.title, script.video_prompt)):
            leaked += 1
    ci = bootstrap_mean(np.array(diffs))
    return LeakFigures(
        len(diffs),
        ci.mean,
        ci.low,
        ci.high,
        leaked / len(pe) if pe else float("nan"),
        sum(r["status"] == "failed" for r in rows),
    )
