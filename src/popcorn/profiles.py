"""Profiles: ``paper`` runs every condition of the LLMPopcorn study; ``popcorn`` runs ours.

One switch (``--profile``, ``[run] profile`` in popcorn.toml, ``profile`` in a study's
``[study]`` table; studies default to ``paper``, everything else to ``popcorn``) picks a
:class:`Profile`, and every stage reads its conditions from it, so the two can never mix
silently. The profile is recorded in every manifest and is part of every job key.

A setting the user gives explicitly (a flag, the environment, a file) wins over the profile's
default for it (:meth:`Profile.setting_defaults`); the profile's behaviours that are not
settings (what an API request carries, how references are pooled and routed) follow the
profile alone. ``python -m popcorn.profiles`` prints the table of differences that docs/profiles.md
holds (a test keeps the two equal).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

ProfileName = Literal["paper", "popcorn"]
PROFILE_NAMES: tuple[ProfileName, ...] = ("paper", "popcorn")


@dataclass(frozen=True)
class Profile:
    """The conditions one profile sets. Field docs name what each one changes."""

    name: ProfileName
    prompts: str
    """The prompt template folder (``popcorn/writer/templates/<prompts>/``)."""
    max_tokens: int
    """Default cap on new tokens."""
    schema: bool
    """Constrain answers to the script's JSON schema where a backend can (grammars, JSON mode)."""
    api_sampling: bool
    """Send sampling parameters to API backends (else only the model and the messages)."""
    four_bit: Literal["fp4", "nf4"]
    """The 4-bit type of ``--load-in-4bit`` (bitsandbytes' default is fp4)."""
    embedder: str | None
    """PE's sentence embedder; None: the one the corpus index was built with."""
    pe_pool: Literal["test-split", "corpus"]
    """Where PE references come from: the scoring predictor's held-out test split, or the
    whole corpus."""
    complete_references: bool
    """Only videos with all five fields (title, cover description, caption, category,
    comments) can be references."""
    routing: Literal["name", "content"]
    """How a query is routed to categories: by the category's name, or by what it contains."""
    reference_form: Literal["full", "fitted"]
    """References in full, or fitted to the model's context and size (each field cut, and the
    compact form for a backend whose ``size`` is ``small``)."""
    media: Literal["study", "popcorn"]
    """Generator presets: the study's exact settings, or Popcorn's defaults where they
    differ (see ``popcorn generators``)."""
    predictor: Literal["mmra", "popcorn"]
    """The predictor configuration ``predictor train`` uses by default."""
    gate: bool
    """Retry, then fail, an answer the quality gate rejects (else its verdict is only
    recorded); see :mod:`popcorn.writer.gate`."""
    attempts: int
    """Default fresh tries (the next seed each) per query when an answer is unusable."""
    reject_copies: bool
    """Reject (and try again) an answer that echoes the prompt's example or copies a reference's
    title; else the answer is kept, flagged ``echoed_example`` or ``copied_reference``."""
    judge: Literal["mmra", "any"]
    """The predictor recipe a study may score with: MMRA's alone (a study file's
    ``allow_judge`` admits another, and its report says so), or whichever it names."""
    best_of_n: bool
    """A study may keep each job's best of N candidates by the predictor (``candidates``)."""
    fix_titles: bool
    """Ask again once for a title over 50 characters, then cut it; else it is kept as written,
    flagged ``title_over_limit``."""
    drafts: int = 1
    """Most drafts sampled per attempt for a small local model, stopping at the first the gate
    finds nothing in, the best kept by its measures (:mod:`popcorn.writer.drafts`); other
    models get one."""
    small_temperature: float | None = None
    """Sampling temperature for a small local model when nobody sets one (None: the
    decoding default, 0.7, as for other models)."""

    def setting_defaults(self) -> dict[str, dict[str, Any]]:
        """Defaults this profile gives to :class:`~popcorn.config.Settings` keys (a user's
        explicit value wins)."""
        defaults: dict[str, dict[str, Any]] = {"decoding": {"max_tokens": self.max_tokens}}
        if self.embedder is not None:
            defaults["pe"] = {"embedder": self.embedder}
        defaults["gate"] = {"enabled": self.gate}
        defaults.setdefault("llm", {})["attempts"] = self.attempts
        return defaults


PAPER = Profile(
    name="paper",
    prompts="paper",
    max_tokens=5000,
    schema=False,
    api_sampling=False,
    four_bit="fp4",
    embedder="sentence-transformers/all-MiniLM-L12-v2",
    pe_pool="test-split",
    complete_references=True,
    routing="name",
    reference_form="full",
    media="study",
    predictor="mmra",
    gate=False,
    attempts=1,
    reject_copies=False,
    judge="mmra",
    best_of_n=False,
    fix_titles=False,
)

POPCORN = Profile(
    name="popcorn",
    prompts="popcorn",
    max_tokens=1024,
    schema=True,
    api_sampling=True,
    four_bit="nf4",
    embedder=None,
    pe_pool="corpus",
    complete_references=False,
    routing="content",
    reference_form="fitted",
    media="popcorn",
    predictor="popcorn",
    gate=True,
    attempts=3,
    reject_copies=True,
    judge="any",
    best_of_n=True,
    fix_titles=True,
    drafts=4,
    small_temperature=0.3,
)

