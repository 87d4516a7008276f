"""Settings: command-line flag, then environment variable, then project file, then user file,
then default.

The project file is ``popcorn.toml`` in the current folder (or ``--config FILE`` /
``POPCORN_CONFIG``); the user file, with the same sections, is ``config.toml`` in the user's
config folder (``$XDG_CONFIG_HOME/popcorn/``, else ``~/.config/popcorn/``; on macOS
``~/Library/Application Support/popcorn/``; ``POPCORN_USER_CONFIG`` names another file)::

    [llm]
    spec = "deepseek:deepseek-chat"
    timeout = 120

    [decoding]
    temperature = 0.7
    seed = 42

    [run]
    out = "popcorn-runs"
    concurrency = 8

    [pe]
    corpus = "popcorn-corpus"
    refs = 10
    categories = 1

    [predictor]
    path = "popcorn-predictor"   # generate scores its output when this folder holds a model
    visual = "vit"

    [gate]
    enabled = true               # retry, then fail, answers that talk back or miss the query
    relevance_min = 0.25

    [media]
    video = "ltx"                # or preview, none, ... (popcorn generators)
    cover = "sd15"
    portrait = true
    offload = "model"

Every key can also come from ``POPCORN_<SECTION>_<KEY>`` (``POPCORN_DECODING_SEED=7``);
``POPCORN_LLM``, ``POPCORN_OUT``, ``POPCORN_CORPUS`` and ``POPCORN_PREDICTOR`` are short forms for
the most used. Unknown keys are errors. Secrets never come from here: API keys are read from
their provider's variable only.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from popcorn import profiles
from popcorn.config_fields import ComponentOptions, setting
from popcorn.config_fields import int_limits as int_limits
from popcorn.config_fields import limits as limits
from popcorn.errors import ConfigError
from popcorn.llm.base import Decoding
from popcorn.llm.registry import LLMOptions
from popcorn.profiles import Profile, ProfileName
from popcorn.writer.gate import GateSettings

if TYPE_CHECKING:
    from popcorn.media.render import MediaOptions

PROJECT_FILE = "popcorn.toml"
_SHORT_ENV = {
    "POPCORN_LLM": ("llm", "spec"),
    "POPCORN_OUT": ("run", "out"),
    "POPCORN_CORPUS": ("pe", "corpus"),
    "POPCORN_PREDICTOR": ("predictor", "path"),
    "POPCORN_PROFILE": ("run", "profile"),
}
# Setting names that hold a secret (api_key, hf_token, ...); not max_tokens or key-like words.
_SECRET_KEY = re.compile(r"(?:^|_)(?:api_?key|key|token|secret|password|passwd)$", re.IGNORECASE)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LLMSettings(_Section):
    spec: str = "embedded"
    base_url: str | None = None
    timeout: float = setting(120.0, gt=0, output=False)
    retries: int = setting(
        5, "HTTP attempts per call (429, 5xx, timeouts).", ge=1, le=20, output=False
    )
    attempts: int = Field(3, ge=1, le=10)
    """Fresh tries when an answer cannot be parsed or the quality gate rejects it."""
    drafts: int | None = setting(
        None,
        "Drafts sampled per attempt, the best kept by the quality gate.  [default: the "
        "profile's: 4 for a small local model under popcorn, else 1]",
        group="LLM",
        ge=1,
        le=16,
        output="changed",
    )
    draft_seconds: float | None = setting(
        None,
        "Most seconds the drafts of one attempt may take (the first is always made); a cap "
        "makes the kept answer depend on the machine's speed.  [default: no cap]",
        group="LLM",
        gt=0,
        output="changed",
    )
    n_ctx: int = Field(4096, ge=256)
    n_gpu_layers: int = setting(-1, ge=-1, output=False)
    """llama.cpp layers on the GPU (-1 all; a CPU-only build ignores it); --device cpu sets 0."""
    device_map: str = setting("auto", output=False)
    dtype: str = "auto"
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    prompts: Path | None = setting(None, output="changed")
    """A folder of prompt templates replacing the profile's own (see popcorn.writer.prompts)."""
    batch_size: int = Field(0, ge=0, le=1024)
    """``hf:`` conversations per ``generate`` (0: chosen from free GPU memory; 4 on the CPU)."""
    extra: ComponentOptions = setting(
        {},
        "The LLM backend's own option (KEY=VALUE, repeatable; see 'popcorn llms').",
        group="LLM",
        flag="--llm-opt",
        metavar="KEY=VALUE",
        output="changed",
    )

    def options(self) -> LLMOptions:
        return LLMOptions(
            base_url=self.base_url,
            timeout=self.timeout,
            n_ctx=self.n_ctx,
            n_gpu_layers=self.n_gpu_layers,
            device_map=self.device_map,
            dtype=self.dtype,
            load_in_4bit=self.load_in_4bit,
            load_in_8bit=self.load_in_8bit,
            batch_size=self.batch_size,
            extra=dict(self.extra),
        )


