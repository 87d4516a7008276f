"""The script parser: what it recovers from messy answers, and what it refuses."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from popcorn.errors import ScriptParseError
from popcorn.writer.parser import parse_script
from popcorn.writer.prompts import EXAMPLE_SCRIPT

GOOD = {
    "title": "Kitten Skateboards the Half-Pipe",
    "cover_prompt": "A fluffy orange kitten on a tiny skateboard at a sunny skate park, wide angle",
    "video_prompt": "The kitten pushes off, rolls down the ramp and lands a wobbly ollie",
}


def parse(text: str):
    return parse_script(text, EXAMPLE_SCRIPT).script


def assert_good(script) -> None:
    assert script.title == GOOD["title"]
    assert script.cover_prompt == GOOD["cover_prompt"]
    assert script.video_prompt == GOOD["video_prompt"]


def test_plain_json():
    assert_good(parse(json.dumps(GOOD)))


def test_think_block_with_braces_is_ignored():
    text = (
        '<think>The user wants {fun}. Maybe {"title": "draft"} ... let me think } more'
        "</think>\n" + json.dumps(GOOD)
    )
    answer = parse_script(text, EXAMPLE_SCRIPT)
    assert_good(answer.script)
    assert "let me think" in answer.reasoning


def test_closing_think_tag_without_opening_tag():
    text = "Okay, the idea is cute {maybe}.\n</think>\n\n" + json.dumps(GOOD)
    assert_good(parse(text))


def test_unclosed_think_block_is_truncation():
    with pytest.raises(ScriptParseError) as err:
        parse('<think>I will write {"title": "x"')
    assert err.value.reason == "truncated"


def test_code_fence_and_prose_around():
    text = "Sure! Here is your script:\n```json\n" + json.dumps(GOOD, indent=2) + "\n```\nEnjoy!"
    assert_good(parse(text))


def test_last_complete_candidate_wins():
    draft = dict(GOOD, title="First Draft Title")
    text = f"Draft:\n{json.dumps(draft)}\nFinal answer:\n{json.dumps(GOOD)}"
    assert_good(parse(text))


def test_trailing_commas_and_single_quotes():
    text = (
        f"{{'title': '{GOOD['title']}', "
        f"'cover_prompt': '{GOOD['cover_prompt']}',\n"
        f"'video_prompt': '{GOOD['video_prompt']}',\n}}"
    )
    assert_good(parse(text))


def test_apostrophes_inside_single_quoted_strings():
    text = (
        "{'title': 'The Cat's Big Day', 'cover_prompt': 'a cat's paw on a board, bright', "
        "'video_prompt': 'the cat's first ride down a ramp, handheld camera'}"
    )
    script = parse(text)
    assert script.title == "The Cat's Big Day"
    assert script.video_prompt.startswith("the cat's first ride")


def test_unescaped_inner_double_quotes():
    text = (
        '{"title": "The "Purrfect" Ollie", "cover_prompt": "a cat on a board, sunny", '
        '"video_prompt": "the cat says "wow" and rolls away, slow motion"}'
    )
    script = parse(text)
    assert script.title == 'The "Purrfect" Ollie'
    assert script.video_prompt == 'the cat says "wow" and rolls away, slow motion'


def test_raw_newlines_inside_strings():
    text = (
        '{"title": "Kitten Skateboards the Half-Pipe",\n"cover_prompt": "line one\nline two",\n'
        '"video_prompt": "first beat\nsecond beat"}'
    )
    script = parse(text)
    assert script.cover_prompt == "line one\nline two"


@pytest.mark.parametrize(
    ("title_key", "cover_key", "video_key"),
    [
        ("Title", "Cover Prompt", "Video Prompt"),
        ("title", "coverPrompt", "videoPrompt"),
        ("TITLE", "cover-image-prompt", "video_prompt"),
        ("Video Title", "thumbnail_prompt", "clip_prompt"),
    ],
)
def test_key_spellings(title_key, cover_key, video_key):
    obj = {
        title_key: GOOD["title"],
        cover_key: GOOD["cover_prompt"],
        video_key: GOOD["video_prompt"],
    }
    assert_good(parse(json.dumps(obj)))


def test_unquoted_keys_and_python_literals():
    text = (
        f'{{title: "{GOOD["title"]}", cover_prompt: "{GOOD["cover_prompt"]}", '
        f'video_prompt: "{GOOD["video_prompt"]}", final: True, extra: None}}'
    )
    assert_good(parse(text))


def test_object_nested_under_one_key():
    assert_good(parse(json.dumps({"script": GOOD})))
    assert_good(parse(json.dumps({"response": {"micro_video": GOOD}})))


def test_markdown_sections_without_json():
    text = f"""Here's my idea.

