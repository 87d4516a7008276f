"""The script stage under each profile: prompt templates as files, what a request carries.

``paper`` asks with the study's structure and substance (a system message that only states the
task, the query, the requirements, one plain inline example that is itself the JSON template;
PE adds a popular block, then an unpopular block, and seven steps reasoned in free text), sends
no schema anywhere, sends API models only the model and the messages, and loads 4-bit models
as fp4. ``popcorn``'s wording is pinned below: since issue 17 it shows no worked example and
gives small models a compact PE form, so its runs have new keys.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest import FaultProxy
from popcorn.config import load_settings
from popcorn.errors import GenerationError, ScriptParseError, UsageError
from popcorn.llm.base import LLMOptions
from popcorn.pipeline import Pipeline
from popcorn.profiles import PAPER
from popcorn.retrieval.search import Reference
from popcorn.runs.keys import job_key
from popcorn.writer.parser import parse_script
from popcorn.writer.prompts import (
    TEMPLATES,
    PromptTemplates,
    basic_messages,
    format_references,
    pe_messages,
)
from popcorn.writer.writer import Generator

QUERY = "How to cook ramen at home"
SCRIPT = {
    "title": "Ramen in Ten Minutes Flat",
    "cover_prompt": "A steaming bowl of homemade ramen on a wooden table, soft morning light",
    "video_prompt": "Hands drop fresh noodles into boiling broth, steam rises, slow push-in",
}
LONG_CAPTION = "Slurping noodles at midnight " * 20  # 580 characters: more than a fitted field


def ref(rank: int, title: str, cover: str, caption: str, comments: int, popular: bool) -> Reference:
    return Reference(rank, f"v{rank}", title, cover, caption, "Food", comments, popular, 0.9)


def references() -> list[Reference]:
    """Retrieval order mixes the labels: an unpopular video sits between two popular ones."""
    return [
        ref(1, "Midnight ramen hack", "A bowl of ramen", LONG_CAPTION, 1200, True),
        ref(2, "Sad instant noodles $query", "A pale cup", "Too salty", 3, False),
        ref(3, "Dumpling folding", "Hands fold dumplings", "Pleat after pleat", 800, True),
    ]


def generator(tmp_path: Path, proxy: FaultProxy, **kwargs: Any) -> Generator:
    return Generator(
        "openai:m", out=tmp_path / "runs", options=LLMOptions(base_url=proxy.url), **kwargs
    )


def manifest(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "manifest.json").read_text())


# --- popcorn: its wording pinned -------------------------------------------------------------


def test_popcorn_messages_are_pinned_byte_for_byte():
    # The hash of these exact messages (the wording of issue 17: no worked example, and PE's
    # compact form for small models): a different byte anywhere changes every popcorn run's
    # output, so a change here must be deliberate (and gives new job keys by itself).
    old = [
        {"role": "user", "content": "Use $query and ${x} and {title} literally"},
        {"role": "user", "content": "A cat learning to skateboard"},
    ]
    steam = "Steam rises\nfrom noodles " + "x" * 400
    refs = [
        Reference(
            1, "v1", "Ramen in 3 minutes <b>", "A bowl of ramen", steam, "Food", 1200, True, 0.9
        ),
        Reference(2, "v2", "Sad toast $query ${title}", "", "burnt toast", "Food", 3, False, 0.8),
        Reference(3, "v3", "Dumplings", "Hands fold dumplings", "", "Food", 800, True, 0.7),
    ]
    built = {
        "basic": [basic_messages(q) for q in ["A cat learning to skateboard", old[0]["content"]]],
        "pe": pe_messages("Street food at night", refs),
        "pe0": pe_messages("Street food at night", []),
        "compact": pe_messages("Street food at night", refs, form="compact"),
        "compact0": pe_messages("Street food at night", [], form="compact"),
        "fmt": format_references(refs),
    }
    text = json.dumps(built, sort_keys=True, ensure_ascii=False)
    assert hashlib.sha256(text.encode()).hexdigest() == (
        "0d5ce47cd44e2f3167aeeb0f0c9ca64aed0c33a3e0605fd9b60915b0dd5bf4d4"
    )
    # Popcorn's layout: no example exchange, and the query stays literal.
    roles = [m["role"] for m in built["basic"][1]]
    assert roles == ["system", "user"]
    assert "Use $query and ${x} and {title} literally" in built["basic"][1][-1]["content"]


def test_popcorn_run_keys_are_pinned(tmp_path: Path):
    gen = Generator("openai:m", out=tmp_path, options=LLMOptions(base_url="http://127.0.0.1:9/v1"))
    inputs = gen.key_inputs("A cat learning to skateboard")
    assert inputs == {
        "schema": 1,
        "query": "A cat learning to skateboard",
        "mode": "basic",
        "prompt": "basic-c84b941702ea1ed3f932bf33",
        "llm": {
            "spec": "openai:m",
            "provider": "openai-compatible",
            "model": "m",
            "base_url": "http://127.0.0.1:9/v1",
        },
        "decoding": {
            "temperature": 0.7,
            "top_p": 0.9,
            "repetition_penalty": 1.1,
            "seed": 42,
            "max_tokens": 1024,
        },
        # The gate acts on popcorn runs, so its thresholds change which answer is kept.
        "gate": {
            "echo_max": 0.25,
            "relevance_min": 0.3,
            "example_max": 0.0,
            "relevance": "minilm-l6",
        },
    }
    assert job_key(inputs) == "7de830c825e4cec187dba077f5313c0043622bf59d1a029cec1913e65091d807"
    assert PromptTemplates.packaged_for("popcorn").version("pe") == "pe-d7aceb9be316db9fc6156afb"
    # Built the way every entry point builds it, the popcorn profile gives the same key.
    flags = {"llm": {"spec": "openai:m", "base_url": "http://127.0.0.1:9/v1"}}
    pipeline = Pipeline(load_settings(flags=flags), score="never")
    assert pipeline.generator.key_inputs("A cat learning to skateboard") == inputs


def test_popcorn_request_carries_sampling_and_the_schema(tmp_path: Path, fault_proxy):
    fault_proxy.answer_next(json.dumps(SCRIPT))
    result = generator(tmp_path, fault_proxy).generate(QUERY)
    body = fault_proxy.requests[-1]["body"]
    assert body["temperature"] == 0.7 and body["top_p"] == 0.9 and body["seed"] == 42
    assert body["max_tokens"] == 1024 and body["repetition_penalty"] == 1.1
    assert body["response_format"]["json_schema"]["schema"]["required"] == [
        "title",
        "cover_prompt",
        "video_prompt",
    ]
    assert manifest(result.run_dir)["profile"] == "popcorn"


# --- paper: the study's conditions -----------------------------------------------------------


def test_paper_api_request_is_the_model_and_the_messages_only(
    tmp_path: Path, fault_proxy: FaultProxy
):
    settings = fault_proxy.settings(tmp_path / "runs", profile="paper")
    fault_proxy.answer_next("Step 1: ramen videos work when ...\n\n" + json.dumps(SCRIPT))
    result = Pipeline(settings, score="never").script(QUERY)
    assert result.script.title == SCRIPT["title"]
    body = fault_proxy.requests[-1]["body"]
    assert set(body) == {"model", "messages"}
    assert body["model"] == "m"
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    recorded = manifest(result.run_dir)
    assert recorded["profile"] == "paper"
    assert recorded["decoding"]["max_tokens"] == 5000
    assert recorded["llm"]["notes"]["request"].startswith("model and messages only")
    assert recorded["prompt_version"] == PromptTemplates.packaged_for("paper").version("basic")


def test_paper_runs_have_their_own_key(tmp_path: Path, fault_proxy: FaultProxy):
    popcorn = generator(tmp_path, fault_proxy)
    paper = generator(tmp_path, fault_proxy, profile=PAPER)
    ours, theirs = popcorn.key_inputs(QUERY), paper.key_inputs(QUERY)
    assert theirs["profile"]["name"] == "paper" and theirs["profile"]["api_sampling"] is False
    assert theirs["prompt"] == "basic-" + PromptTemplates.packaged_for("paper").digest("basic")[:24]
    assert job_key(ours) != job_key(theirs)


def test_paper_basic_messages_have_the_study_structure(tmp_path: Path, fault_proxy):
    prompt = generator(tmp_path, fault_proxy, profile=PAPER).prompt(QUERY)
    assert prompt.schema is None  # no schema, no grammar, no JSON mode
    system, user = prompt.messages  # the example is inline, not an earlier turn
    assert system["role"] == "system" and user["role"] == "user"
    # The task and the user's perspective; the feed-scrolling coaching is popcorn's alone.
    assert "user's perspective" in system["content"] and "most popular" in system["content"]
    assert "3-second video prompt" in system["content"]
    text = user["content"]
    example = PromptTemplates.packaged_for("paper").example_script
    positions = [
        text.index(QUERY),
        text.index("no more than 50 characters"),
        text.index("cover prompt: one paragraph"),
        text.index("3-second clip"),
        text.index("as JSON in the form below"),
        text.index(example["title"]),
    ]
    assert positions == sorted(positions), "query, requirements, then the example as template"
    assert text.count(example["video_prompt"]) == 1  # one worked example
    # The example is the JSON template: the request ends with it, and there is no other.
    template = json.loads(text[text.index("{") :])
    assert template == example and list(template) == ["title", "cover_prompt", "video_prompt"]
    assert "<the title>" not in text


def test_paper_pe_shows_popular_then_unpopular_references_in_full():
    paper = PromptTemplates.packaged_for("paper")
    _, user = paper.pe(QUERY, references(), form="full")
    text = user["content"]
    popular_at = text.index("Popular videos")
    unpopular_at = text.index("Unpopular videos")
    steps_at = text.index("seven steps")
    # Both popular videos come before the unpopular block, whatever the retrieval order.
    assert popular_at < text.index("Midnight ramen hack") < text.index("Dumpling folding")
    assert text.index("Dumpling folding") < unpopular_at < text.index("Sad instant noodles")
    assert text.index("Sad instant noodles") < steps_at
    # Every field in full: the 580-character caption is not cut, comment counts are there.
    assert " ".join(LONG_CAPTION.split()) in text
    for r in references():
        assert r.cover_desc in text and f"Comments: {r.comment_count}" in text
    assert "Sad instant noodles $query" in text  # reference text is never template syntax
    for n in range(1, 8):
        assert f"\n{n}. " in text[steps_at:]
    assert "\n8. " not in text[steps_at:]
    assert "reasoning" not in text.lower()  # free-text steps, no reasoning key
    assert json.loads(text[text.rindex("\n{") :]) == paper.example_script  # the template
    # Popcorn's fitted form cuts the same caption.
    fitted = paper.pe(QUERY, references(), form="fitted")[1]["content"]
    assert " ".join(LONG_CAPTION.split()) not in fitted


def test_paper_pe_without_references_still_asks_for_the_seven_steps():
    text = PromptTemplates.packaged_for("paper").pe(QUERY, [], form="full")[1]["content"]
    assert "Popular videos" not in text and "7. " in text and QUERY in text


def test_paper_system_message_states_the_task_and_popcorn_keeps_the_coaching():
    paper = PromptTemplates.packaged_for("paper").basic(QUERY)[0]["content"].lower()
    popcorn = PromptTemplates.packaged_for("popcorn").basic(QUERY)[0]["content"].lower()
    for task in ("user's perspective", "most popular", "title", "cover prompt", "3-second"):
        assert task in paper
    # The study's system message names no viewer behaviour for the model to aim at.
    for coaching in ("scroll", "stop", "watch to the end", "comment", "viewer"):
        assert coaching not in paper
    assert "stop scrolling" in popcorn and "comment" in popcorn


def test_paper_example_is_plain_and_descriptive():
    paper = PromptTemplates.packaged_for("paper")
    example = paper.example_script
    assert example is not None and paper.example_query is not None
    # About sixty characters, as the study's: its example did not keep to the title limit.
    assert 55 <= len(example["title"]) <= 65
    cover = example["cover_prompt"]
    assert cover.endswith(".") and cover.count(". ") == 0  # one sentence
    assert example["video_prompt"].lower().startswith("an aerial shot")


def test_paper_pe_reasons_over_each_candidate_and_checks_it_is_logically_correct():
    paper = PromptTemplates.packaged_for("paper")
    for refs in (references(), []):
        text = paper.pe(QUERY, refs, form="full")[1]["content"]
        steps = text[text.index("seven steps") :]
        assert "\n3. For each candidate, draft" in steps
        assert "\n4. Check that each candidate is logically correct" in steps


def test_paper_empty_unpopular_block_stays_empty():
    only_popular = [r for r in references() if r.popular]
    text = PromptTemplates.packaged_for("paper").pe(QUERY, only_popular, form="full")[1]
    block = text["content"].split("Unpopular videos (they drew few comments):\n", 1)[1]
    assert block.startswith("\n\nWork through these seven steps")
    assert "(none)" not in text["content"]


@pytest.mark.parametrize("changed", [{}, {"title": "Boats Leave the Harbour at First Light"}])
def test_an_answer_that_fills_the_template_with_the_example_is_an_echo(changed: dict[str, str]):
    paper = PromptTemplates.packaged_for("paper")
    assert paper.example_script is not None
    # The example is the template, so a small model may hand it back as shown, after its steps.
    echoed = json.dumps({**paper.example_script, **changed}, indent=2)
    answer = "1. Popular videos show the sea at dawn.\n...\n7. Final answer:\n" + echoed
    with pytest.raises(ScriptParseError) as err:
        parse_script(answer, paper.example_script)
    assert err.value.reason == "echoed_example"
    assert parse_script(answer.replace(echoed, json.dumps(SCRIPT)), paper.example_script).script


def test_paper_prompt_versions_are_pinned():
    """The study's substance is new wording (issue 23): new versions, so new job keys."""
    paper = PromptTemplates.packaged_for("paper")
    assert paper.version("basic") == "basic-bbb01d2a9e15484811610ddc"
    assert paper.version("pe") == "pe-26fd0e278750d7eea3433cc2"


