"""Titles of their own and video prompts that describe a shot (issue 25): the measures, and what
the writer does with them under each profile, with drafts and without."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from popcorn.profiles import PAPER, POPCORN
from popcorn.testing.mockllm import MockLLM
from popcorn.writer.craft import check_shot, restates
from popcorn.writer.drafts import SEED_STRIDE
from popcorn.writer.gate import GateSettings, gate_embedder, judge
from popcorn.writer.writer import Generator

QUERY = "A golden retriever learning to surf"
GOOD = {
    "title": "Surf's Up, Pup",
    "cover_prompt": "A golden retriever on a yellow surfboard riding a small wave, bright sun",
    "video_prompt": "Low-angle tracking shot of a golden retriever wobbling on a surfboard as a "
    "small wave carries it to the shore. Bright midday sun.",
}
RESTATED = {**GOOD, "title": "A Golden Retriever Learning to Surf"}
NOT_A_SHOT = {
    **GOOD,
    "video_prompt": "Your dog has the ability to learn new skills. In this video you will see "
    "your dog learning how to surf.",
}


@pytest.mark.parametrize(
    ("title", "restated"),
    [
        ("A Golden Retriever Learning to Surf", True),  # case
        ("Golden retriever learns to surf!", True),  # word endings, punctuation
        ("Watch a golden retriever learning to surf", True),  # the query plus one word
        ("Golden Retriever Surfing", True),  # most of the query's words, nothing new
        ("Surf's Up, Pup", False),
        ("Retriever", False),  # a short title cut from the idea is a title
        ("The Dog Who Rode a Wave", False),
    ],
)
def test_a_title_restates_the_query_when_it_is_the_query_again(title: str, restated: bool):
    assert restates(QUERY, title) is restated


def test_near_identical_embeddings_restate_whatever_the_words():
    assert restates(QUERY, "Surfing lessons for a goldie", cosine=0.93)
    assert not restates(QUERY, "Surfing lessons for a goldie", cosine=0.6)


@pytest.mark.parametrize(
    ("prompt", "missing"),
    [
        (GOOD["video_prompt"], []),
        ("Close-up of an old man's hands scattering breadcrumbs. Slow push-in, warm light.", []),
        ("Hands drop fresh noodles into boiling broth, steam rises, slow push-in", []),
        # Read from the embedded model's answers before issue 25:
        ("A Golden Retriever learning to surf", ["no camera, framing or light"]),
        ("The magic of light and shadow", ["no subject", "no action"]),
        (NOT_A_SHOT["video_prompt"], ["no camera, framing or light", "talks to the viewer"]),
        (
            "The best time I've ever had: my grandma walking me to the beach, filmed in warm "
            "light.",
            ["talks to the viewer"],
        ),
        (
            "A dog surfs. The camera tracks it. The sun sets. A crowd cheers. It lands.",
            ["5 sentences"],
        ),
    ],
)
def test_a_video_prompt_is_a_shot_when_it_names_subject_action_and_camera(
    prompt: str, missing: list[str]
):
    found = check_shot(prompt)
    assert found.missing() == missing
    assert found.ok is (not missing)


def test_the_gate_records_both_measures_and_ranks_by_them():
    embedder = gate_embedder()
    assert embedder is not None
    good = judge(_script(GOOD), QUERY, "", GateSettings(), embedder=embedder)
    restated = judge(_script(RESTATED), QUERY, "", GateSettings(), embedder=embedder)
    talks = judge(_script(NOT_A_SHOT), QUERY, "", GateSettings(), embedder=embedder)
    assert good.ok and good.craft == () and good.scores["shot"] == 1.0
    assert restated.ok and restated.craft == ("restated_title",)
    assert restated.scores["restated"] == 1.0 and restated.scores["title_relevance"] > 0.9
    assert talks.craft == ("not_a_shot",)
    assert good.rank() > restated.rank() and good.rank() > talks.rank()
    # Relevance stays: a good shot of something else is still rejected as off the query.
    other = judge(_script(GOOD), "Tax tips for freelancers", "", GateSettings(), embedder=embedder)
    assert other.reason == "off_topic"


def test_popcorn_asks_again_for_a_restated_title_and_keeps_the_next(tmp_path: Path):
    run = _write(tmp_path, [RESTATED, GOOD])
    assert run["script"]["title"] == GOOD["title"] and run["manifest"]["attempts"] == 2
    first, second = run["transcript"]["attempts"]
    assert first["outcome"] == {"ok": False, "reason": "restated_title"}
    assert second["outcome"] == {"ok": True}


def test_popcorn_keeps_the_best_answer_flagged_when_every_attempt_restates(tmp_path: Path):
    run = _write(tmp_path, [NOT_A_SHOT, RESTATED])
    # One more attempt for craft (of 3); the restated one with a shot ranks above the one that
    # talks to the viewer.
    assert run["manifest"]["status"] == "done" and run["manifest"]["attempts"] == 2
    assert run["script"]["title"] == RESTATED["title"]
    assert run["script"]["flags"] == ["restated_title"]


def test_paper_records_the_measures_and_never_asks_again(tmp_path: Path):
    run = _write(tmp_path, [RESTATED, GOOD], profile=PAPER)
    assert run["script"]["title"] == RESTATED["title"] and run["manifest"]["attempts"] == 1
    assert run["manifest"]["stages"]["gate"]["craft"] == ["restated_title"]
    assert run["script"].get("flags", []) == []


def test_drafts_keep_the_best_of_one_prompt(tmp_path: Path):
    run = _write(tmp_path, [NOT_A_SHOT, RESTATED, GOOD], drafts=3)
    assert run["script"]["title"] == GOOD["title"] and run["manifest"]["attempts"] == 1
    entries = run["transcript"]["attempts"]
    assert [e["draft"] for e in entries] == [1, 2, 3]
    first = entries[0]["seed"]
    assert [e["seed"] for e in entries] == [first, first + SEED_STRIDE, first + 2 * SEED_STRIDE]
    assert [e["outcome"]["ok"] for e in entries] == [False, False, True]
    assert entries[0]["outcome"]["reason"] == "draft_not_kept"
    assert run["manifest"]["usage"]["calls"] == 3


def test_drafting_stops_at_the_first_draft_that_needs_no_other(tmp_path: Path):
    run = _write(tmp_path, [RESTATED, GOOD, NOT_A_SHOT], drafts=3)
    assert run["script"]["title"] == GOOD["title"] and run["manifest"]["usage"]["calls"] == 2
    assert [e["draft"] for e in run["transcript"]["attempts"]] == [1, 2]


def test_a_draft_time_cap_makes_the_first_draft_only(tmp_path: Path):
    run = _write(tmp_path, [NOT_A_SHOT, RESTATED, GOOD], drafts=3, draft_seconds=1e-9)
    entries = run["transcript"]["attempts"]
    assert [(e["attempt"], e["draft"]) for e in entries] == [(1, 1)]
    assert run["script"]["flags"] == ["not_a_shot"]


def test_with_several_drafts_no_attempt_goes_to_craft(tmp_path: Path):
    # The drafts are the second chances: the best of them is kept, flagged, and the next
    # attempt (its own seed) is left for an answer that is unusable.
    off = {**NOT_A_SHOT, "title": "Surf's Up, Pup"}
    run = _write(tmp_path, [off, {**off, "video_prompt": "A dog near the sea at dawn"}], drafts=2)
    assert run["manifest"]["attempts"] == 1 and run["manifest"]["usage"]["calls"] == 2
    assert run["script"]["flags"] == ["not_a_shot"]
    unusable = {**GOOD, "video_prompt": ""}
    run = _write(tmp_path / "again", [unusable, unusable, GOOD], drafts=2)
    assert run["manifest"]["attempts"] == 2 and run["script"]["title"] == GOOD["title"]


def test_a_restated_title_kept_from_drafts_is_rewritten_by_a_title_step(tmp_path: Path):
    restated_again = {"title": "Golden retriever learns to surf!"}
    own = {"title": "Surf's Up, Pup"}
    run = _write(tmp_path, [RESTATED, RESTATED, restated_again, own], drafts=2)
    assert run["script"]["title"] == "Surf's Up, Pup" and run["script"].get("flags", []) == []
    assert run["script"]["video_prompt"] == RESTATED["video_prompt"]  # the rest is the draft's
    assert run["manifest"]["usage"]["calls"] == 4 and run["manifest"]["attempts"] == 1
    assert run["manifest"]["stages"]["gate"]["craft"] == []
    kept = next(e for e in run["transcript"]["attempts"] if e["outcome"]["ok"])
    step = kept["title_step"]
    assert step["kept"] == "Surf's Up, Pup"
    assert step["raw"] == [json.dumps(restated_again), json.dumps(own)]
    # A fresh title-only request, not a reply to the model's own answer.
    assert "Write only a title" in step["messages"][0]["content"]
    assert [m["role"] for m in kept["messages"]][-1] == "user"

    # No title of its own among the step's drafts: the draft is kept as it was, flagged.
    run = _write(tmp_path / "kept", [RESTATED, RESTATED, restated_again], drafts=2)
    assert run["script"]["title"] == RESTATED["title"]
    assert run["script"]["flags"] == ["restated_title"]
    step = next(e for e in run["transcript"]["attempts"] if e["outcome"]["ok"])["title_step"]
    assert step["kept"] is None and len(step["raw"]) == 2


def test_title_of_reads_a_title_only_answer():
    from popcorn.writer.parser import title_of

    assert title_of('{"title": "Surf\'s Up, Pup"}') == "Surf's Up, Pup"
    assert title_of('Sure! {"Title": " Surf  Pup "}') == "Surf Pup"
    assert title_of('{"title": "..."}') is None and title_of("no json") is None
    assert title_of('{"title": 3}') is None


def test_a_small_model_gets_the_profiles_temperature_unless_one_is_set(tmp_path: Path):
    from popcorn.llm.base import Decoding

    small = MockLLM("mock:small")
    small.size = "small"  # type: ignore[attr-defined]
    large = MockLLM("mock:large")
    assert POPCORN.small_temperature == 0.3 and PAPER.small_temperature is None
    assert Generator(small, out=tmp_path).decoding.temperature == 0.3
    assert Generator(small, out=tmp_path, profile=PAPER).decoding.temperature == 0.7
    assert Generator(large, out=tmp_path).decoding.temperature == 0.7
    set_here = Generator(small, out=tmp_path, decoding=Decoding(seed=3), temperature=0.9)
    assert set_here.decoding.temperature == 0.9 and set_here.decoding.seed == 3
    # The temperature is in the run's key: a run made at another one is not reused.
    cold = Generator(small, out=tmp_path).key_inputs(QUERY)
    warm = Generator(small, out=tmp_path, temperature=0.7).key_inputs(QUERY)
    assert cold != warm


def test_the_temperature_setting_is_unset_unless_given(monkeypatch, tmp_path: Path):
    from popcorn.config import load_settings
    from popcorn.pipeline import Pipeline

    monkeypatch.chdir(tmp_path)  # no popcorn.toml
    bare = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    assert load_settings(environ=bare).decoding.temperature is None
    small = MockLLM("mock:small")
    small.size = "small"  # type: ignore[attr-defined]
    flags = {"decoding": {"temperature": 0.8}, "run": {"out": str(tmp_path / "runs")}}
    for given, used in ((None, 0.3), (0.8, 0.8)):
        flags["decoding"]["temperature"] = given
        settings = load_settings(flags=flags, environ=bare)
        assert Pipeline(settings, llm=small).generator.decoding.temperature == used
    env = load_settings(environ={**bare, "POPCORN_DECODING_TEMPERATURE": "0.5"})
    assert env.decoding.temperature == 0.5


def test_drafts_enter_the_run_key_and_one_draft_keeps_the_old_key(tmp_path: Path):
    llm = MockLLM("mock:keys")
    one = Generator(llm, out=tmp_path).key_inputs(QUERY)
    three = Generator(llm, out=tmp_path, drafts=3).key_inputs(QUERY)
    assert "drafts" not in one and three["drafts"] == 3
    assert "small_examples" not in one  # only small models are shown the worked examples


def _script(fields: dict[str, str]):
    from popcorn.script import Script

    return Script(fields["title"], fields["cover_prompt"], fields["video_prompt"])


def _write(
    tmp_path: Path,
    answers: list[dict[str, str]],
    profile=POPCORN,
    **settings,
) -> dict:
    llm = MockLLM("mock:scripted", [json.dumps(a) for a in answers])
    gate = GateSettings(enabled=profile.gate)
    result = Generator(llm, out=tmp_path, profile=profile, gate=gate, **settings).generate(QUERY)
    folder = result.run_dir
    return {
        name: json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
        for name in ("manifest", "transcript")
    } | {"script": json.loads((folder / "script.json").read_text())["script"]}


@pytest.mark.slow
def test_llamacpp_drafts_share_one_prompt_and_the_first_is_the_single_answer():
    from popcorn.llm.base import Decoding, LLMOptions
    from popcorn.llm.registry import create_llm
    from popcorn.writer.drafts import decodings
    from popcorn.writer.prompts import PromptTemplates

    llm = create_llm("embedded", LLMOptions())
    messages = PromptTemplates.packaged_for("popcorn").basic(QUERY, examples=True)
    decoding = Decoding(max_tokens=40, seed=5)
    single = llm.complete(messages, decoding)
    group = llm.complete_drafts(messages, decodings(decoding, 2))  # type: ignore[attr-defined]
    assert group[0].text == single.text  # one draft is the writer without drafts
    assert group[1].text != group[0].text  # its own seed
    other = PromptTemplates.packaged_for("popcorn").basic("The quiet before a storm", examples=True)
    model = llm.model  # type: ignore[attr-defined]
    evaluated: list[int] = []
    real_eval = model.eval

    def counting_eval(tokens):
        evaluated.append(len(tokens))
        return real_eval(tokens)

    model.eval = counting_eval
    try:
        between = llm.complete(other, decoding)
    finally:
        del model.eval
    # The instructions and worked examples stayed in the KV cache: only the new query's own
    # message (and the answer) was evaluated.
    assert between.prompt_tokens and sum(evaluated) < between.prompt_tokens / 3
    again = llm.complete_drafts(messages, decodings(decoding, 2))  # type: ignore[attr-defined]
    assert [c.text for c in again] == [c.text for c in group]  # the same whatever ran before