class DecodingSettings(_Section):
    """Sampling; the defaults are :class:`~popcorn.llm.base.Decoding`'s (the study's), but
    for the temperature of a small local model, which is the profile's when nobody sets it."""

    temperature: float | None = Field(None, ge=0, le=2)
    """None: the profile's for a small local model (popcorn 0.3), else 0.7."""
    top_p: float = Field(Decoding.top_p, gt=0, le=1)
    repetition_penalty: float = Field(Decoding.repetition_penalty, gt=0, le=3)
    seed: int = Field(Decoding.seed, ge=0)
    max_tokens: int = Field(Decoding.max_tokens, ge=16, le=32768)

    def decoding(self) -> Decoding:
        """The sampling to send; a temperature nobody set is Decoding's (the writer gives a
        small local model its profile's, see :class:`~popcorn.writer.writer.Generator`)."""
        return Decoding(**{k: v for k, v in self.model_dump().items() if v is not None})


class RunSettings(_Section):
    out: Path = Path("popcorn-runs")
    concurrency: int = Field(4, ge=1, le=64)
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    """Where models run: auto (a CUDA GPU when there is one), cpu, cuda, cuda:N or mps. It sets
    the LLM's placement (hf device map, llama.cpp GPU layers), the media device and the
    predictor's, unless those are set one by one."""
    profile: ProfileName = "popcorn"
    """``paper``: every condition of the LLMPopcorn study; ``popcorn``: ours (popcorn.profiles)."""


class PESettingsModel(_Section):
    """Prompt enhancement: the corpus folder, N references, K categories, the embedder."""

    corpus: Path = setting(Path("popcorn-corpus"), output=False)
    """Where the corpus is: its content, not its path, enters the run keys (the retriever's
    identity)."""
    refs: int = Field(10, ge=0, le=500)
    categories: int = Field(1, ge=1, le=50)
    embedder: str | None = None


class GateSettingsModel(_Section):
    """The quality gate on every parsed answer (:mod:`popcorn.writer.gate`); the defaults are
    :class:`~popcorn.writer.gate.GateSettings`', and ``enabled`` is the profile's (popcorn: on;
    paper: verdicts recorded, never acted on)."""

    enabled: bool = GateSettings.enabled
    echo_max: float = Field(GateSettings.echo_max, ge=0, le=1)
    relevance_min: float = Field(GateSettings.relevance_min, ge=-1, le=1)
    example_max: float = Field(GateSettings.example_max, ge=0, le=1)

    def settings(self) -> GateSettings:
        return GateSettings(**self.model_dump())