def test_paper_sends_no_grammar_to_llama_cpp(tmp_path: Path):
    pytest.importorskip("llama_cpp")
    paper = Generator("embedded", out=tmp_path, profile=PAPER)
    ours = Generator("embedded", out=tmp_path)
    for gen, grammar in ((paper, False), (ours, True)):
        prompt = gen.prompt(QUERY)
        request = gen.llm.request(prompt.messages, gen.decoding, prompt.schema)  # type: ignore[attr-defined]
        assert ("grammar" in request) is grammar
    assert paper.decoding.max_tokens == 5000 and ours.decoding.max_tokens == 1024


def test_load_in_4bit_is_fp4_in_paper_and_nf4_in_popcorn(tmp_path: Path):
    pytest.importorskip("transformers")
    from popcorn.llm.hf import quantization_config

    four_bit = LLMOptions(load_in_4bit=True, device_map="cpu")
    paper = Generator("hf:some/model", out=tmp_path, options=four_bit, profile=PAPER)
    ours = Generator("hf:some/model", out=tmp_path, options=four_bit)
    for gen, kind in ((paper, "fp4"), (ours, "nf4")):
        config = quantization_config(gen.llm.options)  # type: ignore[attr-defined]
        assert config.load_in_4bit and config.bnb_4bit_quant_type == kind
    assert paper.llm.identity()["quantization"] == "4bit-fp4"
    assert ours.llm.identity()["quantization"] == "4bit"  # as before fp4 existed: same keys


