"""Studies under the paper profile: the profile reaches every job, PE never feeds the judge its
own bank, each clip counts once in the report, each generator pair keeps its own media, and the
study's grid shape runs end to end on the embedded LLM.

The built-in stand-in LLM ``mock:NAME`` (popcorn.testing.mockllm) answers at once: it copies
its most commented PE reference, or writes a plain script from the query.
"""

from __future__ import annotations

import csv
import json
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from popcorn.runs.keys import job_key
from popcorn.runs.store import Run
from popcorn.study.spec import load_study
from popcorn.testing.plugins import FLIPBOOK_ENTRY_POINTS, FLIPBOOK_PLUGIN
from toys.leak import LeakSetup, build_leak_setup, scoring_neighbours


def write(folder: Path, study: str, queries: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["prompt,type", *(f"{q},concrete" for q in queries)]
    (folder / "queries.csv").write_text("\n".join(lines) + "\n")
    path = folder / "study.toml"
    path.write_text(textwrap.dedent(study).lstrip() + '\n[queries]\nq = "queries.csv"\n')
    return path


def results(study_file: Path) -> list[dict[str, str]]:
    with (study_file.parent / "study.study" / "report" / "results.csv").open() as f:
        return list(csv.DictReader(f))


# --- the profile --------------------------------------------------------------------------


def test_a_study_runs_the_paper_profile_unless_it_says_otherwise(tmp_path: Path):
    paper = load_study(write(tmp_path / "a", "[study]\n", ["A cat"]))
    assert paper.profile == "paper" and paper.settings.run.profile == "paper"
    assert paper.settings.decoding.max_tokens == 5000  # the paper profile's default
    assert {j.profile for j in paper.jobs()} == {"paper"}

    ours = load_study(write(tmp_path / "b", '[study]\nprofile = "popcorn"\n', ["A cat"]))
    assert ours.profile == "popcorn" and ours.settings.decoding.max_tokens == 1024

    # A value the study file gives explicitly wins over the profile's default.
    capped = load_study(write(tmp_path / "c", "[study]\n[decoding]\nmax_tokens = 96\n", ["A cat"]))
    assert capped.profile == "paper" and capped.settings.decoding.max_tokens == 96


def test_the_study_file_profile_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("POPCORN_PROFILE", "popcorn")
    assert load_study(write(tmp_path / "a", "[study]\n", ["A cat"])).profile == "popcorn"
    said = write(tmp_path / "b", '[study]\nprofile = "paper"\n', ["A cat"])
    assert load_study(said).profile == "paper"


def test_an_unknown_profile_is_a_one_line_error_naming_its_line(cli, tmp_path: Path):
    path = write(tmp_path, '[study]\nname = "x"\nprofile = "papper"\n', ["A cat"])
    result = cli("study", "run", str(path))
    assert result.code == 1
    assert "study.toml line 3: unknown profile 'papper'" in result.err
    assert "'paper' or 'popcorn'" in result.err and len(result.err.strip().splitlines()) == 1


def test_the_profile_is_part_of_the_job_key_and_popcorn_adds_nothing_to_it(tmp_path: Path):
    grid = 'modes = ["basic", "pe:10"]\nseeds = [1, 2]\n'
    ours = load_study(write(tmp_path / "a", f'[study]\nprofile = "popcorn"\n{grid}', ["A"]))
    paper = load_study(write(tmp_path / "b", f"[study]\n{grid}", ["A"]))
    assert not {j.key for j in ours.jobs()} & {j.key for j in paper.jobs()}
    assert all(j.inputs()["profile"] == "paper" for j in paper.jobs())
    assert all("profile" not in j.inputs() for j in ours.jobs())
    for job in ours.jobs():
        # With the wording studies had before templates were files, a popcorn job's key is
        # the one every study had before profiles existed.
        legacy = replace(job, prompts="")
        before = {
            "query": job.query,
            "llm": job.llm,
            **job.mode.to_dict(),
            "video": job.video,
            "cover": job.cover,
            "seed": job.seed,
        }
        assert legacy.key == job_key(before)
        assert replace(legacy, profile="paper").key != legacy.key


def test_other_prompt_templates_give_other_job_keys(tmp_path: Path):
    from importlib.resources import files

    packaged = Path(str(files("popcorn.writer") / "templates" / "paper"))
    mine = tmp_path / "study-prompts"
    mine.mkdir()
    for f in packaged.iterdir():
        (mine / f.name).write_text(f.read_text())
    body = '[study]\nmodes = ["basic", "pe:10"]\n'
    default = load_study(write(tmp_path / "a", body, ["A"]))
    same = load_study(write(tmp_path / "b", body + '[llm]\nprompts = "../study-prompts"\n', ["A"]))
    # Same wording, same prompt hash (only the folder setting differs).
    assert [j.prompts for j in same.jobs()] == [j.prompts for j in default.jobs()]
    (mine / "basic.txt").write_text((mine / "basic.txt").read_text() + "\nBe brief.")
    changed = load_study(tmp_path / "b" / "study.toml")
    basic_before, pe_before = (j.key for j in same.jobs())
    basic_after, pe_after = (j.key for j in changed.jobs())
    assert basic_after != basic_before and pe_after == pe_before  # pe.txt did not change


def test_the_ledger_and_the_report_record_the_profile(cli, tmp_path: Path):
    path = write(
        tmp_path, '[study]\nllms = ["mock:x"]\nvideos = ["none"]\ncovers = ["none"]\n', ["A cat"]
    )
    ran = cli("study", "run", str(path), "--json")
    assert ran.code == 0, ran.err
    assert json.loads(ran.out)["profile"] == "paper"
    assert json.loads(cli("study", "status", str(path), "--json").out)["profile"] == "paper"
    assert cli("study", "report", str(path)).code == 0
    (row,) = results(path)
    assert row["profile"] == "paper"
    md = (tmp_path / "study.study" / "report" / "report.md").read_text()
    assert "Profile: paper" in md
    manifest = json.loads((Path(row["run_dir"]) / "manifest.json").read_text())
    assert manifest["profile"] == "paper"


# --- counting each clip once ----------------------------------------------------------------


def test_a_clip_counts_once_however_many_covers_it_has(
    cli, indexed_corpus: Path, small_predictor: Path, tmp_path: Path
):
    """Two cover generators give two jobs per clip; the score depends on the clip only, so the
    report's n, intervals and PE-vs-basic pairs must count each clip once (they counted every
    clip twice before: n 6 and 6 pairs for 3 queries)."""
    queries = ["Cooking ramen at home", "A puppy learning to swim", "Street dance battle"]
    path = write(
        tmp_path,
        f"""
        [study]
        profile = "popcorn"
        llms = ["mock:x"]
        modes = ["basic", "pe:3"]
        videos = ["preview"]
        covers = ["preview", "none"]
        predictor = "{small_predictor}"
        corpus = "{indexed_corpus}"
        [gate]
        enabled = false  # the stand-in copies its PE reference, which the gate would refuse
        """,
        queries,
    )
    ran = cli("study", "run", str(path), "--json")
    assert ran.code == 0, ran.err
    assert json.loads(ran.out)["failed"] == {}
    reported = cli("study", "report", str(path), "--json")
    assert reported.code == 0, reported.err
    summary = json.loads(reported.out)
    assert summary["clips"] == 6  # 12 scored jobs, 6 clips
    md = (tmp_path / "study.study" / "report" / "report.md").read_text()
    assert r"| mock:x \| basic \| preview | 3 | 0 |" in md  # n 3 (distinct clips), 0 failed
    assert r"| mock:x \| pe:3 \| preview | 3 | 0 |" in md
    assert "| mock:x | pe:3 | 3 |" in md  # 3 pairs, not 6
    rows = results(path)
    assert len(rows) == 12 and all(r["status"] == "done" for r in rows)
    by_clip: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        by_clip.setdefault((r["query"], r["mode"]), set()).add(r["score"])
    assert all(len(scores) == 1 for scores in by_clip.values())  # one clip, one score


def test_each_generator_pair_keeps_its_own_clip_and_cover(
    cli, install_plugin, small_predictor: Path, tmp_path: Path
):
    """Jobs that share a script but not their generators rendered into one run folder, each
    render replacing the last one's clip.mp4, and a job could be scored on another's clip."""
    install_plugin(
        "flipbook_plugin",
        FLIPBOOK_PLUGIN,
        FLIPBOOK_ENTRY_POINTS,
    )
    path = write(
        tmp_path,
        f"""
        [study]
        llms = ["mock:x"]
        videos = ["preview", "flipbook"]
        covers = ["preview", "none"]
        predictor = "{small_predictor}"
        allow_judge = "popcorn"  # the toy predictor has Popcorn's recipe
        """,
        ["A cat learning to skateboard"],
    )
    ran = cli("study", "run", str(path), "--json")
    assert ran.code == 0, ran.err
    assert cli("study", "report", str(path)).code == 0
    rows = results(path)
    assert len(rows) == 4 and len({r["run_dir"] for r in rows}) == 1  # one script
    clips: dict[str, bytes] = {}
    for r in rows:
        media = Run.load(Path(r["media_dir"] or r["run_dir"])).manifest
        video = media.stages["media"]["video"]
        assert video["backend"] == r["video"]  # its own clip, not the last one rendered
        score = media.stages["score"]
        assert score["clip_key"] == video["key"]  # scored on that clip
        assert float(r["score"]) == pytest.approx(score["score"], abs=1e-4)
        cover = media.stages["media"].get("cover")
        assert (cover or {}).get("backend", "none") == r["cover"]
        clip = (media_dir(r) / video["file"]).read_bytes()
        assert clips.setdefault(r["video"], clip) == clip  # one clip per generator
    assert clips["preview"] != clips["flipbook"]
    listed = Run.load(Path(rows[0]["run_dir"])).manifest.stages["media_variants"]
    assert {(v["video"], v["cover"]) for v in listed.values()} == {
        (r["video"], r["cover"]) for r in rows
    }


def media_dir(row: dict[str, str]) -> Path:
    return Path(row["media_dir"] or row["run_dir"])


MUMBLER_PLUGIN = textwrap.dedent(
    """
    from popcorn.llm.base import Completion

    calls = []


    class Mumbler:
        concurrent = True

        def __init__(self, spec):
            self.spec = spec

        def identity(self):
            return {"provider": "mumbler"}

        def complete(self, messages, decoding, json_schema=None):
            calls.append(decoding.seed)
            return Completion(text="I would film a cat, probably. Or a dog.")


    def mumbler(argument, options):
        return Mumbler("mumbler:" + argument)
    """
)


def test_a_failed_script_is_asked_for_once_and_fails_every_job_that_shares_it(
    cli, install_plugin, tmp_path: Path
):
    """Two covers make two jobs of one script. A failed run used to be generated again for the
    second job (another LLM call, maybe another outcome for the same script cell)."""
    install_plugin(
        "mumbler_plugin", MUMBLER_PLUGIN, {"popcorn.llm": {"mumbler": "mumbler_plugin:mumbler"}}
    )
    import mumbler_plugin  # type: ignore[import-not-found]

    path = write(
        tmp_path,
        '[study]\nllms = ["mumbler:x"]\nvideos = ["preview"]\ncovers = ["preview", "none"]\n'
        "[llm]\nattempts = 2\n",
        ["A cat learning to skateboard"],
    )
    ran = cli("study", "run", str(path), "--json")
    assert ran.code == 1 and "all 2 jobs failed" in ran.err
    assert mumbler_plugin.calls == [42, 43]  # two attempts, once for both jobs
    assert cli("study", "report", str(path)).code == 0
    rows = results(path)
    assert [(r["status"], r["failed_stage"], r["reason"]) for r in rows] == [
        ("failed", "script", "no_script")
    ] * 2
    md = (tmp_path / "study.study" / "report" / "report.md").read_text()
    assert r"| mumbler:x \| basic \| preview | 0 | 1 |" in md  # one clip missing, not two
    assert "| script | 2 | no_script |" in md


def test_failures_blank_renders_and_scores_a_failed_script_as_a_blank_one(
    cli, install_plugin, small_predictor: Path, tmp_path: Path
):
    """The LLMPopcorn study scored whatever came out: a query without a usable script still
    got a (blank) clip and a score, and counted in the means. ``failures = "blank"`` does the
    same, and the report still counts it as a failure."""
    install_plugin(
        "mumbler_plugin", MUMBLER_PLUGIN, {"popcorn.llm": {"mumbler": "mumbler_plugin:mumbler"}}
    )
    path = write(
        tmp_path,
        f"""
        [study]
        profile = "popcorn"
        llms = ["mumbler:x"]
        covers = ["none"]
        failures = "blank"
        predictor = "{small_predictor}"
        [llm]
        attempts = 1
        """,
        ["A cat learning to skateboard"],
    )
    ran = cli("study", "run", str(path), "--json")
    assert ran.code == 0, ran.err
    assert cli("study", "report", str(path)).code == 0
    (row,) = results(path)
    assert (row["status"], row["reason"], row["title"]) == ("done", "blank (no_script)", "")
    assert row["score"] != ""  # rendered and scored
    md = (tmp_path / "study.study" / "report" / "report.md").read_text()
    # n 1 (the blank clip is in the mean), 1 failed, failure rate 1.
    assert r"| mumbler:x \| basic \| preview | 1 | 1 | 1.000 |" in md
    assert "| script | 1 | blank (no_script) | scored as a blank script |" in md


def test_failures_must_be_omit_or_blank(cli, tmp_path: Path):
    path = write(tmp_path, '[study]\nfailures = "drop"\n', ["A cat"])
    ran = cli("study", "run", str(path))
    assert ran.code != 0 and "failures must be 'omit' or 'blank'" in ran.err
    assert load_study(write(tmp_path / "b", "[study]\n", ["A cat"])).failures == "omit"


# --- no leak between PE and the judge ---------------------------------------------------------


@pytest.fixture(scope="module")
def leak(tmp_path_factory: pytest.TempPathFactory, small_predictor: Path) -> LeakSetup:
    """The predictor's own generated corpus, indexed for PE (its training ids are the bank),
    and the same corpus restricted to the predictor's test split."""
    return build_leak_setup(tmp_path_factory.mktemp("leak"), queries=4, predictor=small_predictor)


def leak_study(folder: Path, setup: LeakSetup, profile: str, corpus: Path) -> Path:
    return write(
        folder,
        f"""
        [study]
        profile = "{profile}"
        llms = ["mock:x"]
        modes = ["basic", "pe:3"]
        videos = ["preview"]
        covers = ["none"]
        predictor = "{setup.predictor}"
        allow_judge = "popcorn"  # the toy predictor has Popcorn's recipe
        corpus = "{corpus}"
        [pe]
        embedder = "minilm-l6"
        [gate]
        enabled = false  # the stand-in copies its reference on purpose
        """,
        [line.split(",")[0] for line in setup.queries.read_text().splitlines()[1:]],
    )


def test_the_paper_profiles_pool_holds_no_id_of_the_predictors_bank(leak: LeakSetup):
    from popcorn.config import load_settings
    from popcorn.retrieval.enhance import reference_pool_ids

    def pool(profile: Any) -> set[str]:
        flags = {
            "pe": {"corpus": leak.corpus, "embedder": "minilm-l6"},
            "predictor": {"path": leak.predictor},
        }
        return reference_pool_ids(load_settings(None, flags, profile=profile))

    paper = pool("paper")
    assert paper and not paper & leak.bank and paper <= leak.test
    assert pool("popcorn") & leak.bank  # the same corpus, pooled whole, overlaps the bank


def test_a_study_whose_pool_overlaps_the_bank_is_refused_in_one_line(
    cli, leak: LeakSetup, tmp_path: Path
):
    path = leak_study(tmp_path, leak, "popcorn", leak.corpus)
    result = cli("study", "run", str(path))
    assert result.code == 1 and len(result.err.strip().splitlines()) == 1
    assert "study.toml: the PE modes (pe:3) would show the LLM videos of the predictor's" in (
        result.err
    )
    assert 'profile = "paper"' in result.err and "--only-ids" in result.err
    assert not (tmp_path / "study.study" / "ledger.sqlite").exists()  # refused before any job
    # The same conditions with the corpus cut to the test split (corpus import --only-ids) pass.
    fixed = leak_study(tmp_path / "fixed", leak, "popcorn", leak.test_corpus)
    assert cli("study", "run", str(fixed)).code == 0


def test_scoring_never_retrieves_a_reference_shown_to_the_llm_with_the_test_split_pool(
    cli, leak: LeakSetup, tmp_path: Path
):
    from popcorn.predictor.score import Predictor
    from popcorn.study.run import run_study

    predictor = Predictor.load(leak.predictor)

    def own_references_retrieved(path: Path) -> list[bool]:
        assert cli("study", "report", str(path)).code == 0
        found = []
        for row in results(path):
            if row["mode"] == "basic":
                continue
            assert row["status"] == "done", row["error"]
            run = Run.load(Path(row["run_dir"]))
            shown = {r["video_id"] for r in run.read_json("references.json")["references"]}
            assert shown, "PE showed no reference"
            script = run.script()
            assert script is not None
            retrieved = scoring_neighbours(predictor, script.title, script.video_prompt)
            found.append(bool(shown & set(retrieved)))
        return found

    paper = leak_study(tmp_path / "paper", leak, "paper", leak.corpus)
    assert cli("study", "run", str(paper)).code == 0
    assert not any(own_references_retrieved(paper))

    # The same stand-in with the whole corpus as its pool: the leak the refusal prevents.
    overlapping = leak_study(tmp_path / "overlapping", leak, "popcorn", leak.corpus)
    run_study(load_study(overlapping), allow_overlap=True)
    assert any(own_references_retrieved(overlapping))


# --- the study's grid shape, end to end -------------------------------------------------------

_SCRIPT = {
    "title": "Kickflip Cat Takes the City",
    "cover_prompt": "A ginger cat mid-kickflip over a neon street at dusk, crowd cheering",
    "video_prompt": "A ginger cat rolls down a ramp, pops a kickflip and lands"
    " as people cheer, slow motion",
}
# What API models sent back in the study, in the forms the parser must take: a reasoning
# model's <think> block, the seven steps in free text before the final JSON, a fenced answer.
_ANSWERS = [
    f"<think>The user wants a cat on a skateboard. Keep it short.</think>\n{json.dumps(_SCRIPT)}",
    "1. The popular videos open on motion.\n2. Idea: a cat that lands a trick.\n3. Draft.\n"
    "4. It fits.\n5. Full version.\n6. Trends: pets, tricks.\n7. Refined.\n\nFinal answer:\n"
    + json.dumps(_SCRIPT),
    f"Here is the script:\n```json\n{json.dumps(_SCRIPT, indent=2)}\n```",
]


@pytest.mark.slow
def test_the_study_grid_runs_end_to_end_under_the_paper_profile(
    cli, fault_proxy, smollm2: Path, leak: LeakSetup, tmp_path: Path, monkeypatch
):
    """The study's grid shape at CI size: 6 LLM specs x basic / PE10 / PE50 / PE100 x a clip
    generator x two cover generators, one query, under the paper profile, scored.

    - LLMs: the embedded SmolLM2 and the same file as ``gguf:PATH`` run for real, in process;
      ``openai:``, ``ollama:`` and two ``deepseek:`` specs (V3 and R1) go to a loopback endpoint
      (``[llm] base_url``) that answers as the study's API models did (a <think> block, the
      seven steps in free text, a fenced JSON), instantly, so the test stays within about two
      minutes on two cores. That endpoint also shows what the paper profile sends an API: the
      model and the messages only.
    - ``[decoding] max_tokens = 64`` in the study file wins over the paper profile's 5,000
      (explicit settings win over the profile); ``[llm] attempts = 1`` asks each model once.
      Without a schema (the paper profile sends none) SmolLM2-135M rarely writes a parseable
      script in 64 tokens: those jobs must be recorded as failed, with their reason, and counted
      in the report, not hidden.
    - PE draws from the predictor's test split (the paper profile's pool): the generated
      corpus has fewer test videos than 50 or 100, so PE50 and PE100 show all of them, with a
      warning in the run, as a small corpus would.
    """
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-loopback-test")
    for i in range(40):
        fault_proxy.answer_next(_ANSWERS[i % len(_ANSWERS)])
    llms = [
        "embedded",
        f"gguf:{smollm2}",
        "openai:gpt-4o",
        "ollama:qwen2.5:72b",
        "deepseek:deepseek-chat",
        "deepseek:deepseek-reasoner",
    ]
    path = write(
        tmp_path,
        f"""
        [study]
        name = "grid"
        llms = {json.dumps(llms)}
        modes = ["basic", "pe:10", "pe:50", "pe:100"]
        videos = ["preview"]
        covers = ["preview", "none"]
        predictor = "{leak.predictor}"
        allow_judge = "popcorn"  # the toy predictor has Popcorn's recipe
        corpus = "{leak.corpus}"
        [decoding]
        max_tokens = 64
        [llm]
        attempts = 1
        base_url = "{fault_proxy.url}"
        [pe]
        embedder = "minilm-l6"
        """,
        ["A cat learning to skateboard"],
    )
    ran = cli("study", "run", str(path), "--json", "--no-check")
    assert ran.code == 0, ran.err
    summary = json.loads(ran.out)
    assert summary["profile"] == "paper" and summary["jobs"] == 6 * 4 * 2
    reported = cli("study", "report", str(path), "--json")
    assert reported.code == 0, reported.err
    rows = results(path)
    assert len(rows) == 48 and {r["profile"] for r in rows} == {"paper"}

    api = [r for r in rows if not r["llm"].startswith(("embedded", "gguf:"))]
    assert all(r["status"] == "done" and r["score"] for r in api)
    for body in (r["body"] for r in fault_proxy.requests):
        assert set(body) == {"model", "messages"}  # no sampling, no JSON mode, no max_tokens

    local = [r for r in rows if r["llm"].startswith(("embedded", "gguf:"))]
    for r in local:
        assert r["status"] in ("done", "failed"), r
        if r["status"] == "failed":
            assert r["failed_stage"] == "script" and r["reason"] and r["error"], r
    runs = [
        json.loads(m.read_text())
        for m in (tmp_path / "study.study" / "runs").glob("*/manifest.json")
    ]
    assert len(runs) == 6 * 4  # one script per LLM and mode, whatever its covers
    for manifest in runs:  # failed runs keep their manifest (and raw answer) too
        assert manifest["profile"] == "paper"
        if manifest["llm"]["spec"] in ("embedded", f"gguf:{smollm2}"):
            assert manifest["decoding"]["max_tokens"] == 64

    # Failed answers are counted, per configuration and by reason, in the report.
    md = (tmp_path / "study.study" / "report" / "report.md").read_text()
    for llm in ("embedded", f"gguf:{smollm2}"):
        for mode in ("basic", "pe:10", "pe:50", "pe:100"):
            mine = [r for r in local if r["llm"] == llm and r["mode"] == mode]
            failed = int(all(r["status"] == "failed" for r in mine))
            scored = int(any(r["status"] == "done" for r in mine))
            cell = rf"| {llm} \| {mode} \| preview | {scored} | {failed} |"
            assert cell in md, cell
    reasons = json.loads(reported.out)["failed_reasons"]
    assert sum(reasons.values()) == sum(r["status"] == "failed" for r in rows)
    for key, n in reasons.items():
        stage, _, why = key.partition(": ")
        assert f"| {stage} | {n} | {why} |" in md