## Title
{GOOD["title"]}

## Cover Prompt
{GOOD["cover_prompt"]}

## Video Prompt
{GOOD["video_prompt"]}
"""
    assert_good(parse(text))


def test_bold_labels_on_one_line():
    text = (
        f"**Title:** {GOOD['title']}\n**Cover prompt:** {GOOD['cover_prompt']}\n"
        f"**Video prompt:** {GOOD['video_prompt']}\n"
    )
    assert_good(parse(text))


def test_list_values_are_joined():
    obj = dict(GOOD, video_prompt=["The kitten pushes off,", "then lands."])
    assert parse(json.dumps(obj)).video_prompt == "The kitten pushes off, then lands."


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        (json.dumps(EXAMPLE_SCRIPT), "echoed_example"),
        (json.dumps(dict(GOOD, video_prompt=EXAMPLE_SCRIPT["video_prompt"])), "echoed_example"),
        (
            json.dumps({"title": GOOD["title"], "cover_prompt": GOOD["cover_prompt"]}),
            "missing_field",
        ),
        (json.dumps(dict(GOOD, video_prompt="   ")), "empty_field"),
        (json.dumps(dict(GOOD, title="<catchy title>")), "placeholder"),
        (json.dumps(dict(GOOD, title="POPULAR")), "placeholder"),
        ('{"title": "Kitten", "cover_prompt": "a kitten on a board", "video_pro', "truncated"),
        ("I'm sorry, but I can't help with that request.", "refusal"),
        ("As an AI language model I cannot create videos.", "refusal"),
        ("A cat rides a skateboard. It is fun.", "no_script"),
        ("{not: json: at all}", "bad_json"),
    ],
)
def test_rejections_name_their_reason(text, reason):
    with pytest.raises(ScriptParseError) as err:
        parse(text)
    assert err.value.reason == reason
    assert str(err.value)


def test_echo_then_real_answer_takes_the_real_one():
    text = json.dumps(GOOD) + "\nFor reference the example was:\n" + json.dumps(EXAMPLE_SCRIPT)
    assert_good(parse(text))


def test_title_whitespace_is_collapsed_but_length_kept():
    long_title = "An Extraordinarily Long Title About A Cat That Skates All Day Long"
    script = parse(json.dumps(dict(GOOD, title=f"  {long_title}\n")))
    assert script.title == long_title  # the generator, not the parser, deals with length


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=400))
def test_never_crashes_on_arbitrary_text(text):
    try:
        parse(text)
    except ScriptParseError as err:
        assert err.reason


_json_chars = st.sampled_from([*list("{}[]\"':,\n\\ "), "<think>", "</think>", "title", "```"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_json_chars, st.text(max_size=5)), max_size=80).map("".join))
def test_never_crashes_on_json_like_noise(text):
    try:
        parse(text)
    except ScriptParseError as err:
        assert err.reason


@settings(max_examples=100, deadline=None)
@given(
    st.fixed_dictionaries(
        {f: st.text(min_size=3, max_size=60).filter(lambda s: s.strip()) for f in GOOD}
    ),
    st.text(max_size=40),
    st.text(max_size=40),
)
def test_any_valid_object_in_prose_round_trips(obj, before, after):
    before = before.replace("{", "(").replace("}", ")")
    after = after.replace("{", "(").replace("}", ")")
    text = f"{before}\n{json.dumps(obj)}\n{after}"
    try:
        script = parse(text)
    except ScriptParseError as err:
        # Only the content-based rejections may apply to arbitrary generated values.
        assert err.reason in {"placeholder", "echoed_example", "empty_field"}
        return
    assert script.cover_prompt == _normalised(obj["cover_prompt"])
    assert script.video_prompt == _normalised(obj["video_prompt"])
    assert script.title == " ".join(_normalised(obj["title"]).split())


def _normalised(value: str) -> str:
    """What the parser promises to keep of a field: the text minus wrapping marks and
    trailing JSON debris."""
    from popcorn.writer.parser import _without_debris

    text = _without_debris(value.strip()).strip("*_`").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ('A skater lands a kickflip (2014)", [] {', "A skater lands a kickflip (2014)"),
        ("A skater lands a kickflip, }", "A skater lands a kickflip"),
        ('A sign reads "OPEN"', 'A sign reads "OPEN"'),  # a quote alone is the text's own
    ],
)
def test_trailing_json_debris_never_reaches_a_prompt(value: str, kept: str):
    answer = json.dumps({**GOOD, "video_prompt": value})
    assert parse_script(answer).script.video_prompt == kept