class PredictorSettings(_Section):
    """The popularity predictor: its folder, the frame encoder, the title and retrieval text
    encoders and the frame captioner (None: the profile's configuration decides), the device."""

    path: Path = Path("popcorn-predictor")
    visual: str = "vit"
    embedder: str | None = None
    retrieval_embedder: str | None = None
    captioner: str | None = None
    """A captioner for the retrieval text's frame captions, or ``none`` for the corpus caption."""
    device: str = Field("cpu", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")


_MEDIA = "Media"
_MEMORY = "Memory and devices"


class MediaSettings(_Section):
    """The media stage: which generators run, preset overrides, and memory options.

    ``video`` / ``cover`` take a generator name or ``none``; every other field left unset keeps
    the generator's preset value (see ``popcorn generators``). Each field declares its flag and
    whether it changes the media (:func:`setting`): adding a media setting is adding a field."""

    video: str = setting("preview", "Clip generator.", group=_MEDIA, metavar="NAME")
    cover: str = setting("preview", "Cover generator.", group=_MEDIA, metavar="NAME")
    video_extra: ComponentOptions = setting(
        {},
        "The clip generator's own option (KEY=VALUE, repeatable; see 'popcorn generators').",
        group=_MEDIA,
        flag="--video-opt",
        metavar="KEY=VALUE",
        output="changed",
    )
    cover_extra: ComponentOptions = setting(
        {},
        "The cover generator's own option (KEY=VALUE, repeatable; see 'popcorn generators').",
        group=_MEDIA,
        flag="--cover-opt",
        metavar="KEY=VALUE",
        output="changed",
    )
    portrait: bool = setting(False, "9:16 output, the micro-video norm.", group=_MEDIA)
    # Size, length and rate are checked once the preset's values are merged in
    # (MediaOptions.spec), where the message can name the final value.
    width: int | None = setting(None, "Override the preset's width.", group=_MEDIA)
    height: int | None = setting(None, "Override the preset's height.", group=_MEDIA)
    frames: int | None = setting(None, "Override the preset's frame count.", group=_MEDIA)
    fps: int | None = setting(None, "Override the preset's frame rate.", group=_MEDIA)
    steps: int | None = setting(None, "Override denoising steps.", group=_MEDIA, ge=1, le=500)
    guidance: float | None = setting(
        None, "Override the guidance scale.", group=_MEDIA, ge=0, le=50
    )
    negative_prompt: str | None = setting(
        None, "Override the preset's negative prompt.", group=_MEDIA
    )
    video_seed: int | None = setting(None, "Seed of the clip.", group=_MEDIA, ge=0)
    video_model: str | None = setting(
        None,
        "Load the clip generator from this folder or hub id.",
        group=_MEDIA,
        metavar="PATH_OR_ID",
    )
    motion_adapter: str | None = setting(
        None,
        "animatediff: adapter folder, .safetensors file or REPO:FILE [default: the Lightning "
        "4-step adapter].",
        group=_MEDIA,
        metavar="SOURCE",
    )
    cover_model: str | None = setting(
        None,
        "Load the cover generator from this folder or hub id.",
        group=_MEDIA,
        metavar="PATH_OR_ID",
    )
    cover_size: int | None = setting(
        None,
        "Cover pixel count as a square side; Popcorn's presets keep the clip's aspect ratio, "
        "the study's sd15 cover is square [default: the model's native size].",
        group=_MEDIA,
        metavar="PX",
        ge=16,
        le=2048,
    )
    cover_steps: int | None = setting(None, "Cover denoising steps.", group=_MEDIA, ge=1, le=500)
    cover_guidance: float | None = setting(None, "Cover guidance scale.", group=_MEDIA, ge=0, le=50)
    compile: bool = setting(
        False,
        "torch.compile the denoisers' repeated blocks: faster steps on a GPU after a "
        "compilation once per process (part of the media key).",
        group=_MEDIA,
    )
    cache: Literal["none", "first-block", "faster", "taylorseer"] = setting(
        "none",
        "Reuse the clip denoiser's work between steps with a diffusers cache, at the settings "
        "diffusers recommends: faster, approximate (part of the media key; faster: cogvideox "
        "and hunyuan; none for animatediff).",
        group=_MEDIA,
    )
    long_prompt: bool = setting(
        False,
        "Let the text encoder read prompts longer than its window where the model allows "
        "(ltx: up to 512 T5 tokens instead of 128; sd15, animatediff: CLIP in windows of 75 "
        "tokens; part of the media key). A cut prompt is reported either way.",
        group=_MEDIA,
    )
    device: str = setting(
        "auto",
        "Deprecated: use --device.",
        group=_MEMORY,
        flag="--media-device",
        hidden=True,
        output=False,
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = setting(
        "auto", "The media models' weight dtype.", group=_MEMORY, flag="--media-dtype"
    )
    offload: Literal["none", "model", "sequential"] = setting(
        "none", "CPU offload, for GPUs with less memory.", group=_MEMORY, output=False
    )
    vae_tiling: bool = setting(
        False, "Decode in tiles (less GPU memory).", group=_MEMORY, output=False
    )
    vae_slicing: bool = setting(False, "Decode frame by frame.", group=_MEMORY, output=False)
    quantize: Literal["none", "4bit", "8bit"] = setting(
        "none",
        "Quantise the denoiser with bitsandbytes (CUDA; pip install 'popcorn-video[quant]'); "
        "4bit is fp4 under the paper profile, nf4 otherwise [the paper profile's hunyuan: "
        "4bit, as in the study].",
        group=_MEMORY,
    )
    unload_stages: bool = setting(
        False,
        "Free each stage's models before the next loads (LLM, clips, covers), so all fit one "
        "GPU; a batch then runs stage by stage.",
        group=_MEMORY,
        output=False,
    )
    x264_preset: Literal[
        "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
        "veryslow",
    ] = setting("veryfast")  # fmt: skip
    x264_threads: int = setting(
        0, "x264's threads (0: x264 chooses, about 1.5 per core).", ge=0, le=128
    )

    def options(self, profile: Profile) -> MediaOptions:
        """The media stage's options, with the presets ``profile`` runs (the paper profile:
        the study's exact settings; popcorn: Popcorn's, see ``popcorn generators``)."""
        from popcorn.media.diffusers.loader import MemoryOptions
        from popcorn.media.export import Encoding
        from popcorn.media.render import MediaOptions

        def generator(value: str) -> str | None:
            return None if value == "none" else value

        # Where the stage's option is named as its setting, it is taken as it is.
        memory = {
            f.name: getattr(self, f.name) for f in fields(MemoryOptions) if f.name != "unload"
        }
        overrides = {
            f.name: getattr(self, f.name)
            for f in fields(MediaOptions)
            if f.name in type(self).model_fields
        }
        return MediaOptions(
            **{**overrides, "video": generator(self.video), "cover": generator(self.cover)},
            seed=self.video_seed,
            presets=profile.media,
            memory=MemoryOptions(**memory, unload=self.unload_stages),
            encoding=Encoding(preset=self.x264_preset, threads=self.x264_threads),
        )


class Settings(_Section):
    llm: LLMSettings = LLMSettings()
    decoding: DecodingSettings = DecodingSettings()
    run: RunSettings = RunSettings()
    pe: PESettingsModel = PESettingsModel()
    gate: GateSettingsModel = GateSettingsModel()
    predictor: PredictorSettings = PredictorSettings()
    media: MediaSettings = MediaSettings()

    @property
    def profile(self) -> Profile:
        """The conditions of ``run.profile`` (see :mod:`popcorn.profiles`)."""
        return profiles.get(self.run.profile)


Overrides = Mapping[str, Mapping[str, Any]]


def load_settings(
    config: Path | None = None,
    flags: Overrides | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    profile: ProfileName = "popcorn",
) -> Settings:
    """Merge defaults, the project file, the environment and ``flags`` (None values ignored).

    ``profile`` is the profile when none of them names one (studies pass ``paper``); the
    chosen profile then fills the settings nobody set (e.g. ``max_tokens``)."""
    environ = os.environ if environ is None else environ
    merged: dict[str, dict[str, Any]] = {}
    user = user_config_file(environ)
    if user.is_file():
        _merge(merged, _read_file(user))
        _validated(merged, str(user))
    path = config or (Path(environ["POPCORN_CONFIG"]) if environ.get("POPCORN_CONFIG") else None)
    where = "defaults"
    if path is not None or Path(PROJECT_FILE).is_file():
        path = path or Path(PROJECT_FILE)
        where = str(path)
        _merge(merged, _read_file(path))
    _validated(merged, where)
    _merge(merged, _from_env(environ))
    _validated(merged, "environment")
    _merge(
        merged, {s: {k: v for k, v in f.items() if v is not None} for s, f in (flags or {}).items()}
    )
    _validated(merged, "command line")
    _apply_device(merged)
    chosen = merged.setdefault("run", {}).setdefault("profile", profile)
    for section, values in profiles.get(chosen).setting_defaults().items():
        for key, value in values.items():
            merged.setdefault(section, {}).setdefault(key, value)
    return _validated(merged, "command line")


def _apply_device(merged: dict[str, dict[str, Any]]) -> None:
    """``run.device`` fills the per-stage device settings nobody set one by one."""
    device = merged.get("run", {}).get("device")
    if device is None:
        return
    derived = {
        ("llm", "device_map"): device,
        ("llm", "n_gpu_layers"): 0 if device in ("cpu", "mps") else -1,
        ("media", "device"): device,
        ("predictor", "device"): device,
    }
    for (section, key), value in derived.items():
        merged.setdefault(section, {}).setdefault(key, value)


def user_config_file(environ: Mapping[str, str] | None = None) -> Path:
    """The user-level settings file (it need not exist)."""
    environ = os.environ if environ is None else environ
    if environ.get("POPCORN_USER_CONFIG"):
        return Path(environ["POPCORN_USER_CONFIG"]).expanduser()
    if environ.get("XDG_CONFIG_HOME"):
        base = Path(environ["XDG_CONFIG_HOME"])
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path.home() / ".config"
    return base / "popcorn" / "config.toml"


SETTINGS_FILE_LIMIT = 2**20
"""The most bytes a settings file (popcorn.toml, the user file, a study file) may hold: far
above any real one, and what keeps ``/dev/zero`` or a planted huge file from filling memory."""


def read_settings_text(path: Path) -> str:
    """The text of the settings file ``path``: a regular file of UTF-8 text (a leading BOM is
    dropped) of at most :data:`SETTINGS_FILE_LIMIT` bytes. Raises ``OSError`` when it cannot
    be read and ``ValueError`` with a short reason for what is refused (a FIFO, a device, a
    binary file, UTF-16)."""
    from popcorn._io import read_bytes

    data = read_bytes(path, SETTINGS_FILE_LIMIT)
    if b"\x00" in data:
        raise ValueError("it holds NUL bytes (a binary file, or UTF-16 text): save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"it is not UTF-8 text (byte {err.start}): save it as UTF-8") from None


def parse_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads``; nesting too deep for the parser is a ``TOMLDecodeError`` too."""
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise tomllib.TOMLDecodeError("arrays or tables nested too deeply to read") from None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = parse_toml(read_settings_text(path))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {str(path)!r}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(f"cannot read config file {str(path)!r}: {reason}") from None
    except ValueError as err:
        raise ConfigError(f"cannot read config file {str(path)!r}: {err}") from None
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: '{section}' must be a [section] table")
        for key in values:
            if _SECRET_KEY.search(key):
                raise ConfigError(
                    f"{path}: [{section}] {key}: secrets do not belong in files; set the "
                    "provider's environment variable (e.g. OPENAI_API_KEY) instead"
                )
    return data


def _from_env(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for name, (section, key) in _SHORT_ENV.items():
        if environ.get(name):
            found.setdefault(section, {})[key] = environ[name]
    for section, model in Settings.model_fields.items():
        assert model.annotation is not None
        for key, field in model.annotation.model_fields.items():
            name = f"POPCORN_{section}_{key}".upper()
            if environ.get(name):
                value: Any = environ[name]
                if isinstance(field.default, dict):  # a component's options: a TOML table
                    value = _inline_table(name, value)
                found.setdefault(section, {})[key] = value
    return found


def _inline_table(name: str, text: str) -> Any:
    try:
        return parse_toml(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        raise ConfigError(f"{name}: write it as a TOML inline table, e.g. {{steps = 4}}") from None


def _merge(into: dict[str, dict[str, Any]], new: Mapping[str, Mapping[str, Any]]) -> None:
    for section, values in new.items():
        into.setdefault(section, {}).update(values)


def _validated(merged: dict[str, dict[str, Any]], where: str) -> Settings:
    try:
        return Settings.model_validate(merged)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where}: {loc}: {first['msg']}") from None
