"""Settings precedence (flag > environment > project file > default) and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from popcorn.config import load_settings
from popcorn.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_follow_the_study():
    s = load_settings(environ={})
    assert s.llm.spec == "embedded"
    d = s.decoding.decoding()
    assert (d.temperature, d.top_p, d.repetition_penalty, d.seed) == (0.7, 0.9, 1.1, 42)


def test_flag_beats_env_beats_file_beats_default(tmp_path: Path):
    cfg = write(tmp_path / "popcorn.toml", "[decoding]\nseed = 1\ntemperature = 0.3\ntop_p = 0.5\n")
    env = {"POPCORN_DECODING_SEED": "2", "POPCORN_DECODING_TEMPERATURE": "0.4"}
    s = load_settings(cfg, {"decoding": {"seed": 3, "temperature": None}}, environ=env)
    assert s.decoding.seed == 3  # flag
    assert s.decoding.temperature == 0.4  # env (the flag was not given)
    assert s.decoding.top_p == 0.5  # file
    assert s.decoding.max_tokens == 1024  # default


def test_project_file_in_current_folder_is_read(isolated: Path):
    write(isolated / "popcorn.toml", '[llm]\nspec = "ollama:llama3"\n')
    assert load_settings(environ={}).llm.spec == "ollama:llama3"


def test_short_env_names(tmp_path: Path):
    s = load_settings(environ={"POPCORN_LLM": "openai:gpt-4o", "POPCORN_OUT": str(tmp_path)})
    assert s.llm.spec == "openai:gpt-4o"
    assert s.run.out == tmp_path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[llm]\nspecc = 'x'\n", "specc"),
        ("[nope]\na = 1\n", "nope"),
        ("[decoding]\ntemperature = 9\n", "temperature"),
        ("[llm]\napi_key = 'sk-123'\n", "secrets do not belong in files"),
        ("[llm\n", "not valid TOML"),
        ("spec = 'x'\n", r"must be a \[section\]"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path: Path, text: str, message: str):
    cfg = write(tmp_path / "popcorn.toml", text)
    with pytest.raises(ConfigError, match=message) as err:
        load_settings(cfg, environ={})
    assert "\n" not in str(err.value)
    assert "sk-123" not in str(err.value)


def test_bad_env_value_names_the_source():
    with pytest.raises(ConfigError, match=r"environment: decoding\.seed"):
        load_settings(environ={"POPCORN_DECODING_SEED": "many"})


def test_missing_config_file_is_named(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.toml", environ={})


def test_a_user_file_sits_under_the_project_file(tmp_path: Path):
    from popcorn.config import load_settings, user_config_file

    user = user_config_file()
    assert user == tmp_path / ".user-config" / "popcorn" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text("[decoding]\nseed = 7\ntemperature = 0.2\n[run]\nconcurrency = 9\n")
    assert load_settings().decoding.seed == 7
    (tmp_path / "popcorn.toml").write_text("[decoding]\nseed = 8\n")
    settings = load_settings()
    assert settings.decoding.seed == 8  # the project file wins
    assert settings.decoding.temperature == 0.2 and settings.run.concurrency == 9
    assert load_settings(environ={"POPCORN_DECODING_SEED": "9"}).decoding.seed == 9


def test_a_bad_user_file_names_itself(tmp_path: Path):
    from popcorn.config import load_settings, user_config_file
    from popcorn.errors import ConfigError

    user = user_config_file()
    user.parent.mkdir(parents=True)
    user.write_text("[decoding]\nseed = -1\n")
    with pytest.raises(ConfigError, match=r"config\.toml"):
        load_settings()


def test_one_device_setting_places_every_stage():
    from popcorn.config import load_settings

    cpu = load_settings(flags={"run": {"device": "cpu"}})
    assert (cpu.llm.device_map, cpu.llm.n_gpu_layers, cpu.media.device, cpu.predictor.device) == (
        "cpu", 0, "cpu", "cpu",
    )  # fmt: skip
    gpu = load_settings(flags={"run": {"device": "cuda:1"}, "llm": {"n_gpu_layers": 8}})
    assert gpu.media.device == "cuda:1" and gpu.llm.device_map == "cuda:1"
    assert gpu.llm.n_gpu_layers == 8  # set one by one, it wins
    auto = load_settings()
    assert auto.run.device == "auto" and auto.llm.n_gpu_layers == -1
    with pytest.raises(ConfigError, match=r"run\.device"):
        load_settings(flags={"run": {"device": "gpu0"}})


def test_old_device_flags_work_with_a_note(cli, tmp_path: Path):
    result = cli("render", str(tmp_path / "missing"), "--media-device", "cpu")
    assert "--media-device is deprecated" in result.err


def test_every_media_setting_with_a_flag_is_a_flag_of_generate_and_render(cli):
    """A media setting is declared once, on its field: its flag, help group and range follow."""
    from popcorn.cli.render import MEDIA_GROUPS
    from popcorn.config import MediaSettings
    from popcorn.config_fields import cli_fields

    flags = cli_fields(MediaSettings)
    assert {f.setting for f in flags} >= {"video", "steps", "video_extra", "unload_stages"}
    for command in ("generate", "render"):
        shown = cli(command, "--help").out
        for flag in (f for f in flags if not f.hidden):
            assert flag.flag in shown, (command, flag.flag)
    assert "steps" in MEDIA_GROUPS["Media"] and "offload" in MEDIA_GROUPS["Memory and devices"]
    refused = cli("render", "somewhere", "--steps", "501")
    assert refused.code == 2 and "1<=x<=500" in refused.err  # the field's own limits


def test_component_options_come_from_a_file_the_environment_or_flags_alike(tmp_path: Path):
    from popcorn.config import load_settings
    from popcorn.errors import ConfigError

    Path("popcorn.toml").write_text("[media.video_extra]\nbands = 3\n[llm.extra]\nmood = 'calm'\n")
    from_file = load_settings()
    assert from_file.media.video_extra == {"bands": 3} and from_file.llm.extra == {"mood": "calm"}
    from_env = load_settings(environ={"POPCORN_MEDIA_VIDEO_EXTRA": "{bands = 4}"})
    assert from_env.media.video_extra == {"bands": 4}
    with pytest.raises(ConfigError, match="POPCORN_MEDIA_VIDEO_EXTRA: write it as a TOML"):
        load_settings(environ={"POPCORN_MEDIA_VIDEO_EXTRA": "bands=4"})


def test_settings_that_change_no_output_stay_out_of_study_keys():
    """Whether a setting changes the output is declared on its field, and study keys follow."""
    from popcorn.config import Settings
    from popcorn.study.spec import settings_digest

    assert settings_digest(Settings()) == ""
    where = Settings.model_validate({"media": {"offload": "model"}, "llm": {"timeout": 5}})
    assert settings_digest(where) == ""  # where and how patiently, not what
    assert settings_digest(Settings.model_validate({"media": {"steps": 4}})) != ""
    assert settings_digest(Settings.model_validate({"media": {"video_extra": {"bands": 3}}})) != ""