@pytest.mark.slow
def test_hf_under_paper_samples_with_the_study_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from transformers import LlamaForCausalLM

    from toys.llm import save_tiny_llama

    messages = PromptTemplates.packaged_for("paper").basic(QUERY)
    folder = save_tiny_llama(tmp_path / "tiny", [m["content"] for m in messages], layers=1)

    seen: list[dict[str, Any]] = []
    original = LlamaForCausalLM.generate

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        # Record what popcorn asked transformers for, then generate a few tokens only: an
        # untrained model would otherwise run to 5,000.
        seen.append(dict(kwargs))
        return original(self, *args, **{**kwargs, "max_new_tokens": 4})

    monkeypatch.setattr(LlamaForCausalLM, "generate", spy)
    settings = load_settings(
        flags={
            "llm": {"spec": f"hf:{folder}", "device_map": "cpu", "attempts": 1},
            "run": {"out": str(tmp_path / "runs")},
        },
        profile="paper",
    )
    with pytest.raises(GenerationError) as failed:
        Pipeline(settings, score="never").script(QUERY)  # 4 random tokens are no script
    (kwargs,) = seen
    assert kwargs["do_sample"] is True
    assert (kwargs["temperature"], kwargs["top_p"], kwargs["repetition_penalty"]) == (
        0.7,
        0.9,
        1.1,
    )
    assert kwargs["max_new_tokens"] == 5000
    run_dir = Path(str(failed.value.run_dir))
    transcript = json.loads((run_dir / "transcript.json").read_text())
    (attempt,) = transcript["attempts"]
    assert attempt["messages"] == messages
    assert "max_new_tokens=5000" in attempt["notes"]["generate"]
    assert "json_schema" not in attempt["notes"]  # none was asked for
    assert manifest(run_dir)["profile"] == "paper"


