"""How a profile handles an unusable answer: ``paper`` as the LLMPopcorn study did (one
attempt, an echoed example or a long title kept as it came and only flagged), ``popcorn`` acting
on it (fresh attempts, a rejected echo, a title asked again and cut). A scripted
:class:`~popcorn.testing.mockllm.MockLLM` plays exactly the answers each test needs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from popcorn.errors import GenerationError
from popcorn.profiles import PAPER, POPCORN
from popcorn.runs.keys import job_key
from popcorn.script import TITLE_MAX_CHARS
from popcorn.testing.mockllm import MockLLM
from popcorn.writer.gate import GateSettings
from popcorn.writer.prompts import PromptTemplates
from popcorn.writer.writer import Generator

QUERY = "A cat learning to skateboard"
GOOD = json.dumps(
    {
        "title": "Cat Rides Skateboard Down the Hill",
        "cover_prompt": "A tabby cat standing on a skateboard on a sunny street",
        "video_prompt": "A tabby cat rolls down a gentle slope on a skateboard, tail"
        " up, low tracking shot",
    }
)
LONG_TITLE = "A Tabby Cat Learns To Ride A Skateboard Down The Longest Hill In Town"
LONG = json.dumps({**json.loads(GOOD), "title": LONG_TITLE})


def writer(tmp_path: Path, profile, answers: list[str], **settings) -> tuple[Generator, MockLLM]:
    llm = MockLLM("mock:scripted", answers)
    # The gate only records under paper; off here too for popcorn, so that what acts on the
    # answer is the profile's own handling, not the gate.
    gen = Generator(
        llm, out=tmp_path, profile=profile, gate=GateSettings(enabled=False), **settings
    )
    return gen, llm


def test_paper_makes_one_attempt_and_popcorn_tries_the_next_seed(tmp_path: Path):
    gen, llm = writer(tmp_path / "paper", PAPER, ["I would film a cat, probably.", GOOD])
    with pytest.raises(GenerationError, match="after 1 attempt"):
        gen.generate(QUERY)
    assert llm.calls == 1

    gen, llm = writer(tmp_path / "popcorn", POPCORN, ["I would film a cat, probably.", GOOD])
    result = gen.generate(QUERY)
    assert llm.calls == 2 and result.script.title == json.loads(GOOD)["title"]
    assert PAPER.attempts == 1 and POPCORN.attempts == 3


def test_paper_keeps_a_long_title_as_written_and_only_flags_it(tmp_path: Path):
    gen, llm = writer(tmp_path / "paper", PAPER, [LONG])
    script = gen.generate(QUERY).script
    assert llm.calls == 1  # no extra turn asking for a shorter title
    assert script.title == LONG_TITLE and len(script.title) > TITLE_MAX_CHARS
    assert "title_over_limit" in script.flags and "title_shortened" not in script.flags
    manifest = json.loads((gen.generate(QUERY).run_dir / "manifest.json").read_text())
    assert manifest["stages"]["answer"] == {"flags": ["title_over_limit"]}

    gen, llm = writer(tmp_path / "popcorn", POPCORN, [LONG])
    script = gen.generate(QUERY).script
    assert llm.calls == 2  # asked again; the stand-in repeats itself, so the title is cut
    assert len(script.title) <= TITLE_MAX_CHARS and "title_shortened" in script.flags


# What llama.cpp's grammar makes of a long title: the string closed at the schema's maxLength.
CUT_TITLE = "Snowboarding down a powder slope, snowboarders' sk"


def test_a_title_the_schema_cut_off_is_asked_again_then_cut_before_the_broken_word(
    tmp_path: Path,
):
    assert len(CUT_TITLE) == TITLE_MAX_CHARS
    cut = json.dumps({**json.loads(GOOD), "title": CUT_TITLE})
    gen, llm = writer(tmp_path / "again", POPCORN, [cut, GOOD])
    result = gen.generate(QUERY)
    assert llm.calls == 2 and result.script.title == json.loads(GOOD)["title"]
    transcript = json.loads((result.run_dir / "transcript.json").read_text())
    asked = transcript["attempts"][0]["title_retry"]["messages"][-1]["content"]
    assert "was cut off at the limit of 50 characters" in asked

    gen, llm = writer(tmp_path / "cut", POPCORN, [cut])  # the answer is cut again
    script = gen.generate(QUERY).script
    assert script.title == "Snowboarding down a powder slope, snowboarders'"
    assert "title_shortened" in script.flags
    # Without a schema nothing was cut: a 50-character title is a title (paper sends none).
    gen, llm = writer(tmp_path / "paper", PAPER, [cut])
    assert gen.generate(QUERY).script.title == CUT_TITLE and llm.calls == 1


def test_paper_keeps_an_echoed_example_flagged_where_rejecting_copies_fails_it(tmp_path: Path):
    example = PromptTemplates.packaged_for("paper").example_script
    assert example is not None
    echo = json.dumps(dict(example))
    gen, _ = writer(tmp_path / "paper", PAPER, [echo])
    script = gen.generate(QUERY).script
    assert script.title == example["title"] and "echoed_example" in script.flags

    strict = replace(PAPER, reject_copies=True)
    gen, _ = writer(tmp_path / "strict", strict, [echo])
    with pytest.raises(GenerationError) as failed:
        gen.generate(QUERY)
    assert failed.value.reason == "echoed_example"


def test_a_failure_can_be_kept_as_a_blank_script_under_its_own_key(tmp_path: Path):
    gen, _ = writer(tmp_path, PAPER, ["I would film a cat, probably."])
    failing_key = job_key(gen.key_inputs(QUERY))
    gen.failures = "blank"
    assert job_key(gen.key_inputs(QUERY)) != failing_key  # a failed run is never reused
    result = gen.generate(QUERY)
    assert (result.script.title, result.script.cover_prompt, result.script.video_prompt) == (
        "",
        "",
        "",
    )
    assert result.script.flags == ("blank", "failed:no_script")
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["error"]["reason"] == "no_script"
    assert gen.generate(QUERY).cached  # done: a rerun finds it


def test_the_profiles_handling_is_part_of_paper_keys_only(tmp_path: Path):
    gen, _ = writer(tmp_path, PAPER, [GOOD])
    conditions = gen.key_inputs(QUERY)["profile"]
    assert conditions["reject_copies"] is False and conditions["fix_titles"] is False
    gen, _ = writer(tmp_path, POPCORN, [GOOD])
    assert "profile" not in gen.key_inputs(QUERY)


def test_the_profile_sets_the_attempts_a_user_leaves_unset():
    from popcorn.config import load_settings

    assert load_settings(flags={"run": {"profile": "paper"}}).llm.attempts == 1
    assert load_settings(flags={"run": {"profile": "popcorn"}}).llm.attempts == 3
    chosen = {"run": {"profile": "paper"}, "llm": {"attempts": 2}}
    assert load_settings(flags=chosen).llm.attempts == 2  # an explicit value wins