PROFILES: dict[str, Profile] = {p.name: p for p in (PAPER, POPCORN)}

WHY: dict[str, str] = {
    "prompts": "Popcorn's wording shows no worked example (small models copied its subject into "
    "unrelated answers; a schema fixes the form) and states the query last, where small models "
    "look",
    "max_tokens": "a script needs a few hundred tokens; 5,000 lets a looping local model run for "
    "minutes",
    "schema": "a schema or grammar makes every answer parse; the study parsed free text",
    "api_sampling": "the study sent API models only the model and the messages; Popcorn sends "
    "the same sampling to every backend so they are comparable",
    "four_bit": "nf4 loses less accuracy than fp4 at the same size",
    "embedder": "all-MiniLM-L6-v2 ships in a package and runs offline; L12 must come from the hub",
    "pe_pool": "a single query has no judge to leak into, so every video can teach; a study "
    "that scores with a predictor still refuses a pool that overlaps its bank",
    "complete_references": "a reference missing its caption or cover text still shows what "
    "works; the study dropped it",
    "routing": "a category's name can say little about it (MicroLens calls food 'Delicacy'); "
    "what it contains says more",
    "reference_form": "small models lose the query in long reference blocks and echo the prompt: "
    "fitted cuts each field at 300 characters, and small models (the embedded one, GGUF files "
    "under 2 GiB) get a compact form: three short references close to the query, one sentence "
    "of reasoning",
    "media": "`popcorn generators` lists each preset's differences from the study and why",
    "predictor": "MiniLM, a projection, log2(1+c), patience 10 and shuffled batches train in "
    "minutes on a laptop and keep zero-comment videos",
    "gate": "a well-formed answer can still be the prompt talking back or about something else; "
    "the study counted it as a script (paper runs record the verdict, as information)",
    "attempts": "a fresh try with the next seed turns most unusable answers into scripts; the "
    "study made one attempt and scored what came out",
    "reject_copies": "an echoed example or a copied reference title is no new script; the "
    "study kept both (an echoed example became blank fields that were still scored)",
    "fix_titles": "a title over 50 characters is cut off in a feed; the study did not check "
    "its length (the title is an input of MMRA's predictor)",
    "judge": "the study scored with MMRA; Popcorn's own recipe (other encoders, log2(1+c), the "
    "video prompt for frame captions) scores differently, so only outside a paper study",
    "best_of_n": "the study scored one script per job; picking the best of N by the predictor "
    "that then scores it inflates the score, so only outside a paper study",
    "drafts": "a small model writes a usable script often and a good one rarely; up to four "
    "drafts of one prompt (evaluated once), stopping at the first the gate finds nothing in, "
    "keep titles of its own and video prompts that describe a shot; the study sampled one answer",
    "small_temperature": "at 0.7 the 135M model's kept title missed the query for 4 of 20 "
    "queries, at 0.3 for 1 (four drafts each); the study used 0.7 for every model",
}
"""Why Popcorn differs, per field (empty where both profiles agree)."""

_LABELS: dict[str, str] = {
    "prompts": "prompt templates",
    "max_tokens": "max new tokens",
    "schema": "JSON schema / grammar",
    "api_sampling": "API request",
    "four_bit": "`--load-in-4bit` type",
    "embedder": "PE embedder",
    "pe_pool": "PE reference pool",
    "complete_references": "references need all five fields",
    "routing": "category routing",
    "reference_form": "reference blocks",
    "media": "generator presets",
    "predictor": "predictor (`predictor train`)",
    "gate": "quality gate retries and fails bad answers",
    "attempts": "attempts per query",
    "reject_copies": "echoed example / copied reference title rejected",
    "fix_titles": "title over 50 characters asked again, then cut",
    "judge": "study predictor recipe",
    "best_of_n": "best-of-N in studies (`candidates`)",
    "drafts": "drafts per attempt, small local models (up to; best kept by the gate)",
    "small_temperature": "temperature, small local models (unless set)",
}


def get(name: str) -> Profile:
    """The profile called ``name``; ``UsageError`` naming the choices otherwise."""
    from popcorn.errors import UsageError

    if name not in PROFILES:
        raise UsageError(f"unknown profile {name!r}: choose {' or '.join(PROFILE_NAMES)}")
    return PROFILES[name]


def _shown(name: str, value: Any) -> str:
    if name == "api_sampling":
        return "sampling parameters sent" if value else "model and messages only"
    if name == "embedder" and value is None:
        return "the index's own (`corpus index` default: packaged all-MiniLM-L6-v2)"
    if name == "small_temperature" and value is None:
        return "the decoding's (0.7)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"`{value}`" if name in ("embedder", "four_bit") else str(value)


def differences() -> list[tuple[str, str, str, str]]:
    """(setting, paper, popcorn, why Popcorn differs) for every field the profiles disagree on."""
    rows = []
    for f in fields(Profile):
        if f.name == "name":
            continue
        paper, ours = getattr(PAPER, f.name), getattr(POPCORN, f.name)
        if paper != ours:
            rows.append((_LABELS[f.name], _shown(f.name, paper), _shown(f.name, ours), WHY[f.name]))
    return rows


def markdown_table() -> str:
    """The table in docs/profiles.md of differences, generated from the two profiles."""
    lines = ["| setting | paper | popcorn | why Popcorn differs |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in differences()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
