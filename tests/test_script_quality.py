"""Scripts that fit the query (issue 17): the quality gate acts on every backend's answers and
is recorded; the paper profile only records it; PE shows small models a compact prompt; the
popcorn prompts show no worked example that could leak into answers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest import FaultProxy
from popcorn.config import load_settings
from popcorn.errors import GenerationError, UsageError
from popcorn.llm.base import LLMOptions
from popcorn.pipeline import Pipeline
from popcorn.profiles import PAPER
from popcorn.retrieval.enhance import PESettings
from popcorn.retrieval.search import Reference
from popcorn.runs.keys import job_key
from popcorn.script import Script
from popcorn.writer.gate import (
    GateSettings,
    contamination,
    echo,
    gate_embedder,
    judge,
    meta_text,
    prompt_text,
)
from popcorn.writer.prompts import (
    COMPACT_MIN_SIMILARITY,
    TEMPLATES,
    PromptTemplates,
    pe_messages,
)
from popcorn.writer.writer import Generator

QUERY = "A cat learning to skateboard"
GOOD = {
    "title": "Kitten Shreds the Skate Park",
    "cover_prompt": "A tabby kitten standing on a red skateboard in a sunny skate park",
    "video_prompt": "A tabby cat pushes off on a skateboard, wobbles, then rolls down a sunny "
    "ramp; low tracking shot, warm afternoon light",
}
TALKING_BACK = dict(GOOD, title="This answer has been provided for your reference.")
LIGHTHOUSE_QUERY = "A lighthouse keeper's last night on duty"
LIGHTHOUSE = {
    "title": "The Lighthouse's Final Blink",
    "cover_prompt": "An old lighthouse keeper in a wool coat holding a brass lantern at the top "
    "of a lighthouse during a violent storm, waves crashing below",
    "video_prompt": "Close-up of a weathered hand turning the lighthouse lamp off for the last "
    "time; the beam sweeps across the stormy sea, then fades",
}


def api_generator(tmp_path: Path, proxy: FaultProxy, **kwargs: Any) -> Generator:
    return Generator(
        "openai:m", out=tmp_path / "runs", options=LLMOptions(base_url=proxy.url), **kwargs
    )


def manifest(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "manifest.json").read_text())


def transcript(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "transcript.json").read_text())


@pytest.fixture(scope="module")
def embedder() -> Any:
    found = gate_embedder()
    assert found is not None, "the pe extra (packaged MiniLM) is part of the test set-up"
    return found


# --- the gate in the generator ---------------------------------------------------------------


def test_a_talking_back_answer_is_asked_again_and_the_verdicts_are_recorded(
    tmp_path: Path, fault_proxy: FaultProxy
):
    fault_proxy.answer_next(json.dumps(TALKING_BACK))
    fault_proxy.answer_next(json.dumps(GOOD))
    result = api_generator(tmp_path, fault_proxy).generate(QUERY)
    assert result.script.title == GOOD["title"]
    seeds = [r["body"]["seed"] for r in fault_proxy.requests]
    assert seeds == [42, 43]  # the next seed, in a fresh conversation
    record = manifest(result.run_dir)
    assert record["attempts"] == 2 and record["status"] == "done"
    gate = record["stages"]["gate"]
    assert gate["ok"] is True and gate["enforced"] is True
    assert gate["attempts"] == ["meta", "ok"]
    assert gate["scores"]["relevance"] > 0.45 and gate["scores"]["echo"] < 0.1
    assert gate["thresholds"] == GateSettings().thresholds()
    assert record["timings"]["gate_seconds"] >= 0
    first, second = transcript(result.run_dir)["attempts"]
    assert first["outcome"]["ok"] is False and first["outcome"]["reason"] == "meta"
    assert first["gate"]["reason"] == "meta" and "This answer" in first["gate"]["detail"]
    assert second["outcome"] == {"ok": True} and second["gate"]["ok"] is True
    assert result.to_dict()["gate"]["attempts"] == ["meta", "ok"]


def test_an_answer_the_gate_keeps_rejecting_fails_with_the_gates_reason(
    tmp_path: Path, fault_proxy: FaultProxy
):
    off_topic = dict(
        GOOD,
        title="Quantum Chips Explained",
        video_prompt="A silicon wafer rotates under blue light while a qubit diagram glows",
    )
    fault_proxy.answer_next(json.dumps(TALKING_BACK))
    fault_proxy.answer_next(json.dumps(off_topic))
    with pytest.raises(GenerationError) as failed:
        api_generator(tmp_path, fault_proxy, attempts=2).generate(QUERY)
    assert failed.value.reason == "off_topic"
    assert "score" in str(failed.value) and "against the query" in str(failed.value)
    record = manifest(Path(str(failed.value.run_dir)))
    assert record["status"] == "failed" and record["attempts"] == 2
    assert record["error"]["reason"] == "off_topic"
    assert record["stages"]["gate"]["attempts"] == ["meta", "off_topic"]


def test_generate_json_shows_the_gate(cli, fault_proxy: FaultProxy):
    fault_proxy.answer_next(json.dumps(GOOD))
    result = cli(
        "generate", QUERY, "--llm", "openai:m", "--base-url", fault_proxy.url, "--json",
        "--video", "none", "--cover", "none",
    )  # fmt: skip
    assert result.code == 0, result.err
    gate = json.loads(result.out)["gate"]
    assert gate["ok"] is True and gate["reason"] is None
    assert set(gate["scores"]) >= {"echo", "meta", "relevance"}


def test_the_paper_profile_records_the_verdict_but_keeps_the_answer(
    tmp_path: Path, fault_proxy: FaultProxy
):
    settings = fault_proxy.settings(tmp_path / "runs", profile="paper")
    assert settings.gate.enabled is False
    fault_proxy.answer_next(json.dumps(TALKING_BACK))
    pipeline = Pipeline(settings, score="never")
    result = pipeline.script(QUERY)
    assert result.script.title == TALKING_BACK["title"]  # kept: the study's failure rates
    record = manifest(result.run_dir)
    assert record["attempts"] == 1 and len(fault_proxy.requests) == 1
    gate = record["stages"]["gate"]
    assert gate["enforced"] is False and gate["ok"] is False and gate["reason"] == "meta"
    # Recording changes no output, so paper keys do not hold the gate; enforcing does.
    assert "gate" not in pipeline.generator.key_inputs(QUERY)
    assert "gate" in api_generator(tmp_path, fault_proxy).key_inputs(QUERY)


def test_gate_settings_come_from_the_config_and_change_the_key(
    tmp_path: Path, fault_proxy: FaultProxy
):
    config = tmp_path / "strict.toml"
    config.write_text("[gate]\nrelevance_min = 0.5\n")
    flags = {"llm": {"spec": "openai:m", "base_url": fault_proxy.url}}
    strict = Pipeline(load_settings(config, flags), score="never")
    assert strict.generator.gate.relevance_min == 0.5 and strict.generator.gate.enabled
    plain = Pipeline(load_settings(flags=flags), score="never")
    assert job_key(strict.generator.key_inputs(QUERY)) != job_key(plain.generator.key_inputs(QUERY))
    on = load_settings(environ={"POPCORN_GATE_ENABLED": "true"}, profile="paper")
    assert on.gate.enabled is True  # an explicit setting wins over the profile


# --- the gate's rules on recorded answers ------------------------------------------------------


def test_a_field_that_repeats_the_instructions_is_an_echo():
    # Recorded from the embedded model: the video prompt is the instruction's own words.
    instructions = (
        "The video prompt says what we see happen, how the camera moves and how it is lit."
    )
    script = Script(
        "Street Drummer Beats", "A drummer on buckets", "How the camera moves and how it is lit."
    )
    assert echo(script, instructions, "A street drummer") > 0.9
    assert judge(script, "A street drummer", instructions, GateSettings()).reason == "echo"


def test_meta_words_the_query_itself_uses_are_not_meta():
    script = Script(
        "The Answer Is Forty-Two", "A glowing number", "A supercomputer prints the answer"
    )
    assert meta_text(script, "The answer to life, the universe and everything") is None
    assert meta_text(script, "A cat learning to skateboard") is not None


def test_the_prompt_text_judged_is_the_messages_less_the_query():
    messages = pe_messages(QUERY, [])
    text = prompt_text(messages, QUERY)
    assert QUERY not in text and "micro-video" in text


@pytest.mark.parametrize(
    ("title", "query"),
    [
        # Both recorded from the embedded model under the old popcorn prompts (issue 17).
        ("The Lighthouse's Final Blink", "One-Punch Man's funniest fights"),
        ("A Sailor's Last Night on Duty", "Sound design in anime"),
    ],
)
def test_contamination_measures_the_worked_example_in_unrelated_answers(title: str, query: str):
    leaked = Script(title, "A moody still", "A short scene")
    assert contamination(leaked, query, LIGHTHOUSE, LIGHTHOUSE_QUERY) == 1.0
    clean = Script(GOOD["title"], GOOD["cover_prompt"], GOOD["video_prompt"])
    assert contamination(clean, QUERY, LIGHTHOUSE, LIGHTHOUSE_QUERY) == 0.0
    # The example's own query may use its own words.
    assert contamination(leaked, LIGHTHOUSE_QUERY, LIGHTHOUSE, LIGHTHOUSE_QUERY) == 0.0


KNIFE_QUERY = "How to sharpen a kitchen knife"
KNIFE = {
    "title": "Razor Edge in Three Strokes",
    "cover_prompt": "A chef's knife on a wet whetstone, water droplets, dark wood counter",
    "video_prompt": "Extreme close-up of hands sharpening a kitchen knife on a wet whetstone as "
    "water beads fly off the blade. Handheld camera, dramatic side light.",
}


@pytest.mark.parametrize(
    ("query", "title", "video", "leaked"),
    [
        # Drafts of the embedded model (issue 25): the framing the grammar opens with, a
        # person, the query's own words in possessive form are any shot's, not the example's.
        ("A chef flipping pancakes in a tiny camper van", "The Chef's Kitchen",
         "An overhead shot of a chef flipping pancakes in a tiny camper van.", False),
        ("Letting go of perfectionism", "The Unrealistic End Goal",
         "An extreme close-up of a woman's face as she is about to give up her dream. "
         "Handheld camera, dramatic side light.", False),
        # Its subject is the example's: a whetstone and a blade.
        ("Baking bread at home", "Bread Day",
         "A close-up of a baker drawing a blade across a whetstone before slicing.", True),
    ],
)  # fmt: skip
def test_contamination_counts_the_examples_subject_not_how_a_shot_is_taken(
    query: str, title: str, video: str, leaked: bool
):
    draft = Script(title, "A bright still of the scene", video)
    assert (contamination(draft, query, KNIFE, KNIFE_QUERY) > 0) is leaked


def test_the_gate_fails_a_leaked_example_only_where_one_was_shown(embedder):
    leaked = Script("The Lighthouse's Final Blink", "A moody still", "Saitama punches a monster")
    query = "One-Punch Man's funniest fights"
    shown = judge(leaked, query, "", GateSettings(), LIGHTHOUSE, LIGHTHOUSE_QUERY, embedder)
    assert shown.reason == "example"
    assert judge(leaked, query, "", GateSettings(), None, "", embedder).reason != "example"


# --- prompts: no example, and PE fitted to the model --------------------------------------------


def test_popcorn_prompts_show_no_worked_example():
    popcorn = PromptTemplates.packaged_for("popcorn")
    assert popcorn.example_script is None
    messages = popcorn.basic(QUERY)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "lighthouse" not in json.dumps(messages).lower()
    # The paper profile keeps the study's inline example.
    paper = PromptTemplates.packaged_for("paper")
    assert paper.example_script is not None
    assert paper.example_script["title"] in paper.basic(QUERY)[-1]["content"]


def test_a_folder_without_example_json_cannot_use_example_placeholders(tmp_path: Path):
    folder = tmp_path / "wording"
    shutil.copytree(TEMPLATES / "popcorn", folder)
    (folder / "basic.txt").write_text("For $query, like this: $example")
    with pytest.raises(UsageError, match=r"\$example needs an example.json") as err:
        PromptTemplates.load(folder)
    assert "\n" not in str(err.value)
    (folder / "basic.txt").write_text("For $query")
    (folder / "reference_compact.txt").unlink()
    with pytest.raises(UsageError, match="compact form needs both"):
        PromptTemplates.load(folder)


def ref(rank: int, title: str, caption: str, popular: bool, similarity: float) -> Reference:
    return Reference(rank, f"v{rank}", title, "A cover", caption, "pets", 900, popular, similarity)


REFS = [
    ref(1, "Kitten tries a skateboard", "A kitten rolls across the kitchen floor", True, 0.71),
    ref(2, "Puppy skate fail", "A puppy falls off a skateboard into a hedge", False, 0.6),
    ref(3, "Cat on wheels", "", True, 0.55),
    ref(4, "Hamster wheel marathon", "A hamster runs all night", True, 0.5),
    ref(5, "Parrot sings opera", "A parrot sings", True, COMPACT_MIN_SIMILARITY - 0.05),
]


def test_the_compact_form_shows_few_short_references_close_to_the_query():
    popcorn = PromptTemplates.packaged_for("popcorn")
    text = popcorn.pe(QUERY, REFS, form="compact")[-1]["content"]
    # What the two nearest popular videos and the nearest unpopular one show, in a few words.
    assert "A kitten rolls across the kitchen floor" in text
    assert "A cover" in text  # no caption: the cover description
    assert "A puppy falls off a skateboard into a…" in text  # eight words at most
    assert "hamster" not in text  # two popular ones at most
    assert "parrot" not in text  # too far from the query
    # No titles: the embedded model copied a shown title as its own (issue 17's benchmark).
    assert "Kitten tries a skateboard" not in text and "Puppy skate fail" not in text
    assert "step" not in text.lower() and "reasoning" not in text  # no steps to talk back
    assert text.rstrip().endswith(QUERY)  # the query last, where a small model looks
    full = popcorn.pe(QUERY, REFS, form="fitted")[-1]["content"]
    assert len(text) < len(full) / 2 and "Hamster wheel" in full
    nothing_close = popcorn.pe(QUERY, REFS[4:], form="compact")[-1]["content"]
    assert "parrot" not in nothing_close and "loved" not in nothing_close
    only_unpopular = popcorn.pe(QUERY, REFS[1:2], form="compact")[-1]["content"]
    assert "skipped" in only_unpopular and "Videos viewers loved" not in only_unpopular


def test_the_embedded_model_gets_the_compact_form_and_a_large_one_the_full(
    tmp_path: Path, indexed_corpus: Path, smollm2: Path
):
    pe = PESettings(refs=10, corpus=indexed_corpus)
    small = Generator("embedded", out=tmp_path, pe=pe)
    assert small.llm.size == "small"  # type: ignore[attr-defined]
    assert small.form == "compact"
    prompt = small.prompt("My puppy learns to fetch a ball")
    assert prompt.form == "compact" and prompt.shown is not None and prompt.shown <= 3
    assert prompt.schema is not None and "reasoning" not in prompt.schema["properties"]
    assert small.key_inputs(QUERY)["pe_form"] == "compact"

    api = Generator("openai:m", out=tmp_path, pe=pe, options=LLMOptions(base_url="http://x/v1"))
    assert api.form == "fitted" and "pe_form" not in api.key_inputs(QUERY)
    assert api.prompt("My puppy learns to fetch a ball").schema["properties"]["reasoning"]

    # A GGUF file of 3 GiB (sparse: no disk used) is a large model, unless its context is short.
    big = tmp_path / "big.gguf"
    with big.open("wb") as f:
        f.write(b"GGUF")
        f.truncate(3 * 2**30)
    large = Generator(f"gguf:{big}", out=tmp_path, pe=pe)
    assert large.llm.size == "large" and large.form == "fitted"  # type: ignore[attr-defined]
    short = Generator(f"gguf:{big}", out=tmp_path, pe=pe, options=LLMOptions(n_ctx=2048))
    assert short.form == "compact"
    # The paper profile keeps its full references whatever the model.
    assert Generator("embedded", out=tmp_path, pe=pe, profile=PAPER).form == "full"


# --- the embedded model ------------------------------------------------------------------------


@pytest.mark.slow
def test_the_embedded_model_writes_the_title_first_and_is_gated(tmp_path: Path):
    result = Generator("embedded", out=tmp_path).generate(QUERY)
    attempts = transcript(result.run_dir)["attempts"]
    # The grammar keeps the schema's order: the title first, right after the query.
    assert all(a["raw"].lstrip("{ \n").startswith('"title"') for a in attempts)
    gate = manifest(result.run_dir)["stages"]["gate"]
    assert gate["ok"] and gate["scores"]["relevance"] >= GateSettings().relevance_min
    assert len(attempts) == len(gate["attempts"]) and gate["attempts"][-1] == "ok"


@pytest.mark.slow
def test_embedded_pe_uses_the_compact_form_and_records_it(tmp_path: Path, indexed_corpus: Path):
    gen = Generator("embedded", out=tmp_path, pe=PESettings(refs=10, corpus=indexed_corpus))
    result = gen.generate("My puppy learns to fetch a ball")
    record = manifest(result.run_dir)
    assert record["stages"]["pe"]["form"] == "compact" and record["stages"]["pe"]["shown"] <= 3
    assert record["stages"]["gate"]["ok"] is True
    sent = transcript(result.run_dir)["attempts"][0]["messages"][-1]["content"]
    assert "<references>" not in sent and "7." not in sent
