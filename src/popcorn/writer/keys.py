"""The script stage's run key: exactly the inputs that change a script, and nothing else.

Concurrency, retries, the output folder and tags are left out, so a rerun with any of them
changed finds the runs already made. What a key holds is frozen by the runs on disk: a change
here makes every earlier script unreachable, so new inputs enter only where they differ from
what was always written (see the profile conditions).
"""

from __future__ import annotations

from typing import Any, Literal

from popcorn.llm.base import LLM, Decoding
from popcorn.profiles import POPCORN, Profile
from popcorn.runs.store import SCHEMA_VERSION
from popcorn.writer.gate import GateSettings, gate_checks_relevance
from popcorn.writer.prompts import Form, PromptTemplates

# What a profile changes in a script's output; popcorn's values leave the job key as it was.
_KEYED_CONDITIONS = (
    "schema",
    "api_sampling",
    "four_bit",
    "reference_form",
    "reject_copies",
    "fix_titles",
)


def script_key_inputs(
    query: str,
    *,
    mode: Literal["basic", "pe"],
    templates: PromptTemplates,
    llm: LLM,
    decoding: Decoding,
    pe: dict[str, Any] | None,
    form: Form,
    gate: GateSettings,
    profile: Profile,
) -> dict[str, Any]:
    """What is hashed into the key of ``query``'s script run; ``pe`` is the enhancer's
    identity (None without PE) and ``form`` how PE shows references."""
    inputs: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "query": query,
        "mode": mode,
        "prompt": templates.version(mode),
        "llm": {"spec": llm.spec, **llm.identity()},
        "decoding": decoding.to_dict(),
    }
    if pe is not None:
        inputs["pe"] = pe
        if form == "compact":
            inputs["pe_form"] = "compact"
    if gate.enabled:
        # An enforcing gate changes which answer is kept; a recording one changes nothing.
        inputs["gate"] = {**gate.thresholds(), "relevance": gate_checks_relevance()}
    conditions = profile_conditions(profile)
    if conditions != profile_conditions(POPCORN):
        # Only other profiles add this, so popcorn runs keep the keys they always had.
        inputs["profile"] = conditions
    return inputs


def profile_conditions(profile: Profile) -> dict[str, Any]:
    """The profile's conditions that change a script (its prompts are keyed by their hash)."""
    return {"name": profile.name, **{c: getattr(profile, c) for c in _KEYED_CONDITIONS}}