# --- custom template folders ----------------------------------------------------------------


def custom_folder(tmp_path: Path, base: str = "paper") -> Path:
    folder = tmp_path / "study-wording"
    shutil.copytree(TEMPLATES / base, folder)
    return folder


def test_a_custom_prompts_folder_is_used_and_changes_the_key(
    tmp_path: Path, fault_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
):
    folder = custom_folder(tmp_path)
    (folder / "system.txt").write_text("You are the study's own creator, costing $$0.\n")
    (tmp_path / "popcorn.toml").write_text(f'[llm]\nprompts = "{folder}"\n')
    monkeypatch.chdir(tmp_path)
    flags = {"llm": {"spec": "openai:m", "base_url": fault_proxy.url}}
    custom = Pipeline(load_settings(flags=flags, profile="paper"), score="never")
    fault_proxy.answer_next(json.dumps(SCRIPT))
    custom.script(QUERY)
    sent = fault_proxy.requests[-1]["body"]["messages"]
    assert sent[0]["content"] == "You are the study's own creator, costing $0."
    key = job_key(custom.generator.key_inputs(QUERY))
    # The same folder with the packaged wording gives the packaged key: keys follow content.
    shutil.copy(TEMPLATES / "paper" / "system.txt", folder / "system.txt")
    again = Generator(
        "openai:m", options=LLMOptions(base_url=fault_proxy.url), profile=PAPER, prompts=folder
    )
    paper = Generator("openai:m", options=LLMOptions(base_url=fault_proxy.url), profile=PAPER)
    assert job_key(again.key_inputs(QUERY)) == job_key(paper.key_inputs(QUERY)) != key


