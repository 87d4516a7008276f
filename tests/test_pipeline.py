"""One pipeline behind every entry point, and the registries that plugins extend.

The CLI, the web app and a study build the same :class:`popcorn.pipeline.Pipeline` from the
same settings, so the same settings give the same run key and the same recorded settings
whichever entry point ran them. Plugins registered through entry points (as a pip-installed
package registers them) are used exactly like the built-ins.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from conftest import FaultProxy
from popcorn.runs.store import Run
from popcorn.testing.plugins import FLIPBOOK_ENTRY_POINTS, FLIPBOOK_PLUGIN

SCRIPT = {
    "title": "Kickflip Kitty Takes Shibuya",
    "cover_prompt": "A ginger cat mid-kickflip over a neon Tokyo street at dusk",
    "video_prompt": "A ginger cat rolls down a ramp, pops a kickflip and lands"
    " as the crowd cheers, low angle",
}
QUERY = "Cats on skateboards in Tokyo"

PROJECT_FILE = """
[decoding]
temperature = 0.3
top_p = 0.8
max_tokens = 300

[media]
portrait = true
fps = 6
frames = 12
"""


def _manifest(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "manifest.json").read_text())


def _recorded(run_dir: Path) -> dict[str, Any]:
    """What must agree between entry points: the key and every recorded setting."""
    manifest = _manifest(run_dir)
    video = manifest["stages"]["media"]["video"]
    return {
        "key": manifest["key"],
        "llm": manifest["llm"]["spec"],
        "decoding": manifest["decoding"],
        "prompt_version": manifest["prompt_version"],
        "video_spec": video["spec"],
        "video_key": video["key"],
        "cover_key": manifest["stages"]["media"]["cover"]["key"],
    }


def test_cli_app_and_study_record_the_same_run_for_the_same_settings(
    cli, fault_proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from popcorn.app.process import Models
    from popcorn.app.requests import AppConfig, Request
    from popcorn.config import load_settings

    (tmp_path / "popcorn.toml").write_text(PROJECT_FILE)
    monkeypatch.setenv("OPENAI_BASE_URL", fault_proxy.url)
    for _ in range(3):
        fault_proxy.answer_next(json.dumps(SCRIPT))

    done = cli("generate", QUERY, "--llm", "openai:m", "--out", "cli-runs", "--json")
    assert done.code == 0, done.err
    from_cli = Path(json.loads(done.out)["run_dir"])

    folders = {
        "run": {"out": str(tmp_path / "app-runs")},
        "pe": {"corpus": str(tmp_path / "no-corpus")},
        "predictor": {"path": str(tmp_path / "no-predictor")},
    }
    config = AppConfig(llms=["openai:m"], settings=load_settings(flags=folders))
    from_app = Models(config).pipeline(Request(QUERY, llm="openai:m"), "basic").run(QUERY).run_dir

    (tmp_path / "queries.txt").write_text(QUERY + "\n")
    (tmp_path / "study.toml").write_text(
        '[study]\nprofile = "popcorn"\nllms = ["openai:m"]\nmodes = ["basic"]\n'
        '[queries]\nmine = "queries.txt"\n'
    )
    ran = cli("study", "run", "study.toml")
    assert ran.code == 0, ran.err
    (from_study,) = [p.parent for p in (tmp_path / "study.study" / "runs").glob("*/manifest.json")]

    cli_record = _recorded(from_cli)
    assert cli_record["decoding"]["temperature"] == 0.3  # popcorn.toml reached every one
    assert cli_record["decoding"]["max_tokens"] == 300
    assert cli_record["video_spec"]["fps"] == 6 and cli_record["video_spec"]["frames"] == 12
    spec = cli_record["video_spec"]
    assert spec["height"] > spec["width"]  # portrait
    assert _recorded(from_app) == cli_record
    assert _recorded(from_study) == cli_record
    # The requests sent were the same too.
    bodies = [r["body"] for r in fault_proxy.requests]
    assert len(bodies) == 3 and bodies[0] == bodies[1] == bodies[2]


def test_a_study_file_section_overrides_the_project_file(
    cli, fault_proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    (tmp_path / "popcorn.toml").write_text(PROJECT_FILE)
    monkeypatch.setenv("OPENAI_BASE_URL", fault_proxy.url)
    fault_proxy.answer_next(json.dumps(SCRIPT))
    (tmp_path / "q.txt").write_text(QUERY + "\n")
    (tmp_path / "s.toml").write_text(
        '[study]\nllms = ["openai:m"]\nvideos = ["none"]\ncovers = ["none"]\n'
        '[decoding]\nmax_tokens = 200\n[queries]\nq = "q.txt"\n'
    )
    assert cli("study", "run", "s.toml").code == 0
    (manifest,) = (tmp_path / "s.study" / "runs").glob("*/manifest.json")
    decoding = json.loads(manifest.read_text())["decoding"]
    assert decoding["max_tokens"] == 200  # the study file's own section
    assert decoding["temperature"] == 0.3  # the project file, where the study says nothing


def test_an_unknown_setting_in_a_study_file_names_its_line(cli, tmp_path: Path):
    (tmp_path / "q.txt").write_text(QUERY + "\n")
    (tmp_path / "s.toml").write_text('[study]\n[media]\nframez = 3\n[queries]\nq = "q.txt"\n')
    result = cli("study", "run", "s.toml")
    assert result.code == 1
    assert "s.toml line 2" in result.err and "framez" in result.err
    assert result.err.count("\n") == 1


CONCURRENT_PLUGIN = textwrap.dedent(
    """
    import json
    import threading
    import time

    from popcorn.llm.base import Completion

    state = {"now": 0, "most": 0}
    lock = threading.Lock()


    class SlowEcho:
        concurrent = True

        def __init__(self, spec):
            self.spec = spec

        def identity(self):
            return {"provider": "slowecho"}

        def complete(self, messages, decoding, json_schema=None):
            with lock:
                state["now"] += 1
                state["most"] = max(state["most"], state["now"])
            time.sleep(0.3)
            with lock:
                state["now"] -= 1
            query = messages[-1]["content"].splitlines()[0][:40]
            script = {
                "title": "Echo " + str(decoding.seed),
                "cover_prompt": "A bright poster about " + query,
                "video_prompt": "A cook flips a pancake in close-up, about " + query,
            }
            return Completion(text=json.dumps(script))


    def slowecho(argument, options):
        return SlowEcho("slowecho:" + argument)

    slowecho.form = "slowecho:NAME"
    slowecho.summary = "answers after 0.3 s (a test plugin)"
    """
)


def test_a_plugin_llm_that_says_it_is_concurrent_runs_concurrently_in_a_study(
    cli, install_plugin, tmp_path: Path
):
    install_plugin(
        "slowecho_plugin",
        CONCURRENT_PLUGIN,
        {"popcorn.llm": {"slowecho": "slowecho_plugin:slowecho"}},
    )
    import slowecho_plugin  # type: ignore[import-not-found]

    queries = [f"A short video about topic number {i}" for i in range(6)]
    (tmp_path / "q.txt").write_text("\n".join(queries) + "\n")
    (tmp_path / "s.toml").write_text(
        '[study]\nllms = ["slowecho:x"]\nvideos = ["none"]\ncovers = ["none"]\nconcurrency = 3\n'
        '[queries]\nq = "q.txt"\n'
    )
    result = cli("study", "run", "s.toml")
    assert result.code == 0, result.err
    assert slowecho_plugin.state["most"] == 3  # up to the study's concurrency at once
    llms = cli("llms")
    assert "slowecho:NAME" in llms.out and "a test plugin" in llms.out


def test_a_plugin_clip_generator_is_listed_and_renders_through_generate(
    cli, install_plugin, fault_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
):
    install_plugin("flipbook_plugin", FLIPBOOK_PLUGIN, FLIPBOOK_ENTRY_POINTS)
    listed = cli("generators")
    assert "flipbook" in listed.out and "Flat colour pages" in listed.out
    assert "plugin: flipbook-plugin" in listed.out

    monkeypatch.setenv("OPENAI_BASE_URL", fault_proxy.url)
    fault_proxy.answer_next(json.dumps(SCRIPT))
    done = cli("generate", QUERY, "--llm", "openai:m", "--video", "flipbook", "--json")
    assert done.code == 0, done.err
    line = json.loads(done.out)
    assert line["clip_preview"] is False
    video = Run.load(Path(line["run_dir"])).manifest.stages["media"]["video"]
    assert video["backend"] == "flipbook" and video["frames"] == 12

    import av

    with av.open(line["clip"]) as container:
        assert sum(1 for _ in container.decode(video=0)) == 12


def test_an_unknown_generator_lists_the_plugins_too(cli, install_plugin, tmp_path: Path):
    install_plugin("flipbook_plugin", FLIPBOOK_PLUGIN, FLIPBOOK_ENTRY_POINTS)
    from popcorn.runs.store import RunManifest, RunStore

    run = RunStore(tmp_path / "runs").start(RunManifest(key="k" * 64, query="q", mode="basic"))
    result = cli("render", str(run.path), "--video", "sora")
    assert result.code == 1
    assert "available: preview, ltx" in result.err and "flipbook" in result.err


def test_pipeline_steps_return_typed_results(fault_proxy: FaultProxy, tmp_path: Path):
    from popcorn.pipeline import MediaResult, Pipeline, RunResult

    fault_proxy.answer_next(json.dumps(SCRIPT))
    settings = fault_proxy.settings(tmp_path / "runs")
    steps: list[tuple[str, str]] = []
    pipeline = Pipeline(settings)
    result = pipeline.run(QUERY, on_step=lambda step, state: steps.append((step, state)))
    assert isinstance(result, RunResult) and isinstance(result.media, MediaResult)
    assert result.script.script.title == SCRIPT["title"]
    assert result.media.clip is not None and result.media.clip.is_file()
    assert result.score is None  # no predictor
    assert steps == [
        ("script", "running"),
        ("script", "done"),
        ("media", "running"),
        ("media", "done"),
        ("score", "skipped"),
    ]
    # The same pipeline with other media shares the loaded LLM.
    other = pipeline.with_media(video="none", cover="preview")
    assert other.generator is pipeline.generator
    again = other.run(QUERY)
    assert again.script.cached and again.media is not None and again.media.clip is not None
