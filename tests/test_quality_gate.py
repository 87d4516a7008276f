"""The quality gate on recorded bad answers of the embedded model (issue 17) and a good one."""

from __future__ import annotations

import pytest

from popcorn.script import Script
from popcorn.writer.gate import GateSettings, Verdict, echo_share, gate_embedder, judge

INSTRUCTIONS_PE = (
    "Create a micro-video for this idea. Think it through step by step: 1. Analyse what the "
    "popular videos do that draws people in, and why the unpopular ones fail. 2. Brainstorm an "
    "original idea for the query: learn from what works, copy nothing. 3. Draft a title, a "
    "cover prompt and a video prompt. 4. Check that the draft fits the query. 5. Write the full "
    "version. 6. Check it again against what makes popular videos work. 7. Refine it. Then "
    "answer with a single JSON object with the keys reasoning, title (one line, at most 50 "
    "characters), cover_prompt and video_prompt."
)
EXAMPLE = {
    "title": "The Lighthouse's Final Blink",
    "cover_prompt": "An old lighthouse keeper in a wool coat holding a brass lantern at the top "
    "of a lighthouse during a violent storm",
    "video_prompt": "Close-up of a weathered hand turning the lighthouse lamp off for the last "
    "time; the beam sweeps across the stormy sea",
}
EXAMPLE_QUERY = "A lighthouse keeper's last night on duty"
GOOD_PROMPT = "A tabby cat pushes off on a skateboard, wobbles, then rolls down a sunny ramp"


@pytest.fixture(scope="module")
def embedder():
    found = gate_embedder()
    assert found is not None, "the pe extra (packaged MiniLM) is part of the test set-up"
    return found


def verdict(title: str, query: str, embedder, video: str = GOOD_PROMPT) -> Verdict:
    script = Script(title, "A bright cover with a clear subject and bold colours", video)
    prompt = f"{INSTRUCTIONS_PE} {' '.join(EXAMPLE.values())}"
    return judge(script, query, prompt, GateSettings(), EXAMPLE, EXAMPLE_QUERY, embedder)


@pytest.mark.parametrize(
    ("title", "reason"),
    [
        ("This answer has been provided for your reference.", "meta"),
        ("Learn from what works and copy nothing.", "echo"),
        ("The title is a single line with 10 words, at most", "meta"),
        ("[category] - [variable]*: ...", "meta"),
        ("Refining your idea", "meta"),
    ],
)
def test_recorded_answers_that_talk_back_fail(title: str, reason: str, embedder):
    found = verdict(title, "A cat learning to skateboard", embedder)
    assert found.reason == reason, found


def test_the_worked_example_leaking_into_another_query_fails(embedder):
    found = verdict("The Lighthouse's Final Blink", "One-Punch Man's funniest fights", embedder)
    assert found.reason == "example" and "lighthouse" in found.detail


def test_a_script_about_something_else_is_off_topic(embedder):
    found = verdict(
        "Quantum Chips Explained",
        "How to cook ramen at home",
        embedder,
        video="A silicon wafer rotates under blue light while a qubit diagram glows",
    )
    assert found.reason == "off_topic" and found.scores["relevance"] < 0.2


def test_a_good_answer_passes(embedder):
    found = verdict("Kitten Shreds the Skate Park", "A cat learning to skateboard", embedder)
    assert found.ok, found
    assert found.scores["relevance"] > 0.45 and found.scores["echo"] < 0.1


def test_without_an_embedder_relevance_is_skipped_with_a_note():
    found = verdict("Kitten Shreds the Skate Park", "A cat learning to skateboard", None)
    assert found.ok and found.scores["relevance"] is None
    assert "not checked" in found.notes[0]


def test_the_querys_own_words_are_not_an_echo():
    query = "Create a micro-video for this idea about cooking"
    assert echo_share("Create a micro-video for this idea about cooking", query, query) == 0.0