def test_a_popcorn_run_with_custom_wording_gets_a_new_key(tmp_path: Path, fault_proxy):
    folder = custom_folder(tmp_path, "popcorn")
    packaged = PromptTemplates.packaged_for("popcorn").version("basic")
    assert generator(tmp_path, fault_proxy, prompts=folder).key_inputs(QUERY)["prompt"] == (
        packaged
    )
    text = (folder / "basic.txt").read_text().replace("catchy", "punchy")
    (folder / "basic.txt").write_text(text)
    changed = generator(tmp_path, fault_proxy, prompts=folder)
    assert changed.key_inputs(QUERY)["prompt"].startswith("basic-")
    assert changed.key_inputs(QUERY)["prompt"] != packaged
    assert "punchy" in changed.prompt(QUERY).messages[-1]["content"]


def test_the_popcorn_wording_before_issue_17_is_keyed_by_its_hash(tmp_path: Path, fault_proxy):
    # Its runs were keyed basic-v3 / pe-v1 and written with alphabetically ordered grammar
    # fields; asked again (benchmarks/prompts_before) it is written again, under a new key.
    before = Path(__file__).resolve().parents[1] / "benchmarks" / "prompts_before"
    old = generator(tmp_path, fault_proxy, prompts=before)
    digest = PromptTemplates.load(before).digest("basic")[:24]
    assert old.key_inputs(QUERY)["prompt"] == f"basic-{digest}" != "basic-v3"
    assert [m["role"] for m in old.prompt(QUERY).messages] == [
        "system",
        "user",
        "assistant",
        "user",
    ]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "pe.txt").unlink(), "missing pe.txt"),
        (lambda f: (f / "basic.txt").write_text("Make $qurey"), "unknown placeholder $qurey"),
        (lambda f: (f / "basic.txt").write_text("It costs $5"), "write a dollar as $$"),
        (lambda f: (f / "system.txt").write_bytes(b"\xff\xfe bad"), "system.txt is not UTF-8"),
        (lambda f: (f / "example.json").write_text("{"), "example.json: not valid JSON"),
        (lambda f: (f / "example.json").write_text('{"query": "q"}'), "needs a query and a"),
    ],
)
def test_a_broken_prompts_folder_is_a_one_line_error_naming_it(tmp_path: Path, damage, message):
    folder = custom_folder(tmp_path)
    damage(folder)
    with pytest.raises(UsageError) as err:
        Generator("openai:m", options=LLMOptions(base_url="http://127.0.0.1:9/v1"), prompts=folder)
    text = str(err.value)
    assert message in text and str(folder) in text and "\n" not in text


def test_a_missing_prompts_folder_from_settings_stops_generate_with_one_line(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("POPCORN_LLM_PROMPTS", str(tmp_path / "nowhere"))
    result = cli("generate", QUERY, "--llm", "openai:m", "--base-url", "http://127.0.0.1:9/v1")
    assert result.code == 1, result.err
    assert "nowhere" in result.err and result.err.count("\n") == 1
    assert "Traceback" not in result.err
