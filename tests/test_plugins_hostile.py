"""One broken plugin takes down only itself.

A plugin package installed next to Popcorn (a module plus a ``.dist-info`` naming it, as pip
leaves it) may not import, may name nothing, may carry a malformed ``entry_points.txt``, may
have a factory that raises, or may describe itself with terminal escapes. Listings show it as
broken with its error and list every other component; whatever does not use it works; whatever
uses it ends in one line naming the plugin, its entry point and the error (exit 1, never the
"internal error" of exit 70).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import CliResult, FaultProxy
from popcorn.testing.plugins import FLIPBOOK_ENTRY_POINTS, FLIPBOOK_PLUGIN

SCRIPT = {
    "title": "Kickflip Kitty Takes Shibuya",
    "cover_prompt": "A ginger cat mid-kickflip over a neon Tokyo street at dusk",
    "video_prompt": "A ginger cat rolls down a ramp, pops a kickflip and lands"
    " as the crowd cheers, low angle",
}
QUERY = "Cats on skateboards in Tokyo"
RunCli = Callable[..., CliResult]
Install = Callable[[str, str, dict[str, dict[str, str]]], Path]

# A module that fails while it is imported, as a plugin with a bug or a missing dependency does.
EXPLODING_LLM = textwrap.dedent(
    """
    raise RuntimeError("the plugin's import went wrong")

    def factory(argument, options):
        raise AssertionError("never reached")
    """
)
MISSING_DEPENDENCY = "import popcorn_no_such_dependency  # noqa\n"
EXITING_MODULE = "import sys\nsys.exit(3)\n"

CRASHY_VIDEO = textwrap.dedent(
    """
    class Crashy:
        '''Falls over as soon as it is built (a test plugin).'''

        model = "crashy/model"

        def __init__(self, **options):
            raise RuntimeError("no GPU in this test")
    """
)

# Terminal escapes and Rich markup where a plugin describes itself.
HOSTILE = "[/] [red]x[/red]\x1b[2J\x1b]0;pwned\x07"
HOSTILE_PLUGIN = textwrap.dedent(
    f'''
    class Loud:
        """Loud pages {HOSTILE!s} (a test plugin)."""

        model = "loud/{HOSTILE!s}"

        def __init__(self, **options):
            pass


    def loud_llm(argument, options):
        raise AssertionError("listing must not build it")

    loud_llm.form = "loud:{HOSTILE!s}"
    loud_llm.summary = "speaks {HOSTILE!s} loudly"
    '''
)

# Builds fine, then fails at its first call with an error of its own (not one of ours).
FAULTY_LLM = textwrap.dedent(
    """
    class Faulty:
        spec = "faulty:x"
        concurrent = False

        def identity(self):
            return {"model": "faulty"}

        def complete(self, messages, decoding, json_schema=None):
            raise RuntimeError("the server said no")


    def faulty(argument, options):
        return Faulty()
    """
)

COUNTING_LLM = textwrap.dedent(
    """
    built = []

    def counting(argument, options):
        built.append(argument)
        raise AssertionError("check_spec must not build the backend")

    counting.form = "counting:NAME"
    """
)


def assert_one_clean_line(text: str) -> None:
    assert len(text.strip().splitlines()) == 1, text
    assert "internal error" not in text and "please report it" not in text, text
    assert "\x1b" not in text and "\x07" not in text, repr(text)


def write_study(folder: Path, llms: str, videos: str = '"none"') -> Path:
    (folder / "q.txt").write_text(QUERY + "\n")
    path = folder / "s.toml"
    path.write_text(
        f'[study]\nprofile = "popcorn"\nllms = [{llms}]\nvideos = [{videos}]\n'
        'covers = ["none"]\n[queries]\nq = "q.txt"\n'
    )
    return path


@pytest.fixture
def broken_llm(install_plugin: Install) -> Path:
    """An installed LLM plugin whose module raises while it is imported."""
    return install_plugin(
        "exploding_llm", EXPLODING_LLM, {"popcorn.llm": {"boom": "exploding_llm:factory"}}
    )


# --- listings ---------------------------------------------------------------------------------


def test_llms_lists_a_plugin_that_does_not_import_as_broken_and_lists_every_other(
    cli: RunCli, broken_llm: Path
) -> None:
    listed = cli("llms")
    assert listed.code == 0, listed.err
    lines = listed.out.splitlines()
    broken = [line for line in lines if line.startswith("boom")]
    assert len(broken) == 1
    assert "broken: RuntimeError: the plugin's import went wrong" in broken[0]
    assert "exploding-llm" in broken[0]
    for form in ("embedded", "gguf:PATH", "openai:MODEL", "ollama:MODEL", "hf:MODEL_ID"):
        assert any(line.startswith(form) for line in lines), form


def test_llms_lists_a_plugin_with_a_missing_dependency_or_an_exit_as_broken(
    cli: RunCli, install_plugin: Install
) -> None:
    install_plugin("needy_llm", MISSING_DEPENDENCY, {"popcorn.llm": {"needy": "needy_llm:f"}})
    install_plugin("quitter_llm", EXITING_MODULE, {"popcorn.llm": {"quitter": "quitter_llm:f"}})
    listed = cli("llms")
    assert listed.code == 0, listed.err  # the plugin's sys.exit(3) did not end the command
    assert "broken: ModuleNotFoundError: No module named 'popcorn_no_such_dependency'" in listed.out
    assert "broken: SystemExit: 3" in listed.out
    assert "openai:MODEL" in listed.out


def test_generators_lists_a_broken_cover_plugin_and_every_working_generator(
    cli: RunCli, install_plugin: Install
) -> None:
    install_plugin("flipbook_plugin", FLIPBOOK_PLUGIN, FLIPBOOK_ENTRY_POINTS)
    install_plugin(
        "needy_cover", MISSING_DEPENDENCY, {"popcorn.cover": {"needy": "needy_cover:Needy"}}
    )
    listed = cli("generators")
    assert listed.code == 0, listed.err
    rows = {
        line.split()[1]: line for line in listed.out.splitlines() if line[:5] in ("video", "cover")
    }
    assert "broken: ModuleNotFoundError" in rows["needy"] and "needy-cover" in rows["needy"]
    assert "Flat colour pages" in rows["flipbook"]
    assert "preview" in rows and "ltx" in rows and "sd15" in rows


def test_a_malformed_entry_points_file_is_named_and_the_other_plugins_still_load(
    cli: RunCli, install_plugin: Install
) -> None:
    from popcorn.media.registry import COVER, VIDEO

    install_plugin("flipbook_plugin", FLIPBOOK_PLUGIN, FLIPBOOK_ENTRY_POINTS)
    root = install_plugin("garbled_plugin", "", {"popcorn.video": {"garbled": "garbled_plugin:G"}})
    # A line without "=" makes importlib.metadata.entry_points() give up on every package.
    entry_points = root / "garbled-plugin-0.1.dist-info" / "entry_points.txt"
    entry_points.write_text("[popcorn.video]\nthis line has no equals sign\n")
    VIDEO.refresh()
    COVER.refresh()

    listed = cli("generators")
    assert listed.code == 0, listed.err
    assert "'garbled-plugin' has an unreadable entry_points.txt" in listed.out
    assert "flipbook" in listed.out and "preview" in listed.out
    assert entry_points.read_text() == "[popcorn.video]\nthis line has no equals sign\n"


def test_an_entry_point_named_with_control_characters_is_refused_not_shown(
    cli: RunCli, install_plugin: Install
) -> None:
    root = install_plugin("flipbook_plugin", FLIPBOOK_PLUGIN, FLIPBOOK_ENTRY_POINTS)
    entry_points = root / "flipbook-plugin-0.1.dist-info" / "entry_points.txt"
    entry_points.write_text("[popcorn.video]\nflip\x1b]0;pwned\x07 = flipbook_plugin:Flipbook\n")
    from popcorn.media.registry import VIDEO

    VIDEO.refresh()
    listed = cli("generators")
    assert listed.code == 0, listed.err
    assert "\x1b" not in listed.out and "\x07" not in listed.out
    assert "that is not 'name = module:attribute'" in listed.out
    assert "flip" not in VIDEO.names()


def test_plugin_descriptions_reach_the_terminal_without_escapes(
    cli: RunCli, install_plugin: Install
) -> None:
    install_plugin(
        "loud_plugin",
        HOSTILE_PLUGIN,
        {
            "popcorn.video": {"loud": "loud_plugin:Loud"},
            "popcorn.llm": {"loud": "loud_plugin:loud_llm"},
        },
    )
    generators = cli("generators")
    llms = cli("llms")
    for shown in (generators, llms):
        assert shown.code == 0, shown.err
        assert "\x1b" not in shown.out and "\x07" not in shown.out, repr(shown.out)
    assert "Loud pages [/] [red]x[/red]" in generators.out  # markup printed as written
    assert "model: loud/[/] [red]x[/red]" in generators.out
    assert "loud:[/] [red]x[/red]" in llms.out and "speaks [/] [red]x[/red] loudly" in llms.out


# --- using other components -------------------------------------------------------------------


def test_a_study_of_built_in_models_runs_beside_a_broken_llm_plugin(
    cli: RunCli,
    broken_llm: Path,
    fault_proxy: FaultProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", fault_proxy.url)
    fault_proxy.answer_next(json.dumps(SCRIPT))
    study = write_study(tmp_path, '"openai:m"')

    status = cli("study", "status", str(study))
    assert status.code == 0, status.err
    ran = cli("study", "run", str(study), "--json")
    assert ran.code == 0, ran.err
    assert json.loads(ran.out)["ran"]["script"] == 1
    assert cli("study", "status", str(study), "--json").code == 0


def test_a_study_that_names_a_broken_plugin_fails_in_one_line_naming_it(
    cli: RunCli, broken_llm: Path, tmp_path: Path
) -> None:
    study = write_study(tmp_path, '"openai:m", "boom:x"')
    for command in ("status", "run"):
        result = cli("study", command, str(study))
        assert result.code == 1, result.err
        assert_one_clean_line(result.err)
        assert "s.toml line 3:" in result.err
        assert (
            "'boom' (plugin 'exploding-llm', entry point 'boom = exploding_llm:factory'"
            in result.err
        )
        assert "RuntimeError: the plugin's import went wrong" in result.err
    assert not (tmp_path / "s.study").exists()  # refused before anything was written


def test_generate_with_a_broken_llm_plugin_names_it_and_the_built_ins_still_generate(
    cli: RunCli, broken_llm: Path, fault_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = cli("generate", QUERY, "--llm", "boom:x", "--video", "none", "--cover", "none")
    assert failed.code == 1
    assert_one_clean_line(failed.err)
    assert "exploding-llm" in failed.err and "pip uninstall exploding-llm" in failed.err

    monkeypatch.setenv("OPENAI_BASE_URL", fault_proxy.url)
    fault_proxy.answer_next(json.dumps(SCRIPT))
    done = cli("generate", QUERY, "--llm", "openai:m", "--video", "none", "--cover", "none")
    assert done.code == 0, done.err


def test_a_video_plugin_whose_constructor_raises_fails_only_where_it_is_used(
    cli: RunCli, install_plugin: Install, fault_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin(
        "crashy_plugin", CRASHY_VIDEO, {"popcorn.video": {"crashy": "crashy_plugin:Crashy"}}
    )
    install_plugin("flipbook_plugin", FLIPBOOK_PLUGIN, FLIPBOOK_ENTRY_POINTS)
    listed = cli("generators")
    assert listed.code == 0, listed.err
    assert "crashy" in listed.out and "flipbook" in listed.out

    monkeypatch.setenv("OPENAI_BASE_URL", fault_proxy.url)
    fault_proxy.answer_next(json.dumps(SCRIPT))
    failed = cli("generate", QUERY, "--llm", "openai:m", "--video", "crashy", "--cover", "none")
    assert failed.code == 1
    assert_one_clean_line(failed.err)
    assert "video generator 'crashy' (plugin 'crashy-plugin'" in failed.err
    assert "failed to start: RuntimeError: no GPU in this test" in failed.err

    # The script it had written is kept: the same run with a working generator reuses it.
    done = cli(
        "generate", QUERY, "--llm", "openai:m", "--video", "flipbook", "--cover", "none", "--json"
    )
    assert done.code == 0, done.err
    assert len(fault_proxy.requests) == 1


def test_a_plugin_that_fails_at_work_is_named_and_not_reported_as_our_bug(
    cli: RunCli, install_plugin: Install
) -> None:
    install_plugin("faulty_llm", FAULTY_LLM, {"popcorn.llm": {"faulty": "faulty_llm:faulty"}})
    result = cli("generate", QUERY, "--llm", "faulty:x", "--video", "none", "--cover", "none")
    assert result.code == 1
    assert_one_clean_line(result.err)
    assert "the plugin 'faulty-llm' failed in its module 'faulty_llm'" in result.err
    assert "RuntimeError: the server said no" in result.err


# --- checking a spec without building it ------------------------------------------------------


def test_check_spec_checks_the_form_without_building_the_backend(install_plugin: Install) -> None:
    from popcorn.errors import UsageError
    from popcorn.llm.registry import check_spec

    install_plugin(
        "counting_llm", COUNTING_LLM, {"popcorn.llm": {"counting": "counting_llm:counting"}}
    )
    import counting_llm  # type: ignore[import-not-found]

    check_spec("counting:x")
    check_spec("embedded")
    check_spec("openai:gpt-4o")
    assert counting_llm.built == []
    for bad, message in (
        ("bogus:x", "unknown LLM 'bogus:x'"),
        ("openai", "needs an argument: write it as openai:MODEL"),
        ("embedded:x", "takes no argument"),
        ("", "an LLM spec is a name"),
        ("x" * 5000, "unknown LLM"),
    ):
        with pytest.raises(UsageError, match=message) as err:
            check_spec(bad)
        assert len(str(err.value)) < 1000 and "\n" not in str(err.value)


def test_check_spec_names_the_broken_plugin_a_spec_needs(broken_llm: Path) -> None:
    from popcorn.llm.registry import check_spec
    from popcorn.registry import PluginError

    with pytest.raises(PluginError, match=r"exploding-llm.*RuntimeError"):
        check_spec("boom:x")
    check_spec("openai:m")  # the others are unaffected
